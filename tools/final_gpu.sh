#!/bin/bash
# Recovery of the v2 study's last stage (issue 11) after the bench stage hit the 10-min command
# limit and the machine (with every checkpoint of /root/study) went back: retrain F's selected
# front shape for the shipped seed, install it with front.py from the committed front invocation,
# then bench F / F85 / their cuDNN paths in one invocation, eval F, run tests/test_gpu.py.
set -eo pipefail
R=/root/final; mkdir -p "$R" data; ln -sf /root/cifar10.npz data/cifar10.npz
cp results/results.csv "$R/results.csv"
inv=$(python3 -c "import json; print(json.load(open('results/front_selection.json'))['F']['invocation'])")
shape=$(python3 -c "import json; print(json.load(open('results/front_selection.json'))['F']['front'])")
S=(--set "paths.checkpoints=$R/ckpt" --set "paths.manifest=$R/ckpt/manifest.json" --set "paths.results=$R/results.csv"
   --set "paths.final_model=$R/final_model.pth" --set "paths.f85_model=checkpoints/f85_model.pth")
python3 train.py --front "$shape,t3" --set "front.seeds=[42]" "${S[@]}" 2>&1 | grep -v " epoch "
python3 front.py --invocation "$inv" "${S[@]}" --set "paths.f85_model=$R/f85_retrained_unused.pth" \
  --set "paths.front_selection=$R/front_selection_recheck.json"
cp "$R/final_model.pth" checkpoints/final_model.pth
python3 eval.py --variant F "${S[@]}" 2>&1 | tail -4
python3 bench.py --variant F,F_kern,F_cudnn,F85,F85_cudnn --no-e2e "${S[@]}" 2>&1 | grep -v "^  run"
python3 -m pytest -q tests/test_gpu.py 2>&1 | tail -4
