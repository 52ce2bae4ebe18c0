#!/bin/bash
# The v2 study on the lent GPU (issue 11): every reproduce.sh stage, then the per-kernel table,
# the GPU tests and the packing of what the kit commits, as ONE background job that outlives a
# device call (started in its own process session: the lent machine keeps it while it is warm),
# so no stage is cut by the 10-min command limit.  Outputs live under /root/study.
#
#   bash tools/study_gpu.sh start [TAR.GZ]   # the repo (or that git archive) to /root/study/repo, start the job
#   bash tools/study_gpu.sh wait SECONDS     # follow the job up to SECONDS (or its end), then pack
#                                            # what exists into $OUT (results, logs, checkpoints)
#   bash tools/study_gpu.sh job              # (what start runs) the stages in order
#   JOB=table_job bash tools/study_gpu.sh start  # instead: the table + ablation on the committed F / F85
# The lent machine's .git is the session start's: pass the commit being run, copied from
# `git rev-parse --short=12 HEAD` here (never typed), as KIT_GIT_COMMIT=<sha> before `start`.
#
# Stages and their logs (results/logs/ once committed): train.log, front.log, bench.log
# (`sh reproduce.sh <stage>`, each with its wall time on its last line), test_gpu.log,
# kernels.log (tools/kernel_profile.py: F's per-kernel table, ours vs cuDNN).
set -o pipefail
R=/root/study
cmd=$1; shift

setup() {  # the repo copy, the data, the results file and the card; S = the path overrides
  cd "$R/repo" || exit 2
  mkdir -p "$R/logs" data && ln -sf /root/cifar10.npz data/cifar10.npz
  cp results/results.csv "$R/results.csv"          # earlier rows kept; the header is upgraded
  S=(--set "paths.checkpoints=$R/ckpt" --set "paths.manifest=$R/ckpt/manifest.json" --set "paths.results=$R/results.csv")
  card=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)
}

step() {  # name, command...: run, log, time; on failure stop the job (unless GO_ON is set)
  local name=$1; shift; echo "stage $name started $(date -u +%H:%M:%S)" >> "$R/progress"; local t=$(date +%s)
  PYTHONUNBUFFERED=1 "$@" > "$R/logs/$name.log" 2>&1; local rc=$?
  echo "$name: wall $(( $(date +%s) - t )) s on $card (exit $rc)" | tee -a "$R/logs/$name.log" >> "$R/progress"
  [ $rc -eq 0 ] || [ -n "${GO_ON:-}" ] || { echo "FAILED $name" >> "$R/progress"; echo "$rc" > "$R/done"; exit "$rc"; }
}

job() {  # every reproduce.sh stage, then F's per-kernel table and the GPU tests
  setup
  S+=(--set "paths.final_model=$R/final_model.pth" --set "paths.f85_model=$R/f85_model.pth"
      --set "paths.front_selection=$R/front_selection.json")
  for stage in train front bench; do
    step "$stage" env LATENCY_RAW="$R/latency_raw.npz" sh reproduce.sh "$stage" "${S[@]}"
  done
  cp "$R/final_model.pth" checkpoints/final_model.pth && cp "$R/f85_model.pth" checkpoints/f85_model.pth
  GO_ON=1 step test_gpu python3 -m pytest -q tests/test_gpu.py
  GO_ON=1 step kernels python3 tools/kernel_profile.py --out "$R/kernels" "${S[@]}"
  echo 0 > "$R/done"
}

table_job() {  # the table + ablation in one invocation, on the committed F / F85 (front already benched)
  setup
  step train sh reproduce.sh train "${S[@]}"
  # F's and F85's other front seeds (their seed-42 files are the committed checkpoints, registered as such)
  step front_seeds python3 train.py --front AB94,t3 --set "front.seeds=[1,2]" "${S[@]}"
  step register python3 -c "import sys, os, utils; from config import load_config; cfg = load_config(None, [a for a in sys.argv[1:] if a != '--set'])
for tag, f in (('front_AB94_s42', 'checkpoints/final_model.pth'), ('front_t3_s42', 'checkpoints/f85_model.pth')):
    utils.update_manifest(cfg, tag, {'path': os.path.abspath(f), 'model': 'fastnet', 'script': 'committed file'})
print('registered')" "${S[@]}"
  step eval python3 eval.py --variant F "${S[@]}"
  step bench python3 bench.py --variant all --raw "$R/latency_raw.npz" "${S[@]}"
  step kernels python3 tools/kernel_profile.py --out "$R/kernels" "${S[@]}"
  echo 0 > "$R/done"
}

pack() {  # at most 8 files of <= 16 MB come back through $OUT
  cd "$R" || return
  cp ckpt/manifest.json manifest.json 2>/dev/null
  tar czf "$OUT/study.tar.gz" results.csv progress logs front_selection.json latency_raw.npz kernels manifest.json 2>/dev/null
  for f in final_model.pth f85_model.pth; do
    [ -f "$f" ] && split -b 15M -d "$f" "$OUT/$f.part"
  done
  ls -la "$OUT"
}

case "$cmd" in
  start)  # [TARBALL]: a `git archive` of the commit to run (else this working copy as it is)
    rm -rf "$R" && mkdir -p "$R/repo"
    if [ -n "$1" ]; then tar xzf "$1" -C "$R/repo"; else cp -r "$PWD/." "$R/repo"; fi
    setsid nohup bash "$R/repo/tools/study_gpu.sh" "${JOB:-job}" > "$R/job.out" 2>&1 < /dev/null &
    sleep 2; echo "study job started (pid $!), log $R/progress" ;;
  job) job ;;
  table_job) table_job ;;
  wait)
    end=$(( $(date +%s) + ${1:-540} ))
    while [ ! -f "$R/done" ] && [ "$(date +%s)" -lt "$end" ]; do sleep 10; done
    cat "$R/progress" 2>/dev/null
    for f in "$R"/logs/*.log; do echo "== $f (tail)"; grep -v " epoch " "$f" | tail -8; done
    # pack what exists every time: the machine may go back (30 min held) before the job ends
    if [ -f "$R/done" ]; then echo "study over, exit $(cat "$R/done")"; else echo "study still running"; fi
    pack ;;
  *) echo "usage: bash tools/study_gpu.sh start | wait SECONDS | job" >&2; exit 2 ;;
esac
