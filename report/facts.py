"""Every number the report shows, derived from a Study (inputs.py) and formatted one way:
latency in ms with 4 decimals, accuracy in % with 2, speedups with 2.  Tables are returned as
(header, rows) of strings, so the markdown files and the PDF show the same cells."""
import math

import front
from inputs import ablation_variants, front_rows, table_variants
from utils import KitError

# F's inference path one change a step, ending at F; F's I/O alternatives and other single changes, each vs its base.
ABLATION_CHAIN = ("F_fp32", "F_fp16", "F_fold", "F_graph", "F_cudnn", "F_call", "F")
# F's copy and sync rows run F's kernels without PDL: they are set beside F_nopdl (io_pairs: F_call
# where the invocation lacks that row); F_call (one launch per call), F_ahead (a gate kernel) and
# F_stem (every program of the gate reading the image from host memory) are set beside F
# (launched ahead, the gate in the first layer's kernel, the image staged on the device by it).
IO_PAIRS = (("F_copy_sync", "F_nopdl"), ("F_copy", "F_nopdl"), ("F_sync", "F_nopdl"), ("F_call", "F"),
            ("F_ahead", "F"), ("F_stem", "F"), ("F85_ahead", "F85_triton"))
# F_nopdl and F_pdl change F_call's PDL (both launch one graph per call); F_next and F_flag where
# F's split-K slices meet.
PAIRS = (("F_nopdl", "F_call"), ("F_pdl", "F_call"), ("F_next", "F"), ("F_flag", "F"), ("F85_nopdl", "F85_triton"),
         ("F85_triton", "F85"), ("F85_cudnn", "F85"))

# Public reference points: the only typed numbers of the report, each with its source.
ANCHORS = {
    "dawnbench": {"name": "DAWNBench CIFAR-10 inference, best entry", "ms": 0.1345, "acc": 94.20,
                  "how": "ResNet-8, TensorRT INT8, batch 1, mean latency, host-timed including the copy to the GPU",
                  "source": "github stanford-futuredata/dawn-bench-entries"},
    "mlperf": {"name": "MLPerf Inference v3.0 SingleStream, A100, TensorRT ResNet-50", "ms": 0.470,
               "how": "ImageNet (224x224), not CIFAR-10; p50 of single-sample queries",
               "source": "github mlcommons/inference_results_v3.0"},
    "airbench": {"name": "airbench94 (Keller Jordan)", "s": 2.59, "acc": 94.01,
                 "how": "training time on an A100 (whitening + training + evaluation), accuracy with TTA",
                 "source": "arXiv 2404.00498"}}
DASH = "–"


def missing(v):
    return v is None or (isinstance(v, float) and math.isnan(v))


def num(v, digits=2):
    """A number with its decimals (2: %, s, MB, ×), a dash when not measured."""
    return DASH if missing(v) else f"{v:.{digits}f}"


def ms(v):
    return num(v, 4)


def speedup(s, v):
    """The reference's e2e p50 / v's (bench.reference, B1, of the same invocation)."""
    ref = s.cfg.bench.reference
    return s.rows.at[ref, "e2e_p50_ms"] / s.rows.at[v, "e2e_p50_ms"] if ref in s.rows.index else float("nan")


def speedup_cell(s, v):
    x, r = speedup(s, v), s.rows.loc[v]
    if missing(x):
        return DASH
    lo, hi = r["speedup_e2e_ci_low"], r["speedup_e2e_ci_high"]
    return f"{x:.2f}×" + ("" if missing(lo) else f" [{lo:.2f}–{hi:.2f}]")


LAT_HEADER = ["ID", "Variant", "Acc. (%)", "Lat. mean (ms)", "Lat. p95 (ms)", "Size (MB)", "Speedup [95 %]",
              "e2e p50 (ms)", "device p50 (ms)", "GPU p50 (ms)"]


def lat_table(s, variants):
    """The plan's columns (latency end to end) plus the three p50s, for the variants present."""
    out = []
    for v in (v for v in variants if v in s.rows.index):
        r = s.rows.loc[v]
        out.append([v, r["label"], num(r["acc"]), ms(r["e2e_mean_ms"]), ms(r["e2e_p95_ms"]), num(r["size_mb"]),
                    speedup_cell(s, v), ms(r["e2e_p50_ms"]), ms(r["lat_p50_ms"]), ms(r["gpu_lat_p50_ms"])])
    return LAT_HEADER, out


def main_table(s):
    return lat_table(s, table_variants(s.cfg))


def ablation_table(s):
    return lat_table(s, ablation_variants(s.cfg))


def seeds(r):
    """[(seed, accuracy)] from an acc_seeds cell '42:94.1;1:94.3'."""
    pairs = [p.split(":") for p in str(r["acc_seeds"]).split(";") if ":" in p]
    return [(k, float(a)) for k, a in pairs]


def seed_line(s, role):
    """Seed statistics of F or F85 on its row's split."""
    r = s.rows.loc[role]
    n = len(seeds(r))
    if n == 0:
        return f"{role}: no seed accuracies in its row."
    ci = "" if missing(r["acc_ci_low"]) else f", 95 % interval {num(r['acc_ci_low'])}–{num(r['acc_ci_high'])} %"
    listed = ", ".join(f"{k}: {a:.2f}" for k, a in seeds(r))
    src = (s.seed_source or {}).get(role)
    via = ""
    if src is not None:
        inv, commit, label = src
        via = (f" From invocation {inv} (commit {commit}), where the shipped file scored the same {num(r['acc'])} %: "
               "this invocation had no seed files." + (f" There the row's path was: {label}." if label != r["label"]
                                                       else ""))
    return (f"{role} (shape {r['shape']}, TTA {r['tta']}): {num(r['acc_mean'])} ± {num(r['acc_std'])} % "
            f"(mean ± std over {n} seeds, {r['split']} split){ci}; seeds {listed}.{via}")


def latency_note(s):
    ref = s.cfg.bench.reference
    return ("Lat. mean / p95: end to end (uint8 image in host memory → class id on the host), mean and 95th "
            "percentile of all timed calls; e2e p50: median of the run medians; device p50: the call on an input "
            "already on the GPU (host clock); GPU p50: CUDA events (for a serving path, I/O ...+serve, both time one "
            f"launch of its kernel per call, which its end-to-end call does not pay). Speedup: {ref}'s e2e p50 / the "
            f"variant's, {ref} of the same invocation, bootstrap 95 % interval over runs. Acc.: the test split through the variant's "
            "own end-to-end path (F and F85: the shipped file).")


def source_line(s):
    r = s.rows.iloc[0]
    return f"Invocation {s.invocation} on {r['gpu']}, commit {r['git_commit']}."


# ----------------------------------------------------------------------------- the front
FRONT_NOTE = ("Accuracy: mean over the front seeds on the validation split (the test set is not read); latency: "
              "end-to-end p50; recipe: mean recipe time of the shape's front runs (an upper bound where other "
              "training shared the GPU; F's own recipe time is from its final runs).")


def front_recipe_s(s, shape):
    """Mean recipe time of a shape's front runs (validation images held out), NaN without runs."""
    fr = s.front_runs[s.front_runs["front_shape"] == shape]
    return float(fr["recipe_time_s"].mean()) if len(fr) else float("nan")


def chosen(s):
    """{variant: 'F' / 'F85'} of front.py's record (empty without one)."""
    if s.selection is None:
        return {}
    return {c["variant"]: role for role, c in s.selection["chosen"].items()}


def front_table(s):
    pick = chosen(s)
    fr = front_rows(s.rows).sort_values("e2e_p50_ms", kind="stable")
    out = [[r["variant"], r["shape"], r["tta"], num(r["acc_mean"]), num(r["acc_std"]),
            DASH if missing(r["acc_ci_low"]) else f"{num(r['acc_ci_low'])}–{num(r['acc_ci_high'])}",
            str(len(seeds(r))), ms(r["e2e_p50_ms"]), ms(r["lat_p50_ms"]), num(front_recipe_s(s, r["shape"])),
            pick.get(r["variant"], "")] for _, r in fr.iterrows()]
    return ["Point", "Shape", "TTA", "Val. acc. mean (%)", "Std", "95 % interval", "Seeds", "e2e p50 (ms)",
            "device p50 (ms)", "Recipe (s)", "Chosen"], out


def rule_here(s):
    """front.py's rule applied to this invocation's front rows: (F variant, F85 variant) or a reason."""
    fr = front_rows(s.rows)
    fr = fr[fr["acc_mean"].notna()]
    try:
        f, f85, _ = front.choose(fr, s.cfg.front.f_min_acc, s.cfg.front.f85_min_acc)
    except KitError as e:  # no point reaches the F85 threshold: said in the text instead
        return None, str(e)
    return (f["variant"], f85["variant"]), ""


# ----------------------------------------------------------------------------- goals
def verdict(value, goal, lower_is_better, unit, digits, relative):
    """'met (… to spare)' or 'missed by …' from a value and its goal."""
    if missing(value):
        return "not measured", None
    gap = (value - goal) if lower_is_better else (goal - value)
    if gap <= 0:
        return f"met ({-gap:.{digits}f} {unit} to spare)", True
    rel = f" ({100 * gap / goal:.0f} %)" if relative else ""
    return f"missed by {gap:.{digits}f} {unit}{rel}", False


def recipe_time(s):
    """F's recipe time: the mean over its final runs, else the shipped file's (its bench row)."""
    fin = s.finals[s.finals["role"] == "F"]["recipe_time_s"].dropna()
    if len(fin):
        return float(fin.mean()), f"mean of {len(fin)} final runs, {fin.min():.2f}–{fin.max():.2f} s"
    return float(s.rows.at["F", "recipe_time_s"]), "the shipped file's run"


def goals(s):
    """{config key: (goal, value shown, verdict text, met: True/False/None)} for config.yaml's goals."""
    g, f, f85 = s.cfg.goals, s.rows.loc["F"], s.rows.loc["F85"]
    rt, rt_how = recipe_time(s)
    items = {"f_e2e_ms": (f"F's e2e p50 ≤ {ms(g.f_e2e_ms)} ms", f"{ms(f['e2e_p50_ms'])} ms", f["e2e_p50_ms"],
                          True, "ms", 4, True),
             "f85_e2e_ms": (f"F85's e2e p50 ≤ {ms(g.f85_e2e_ms)} ms", f"{ms(f85['e2e_p50_ms'])} ms",
                            f85["e2e_p50_ms"], True, "ms", 4, True),
             "f_acc_low": (f"F's test accuracy, low end of the 95 % interval ≥ {num(g.f_acc_low)} %",
                           f"{num(f['acc_ci_low'])} %", f["acc_ci_low"], False, "points", 2, False),
             "f85_acc_low": (f"F85's test accuracy, low end of the 95 % interval ≥ {num(g.f85_acc_low)} %",
                             f"{num(f85['acc_ci_low'])} %", f85["acc_ci_low"], False, "points", 2, False),
             "recipe_s": (f"F's recipe time ({rt_how}) ≤ {num(g.recipe_s)} s", f"{num(rt)} s", rt, True, "s", 2,
                          True)}
    return {key: (what, shown) + verdict(value, g[key], low, unit, d, rel)
            for key, (what, shown, value, low, unit, d, rel) in items.items()}


def goals_table(s):
    return ["Goal (config.yaml)", "Measured", "Verdict"], [[w, v, t] for w, v, t, _ in goals(s).values()]


# ----------------------------------------------------------------------------- where the time goes
def serving(io):
    """A row's I/O column of a path whose kernel is launched once and serves every call (...+serve):
    its device and GPU columns time a per-call launch of that kernel, which its call does not pay."""
    return str(io).endswith("+serve")


def breakdown(s, v):
    """(e2e p50, device-side p50, GPU p50, pipelined, host share of e2e in %) of variant v."""
    r = s.rows.loc[v]
    host = r["e2e_p50_ms"] - r["gpu_lat_p50_ms"]
    return r["e2e_p50_ms"], r["lat_p50_ms"], r["gpu_lat_p50_ms"], r["gpu_pipelined_ms"], 100 * host / r["e2e_p50_ms"]


def breakdown_table(s, variants=("F", "F85")):
    out = []
    for v in (v for v in variants if v in s.rows.index):
        e2e, dev, gpu, pipe, share = breakdown(s, v)
        if serving(s.rows.at[v, "io"]):  # no host share: its GPU column is a launch the e2e call does not pay
            out.append([v, ms(e2e), ms(dev), ms(gpu), ms(pipe), DASH, DASH])
            continue
        out.append([v, ms(e2e), ms(dev), ms(gpu), ms(pipe), ms(e2e - gpu), DASH if missing(share) else f"{share:.0f}"])
    return ["ID", "e2e p50", "device p50", "GPU p50", "pipelined", "e2e − GPU", "host share (%)"], out


def delta(a, b):
    """'+0.0123 (+12 %)': how much b's e2e p50 adds to a's."""
    d = b - a
    return f"{d:+.4f} ({100 * d / a:+.0f} %)"


def step_table(s):
    """The ablation chain: each step's e2e p50 and what it changed from the step before."""
    out, prev = [], None
    for v in (v for v in ABLATION_CHAIN if v in s.rows.index):
        r = s.rows.loc[v]
        out.append([v, r["label"], ms(r["e2e_p50_ms"]), ms(r["lat_p50_ms"]), ms(r["gpu_lat_p50_ms"]),
                    DASH if prev is None else delta(prev, r["e2e_p50_ms"])])
        prev = r["e2e_p50_ms"]
    return ["Step", "Change", "e2e p50 (ms)", "device p50", "GPU p50", "Δ e2e vs step before"], out


def io_pairs(s):
    """IO_PAIRS, F_nopdl's pairs set beside F_call where the invocation lacks F_nopdl."""
    nopdl = "F_nopdl" if "F_nopdl" in s.rows.index else "F_call"
    return tuple((v, nopdl if b == "F_nopdl" else b) for v, b in IO_PAIRS)


def pair_table(s, pairs):
    """Variants beside the one they change: e2e p50 and the difference."""
    out = []
    for v, base in pairs:
        if v in s.rows.index and base in s.rows.index:
            r, b = s.rows.loc[v], s.rows.loc[base]
            out.append([v, r["io"] or DASH, r["label"], ms(r["e2e_p50_ms"]), base,
                        delta(b["e2e_p50_ms"], r["e2e_p50_ms"])])
    return ["ID", "I/O", "Change", "e2e p50 (ms)", "vs", "Δ e2e (ms)"], out


def kernel_table(s, names=("F", "F_cudnn")):
    """Per-kernel µs of two profiled variants side by side, then their sums and host times."""
    prof = [s.profile[n] for n in names if n in s.profile]
    names = [n for n in names if n in s.profile]
    rows = []
    for i in range(max(len(p["kernels"]) for p in prof)):
        cells = [str(i + 1)]
        for p in prof:
            k = p["kernels"][i] if i < len(p["kernels"]) else ("", None)
            cells += [str(k[0])[:38], DASH if k[1] is None else f"{k[1]:.1f}"]
        rows.append(cells)
    totals = [("sum of kernels", lambda p: sum(t for _, t in p["kernels"])), ("GPU (CUDA events)", lambda p: p["gpu"]),
              ("pipelined replay", lambda p: p["pipe"]), ("device-side host p50", lambda p: p["device_p50"]),
              ("e2e host p50", lambda p: p["e2e_p50"])]
    for what, get in totals:
        rows.append([""] + sum(([what, f"{get(p):.1f}"] for p in prof), []))
    header = ["#"] + sum(([f"{n} kernel", "µs"] for n in names), [])
    return header, rows


def persistent_lines(s):
    """persistent.json: each persistent mode vs the graph path, answers, GPU clock per phase."""
    out = []
    for v, r in s.persistent["variants"].items():
        for m, how in (("persistent", "the tiles' split-K"), ("persistent_fit", "split-K refitted")):
            p, g = r["e2e"][m]["p50"], r["e2e"]["graph"]["p50"]
            out.append(f"{v}, {how} ({'/'.join(map(str, r['splits'][m]))}): e2e p50 {p:.1f} µs vs {g:.1f} graph "
                       f"({p / g - 1:+.0%}); {r['agree'][m]:.2f} % same answers, {r['stale'][m]} stale; GPU µs: "
                       + ", ".join(f"{k} {t:.1f}" for k, t in r["phases"][m].items()))
    return out


def cluster_table(s):
    """F85's paths in the newest invocation that ran the cluster engine: e2e and GPU times."""
    c = s.cluster
    rows = [[v, r["label"], f"{num(r['acc'])}", ms(r["e2e_p50_ms"]), ms(r["e2e_p95_ms"]), ms(r["gpu_lat_p50_ms"])]
            for v, r in c.iterrows()]
    return ["ID", "Variant", "Acc. (%)", "e2e p50 (ms)", "e2e p95 (ms)", "GPU p50 (ms)"], rows


# ----------------------------------------------------------------------------- anchors
def anchors_table(s):
    """Each anchor beside our like-for-like number, with whether it compares."""
    f = s.rows.loc["F"]
    rt, _ = recipe_time(s)
    a = ANCHORS
    return ["Anchor", "Published", "Ours (F)", "Comparable?"], [
        [a["dawnbench"]["name"], f"{ms(a['dawnbench']['ms'])} ms mean at {num(a['dawnbench']['acc'])} %",
         f"{ms(f['e2e_mean_ms'])} ms e2e mean at {num(f['acc'])} % (TTA {f['tta']})",
         "partly: both batch 1 from host memory and means; " + a["dawnbench"]["how"] + "; other hardware"],
        [a["mlperf"]["name"], f"{ms(a['mlperf']['ms'])} ms p50", f"{ms(f['e2e_p50_ms'])} ms e2e p50",
         "no: " + a["mlperf"]["how"] + "; an order of magnitude only"],
        [a["airbench"]["name"], f"{num(a['airbench']['acc'])} % in {num(a['airbench']['s'])} s",
         f"{num(f['acc_mean'])} % (seed mean, TTA {f['tta']}) in {num(rt)} s on {f['gpu']}",
         "partly: " + a["airbench"]["how"]]] + ([[
             f"F's net (shape {f['shape']}) through cuDNN + torch.compile in one CUDA graph (F_cudnn)",
             f"{ms(s.rows.loc['F_cudnn', 'e2e_p50_ms'])} ms e2e p50", f"{ms(f['e2e_p50_ms'])} ms e2e p50",
             "yes: the same card, invocation, weights and TTA; e2e p50 both"]] if "F_cudnn" in s.rows.index else [])


def anchor_sources():
    return "; ".join(f"{a['name']}: {a['source']}" for a in ANCHORS.values())


# ----------------------------------------------------------------------------- provenance
def provenance_table(s):
    r = s.rows.iloc[0]
    hashes = sorted(set(s.rows["config_hash"]))
    return ["Item", "Value"], [["invocation", s.invocation], ["config hash", ", ".join(hashes)],
                               ["git commit", ", ".join(sorted(set(s.rows["git_commit"])))], ["GPU", r["gpu"]],
                               ["driver", r["driver"]], ["torch", r["torch"]], ["CUDA", r["cuda"]],
                               ["rows", f"{len(s.rows)}, {len(front_rows(s.rows))} of them front points"]]


def stage_table(s):
    return ["Stage", "Wall time (s)", "Exit"], [[st, str(w), str(rc)] for st, w, rc in s.stages]
