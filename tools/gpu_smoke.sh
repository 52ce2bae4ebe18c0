#!/bin/sh
# GPU smoke test (issue 2/3 groundwork): every script and every variant's inference path,
# on tiny synthetic data, on the GPU, with the full-size fastnet.  Usage: sh tools/gpu_smoke.sh DIR
set -e
D=${1:-/tmp/smoke}
mkdir -p "$D"
python3 - "$D" <<'PY'
import sys, yaml
sys.path.insert(0, "tests")
from conftest import tiny_config
p = tiny_config(sys.argv[1], tiny_fastnet=False)
raw = yaml.safe_load(open(p))
raw["bench"].update(device="cuda", warmup=50, iters=300, runs=2, e2e_iters=100)
o2 = dict(raw["variants"]["O2"]); o2.update(compile="reduce-overhead", label="O2 reduce-overhead")
raw["variants"]["O2ro"] = o2
yaml.safe_dump(raw, open(p, "w"))
print(p)
PY
C="--config $D/config.yaml"
python3 train.py --model fastnet $C --device cuda --save-as "$D/ckpt/final_model.pth"
python3 train.py --model mobilenetv3 $C --device cuda
python3 train.py --model resnet18 $C --device cuda
python3 distill.py $C --device cuda
python3 eval.py --variant F $C --device cuda
python3 bench.py --variant all $C
cp "$D/results.csv" "${OUT:-$D}/smoke_results.csv" 2>/dev/null || true
