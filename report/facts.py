"""The report's facts: results.csv read once, the invocation(s) chosen, every number computed once.

Figures and layout only format what gather() returns; nothing here draws or writes files.
The only figures typed here are the published anchors (ANCHORS), each with its source.
"""
import glob
import json
import os
import sys
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


class ReportError(Exception):
    """A one-line reason the report cannot be built (build.py prints it and exits 2)."""


@dataclass
class Facts:
    rows: pd.DataFrame                 # results.csv, as read (once)
    cfg: object                        # config.yaml, loaded
    mode: str                          # "single" (one invocation holds everything) or "fallback"
    invs: pd.DataFrame                 # the invocations used: tag, invocation, timestamp, gpu, roles, ...
    table: pd.DataFrame                # TABLE_IDS rows (index = ID), results.csv columns + computed ones
    ablation: pd.DataFrame
    front: pd.DataFrame                # the front points of the front invocation
    front_inv: str
    selection: dict
    train: pd.DataFrame                # train/distill rows up to the baselines' invocation (newest per label)
    kernels: dict
    hash_check: dict
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
        names = set(g.variant)
        table_ok = set(BASELINES + ("F", "F85")) <= names and bool({"AB94", "P_AB94"} & names)
        out.append({"invocation": inv, "timestamp": g.timestamp.min(), "variants": names, "table": table_ok,
                    "front": bool((is_front(g.variant) & g.acc_mean.notna()).any()), "gpu": g.gpu.iloc[0],
                    "torch": g.torch.iloc[0], "cuda": g.cuda.iloc[0], "driver": g.driver.iloc[0],
                    "runs": g.runs.max(), "iters": g.iters.max(), "hashes": sorted(set(g.config_hash.dropna()))})
    return pd.DataFrame(out).sort_values("timestamp", kind="stable").reset_index(drop=True)


def choose_sources(s):
    """(mode, {ID: invocation}, front invocation).  The newest invocation holding every table
    variant and front points wins; else each ID from the newest invocation holding it, the
    baselines kept together (their speedups are against one B1), the front from the newest
    invocation with front points."""
    full = s[s.table & s.front]
    if len(full):
        inv = full.invocation.iloc[-1]
        return "single", {v: inv for v in TABLE_IDS + ABLATION_IDS}, inv
    src = {}
    base = s[s.variants.apply(lambda x: set(BASELINES) <= x)]
    for v in TABLE_IDS + ABLATION_IDS:
        pool = base if v in BASELINES + ("O2d",) and len(base) else s
        has = pool[pool.variants.apply(lambda x, v=v: v in x)]
        if len(has):
            src[v] = has.invocation.iloc[-1]
    fr = s[s.front]
    front_inv = fr.invocation.iloc[-1] if len(fr) else None
    if "AB94" not in src and front_inv:  # the airbench94 net = the front's AB94 point
        src["AB94"] = front_inv
    return "fallback", src, front_inv


def pick_row(bench, inv, v):
    g = bench[(bench.invocation == inv) & (bench.variant == v)]
    if v == "AB94" and g.empty:
        g = bench[(bench.invocation == inv) & (bench.variant == "P_AB94")]
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


def frame(bench, src, ids, tags):
    """The chosen row of each ID, results.csv columns plus ID, tag, speedup and its origin."""
    out = []
    for v in ids:
        r = pick_row(bench, src[v], v) if v in src else None
        if r is None:
            continue
        r = r.copy()
        r["sp"], r["sp_lo"], r["sp_hi"], r["sp_how"] = speedup(bench, r)
        r["id"], r["tag"] = v, tags[r.invocation]
        r["size_mb"] = r.size_mb if r.get("size_mb", 0) > 0 else np.nan  # the kernel path records 0
        out.append(r)
    return pd.DataFrame(out).set_index("id") if out else pd.DataFrame()


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
    t = train[train.front.notna()].groupby("front").train_time_s.mean()
    fr["train_s"] = [t.get(s, np.nan) for s in fr.front]
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


def kernel_facts(path):
    """Per-path timings (µs) of tools/kernel_bench.py's json, with the lines of its log that say
    which machine and which weights."""
    if not path:
        return {}
    try:
        k = json.load(open(path))
    except (OSError, ValueError) as e:
        raise ReportError(f"cannot read {path} ({type(e).__name__}: {e})") from None
    paths = {n: {"p50": r["p50"], "p95": r["p95"], "gpu": r.get("gpu"), "pipe": r.get("pipe"),
                 "kern": r.get("kernels") or [], "sum": sum(t for _, t in r.get("kernels") or [])}
             for n, r in k.items()}
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


# ============================================================================= checks
def check_hashes(invs, cfg_hash):
    """Rows measured under another configuration than config.yaml's are named, not hidden."""
    bad = invs[invs.hashes.apply(lambda h: h != [cfg_hash])]
    by = {}
    for r in bad.itertuples():
        by.setdefault(", ".join(r.hashes) or "no hash", []).append(r.tag if len(invs) > 1 else r.invocation)
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
def gather(results_csv, kernels_path=None, selection_path=None, config_path=None):
    d = read_results(results_csv)
    cfg = load_config(config_path) if config_path else load_config()
    bench = gpu_bench(d)
    s = inv_summary(bench)
    mode, src, front_inv = choose_sources(s)
    used = sorted(set(src.values()) | ({front_inv} if front_inv else set()), key=list(s.invocation).index)
    invs = s[s.invocation.isin(used)].reset_index(drop=True)
    invs["tag"] = [chr(ord("a") + i) for i in range(len(invs))]
    tags = dict(zip(invs.invocation, invs.tag))
    invs["roles"] = [", ".join(v for v in TABLE_IDS + ABLATION_IDS if src.get(v) == i)
                     + (" + front points" if i == front_inv else "") for i in invs.invocation]
    table, abl = frame(bench, src, TABLE_IDS, tags), frame(bench, src, ABLATION_IDS, tags)
    last = max(invs.timestamp)
    base_ts = invs.set_index("invocation").timestamp.get(src.get("B1"), last)
    train = study_train(d, base_ts)  # the checkpoints the baselines were benched from
    ft = d[(d.script == "train") & d.front.notna() & (d.device == "cuda")]
    front_ts = s.set_index("invocation").timestamp.get(front_inv, last)
    fr = front_frame(bench, front_inv, cfg, ft[ft.timestamp <= front_ts].groupby("label").tail(1)) \
        if front_inv else pd.DataFrame()
    sel_path = selection_path or os.path.join(RES, "front_selection.json")
    sel = load_selection(sel_path)
    kp = kernels_path or default_kernels_path()
    f = Facts(rows=d, cfg=cfg, mode=mode, invs=invs, table=table, ablation=abl, front=fr, front_inv=front_inv,
              selection=sel, train=train, kernels=kernel_facts(kp), hash_check=check_hashes(invs, config_hash(cfg)),
              sources=[os.path.relpath(p, ROOT) for p in (sel_path, kp) if p])
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
    """a / b on a column, with whether both rows come from one invocation."""
    if a is None or b is None or pd.isna(a.get(col)) or pd.isna(b.get(col)):
        return None
    return {"x": float(a[col] / b[col]), "a": float(a[col]), "b": float(b[col]), "same": a.invocation == b.invocation,
            "tags": (a.tag, b.tag)}


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


def cv_groups(f):
    """Run-to-run CV of CUDA-graph paths vs eager paths, over the rows of the report."""
    rows = pd.concat([f.table, f.ablation])
    rows = rows[rows.cv_pct.notna()]
    graph = rows.cuda_graph.astype(str).str.lower().eq("true") | rows.compile.astype(str).eq("reduce-overhead")
    g, e = rows[graph].cv_pct, rows[~graph].cv_pct
    return {"graph_max": float(g.max()) if len(g) else None, "eager_min": float(e.min()) if len(e) else None,
            "eager_max": float(e.max()) if len(e) else None, "eager_ids": list(e.index)}


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


def tuning_gain(k):
    """Host p50 gained by the best kernel path over the plain one, first pass and repeat."""
    a = {name: (x, y) for name, x, y in k["again"]}
    if k["best"] == k["ours"] or k["best"] not in a or k["ours"] not in a:
        return None
    (b1, b2), (p1, p2) = a[k["best"]], a[k["ours"]]
    return p1 - b1, p2 - b2


def derive(f, ft):
    """Every number the prose quotes, computed here once."""
    n = {}
    F, F85 = row(f, "F"), row(f, "F85")
    n["f_cudnn"] = ratio(row(f, "F_cudnn"), F)
    n["f_cudnn_gpu"] = ratio(row(f, "F_cudnn"), F, "gpu_lat_p50_ms")
    n["f85_cudnn"] = ratio(row(f, "F85_cudnn"), F85)
    n["steps"] = [(a, b, ratio(row(f, a), row(f, b))) for a, b in zip(STEP_CHAIN, STEP_CHAIN[1:])
                  if row(f, a) is not None and row(f, b) is not None]
    n["b2_b1"] = ratio(row(f, "B1"), row(f, "B2"))
    n["b2_b1_size"] = ratio(row(f, "B2"), row(f, "B1"), "size_mb")
    n["d1_o1_acc"] = (float(row(f, "D1").acc - row(f, "O1").acc)
                      if row(f, "D1") is not None and row(f, "O1") is not None else None)
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
    n["cv"] = cv_groups(f)
    n["shipped"] = shipped(f)
    k = f.kernels
    if k.get("cudnn") and k.get("ours"):
        c, o, b = k["paths"][k["cudnn"]], k["paths"][k["ours"]], k["paths"][k["best"]]
        n["kern"] = {"n_cudnn": len(c["kern"]), "n_ours": len(o["kern"]), "sum_cudnn": c["sum"], "sum_ours": o["sum"],
                     "p50_cudnn": c["p50"], "p50_best": b["p50"], "best": k["best"], "pipe_cudnn": c["pipe"],
                     "pipe_best": b["pipe"], "tail3_ours": sum(t for _, t in o["kern"][-3:]),
                     "max_spread": max((abs(x - y) for _, x, y in k["again"]), default=None), "gain": tuning_gain(k)}
    return n
