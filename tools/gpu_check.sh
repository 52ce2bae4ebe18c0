#!/bin/bash
# A short GPU check before the study (issue 9/10): the new training loop's train_time_s for
# three front shapes (seed 42), the fused TTA views of the kernel path vs the TTANet path
# (tools/tta_check.py) and tests/test_gpu.py.  If .snap/ exists (committed files carried
# beside a working copy that holds someone's edits in progress), it is laid over the tree first.
set -o pipefail
[ -d .snap ] && cp -r .snap/. ./
R=/root/check; mkdir -p "$R" data; ln -sf /root/cifar10.npz data/cifar10.npz
cp results/results.csv "$R/results.csv"
S=(--set "paths.checkpoints=$R/ckpt" --set "paths.manifest=$R/ckpt/manifest.json" --set "paths.results=$R/results.csv")
L="$OUT/check.log"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$L"
python3 train.py --front AB94,w7,t3 --set "front.seeds=[42]" "${S[@]}" 2>&1 | grep -v " epoch " | tee -a "$L"
python3 tools/tta_check.py --points AB94,w7,t3 "${S[@]}" 2>&1 | tee -a "$L"
python3 -m pytest -q tests/test_gpu.py 2>&1 | tail -15 | tee -a "$L"
cp "$R/results.csv" "$OUT/check_results.csv"
