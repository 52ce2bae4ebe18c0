"""Recover the timing of a bench.py invocation that was cut before it wrote its rows (the lent
GPU went back mid-run): every `run i/N VARIANT mean .. p50 .. p95 ..` line of its log is a
finished timed run of 300 calls, so the medians of run medians and the speedup vs the reference
with its bootstrap interval (utils.speedup_interval, over runs) can be computed from the log.
Nothing else is recovered: no GPU-event or pipelined time, no accuracy the log does not print.

    python tools/bench_log.py results/logs/bench_cut.log [more logs] --csv results/bench_cut_runs.csv \
        --md results/bench_cut_summary.md
"""
import argparse
import csv
import os
import re
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import utils  # noqa: E402

HEAD = re.compile(r"bench: (bench-\S+) on cuda \(([^)]+)\), torch (\S+), variants ([^;]+); (\d+) runs x \((\d+) warm-up \+ (\d+) timed\)")
RUN = re.compile(r"^\s+run (\d+)/(\d+) (\S+)\s+mean ([\d.]+) ms\s+p50 ([\d.]+)\s+p95 ([\d.]+)")
ACC = re.compile(r"^\s+acc (\S+)\s+([\d.]+)%")


def parse(path):
    """{invocation, gpu, torch, variants, iters, runs: [(run, variant, mean, p50, p95)], acc: {v: %}}."""
    out = {"log": path, "runs": [], "acc": {}}
    for line in open(path):
        m = HEAD.search(line)
        if m:
            out.update(invocation=m[1], gpu=m[2], torch=m[3], variants=[v.strip() for v in m[4].split(",")],
                       planned_runs=int(m[5]), iters=int(m[7]))
        m = RUN.match(line)
        if m:
            out["runs"].append((int(m[1]), m[3], float(m[4]), float(m[5]), float(m[6])))
        m = ACC.match(line)
        if m:
            out["acc"][m[1]] = float(m[2])
    if "invocation" not in out:
        sys.exit(f"error: {path} has no bench header line (is it a bench.py log?)")
    return out


def summary(b, reference="B1"):
    """Per variant: complete runs, median of run p50s, p95 of run p95s, speedup p50 [95 % CI]."""
    full = {r for r in range(1, b["planned_runs"] + 1) if len([x for x in b["runs"] if x[0] == r]) == len(b["variants"])}
    per = {v: [x for x in b["runs"] if x[1] == v and x[0] in full] for v in b["variants"]}
    ref = [np.array([x[3]]) for x in per.get(reference, [])]
    rows = []
    for v, xs in per.items():
        runs = [np.array([x[3]]) for x in xs]
        sp = utils.speedup_interval(ref, runs) if ref and runs else (None, None, None)
        rows.append({"variant": v, "runs": len(xs), "p50_ms": float(np.median([x[3] for x in xs])),
                     "mean_ms": float(np.mean([x[2] for x in xs])), "worst_run_p95_ms": max(x[4] for x in xs),
                     "speedup_p50": sp[0], "ci_low": sp[1], "ci_high": sp[2], "acc": b["acc"].get(v)})
    return rows, len(full)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("logs", nargs="+")
    ap.add_argument("--csv", help="every parsed run line")
    ap.add_argument("--md", help="the summary table (markdown)")
    a = ap.parse_args()
    md, allruns = [], []
    for p in a.logs:
        b = parse(p)
        rows, n_full = summary(b)
        allruns += [dict(invocation=b["invocation"], gpu=b["gpu"], run=r, variant=v, mean_ms=m, p50_ms=q, p95_ms=w)
                    for r, v, m, q, w in b["runs"]]
        md += [f"## {b['invocation']} ({b['gpu']}, torch {b['torch']}), from `{p}`", "",
               f"Cut before it wrote its rows: {n_full} of {b['planned_runs']} interleaved runs complete "
               f"(x {b['iters']} timed calls); medians over those runs. Accuracy only where the log printed it.", "",
               "| variant | runs | p50 ms | mean ms | worst run p95 ms | speedup p50 vs B1 [95 % CI] | CI half-width | acc % |",
               "|---|---|---|---|---|---|---|---|"]
        for r in rows:
            sp = (f"{r['speedup_p50']:.2f}x [{r['ci_low']:.2f}-{r['ci_high']:.2f}]" if r["speedup_p50"] else "–")
            hw = (f"{100 * max(r['speedup_p50'] - r['ci_low'], r['ci_high'] - r['speedup_p50']) / r['speedup_p50']:.1f} %"
                  if r["speedup_p50"] else "–")
            md.append(f"| {r['variant']} | {r['runs']} | {r['p50_ms']:.4f} | {r['mean_ms']:.4f} | "
                      f"{r['worst_run_p95_ms']:.4f} | {sp} | {hw} | {r['acc'] if r['acc'] is not None else '–'} |")
        md.append("")
    if a.csv:
        with open(a.csv, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(allruns[0]))
            w.writeheader()
            w.writerows(allruns)
    text = "# Bench invocations recovered from their logs (tools/bench_log.py)\n\n" + "\n".join(md)
    if a.md:
        open(a.md, "w").write(text)
    print(text)


if __name__ == "__main__":
    main()
