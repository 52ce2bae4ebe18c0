#!/bin/bash
# GPU-machine helper for the front (issue 9): `sh reproduce.sh <stage>` with every output under
# /root/front, which outlives one call of the lent machine (its repo copy is fresh on each call).
# B1 has no checkpoint there, so AB94 (no TTA) is the speedup reference of this invocation.
#   bash tools/front_gpu.sh front-train | front-bench [--set ...]
set -eo pipefail
stage=$1; shift
R=/root/front
mkdir -p "$R" data
ln -sf /root/cifar10.npz data/cifar10.npz
S=(--set "paths.checkpoints=$R/ckpt" --set "paths.manifest=$R/ckpt/manifest.json"
   --set "paths.results=$R/results.csv" --set "paths.final_model=$R/final_model.pth"
   --set "paths.f85_model=$R/f85_model.pth" --set "paths.front_selection=$R/front_selection.json"
   --set "bench.reference=P_AB94")
PYTHONUNBUFFERED=1 sh reproduce.sh "$stage" "${S[@]}" "$@" 2>&1 | grep --line-buffered -v " epoch " | tee -a "$R/$stage.log"
