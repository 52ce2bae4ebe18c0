#!/bin/sh
# Accuracy/time trials of fastnet candidates and per-epoch time of the baselines (exploration).
# Usage: sh tools/gpu_trials.sh NPZ DIR
set -e
NPZ=$1; D=${2:-/tmp/trials}
mkdir -p "$D"
C="--set paths.data_npz=$NPZ --set paths.checkpoints=$D/ckpt --set paths.manifest=$D/ckpt/manifest.json --set paths.results=$D/results.csv"
E=24
python3 train.py --model fastnet --tag c1 $C --set train.fastnet.epochs=$E
python3 train.py --model fastnet --tag c2 $C --set train.fastnet.epochs=$E --set "models.fastnet.widths=[64,128,256]" --set "models.fastnet.depths=[1,2,1]"
python3 train.py --model fastnet --tag c4 $C --set train.fastnet.epochs=$E --set "models.fastnet.widths=[96,192,384]" --set "models.fastnet.depths=[1,1,1]"
python3 train.py --model fastnet --tag c10 $C --set train.fastnet.epochs=$E --set "models.fastnet.widths=[64,128,256,512]" --set "models.fastnet.depths=[1,1,1,1]"
python3 train.py --model fastnet --tag c3 $C --set train.fastnet.epochs=$E --set models.fastnet.stem_width=24 --set "models.fastnet.widths=[64,256,256]"
python3 train.py --model resnet18 $C --set train.resnet18.epochs=2
python3 train.py --model mobilenetv3 $C --set train.mobilenetv3.epochs=2
python3 train.py --model shufflenet $C --set train.shufflenet.epochs=2
python3 distill.py $C --set train.mobilenetv3.epochs=1
cp "$D/results.csv" "${OUT:-$D}/trials_results.csv" 2>/dev/null || true
