#!/usr/bin/env bash
# One GPU call for the kernel path's TTA fusion and fewer-kernel options (results/kernels/notes.md).
# Run ON the GPU machine from the repo root:   bash tools/kernel_gpu.sh
# Writes $OUT/kernel_gpu.log (OUT defaults to results/kernels/gpu) and $OUT/kernel_tta.json.
# Under 5 minutes: the table first (each row tried on its own, printed as measured), then the
# kernel tests of tests/test_gpu.py (they reuse the table's compiled kernels via TRITON_CACHE_DIR).
# Each step has its own time limit, so a hung or crashed step still leaves the others' output.
set -u
OUT=${OUT:-results/kernels/gpu}
mkdir -p "$OUT"
LOG="$OUT/kernel_gpu.log"
PY=${PYTHON:-python}
export TRITON_CACHE_DIR=${TRITON_CACHE_DIR:-/tmp/triton-cache-kernel-gpu}
exec > >(tee -a "$LOG") 2>&1
T0=$(date +%s)
step() { echo; echo "== $1 (t=$(( $(date +%s) - T0 )) s)"; }

step "environment"
$PY -c "import torch, triton; print('torch', torch.__version__, '| triton', triton.__version__, '|',
torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'NO CUDA')" || echo "environment check failed (rc $?)"
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,temperature.gpu --format=csv,noheader || true
git log --oneline -1 || true

step "table: AB94 / w7, tta none vs flip (old TTANet vs fused), fuse_stem / fuse_pairs, PDL"
timeout 180 $PY tools/kernel_bench.py --tta-table --iters 1000 --out "$OUT"
rc=$?; [ $rc -eq 0 ] || echo "TABLE STOPPED rc=$rc (124 = 180 s limit): the rows printed above are what was measured"

step "tests: python -m pytest -q tests/test_gpu.py -k kern"
timeout 110 $PY -m pytest -q -rfEs -p no:cacheprovider tests/test_gpu.py -k kern
rc=$?; [ $rc -eq 0 ] || echo "KERNEL TESTS rc=$rc (1 = failures above, 124 = 110 s limit)"

step "done"
