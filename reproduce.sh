#!/bin/sh
# Reproduce the whole v2 study on one GPU, from scratch (each stage <= 15 min on an H100).
#
#   sh reproduce.sh            # = train, then front, then bench
#   sh reproduce.sh train      # B2 (ResNet-18), B1 (MobileNetV3-small), D1 (distilled)
#   sh reproduce.sh front      # the accuracy-latency front (config.yaml: front): every shape x seed
#                              # trained, benched with and without TTA, then front.py picks F and
#                              # F85 (= front-train, then front-bench)
#   sh reproduce.sh bench      # eval F through its path, then ONE bench invocation of every
#                              # variant (table + ablation + F_kern) and the whole front -> results.csv
#   sh reproduce.sh bench --set paths.results=/tmp/r.csv     # extra args go to every script
#
# Needs CIFAR-10 at paths.data_npz (python ../shared/cifar10/unpack.py data/cifar10.npz).
# LATENCY_RAW (default results/latency_raw.npz) receives every timed call of the benchmark.
set -e
stage=${1:-all}
[ $# -gt 0 ] && shift
PY=${PYTHON:-python3}
case "$stage" in
  all|train|bench|front|front-train|front-bench) ;;
  *) echo "error: reproduce.sh: unknown stage '$stage' (all, train, bench, front, front-train or front-bench)" >&2
     exit 2 ;;
esac
if [ "$stage" = all ] || [ "$stage" = train ]; then
  $PY train.py --model resnet18 "$@"          # B2, and the teacher of D1
  $PY train.py --model mobilenetv3 "$@"       # B1, O1, O2, O3
  $PY distill.py "$@"                         # D1: MobileNetV3-small distilled from ResNet-18
fi
if [ "$stage" = all ] || [ "$stage" = front ] || [ "$stage" = front-train ]; then
  $PY train.py --front "$@"                   # front_<shape>_s<seed> for every shape x front.seeds
fi
if [ "$stage" = all ] || [ "$stage" = front ] || [ "$stage" = front-bench ]; then
  $PY bench.py --variant front "$@"           # every point, each tta mode, seed accuracies through the path
  $PY front.py "$@"                           # F and F85 from those rows -> paths.final_model, paths.f85_model
fi
if [ "$stage" = all ] || [ "$stage" = bench ]; then
  $PY eval.py --variant F "$@"
  # ONE invocation: the table, the ablation (F_kern included) and the whole front again
  $PY bench.py --variant all,front --raw "${LATENCY_RAW:-results/latency_raw.npz}" "$@"
fi
