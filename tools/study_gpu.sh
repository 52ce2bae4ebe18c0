#!/bin/bash
# The v2 study on the lent GPU (issue 11), one reproduce.sh stage per device call: every output
# lives under /root/study, which outlives a call while the machine is warm (the repo copy there
# is fresh each call); what the kit commits is copied to $OUT at the end of each stage.
#   bash tools/study_gpu.sh train | front | bench | gputest
set -eo pipefail
stage=$1; shift
R=/root/study
mkdir -p "$R/logs" data
ln -sf /root/cifar10.npz data/cifar10.npz
[ -f "$R/results.csv" ] || cp results/results.csv "$R/results.csv"   # v1 rows kept; the header is upgraded
S=(--set "paths.checkpoints=$R/ckpt" --set "paths.manifest=$R/ckpt/manifest.json"
   --set "paths.results=$R/results.csv" --set "paths.final_model=$R/final_model.pth"
   --set "paths.f85_model=$R/f85_model.pth" --set "paths.front_selection=$R/front_selection.json")
if [ "$stage" = gputest ]; then
  cp "$R/final_model.pth" checkpoints/final_model.pth
  cp "$R/f85_model.pth" checkpoints/f85_model.pth
  python3 -m pytest -q tests/test_gpu.py 2>&1 | tee "$R/logs/test_gpu.log" | tail -15
else
  start=$(date +%s)
  LATENCY_RAW=$R/latency_raw.npz PYTHONUNBUFFERED=1 sh reproduce.sh "$stage" "${S[@]}" "$@" 2>&1 \
    | tee "$R/logs/$stage.log" | grep --line-buffered -v " epoch " | tail -60
  echo "reproduce.sh $stage: wall $(( $(date +%s) - start )) s on $(nvidia-smi --query-gpu=name --format=csv,noheader)" \
    | tee -a "$R/logs/$stage.log"
fi
cp "$R/results.csv" "$OUT/" 2>/dev/null || true
for f in "$R/logs/$stage.log" "$R"/front_selection.json "$R"/final_model.pth "$R"/f85_model.pth "$R"/latency_raw.npz; do
  [ -f "$f" ] && cp "$f" "$OUT/" || true
done
ls -la "$OUT"
