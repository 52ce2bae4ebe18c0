#!/bin/sh
# Reproduce the whole study on one GPU, from scratch (about 10 minutes on an H100).
#
#   sh reproduce.sh            # train, then benchmark (= sh reproduce.sh train && sh reproduce.sh bench)
#   sh reproduce.sh train      # B2 (ResNet-18), B1 (MobileNetV3-small), D1 (distilled), F (fastnet)
#   sh reproduce.sh bench      # eval F through its path, then every variant x 3 runs -> results.csv
#   sh reproduce.sh bench --set paths.results=/tmp/r.csv     # extra args go to every script
#
# Needs CIFAR-10 at paths.data_npz (python ../shared/cifar10/unpack.py data/cifar10.npz).
# LATENCY_RAW (default results/latency_raw.npz) receives every timed call of the benchmark.
set -e
stage=${1:-all}
[ $# -gt 0 ] && shift
PY=${PYTHON:-python3}
case "$stage" in
  all|train|bench) ;;
  *) echo "error: reproduce.sh: unknown stage '$stage' (all, train or bench)" >&2; exit 2 ;;
esac
if [ "$stage" = all ] || [ "$stage" = train ]; then
  $PY train.py --model resnet18 "$@"          # B2, and the teacher of D1
  $PY train.py --model mobilenetv3 "$@"       # B1, O1, O2, O3
  $PY distill.py "$@"                         # D1: MobileNetV3-small distilled from ResNet-18
  $PY train.py --model fastnet --final "$@"   # F -> paths.final_model
fi
if [ "$stage" = all ] || [ "$stage" = bench ]; then
  $PY eval.py --variant F "$@"
  $PY bench.py --variant all --runs 3 --raw "${LATENCY_RAW:-results/latency_raw.npz}" "$@"
fi
