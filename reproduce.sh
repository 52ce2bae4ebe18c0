#!/bin/sh
# Reproduce the whole study on one CUDA GPU, from scratch, stage by stage; each stage's output
# goes to results/logs/<stage>.log, ending with its wall time.
#
#   sh reproduce.sh            # every stage below, in order (chain only when asked for)
#   sh reproduce.sh tiles      # tune the Triton kernels' tiles for this GPU -> results/tiles.json
#   sh reproduce.sh train      # B2 (ResNet-18), B1 (MobileNetV3-small), D1 (distilled from B2)
#   sh reproduce.sh front      # every front shape x front.seeds on the 45k split, benched on the
#                              # 5k validation split; front.py chooses F and F85
#                              # (= front-train, then front-bench)
#   sh reproduce.sh final      # F's and F85's shapes x final.seeds on all 50k; ships the first seed
#   sh reproduce.sh chain      # F's and F85's tiles tuned inside their own end-to-end call
#                              # -> whole-net entries of results/tiles.json (a measured
#                              # alternative: it found nothing beyond the card's drift)
#   sh reproduce.sh bench      # eval F, then ONE bench invocation: table + ablation + front,
#                              # and the per-kernel profile of F
#   sh reproduce.sh report     # results/final_table.md, checkpoints/README.md, figures, rapport.pdf
#   sh reproduce.sh bench --set bench.runs=3     # extra args go to every script of the stage
#
# The data is found as the Quick start says (data/cifar10.npz, else ../shared/cifar10 unpacked).
# The front and final stages replace the selection record and the shipped models (--force).
set -e
stage=${1:-all}
[ $# -gt 0 ] && shift
PY=${PYTHON:-python3}
case "$stage" in
  all|tiles|train|front|front-train|front-bench|final|chain|bench|report) ;;
  *) echo "error: reproduce.sh: unknown stage '$stage' (all, tiles, train, front, front-train, front-bench," \
          "final, chain, bench or report)" >&2
     exit 2 ;;
esac
mkdir -p results/logs

run() {  # run NAME: the stage's commands (stage_NAME) with their output and wall time in its log
  log=results/logs/$1.log
  t0=$(date +%s)
  echo "== $1: $(date -u +%Y-%m-%dT%H:%M:%SZ)" > "$log"
  if "stage_$(echo "$1" | tr - _)" "$@" >> "$log" 2>&1; then rc=0; else rc=$?; fi
  echo "== $1: wall time $(( $(date +%s) - t0 )) s, exit $rc" >> "$log"
  tail -n 3 "$log"
  return $rc
}

# each stage stops at its first failing command (&&: a function run under `if` ignores set -e)
stage_tiles()       { shift; $PY tools/kernel_tune.py "$@"; }
stage_train()       { shift; $PY train.py --model resnet18 "$@" && $PY train.py --model mobilenetv3 "$@" &&
                      $PY distill.py "$@"; }
stage_front_train() { shift; $PY train.py --front "$@"; }
stage_front_bench() { shift; $PY bench.py --variant front "$@" && $PY front.py --force "$@"; }
stage_final()       { shift; $PY train.py --final-runs --force "$@"; }
stage_chain()       { shift; $PY tools/chain_tune.py "$@"; }
stage_bench()       { shift; $PY eval.py --variant F "$@" &&
                      $PY bench.py --variant all,front --raw results/latency_raw.npz "$@" &&
                      $PY tools/kernel_profile.py --out results/kernel_profile.json "$@"; }
stage_report()      { shift; $PY report/build.py; }

for s in tiles train front-train front-bench final chain bench report; do
  case "$stage" in
    "$s") run "$s" "$@" ;;
    all) [ "$s" = chain ] || run "$s" "$@" ;;
    front) case "$s" in front-*) run "$s" "$@" ;; esac ;;
  esac
done
