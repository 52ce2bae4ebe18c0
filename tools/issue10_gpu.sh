#!/usr/bin/env bash
# Issue 10's last GPU checks, one stage per device call (each under the 10-min limit).
# Run ON the GPU machine from the repo root, /root/cifar10.npz staged (README, "GPU"):
#   bash tools/issue10_gpu.sh tests   # tests/test_gpu.py whole (the 10k-image F_kern test too), then
#                                     # F / F85 with layers paired (kernel_fuse_pairs: 4 / 2 kernels)
#   bash tools/issue10_gpu.sh wide    # kernel_tune.py --wide for F's and F85's shapes (tta none) into
#                                     # /root/i10/tiles_wide.json, then F / F85: tuned vs wide tiles
# Logs go to $OUT (the device's return folder) and stay in /root/i10; commit them under
# results/kernels/gpu6/ and results/logs/.  Each step has its own time limit, so a hung step
# still leaves the others' output.  Rows: none (kernel_paths / kernel_tune print, write no row).
set -u -o pipefail
OUT=${OUT:-/root/i10/out}
W=/root/i10
mkdir -p "$OUT" "$W" data
[ -e data/cifar10.npz ] || ln -sf /root/cifar10.npz data/cifar10.npz
export TRITON_CACHE_DIR=$W/triton-cache  # kept between the stages' calls on a warm machine
T0=$(date +%s)
step() { echo; echo "== $1 (t=$(( $(date +%s) - T0 )) s)"; }
env_line() {
  python3 -c "import torch, triton; print('torch', torch.__version__, '| triton', triton.__version__, '|', torch.cuda.get_device_name(0))"
  nvidia-smi --query-gpu=name,driver_version,clocks.sm,temperature.gpu --format=csv,noheader
  echo "commit ${KIT_GIT_COMMIT:-unknown (KIT_GIT_COMMIT not set)}"
}

case "${1:-}" in
tests)
  { step "environment"; env_line; } 2>&1 | tee "$OUT/env_tests.log"
  step "python -m pytest tests/test_gpu.py (all, the 10k-image F_kern test included)"
  timeout 330 python3 -m pytest -q -rfEsP -p no:cacheprovider tests/test_gpu.py 2>&1 | tee "$OUT/test_gpu.log"
  echo "pytest rc=$? (124 = 330 s limit)" | tee -a "$OUT/test_gpu.log"
  step "F / F85: tuned tiles with and without layers paired (fewer kernels)"
  timeout 200 python3 tools/kernel_paths.py --variants F,F85 --runs 10 --iters 300 \
    --options heuristic,tuned,tuned+pairs,tuned+stem,tuned+stem+pairs 2>&1 | tee "$OUT/kernel_paths_pairs.log"
  echo "kernel_paths rc=$?" | tee -a "$OUT/kernel_paths_pairs.log"
  ;;
wide)
  { step "environment"; env_line; } 2>&1 | tee "$OUT/env_wide.log"
  step "kernel_tune.py --wide: AB94 (F) and t3 (F85), tta none (what F and F85 run)"
  timeout 450 python3 tools/kernel_tune.py --wide --shapes AB94,t3 --workers 15 --out "$W/tiles_wide.json" \
    --set "front.tta=[none]" 2>&1 | tee "$OUT/kernel_tune_wide.log"
  echo "kernel_tune rc=$? (124 = 450 s limit)" | tee -a "$OUT/kernel_tune_wide.log"
  [ -f "$W/tiles_wide.json" ] && cp "$W/tiles_wide.json" "$OUT/"
  step "F / F85: tuned (results/kernels/tiles.json) vs wide tiles"
  [ -f "$W/tiles_wide.json" ] && timeout 120 python3 tools/kernel_paths.py --variants F,F85 --runs 10 --iters 300 \
    --options tuned,wide,wide+pairs --wide-tiles "$W/tiles_wide.json" 2>&1 | tee "$OUT/kernel_paths_wide.log"
  ;;
*)
  echo "usage: bash tools/issue10_gpu.sh tests|wide" >&2; exit 2 ;;
esac
step "done"
