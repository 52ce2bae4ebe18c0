"""The report's facts: results.csv read once, the invocation(s) chosen, every number computed once.

Figures and layout only format what gather() returns; nothing here draws or writes files.
The only figures typed here are the published anchors (ANCHORS), each with its source.
"""
import glob
import json
import os
import re
import sys
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
from config import config_hash, load_config  # noqa: E402

RES = os.path.join(ROOT, "results")
BASELINES = ("B1", "B2", "O1", "O2", "O3", "D1")  # one invocation for all: their speedups share one B1
TABLE_IDS = BASELINES + ("F", "F85", "AB94")
ABLATION_IDS = ("O2d", "F_fp32", "F_fp16", "F_cl", "F_fold", "F_fuse", "F_graph", "F_compile",
                "F_cudnn", "F_kern", "F85_cudnn")
STEP_CHAIN = ("F_fp32", "F_fp16", "F_cl", "F_fold", "F_fuse", "F_graph")  # one inference-path step each
REQUIRED_COLS = ("script", "device", "invocation", "variant", "timestamp")
# read when present; a results.csv written before they existed gets them empty ("not measured")
OPTIONAL_COLS = ("gpu", "torch", "cuda", "driver", "runs", "iters", "config_hash", "label", "model", "acc", "acc_mean",
                 "acc_std", "acc_seeds", "front", "tta", "lat_p50_ms", "lat_p95_ms", "cv_pct", "gpu_lat_p50_ms",
                 "gpu_pipelined_ms", "e2e_p50_ms", "size_mb", "speedup_p50", "speedup_ci_low", "speedup_ci_high",
                 "run_p50s_ms", "train_time_s", "epochs", "checkpoint", "kernels")
# Published figures cannot come from our rows; they are the only typed numbers, with their sources
# (../shared/plan/references.md).
ANCHORS = [
    {"what": "airbench94, published", "acc": 94.01, "lat_ms": None, "train_s": 2.59, "hw": "NVIDIA A100",
     "note": "Muon variant (airbench94_muon.py), training time to 94 %",
     "source": "arXiv 2404.00498; github KellerJordan/cifar10-airbench"},
    {"what": "DAWNBench inference record", "acc": 94.20, "lat_ms": 0.1345, "train_s": None,
     "hw": "ResNet-8, TensorRT INT8", "note": "batch 1, host-timed including the host-to-device copy",
     "source": "github stanford-futuredata/dawn-bench-entries (CIFAR10/inference)"},
]

# Goals the study set itself (not measurements): the report says how far the data are from them.
GOALS = {"lat_ms": {"value": 0.040, "what": "F's batch-1 host p50",
                    "source": "issue 10 (README.md: 'the 0.040 ms goal')"},
         "halfwidth_pct": {"value": 3.0, "what": "speedup interval half-width", "source": "issue 8"}}


class ReportError(Exception):
    """A one-line reason the report cannot be built (build.py prints it and exits 2)."""


@dataclass
class Facts:
    rows: pd.DataFrame                 # results.csv, as read (once)
    cfg: object                        # config.yaml, loaded
    mode: str                          # "single" (the front invocation holds every row) or "partial"
    invs: pd.DataFrame                 # the front invocation (one line): timestamp, gpu, torch, ...
    table: pd.DataFrame                # TABLE_IDS rows (index = ID), results.csv columns + computed ones
    ablation: pd.DataFrame
    front: pd.DataFrame                # the front points of the front invocation
    front_inv: str                     # the invocation whose rows are used (the complete bench, else front.py's)
    selection: dict
    train: pd.DataFrame                # train/distill rows up to the baselines' invocation (newest per label)
    kernels: dict                      # the cuDNN vs ours per-kernel json (kernel_bench.py)
    hash_check: dict
    older: pd.DataFrame = None         # the other GPU invocations of results.csv (not used)
    kernel_options: list = None        # tools/kernel_paths.py's rows (kernel_option_logs)
    gpu_tests: dict = field(default_factory=dict)   # the last tests/test_gpu.py run (gpu_test_log)
    select_inv: str = ""               # the invocation front.py chose F and F85 from
    tta_kernels: dict = field(default_factory=dict)  # F's shape through our kernels (kernel_tta.json)
    recovered: dict = field(default_factory=dict)    # cut benches' timing from their logs
    rec: pd.DataFrame = None           # the used cut invocation's table + ablation rows
    timing: pd.DataFrame = None        # what the prose compares latencies on: rec, else the complete rows
    timing_src: str = ""
    n: dict = field(default_factory=dict)  # derived quantities for the prose (None when not measurable)
    sources: list = field(default_factory=list)  # files read besides results.csv


# ============================================================================= reading
def read_results(path):
    """results.csv as a DataFrame, or ReportError (one line, not a pandas traceback)."""
    try:
        d = pd.read_csv(path, dtype={"front": str, "tta": str, "variant": str})
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        msg = " ".join(str(e).split()) or type(e).__name__
        raise ReportError(f"cannot read {path} ({type(e).__name__}: {msg}); point --results at the kit's "
                          "results.csv") from None
    missing = [c for c in REQUIRED_COLS if c not in d.columns]
    if missing:
        raise ReportError(f"{path} is not a results.csv of this kit (no column {missing[0]})")
    for c in OPTIONAL_COLS:
        if c not in d.columns:
            d[c] = np.nan
    return d


def is_front(v):
    return v.astype(str).str.startswith("P_")


def gpu_bench(d):
    b = d[(d.script == "bench") & (d.device == "cuda")]
    if b.empty:
        raise ReportError("results.csv has no GPU bench rows: run `sh reproduce.sh` on a GPU first")
    return b


# ============================================================================= which invocation
def inv_summary(bench):
    """One line per GPU bench invocation, oldest first: what it holds."""
    out = []
    for inv, g in bench.groupby("invocation", sort=False):
        out.append({"invocation": inv, "timestamp": g.timestamp.min(), "variants": set(g.variant),
                    "gpu": g.gpu.iloc[0], "torch": g.torch.iloc[0], "cuda": g.cuda.iloc[0], "driver": g.driver.iloc[0],
                    "runs": g.runs.max(), "iters": g.iters.max(), "hashes": sorted(set(g.config_hash.dropna()))})
    return pd.DataFrame(out).sort_values("timestamp", kind="stable").reset_index(drop=True)


def row_names(sel):
    """ID -> the results.csv variant that holds it in the front invocation: F and F85 are front.py's
    points (P_<shape>[_flip]), AB94 the front's AB94 point.  Rows named "F" / "F85" of other
    invocations benched other files (an older F) and are never used."""
    return {"F": sel["F"]["variant"], "F85": sel["F85"]["variant"], "AB94": "P_AB94"}


def front_invocation(sel, s):
    """The invocation front.py chose F and F85 from (results/front_selection.json)."""
    inv = sel["F"].get("invocation")
    if inv != sel["F85"].get("invocation"):
        raise ReportError(f"front_selection.json names two invocations (F: {inv}, F85: {sel['F85'].get('invocation')})")
    if inv not in set(s.invocation):
        raise ReportError(f"front_selection.json's invocation {inv} has no GPU bench rows in results.csv: "
                          "run `python front.py` on the results.csv the report reads")
    return inv


def complete_invocation(bench, s, sel, front_inv, cfg_hash):
    """The newest invocation, benched at or after front.py's and under config.yaml's hash, that holds
    every table and ablation variant and every front point of front.py's invocation, its F / F85
    rows being front.py's points (the row notes name the shape; same TTA mode): issue 11's one
    bench.  None if there is none (then the front invocation's rows, and a recovered cut bench)."""
    t0 = s.set_index("invocation").timestamp[front_inv]
    points = set(bench[(bench.invocation == front_inv) & is_front(bench.variant)].variant)
    need = set(TABLE_IDS) | set(ABLATION_IDS) | points
    for r in s.iloc[::-1].itertuples():
        if r.timestamp < t0 or r.hashes != [cfg_hash] or not need <= r.variants:
            continue
        rows = {v: pick_row(bench, r.invocation, v) for v in ("F", "F85")}
        if all(f"front shape {sel[v]['front']} " in str(x.notes) and x.tta == sel[v]["tta"] for v, x in rows.items()):
            return r.invocation
    return None


def pick_row(bench, inv, v, names=None):
    """The newest row of ID v in invocation inv, looked up under names[v] when given."""
    g = bench[(bench.invocation == inv) & (bench.variant == (names or {}).get(v, v))]
    return g.iloc[-1] if len(g) else None


# ============================================================================= speedups
def run_p50s(r):
    x = r.get("run_p50s_ms")
    return [float(t) for t in str(x).split(";")] if isinstance(x, str) and x else None


def speedup(bench, r):
    """(speedup p50, low, high, how): bench's own columns; else recomputed with bench's statistic
    (utils.speedup_interval on the run p50s) against the B1 of the row's invocation; else none."""
    if pd.notna(r.get("speedup_p50")):
        return r.speedup_p50, r.speedup_ci_low, r.speedup_ci_high, "bench"
    ref = pick_row(bench, r.invocation, "B1")
    a, b = (run_p50s(ref), run_p50s(r)) if ref is not None else (None, None)
    if not a or not b:
        return np.nan, np.nan, np.nan, "no B1 in its invocation" if ref is None else "no run p50s"
    import utils  # torch comes with it: only for rows benched before bench.py wrote these columns
    sp, lo, hi = utils.speedup_interval([[x] for x in a], [[x] for x in b])
    return sp, lo, hi, "recomputed"


def half_width(sp, lo, hi):
    """The interval's larger side as a percentage of the speedup (tools/bench_log.py's 'CI half-width')."""
    return 100 * max(sp - lo, hi - sp) / sp if pd.notna(sp) and sp else np.nan


def frame(bench, inv, ids, names):
    """The row of each ID present in invocation inv: results.csv columns plus ID and speedup."""
    out = []
    for v in ids:
        r = pick_row(bench, inv, v, names)
        if r is None:
            continue
        r = r.copy()
        r["sp"], r["sp_lo"], r["sp_hi"], r["sp_how"] = speedup(bench, r)
        r["hw"] = half_width(r.sp, r.sp_lo, r.sp_hi)
        r["id"] = v
        r["size_mb"] = r.size_mb if r.get("size_mb", 0) > 0 else np.nan  # the kernel path records 0
        out.append(r)
    return pd.DataFrame(out).set_index("id") if out else pd.DataFrame()


# ============================================================================= recovered timing
def bench_log_module():
    """tools/bench_log.py: the recovered tables use its statistic, not a copy of it."""
    tools = os.path.join(ROOT, "tools")
    if tools not in sys.path:
        sys.path.insert(0, tools)
    import bench_log
    return bench_log


def read_cut_runs(path):
    """results/bench_cut_runs.csv (one line per finished timed run of a cut bench), or None."""
    if not path or not os.path.isfile(path):
        return None
    try:
        d = pd.read_csv(path)
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        raise ReportError(f"cannot read {path} ({type(e).__name__})") from None
    missing = {"invocation", "gpu", "run", "variant", "mean_ms", "p50_ms", "p95_ms"} - set(d.columns)
    if missing:
        raise ReportError(f"{path} is not a bench_cut_runs.csv (no column {sorted(missing)[0]})")
    return d


def cut_summary(g):
    """One cut invocation's runs through bench_log.summary: per variant the complete runs, the
    median of run p50s and the speedup vs B1 with its bootstrap interval over those runs."""
    bl = bench_log_module()
    b = {"planned_runs": int(g.run.max()), "variants": list(dict.fromkeys(g.variant)), "acc": {},
         "runs": list(zip(g.run.astype(int), g.variant, g.mean_ms, g.p50_ms, g.p95_ms))}
    rows, n_full = bl.summary(b)
    t = pd.DataFrame(rows).set_index("variant")
    t["hw"] = [half_width(r.speedup_p50, r.ci_low, r.ci_high) for r in t.itertuples()]
    return t, n_full


def recovered(path, cfg):
    """Every cut invocation of bench_cut_runs.csv summarised; the one used is the newest (invocation
    ids carry their start time) that holds every table and ablation variant."""
    d = read_cut_runs(path)
    if d is None:
        return {}
    invs = {inv: cut_summary(g) for inv, g in d.groupby("invocation", sort=True)}
    need = set(TABLE_IDS + ABLATION_IDS)
    ok = [inv for inv, (t, n) in invs.items() if need <= set(t.index) and n > 0]
    if not ok:
        return {"path": os.path.relpath(path, ROOT), "used": None, "invs": invs}
    used = ok[-1]
    return {"path": os.path.relpath(path, ROOT), "used": used, "invs": invs, "gpu": d[d.invocation == used].gpu.iloc[0],
            "n_full": invs[used][1], "planned": cfg.bench.runs}


def ckpt_tag(cfg, sel, v):
    """The train-row label of variant v's checkpoint: '@tag' as written, '@final' / '@f85' the
    selected front point's first seed (front.py ships that seed's file)."""
    spec = str(cfg.variants[v].checkpoint) if v in cfg.variants else ""
    role = {"@final": "F", "@f85": "F85"}.get(spec)
    if role:
        return f"front_{sel[role]['front']}_s{cfg.front.seeds[0]}"
    return spec[1:] if spec.startswith("@") else None


def recovered_frame(f):
    """The used cut invocation's table + ablation rows, each with an accuracy and where it comes from:
    'path' = all test images through the timed path (a complete row of the front invocation),
    'ckpt' = the checkpoint's FP32 test accuracy at training (results.csv train row), never
    through the timed path."""
    rec = f.recovered
    if not rec.get("used"):
        return pd.DataFrame()
    t = rec["invs"][rec["used"]][0].loc[list(TABLE_IDS + ABLATION_IDS)].copy()
    others = [i for i in rec["invs"] if i != rec["used"]]
    t["other_p50"] = [rec["invs"][others[-1]][0].p50_ms.get(v, np.nan) for v in t.index] if others else np.nan
    acc, src, tag = [], [], []
    for v in t.index:
        # through the path only for the front points behind F / F85 / AB94: the cut bench timed those
        # very files; the baselines it timed were retrained files (same seed), not the front's
        r = row(f, v) if v in row_names(f.selection) else None
        k = ckpt_tag(f.cfg, f.selection, v)
        tr = f.train.loc[k] if k in f.train.index else None
        if r is not None and pd.notna(r.acc):
            acc.append(r.acc), src.append("path"), tag.append(r.variant)
        elif tr is not None:
            acc.append(tr.acc), src.append("ckpt"), tag.append(k)
        else:
            acc.append(np.nan), src.append(""), tag.append(k)
    t["acc"], t["acc_src"], t["acc_of"] = acc, src, tag
    t["label"] = [f.cfg.variants[v].label if v in f.cfg.variants else "" for v in t.index]
    return t


def retrain_check(log_path, train):
    """The table job retrained the baselines' checkpoints before its bench (same seeds): does its
    log print the test accuracies of results.csv's train rows?  {label: (row acc, log acc)}."""
    if not os.path.isfile(log_path):
        return None
    pat = re.compile(r"^(?:train|distill): (\S+) best epoch .* test ([\d.]+)%")
    out = {}
    for line in open(log_path):
        m = pat.match(line)
        if m and m[1] in train.index:
            out[m[1]] = (float(train.loc[m[1]].acc), float(m[2]))
    return out


# ============================================================================= front
def pareto(fr):
    """Points no faster point beats in seed-mean accuracy, fastest first."""
    keep, best = [], -np.inf
    for v, r in fr.sort_values("lat_p50_ms").iterrows():
        if r.acc_mean > best:
            keep.append(v)
            best = r.acc_mean
    return keep


def front_frame(bench, inv, cfg, train):
    fr = bench[(bench.invocation == inv) & is_front(bench.variant) & bench.acc_mean.notna()].copy()
    fr = fr.set_index("variant")
    shapes = cfg.front.shapes
    fr["widths"] = [list(shapes[s].widths) if s in shapes else None for s in fr.front]
    fr["depths"] = [list(shapes[s].depths) if s in shapes else None for s in fr.front]
    fr["n_seeds"] = [len(str(x).split(";")) if isinstance(x, str) else 1 for x in fr.acc_seeds]
    # the timed checkpoint's own training time (the first seed's file, the one shipped); the seed
    # mean of the train rows only where the bench row does not carry it
    t = train[train.front.notna()].groupby("front").train_time_s.mean()
    fr["train_s"] = [r.train_time_s if pd.notna(r.train_time_s) else t.get(r.front, np.nan) for r in fr.itertuples()]
    fr["on_front"] = fr.index.isin(pareto(fr))
    return fr


def fastest_at(fr, min_acc):
    ok = fr[fr.acc_mean >= min_acc].sort_values("lat_p50_ms")
    return ok


# ============================================================================= kernels json
def default_kernels_path(slack_s=120):
    """Newest results/kernels/*/kernel_bench.json: by modification time, except that files written
    within slack_s of the newest (a fresh checkout writes them all at once) are ordered by name."""
    c = glob.glob(os.path.join(RES, "kernels", "*", "kernel_bench.json"))
    if not c:
        return None
    newest = max(os.path.getmtime(p) for p in c)
    return max(p for p in c if os.path.getmtime(p) >= newest - slack_s)


def kernel_paths(path):
    """{path name: p50, p95, gpu, pipe, kern [(kernel, µs)], sum µs} of a kernel_bench.json or a
    kernel_tta.json (the same per-path format), or one line naming the file it cannot read."""
    try:
        k = json.load(open(path))
    except (OSError, ValueError) as e:
        raise ReportError(f"cannot read {path} ({type(e).__name__}: {e})") from None
    return {n: {"p50": r["p50"], "p95": r["p95"], "gpu": r.get("gpu"), "pipe": r.get("pipe"),
                "kern": r.get("kernels") or [], "sum": sum(t for _, t in r.get("kernels") or [])}
            for n, r in k.items()}


def kernel_facts(path):
    """Per-path timings (µs) of tools/kernel_bench.py's json, with the lines of its log that say
    which machine and which weights."""
    if not path:
        return {}
    paths = kernel_paths(path)
    timed = [n for n, r in paths.items() if r["gpu"] is not None and "again" not in n]
    ours = [n for n in timed if n.startswith("kernels")]
    # profiler durations under PDL include the wait for the previous kernel: per-kernel µs from a
    # path without PDL when there is one
    plain = [n for n in ours if "PDL" not in n] or ours
    again = [(n, r["p50"], paths[f"{n} (again)"]["p50"]) for n, r in paths.items() if f"{n} (again)" in paths]
    poll = [(n, r["p50"], paths[n[5:]]["p50"]) for n, r in paths.items() if n.startswith("poll ") and n[5:] in paths]
    log = os.path.join(os.path.dirname(path), "kernel_bench.log")
    lines = open(log).read().splitlines() if os.path.isfile(log) else []
    weights = [ln for ln in lines if "random weights" in ln or " folded:" in ln]
    return {"path": os.path.relpath(path, ROOT), "paths": paths, "cudnn": "cudnn graph" if "cudnn graph" in paths
            else None, "ours": plain[0] if plain else None, "best": min(ours, key=lambda n: paths[n]["p50"])
            if ours else None, "again": again, "poll": poll, "env": lines[0] if lines else None,
            "weights": weights[0].strip() if weights else None}


def gpu_test_log(path=None):
    """results/logs/test_gpu.log (tests/test_gpu.py on the lent GPU, run with -rP): pytest's count,
    the commit and GPU of its header, its 'note:' line (what the person who ran it adds, e.g. an
    earlier run at the same commit), and the 10k-image line of the F_kern test; {} without a log."""
    path = path or os.path.join(RES, "logs", "test_gpu.log")
    if not os.path.isfile(path):
        return {}
    text = open(path).read()
    grab = lambda pat: (re.search(pat, text, re.M) or [None, None])[1]  # noqa: E731
    return {"log": os.path.relpath(path, ROOT), "passed": grab(r"^=*\s*(\d+ passed[^=\n]*?)\s*=*$"),
            "failed": grab(r"(\d+ failed)"), "commit": grab(r"^commit (\S+)"), "gpu": grab(r"\| (NVIDIA [^\n|]+)$"),
            "f_kern": grab(r"^(F_kern vs FP32 on .*?);"), "note": grab(r"^note: (.*)$")}


def kernel_option_logs():
    """results/kernels/*/kernel_paths*.log (tools/kernel_paths.py): F's, F85's paths with heuristic,
    tuned or wide tiles, PDL, the stem fused, layers paired; one row per path and log, in log order.
    call: the lease's folder, and the log's own suffix (kernel_paths_<x>.log) where a lease has several."""
    out, logs = [], sorted(glob.glob(os.path.join(RES, "kernels", "*", "kernel_paths*.log")))
    per_lease = Counter(os.path.dirname(p) for p in logs)
    for p in logs:
        lease = os.path.basename(os.path.dirname(p))
        suffix = os.path.basename(p)[len("kernel_paths"):-len(".log")].strip("_")
        call = f"{lease} {suffix}" if per_lease[os.path.dirname(p)] > 1 and suffix else lease
        lines = open(p).read().splitlines()
        head = next((i for i, ln in enumerate(lines) if ln.startswith("path ")), None)
        for ln in lines[head + 1:] if head is not None else []:
            m = re.match(r"^(.+?)\s{2,}([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+\S+\s+(.*)$", ln)
            if not m:
                continue
            out.append({"call": call, "lease": lease, "path": m[1].strip(), "p50": float(m[2]), "p95": float(m[3]),
                        "gpu": float(m[4]), "pipe": float(m[5]), "notes": m[6].strip(), "log": os.path.relpath(p, ROOT)})
    return out


def kernel_count(notes):
    """The '; N kernels' of a kernel path's row note (kernel_paths logs from gpu6 on), else None."""
    m = re.search(r"; (\d+) kernels", notes)
    return int(m[1]) if m else None


OPTION_DELTAS = ("+pdl", "+stem", "+pairs", "+stem +pairs")  # against tuned tiles alone; "wide" likewise


def option_effects(rows):
    """Per kernel_paths log and base path (F, F@none, F85): host p50 with heuristic tiles (where the
    log has them), with tuned tiles, and each option against tuned tiles alone (µs, negative =
    faster).  f_then: the log holds 'F@none' rows, i.e. it was made while F carried flip TTA (an
    earlier file than today's F)."""
    out = []
    for call in dict.fromkeys(r["call"] for r in rows):
        g = {r["path"]: r for r in rows if r["call"] == call}
        for base in dict.fromkeys(p.split(" ")[0] for p in g):
            h, t = g.get(f"{base} heuristic"), g.get(f"{base} tuned")
            if not t:
                continue
            e = {"call": call, "lease": t["lease"], "log": t["log"], "base": base, "heur": h["p50"] if h else None,
                 "tuned": t["p50"], "f_then": any(p.startswith("F@none ") for p in g)}
            e["kernels"] = {"tuned": kernel_count(t["notes"])}
            for opt in OPTION_DELTAS:
                if f"{base} tuned {opt}" in g:
                    e[opt] = g[f"{base} tuned {opt}"]["p50"] - t["p50"]
                    e["kernels"][opt] = kernel_count(g[f"{base} tuned {opt}"]["notes"])
            if f"{base} wide" in g:
                e["wide"] = g[f"{base} wide"]["p50"] - t["p50"]
            out.append(e)
    return out


def default_tta_kernels_path():
    """Newest results/kernels/*/kernel_tta.json (tools/kernel_gpu.sh's TTA / kernel-count table)."""
    c = sorted(glob.glob(os.path.join(RES, "kernels", "*", "kernel_tta.json")), key=os.path.getmtime)
    return c[-1] if c else None


def option_deltas(paths, prefix):
    """Each fewer-kernel option (fuse_stem '+stem', fuse_pairs '+pairs', both) against the same path
    without it: host p50, GPU and pipelined µs, option minus base (negative = the option is faster)."""
    out = []
    for name, r in paths.items():
        if not name.startswith(prefix) or " +" not in name or "PDL" in name:
            continue
        base, opt = name.split(" +", 1)
        if base in paths:
            b = paths[base]
            out.append({"shape": prefix, "base": base[len(prefix) + 1:], "opt": "+" + opt, "kernels": len(r["kern"]),
                        "d_host": r["p50"] - b["p50"], "d_gpu": r["gpu"] - b["gpu"], "d_pipe": r["pipe"] - b["pipe"]})
    return out


def tta_kernel_facts(path, sel):
    """F's shape through our kernels (kernel_tta.json): no TTA, TTA through the old TTANet path and
    TTA fused into the kernels (F's path); the fused TTA's gain and the fewer-kernel options for
    every shape in the file."""
    if not path:
        return {}
    paths = kernel_paths(path)
    prefixes = [n[:-len(" none")] for n in paths if n.endswith(" none")]  # "AB94 (random)", "w7 (checkpoint)"
    tta = sel["F"]["tta"] if sel["F"]["tta"] != "none" else "flip"
    gains = [{"shape": p, "old": paths[f"{p} {tta} TTANet (old)"]["p50"], "fused": paths[f"{p} {tta} fused"]["p50"]}
             for p in prefixes if f"{p} {tta} TTANet (old)" in paths and f"{p} {tta} fused" in paths]
    mine = [p for p in prefixes if p.split(" ")[0] == sel["F"]["front"]]
    out = {"path": os.path.relpath(path, ROOT), "paths": paths, "tta": tta, "gains": gains,
           "options": [o for p in prefixes for o in option_deltas(paths, p)], "prefix": mine[0] if mine else None}
    if mine:
        p = mine[0]
        out["rows"] = [n for n in (f"{p} none", f"{p} {tta} TTANet (old)", f"{p} {tta} fused") if n in paths]
        out["random"] = "random" in p  # the log's own words: random weights or a checkpoint
    return out


# ============================================================================= checks
def check_hashes(invs, cfg_hash):
    """Rows measured under another configuration than config.yaml's are named, not hidden."""
    bad = invs[invs.hashes.apply(lambda h: h != [cfg_hash])]
    by = {}
    for r in bad.itertuples():
        by.setdefault(", ".join(r.hashes) or "no hash", []).append(r.invocation)
    lines = [f"warning: config hash differs: config.yaml hashes to {cfg_hash}; the rows of invocation "
             f"{', '.join(t)} carry {h}" for h, t in by.items()]
    return {"config": cfg_hash, "ok": not lines, "warnings": lines, "n_bad": len(bad)}


def study_train(d, before):
    """Train/distill rows on the GPU up to a timestamp, newest per label."""
    t = d[d.script.isin(["train", "distill"]) & (d.device == "cuda") & (d.timestamp <= before)]
    return t.groupby("label").tail(1).set_index("label", drop=False)


def load_selection(path):
    try:
        return json.load(open(path))
    except (OSError, ValueError) as e:
        raise ReportError(f"cannot read {path} ({type(e).__name__}: {e}); run `python front.py`") from None


def rule_check(fr, sel, cfg):
    """front.py's rule applied to the front used here: does it pick the shipped points?"""
    if fr.empty:
        return None
    import front  # the selection rule itself, not a copy of it
    import utils
    try:
        f, f85, _ = front.choose(fr.reset_index(), cfg.front.f_min_acc, cfg.front.f85_min_acc)
    except utils.KitError as e:
        return {"F": None, "F85": None, "why": str(e)}
    return {"F": f.variant, "F85": f85.variant,
            "same": (f.variant, f85.variant) == (sel["F"]["variant"], sel["F85"]["variant"])}


# ============================================================================= gather
def gather(results_csv, kernels_path=None, selection_path=None, config_path=None, cut_runs_path=None,
           tta_kernels_path=None):
    d = read_results(results_csv)
    cfg = load_config(config_path) if config_path else load_config()
    bench = gpu_bench(d)
    s = inv_summary(bench)
    sel_path = selection_path or os.path.join(RES, "front_selection.json")
    sel = load_selection(sel_path)
    select_inv = front_invocation(sel, s)
    front_inv = complete_invocation(bench, s, sel, select_inv, config_hash(cfg))
    names = {} if front_inv else row_names(sel)  # the complete bench's own F / F85 / AB94 rows
    front_inv = front_inv or select_inv
    invs = s[s.invocation == front_inv].reset_index(drop=True)
    table, abl = frame(bench, front_inv, TABLE_IDS, names), frame(bench, front_inv, ABLATION_IDS, names)
    mode = "single" if len(table) == len(TABLE_IDS) and len(abl) == len(ABLATION_IDS) else "partial"
    train = study_train(d, d.timestamp.max())  # newest train row per label: the checkpoints benched last
    ft = d[(d.script == "train") & d.front.notna() & (d.device == "cuda")]
    fr = front_frame(bench, front_inv, cfg, ft[ft.timestamp <= invs.timestamp.iloc[0]].groupby("label").tail(1))
    kp = kernels_path or default_kernels_path()
    tp = tta_kernels_path or default_tta_kernels_path()
    cut = cut_runs_path or os.path.join(RES, "bench_cut_runs.csv")
    f = Facts(rows=d, cfg=cfg, mode=mode, invs=invs, table=table, ablation=abl, front=fr, front_inv=front_inv,
              selection=sel, train=train, kernels=kernel_facts(kp), hash_check=check_hashes(invs, config_hash(cfg)),
              older=s[~s.invocation.isin([front_inv, select_inv])].reset_index(drop=True), select_inv=select_inv,
              tta_kernels=tta_kernel_facts(tp, sel), kernel_options=kernel_option_logs(), gpu_tests=gpu_test_log(),
              recovered=recovered(cut, cfg) if mode == "partial" else {},
              sources=[os.path.relpath(p, ROOT) for p in (sel_path, kp, tp) if p])
    f.rec = recovered_frame(f)
    f.timing = f.rec if len(f.rec) else complete_timing(f)
    f.timing_src = f"the cut bench {f.recovered['used']}" if len(f.rec) else f"invocation {front_inv}"
    if f.recovered.get("path"):
        f.sources.append(f.recovered["path"])
    f.n = derive(f, ft)
    return f


# ============================================================================= derived quantities
def row(f, v):
    """A table or ablation row by ID, or None."""
    for t in (f.table, f.ablation):
        if v in t.index:
            return t.loc[v]
    return None


def ratio(a, b, col="lat_p50_ms"):
    """a / b on a column of two rows of one frame (one invocation)."""
    if a is None or b is None or pd.isna(a.get(col)) or pd.isna(b.get(col)):
        return None
    return {"x": float(a[col] / b[col]), "a": float(a[col]), "b": float(b[col])}


def tta_effect(fr):
    """Per shape: flip TTA's p50 cost (ms) and accuracy gain (points)."""
    by = {(r.front, r.tta): r for _, r in fr.iterrows()}
    pairs = [(s, by[(s, "flip")], by[(s, "none")]) for s, t in by if t == "none" and (s, "flip") in by]
    if not pairs:
        return None
    dl = np.array([a.lat_p50_ms - b.lat_p50_ms for _, a, b in pairs])
    da = np.array([a.acc_mean - b.acc_mean for _, a, b in pairs])
    return {"n": len(pairs), "dlat_med": float(np.median(dl)), "dlat_min": float(dl.min()), "dlat_max": float(dl.max()),
            "dacc_med": float(np.median(da)), "dacc_min": float(da.min()), "dacc_max": float(da.max())}


def runner_up(fr, chosen, min_acc):
    """The next-fastest point meeting the same threshold, and whether the speedup intervals of
    the two overlap (then their latencies are not told apart by this invocation)."""
    ok = fastest_at(fr, min_acc)
    ok = ok[ok.index != chosen]
    if ok.empty or chosen not in fr.index:
        return None
    a, b = fr.loc[chosen], ok.iloc[0]
    overlap = not (a.speedup_ci_low > b.speedup_ci_high or b.speedup_ci_low > a.speedup_ci_high) \
        if pd.notna(a.speedup_ci_low) and pd.notna(b.speedup_ci_low) else None
    return {"v": ok.index[0], "p50": float(b.lat_p50_ms), "acc": float(b.acc_mean), "x": float(b.lat_p50_ms / a.lat_p50_ms),
            "overlap": overlap}


def cluster(fr, tta="none", within=1.1):
    """The no-TTA points within 10 % of the fastest one's p50: 'the small nets sit near X ms'."""
    p = fr[fr.tta == tta].sort_values("lat_p50_ms")
    if p.empty:
        return None
    c = p[p.lat_p50_ms <= within * p.lat_p50_ms.iloc[0]]
    return {"names": list(c.front), "lo": float(c.lat_p50_ms.min()), "hi": float(c.lat_p50_ms.max()),
            "same_depth": len({str(d) for d in c.depths}) == 1,
            "acc_lo": float(c.acc_mean.min()), "acc_hi": float(c.acc_mean.max()), "within": within}


def rec_row(f, v):
    """A row of the timing frame (the recovered cut bench, else the complete rows) by ID, or None."""
    return f.timing.loc[v] if f.timing is not None and v in f.timing.index else None


def complete_timing(f):
    """The complete rows in the recovered frame's columns, for a front invocation that holds every
    variant (then no cut bench is read and the prose compares these)."""
    t = pd.concat([f.table, f.ablation])
    if t.empty:
        return t
    return pd.DataFrame({"p50_ms": t.lat_p50_ms, "speedup_p50": t.sp, "ci_low": t.sp_lo, "ci_high": t.sp_hi,
                         "hw": t.hw, "label": t.label, "acc": t.acc}, index=t.index)


def halfwidths(f, ids=("B2", "O2")):
    """Speedup interval half-widths (%) in the timing frame against issue 8's goal."""
    goal = GOALS["halfwidth_pct"]["value"]
    out = {}
    for v in ids:
        r = rec_row(f, v)
        if r is not None and pd.notna(r.hw):
            out[v] = {"hw": float(r.hw), "over": float(r.hw - goal), "x": float(r.hw / goal)}
    return out


def goal_miss(f):
    """F's host p50 (front invocation) against the latency goal: how far above, in %."""
    F, goal = row(f, "F"), GOALS["lat_ms"]["value"]
    if F is None:
        return None
    F85 = row(f, "F85")
    return {"p50": float(F.lat_p50_ms), "goal": goal, "pct": float(100 * (F.lat_p50_ms / goal - 1)),
            "f85_p50": float(F85.lat_p50_ms) if F85 is not None else None}


def b1_spread(f):
    """B1's speedup-interval half-width in every invocation the report reads: the eager noise."""
    out = [(f.front_inv, float(r.hw)) for r in [row(f, "B1")] if r is not None and pd.notna(r.hw)]
    for inv, (t, _) in (f.recovered.get("invs") or {}).items():
        if "B1" in t.index:
            out.append((inv, float(t.loc["B1"].hw)))
    return out


def params_ratio(f, a="B2", b="B1"):
    """Parameter count of a's checkpoint / b's, from their train rows."""
    ka, kb = ckpt_tag(f.cfg, f.selection, a), ckpt_tag(f.cfg, f.selection, b)
    t = f.train
    if ka in t.index and kb in t.index and pd.notna(t.loc[ka].n_params) and pd.notna(t.loc[kb].n_params):
        return float(t.loc[ka].n_params / t.loc[kb].n_params)
    return None


def shipped(f):
    """What the committed F / F85 files say about themselves (metadata only): their shape and TTA
    mode, when they were made, and whether that is after the front was benched (then the file is
    a retrain of the benched point, not the benched file)."""
    import utils
    from config import resolve_path
    front_ts = f.invs.set_index("invocation").timestamp.get(f.front_inv)
    out = {}
    for role, key in (("F", "final_model"), ("F85", "f85_model")):
        p = resolve_path(f.cfg, f.cfg.paths[key])
        try:
            ck = utils.load_checkpoint(p)
        except utils.KitError as e:  # said in the report, not skipped
            out[role] = {"path": os.path.relpath(p, ROOT), "error": str(e)}
            continue
        kw, sel = ck.get("model_kwargs", {}), f.selection[role]
        cfg_shape = f.cfg.front.shapes.get(sel.get("front"))
        out[role] = {"path": os.path.relpath(p, ROOT), "mb": os.path.getsize(p) / 1e6, "created": ck.get("created"),
                     "tag": ck.get("tag"), "tta": ck.get("tta", "none"), "train_acc": ck.get("test_acc"),
                     "widths": kw.get("widths"), "depths": kw.get("depths"), "kw": kw, "epoch": ck.get("epoch"),
                     "shape_ok": cfg_shape is not None and [list(cfg_shape.widths), list(cfg_shape.depths)]
                     == [list(kw.get("widths", [])), list(kw.get("depths", []))],
                     "after_front": bool(front_ts and str(ck.get("created", "")) > front_ts),
                     "source": (ck.get("selected") or {}).get("source")}
    return out


def kernel_summary(p, src):
    """F's kernel path from one per-kernel file (kernel_paths' format): kernel count, their µs and
    the last three's, the path's timings, and the file."""
    return {"n": len(p["kern"]), "sum": p["sum"], "tail3": sum(x for _, x in p["kern"][-3:]),
            "p50": p["p50"], "gpu": p["gpu"], "pipe": p["pipe"], "src": src}


def derive(f, ft):
    """Every number the prose quotes, computed here once.  Latency comparisons between variants use
    one invocation each: the front invocation's complete rows, or the recovered cut bench."""
    n, R = {}, lambda v: rec_row(f, v)  # noqa: E731
    n["steps"] = [(a, b, ratio(R(a), R(b), "p50_ms")) for a, b in zip(STEP_CHAIN, STEP_CHAIN[1:])
                  if R(a) is not None and R(b) is not None]
    n["f_cudnn"] = ratio(R("F_cudnn"), R("F_kern"), "p50_ms")  # same weights, same invocation
    n["f85_cudnn"] = ratio(R("F85_cudnn"), R("F85"), "p50_ms")
    n["b2_b1"] = ratio(R("B1"), R("B2"), "p50_ms")
    n["b2_b1_params"] = params_ratio(f)
    kd, st = (f.train.loc[k] if k in f.train.index else None
              for k in (ckpt_tag(f.cfg, f.selection, "D1"), ckpt_tag(f.cfg, f.selection, "O1")))
    n["d1_o1_acc"] = float(kd.acc - st.acc) if kd is not None and st is not None else None
    n["halfwidths"], n["goal"], n["b1_spread"] = halfwidths(f), goal_miss(f), b1_spread(f)
    n["retrain"] = retrain_check(os.path.join(RES, "logs", "table_train.log"), f.train) if f.recovered else None
    fr = f.front
    n["tta"] = tta_effect(fr) if len(fr) else None
    n["cluster"] = cluster(fr) if len(fr) else None
    n["pareto"] = list(fr[fr.on_front].sort_values("lat_p50_ms").index) if len(fr) else []
    sel = f.selection
    n["f_up"] = runner_up(fr, sel["F"]["variant"], f.cfg.front.f_min_acc) if len(fr) else None
    n["f85_up"] = runner_up(fr, sel["F85"]["variant"], f.cfg.front.f85_min_acc) if len(fr) else None
    n["rule"] = rule_check(fr, sel, f.cfg)
    n["host_gap_us"] = {v: (float(r.lat_p50_ms - r.gpu_lat_p50_ms) * 1000, float(r.gpu_lat_p50_ms - r.gpu_pipelined_ms) * 1000)
                        for v in ("F", "F85") if (r := row(f, v)) is not None and pd.notna(r.get("gpu_pipelined_ms"))}
    n["shipped"] = shipped(f)
    k = f.kernels
    if k.get("weights"):  # the profile is of F's own file when its log names variant F, F's shape and TTA
        k["of_f"] = (" variant F," in k["weights"] and f"shape {sel['F']['front']}, tta {sel['F']['tta']}"
                     in k["weights"])
    if k.get("cudnn") and k.get("ours"):
        c, o = k["paths"][k["cudnn"]], k["paths"][k["ours"]]
        n["kern"] = {"n_cudnn": len(c["kern"]), "n_ours": len(o["kern"]), "sum_cudnn": c["sum"], "sum_ours": o["sum"],
                     "spread": max((abs(x - y) for name, x, y in k["again"] if name.startswith("kernels")), default=None)}
    t = f.tta_kernels
    if k.get("of_f") and k.get("ours"):
        n["f_kernels"] = kernel_summary(k["paths"][k["ours"]], k["path"])
    elif t.get("rows"):
        n["f_kernels"] = kernel_summary(t["paths"][t["rows"][-1]], t["path"])
    n["opts"] = option_effects(f.kernel_options or [])
    return n
