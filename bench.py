"""Batch-1 latency benchmark of the study's variants (config.yaml: variants, bench).

    python bench.py --variant all              # every table and ablation variant
    python bench.py --variant table            # B1 B2 O1 O2 O3 D1 F F85
    python bench.py --variant F --runs 3       # F (and the reference B1, for the speedup)
    python bench.py --variant front            # every front point, scored on the validation split
    python bench.py --variant all,front --raw results/latency_raw.npz

Latency is end to end (e2e, the headline): from a uint8 32x32x3 numpy image in host memory to
the class id as a Python int, one call per image, a different image every call (rotated
through the split), through the same Predictor a user calls (inference.py).

Protocol (J5-07/J5-08): every variant is built once (weights loaded, BN folded, compiled,
CUDA graphs captured: not timed).  Then for run = 1..runs, for every variant in turn (runs
interleaved, so slow drifts of the card hit all variants alike): `e2e_iters` timed end-to-end
calls (the device synchronised between calls, outside the timed region), then, to explain them,
`warmup` untimed and `iters` timed device-side calls on an input already on the GPU, each
between two synchronisations (lat_*: launch + GPU + wait), the GPU time of such calls from
CUDA events (gpu_lat_*) and, for CUDA-graph paths, 200 back-to-back replays / 200
(gpu_pipelined_ms).

Reported per variant: e2e p50 (the median of the run medians: one slow run cannot move it),
p95 and p99 of all calls, mean and std; the same for the device-side call with the CV of the
run means; size (MB of weights as run); speedup_e2e = the reference's (bench.reference, B1)
e2e p50 / the variant's, with a bootstrap 95 % interval over runs (the reference measured in
the same invocation), and the device-side speedups beside it.
Accuracy (unless --no-acc) through the same end-to-end call: table and ablation variants on
the 10,000 test images, front points on the validation split (their checkpoints never saw
it); for a front point every front seed, for F and F85 every final seed, is swapped into the
same compiled, graphed path and scored: acc_mean, acc_std, 95 % interval, acc_seeds.
One row per variant goes to results.csv.
"""
import gc
import os
import sys
import time

import numpy as np
import torch

from config import add_config_args, final_tag, front_tag, load_config, resolve_path
import timing
import utils
from data import host_splits
from accuracy import accuracy_fields, evaluate
from inference import Predictor

SMI_FIELDS = "clocks.sm,clocks.mem,temperature.gpu,power.draw"


def select_variants(cfg, spec, reference):
    """Variant names for --variant: ids, or all (every table and ablation variant) | table |
    ablation | front."""
    names = [n for n in cfg.variants if not cfg.variants[n].shape]
    groups = {"all": names, "table": [n for n in names if cfg.variants[n].table],
              "ablation": [n for n in names if not cfg.variants[n].table] + (["F"] if "F" in names else []),
              "front": [n for n in cfg.variants if cfg.variants[n].shape]}
    chosen = []
    for s in (s.strip() for s in spec.split(",") if s.strip()):
        if s in groups:
            chosen += groups[s]
        elif s in cfg.variants:
            chosen.append(s)
        else:
            raise utils.KitError(f"unknown variant '{s}' (valid: {', '.join(cfg.variants)}, or all, table, "
                                 "ablation, front)")
    if not chosen:
        raise utils.KitError("--variant: name at least one variant or group")
    if reference not in cfg.variants:
        raise utils.KitError(f"bench.reference '{reference}' is not a variant")
    return [reference] + list(dict.fromkeys(n for n in chosen if n != reference))


def drop_missing_reference(cfg, names, spec):
    """A clean clone ships F but not B1: bench what is there and say in one line what is missing,
    instead of stopping (unless the reference itself was asked for).  Returns (names, reference
    or None)."""
    ref = cfg.bench.reference
    try:
        utils.resolve_checkpoint(cfg, cfg.variants[ref].checkpoint)
        return names, ref
    except utils.KitError as e:
        if ref in [s.strip() for s in spec.split(",")] or len(names) == 1:
            raise
        utils.log(f"bench: no speedups this time: reference {ref} is missing ({e})")
        return [n for n in names if n != ref], None


def parse_args():
    ap = utils.ArgParser(__doc__)
    ap.add_argument("--variant", default="table",
                    help="variant ids and/or groups, comma-separated: all | table | ablation | front (default: table)")
    ap.add_argument("--runs", type=int, help="number of interleaved runs (default: bench.runs)")
    ap.add_argument("--iters", type=int, help="timed device-side calls per run (default: bench.iters)")
    ap.add_argument("--warmup", type=int, help="untimed device-side calls before each run (default: bench.warmup)")
    ap.add_argument("--e2e-iters", type=int, help="timed end-to-end calls per run (default: bench.e2e_iters)")
    ap.add_argument("--no-acc", action="store_true", help="skip the accuracy of each variant")
    ap.add_argument("--device", help="auto, cuda or cpu (default: bench.device)")
    ap.add_argument("--raw", help="also save every timed call (ms) to this .npz")
    add_config_args(ap)
    a = ap.parse_args()
    cfg = load_config(a.config, a.overrides)
    b = cfg.bench
    p = dict(runs=a.runs if a.runs is not None else b.runs, iters=a.iters if a.iters is not None else b.iters,
             warmup=a.warmup if a.warmup is not None else b.warmup,
             e2e_iters=a.e2e_iters if a.e2e_iters is not None else b.e2e_iters)
    if p["runs"] < 1 or p["iters"] < 2 or p["warmup"] < 0 or p["e2e_iters"] < 2:
        raise utils.KitError("need --runs >= 1, --iters >= 2, --warmup >= 0, --e2e-iters >= 2")
    if a.raw:  # found now, not after the rows were appended
        utils.check_writable(a.raw if a.raw.endswith(".npz") else a.raw + ".npz", "give --raw a writable .npz path")
    return a, cfg, p


def build_variants(cfg, names, device):
    """Build every variant once (not timed).  A missing checkpoint or bad variant stops the run;
    a build failure (compiler, graph capture) of a non-reference variant loses that variant only,
    said on stderr and in the exit code."""
    ims, failed = {}, {}
    for n in names:
        try:
            ims[n] = Predictor(cfg, n, device)
        except utils.KitError:
            raise
        except Exception as e:  # noqa: BLE001 - reported loudly below and in the exit code
            if n == cfg.bench.reference:
                raise
            failed[n] = f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:300]}"
            print(f"error: variant {n} failed to build, left out of this run: {failed[n]}", file=sys.stderr, flush=True)
            continue
        im = ims[n]
        utils.log(f"  built {n:<20s} {im.model_name:<12s} {im.precision} {im.memory_format:<13s} tta={im.tta:<14s} "
                  f"compile={im.compile:<8s} graph={im.cuda_graph!s:<5s} in {im.build_s:.1f}s")
    return ims, failed


def split_of(cfg, name):
    """Front points are scored on the validation split (their checkpoints trained beside it);
    every other variant on the test split."""
    return "val" if cfg.variants[name].shape else "test"


def time_interleaved(ims, splits, device, p):
    """runs x (every variant in turn): end-to-end calls, device-side calls, GPU events."""
    t = {n: {"e2e": [], "e2e_ok": 0, "lat": [], "gpu": [], "pipe": []} for n in ims}
    for r in utils.progress(range(p["runs"]), f"bench {len(ims)} variant(s)", "run"):
        for n, im in ims.items():
            imgs, lbls = splits[n]
            if r == 0:  # warm the end-to-end path once, untimed
                timing.time_e2e(im, imgs, min(p["warmup"], 20) + 1, sync=im.settle)
            ms, answers, idx = timing.time_e2e(im, imgs, p["e2e_iters"], r * p["e2e_iters"], sync=im.settle)
            t[n]["e2e"].append(ms)
            t[n]["e2e_ok"] += int((answers == lbls[idx]).sum())
            t[n]["lat"].append(timing.time_calls(im.run_static, device, p["warmup"], p["iters"]))
            if device.type == "cuda":
                t[n]["gpu"].append(timing.time_gpu_events(im.run_static, max(20, p["iters"] // 3)))
                if im.cuda_graph:
                    t[n]["pipe"].append(timing.time_pipelined(im.run_static, 200))
            s = timing.latency_stats(ms)
            utils.log(f"  run {r + 1}/{p['runs']} {n:<20s} e2e p50 {s['p50']:.4f} ms  p95 {s['p95']:.4f}  "
                      f"device-side p50 {np.median(t[n]['lat'][-1]):.4f}")
    return t


def seed_checkpoints(cfg, im):
    """{seed: (tag, path)} of every seed of this variant's recipe: the front seeds of a front
    point, the final seeds of a shipped model (F, F85); {} otherwise or when a seed is missing
    (said)."""
    shape, role = cfg.variants[im.variant].shape, im.ck_meta.get("role") or ""
    if shape:
        tags = {s: front_tag(shape, s) for s in cfg.front.seeds}
    elif role:
        tags = {s: final_tag(role, s) for s in cfg.final.seeds}
    else:
        return {}
    try:
        return {s: (tag, utils.resolve_checkpoint(cfg, "@" + tag)) for s, tag in tags.items()}
    except utils.KitError as e:
        utils.log(f"  {im.variant}: no seed statistics ({e})")
        return {}


def evaluate_all(cfg, ims, splits):
    """Accuracy of each variant through its own end-to-end path; for a recipe, of every seed."""
    accs = {}
    for n, im in ims.items():
        t0 = time.time()
        imgs, lbls = splits[n]
        r = evaluate(im, imgs, lbls, cfg.eval.batch_size, cfg.eval.batch1_check)
        seeds = seed_checkpoints(cfg, im)
        if seeds:
            per, swapped = {}, False
            for s, (tag, path) in seeds.items():
                if tag == im.ck_meta.get("tag") or os.path.realpath(path) == os.path.realpath(im.ckpt_path):
                    per[s] = r["acc"]  # the timed weights themselves: evaluated just above
                    continue
                im.swap_weights(path)
                swapped = True
                per[s] = evaluate(im, imgs, lbls, cfg.eval.batch_size, 0)["acc"]
            if swapped:
                im.swap_weights(im.ckpt_path)  # back to the timed weights
            r["seeds"] = per
        accs[n] = r
        extra = f"  seeds {per}" if seeds else ""
        utils.log(f"  acc {n:<20s} {r['acc']:.2f}% on {split_of(cfg, n)}{extra}  ({time.time() - t0:.1f}s)")
    return accs


def make_row(cfg, device, im, t, acc, ref_t, ctx):
    """One results.csv row for a variant."""
    e, s = timing.summarize_runs(t["e2e"]), timing.summarize_runs(t["lat"])
    row = utils.base_row(cfg, "bench", device)
    row.update(im.info())
    notes = list(im.notes) + [f"cudnn.benchmark={cfg.bench.cudnn_benchmark}", f"build {im.build_s:.1f}s"]
    row.update(invocation=ctx["invocation"], split=split_of(cfg, im.variant),
               e2e_p50_ms=e["p50"], e2e_p95_ms=e["p95"], e2e_p99_ms=e["p99"], e2e_mean_ms=e["mean"],
               e2e_std_ms=e["std"], e2e_run_p50s_ms=";".join(f"{m:.5f}" for m in e["run_p50s"]),
               lat_mean_ms=s["mean"], lat_std_ms=s["std"], cv_pct=s["cv_pct"], lat_p50_ms=s["p50"],
               lat_p95_ms=s["p95"], lat_p99_ms=s["p99"],
               run_means_ms=";".join(f"{m:.5f}" for m in s["run_means"]),
               run_p50s_ms=";".join(f"{m:.5f}" for m in s["run_p50s"]),
               runs=len(t["lat"]), iters=len(t["lat"][0]), train_time_s=im.ck_meta.get("train_time_s"),
               recipe_time_s=im.ck_meta.get("recipe_time_s"),
               compile_s=im.ck_meta.get("compile_s"), shape=cfg.variants[im.variant].shape or im.ck_meta["shape"],
               seed=im.ck_meta.get("seed") if im.ck_meta.get("seed") is not None else cfg.seed)
    if ref_t:
        row["speedup_e2e"], row["speedup_e2e_ci_low"], row["speedup_e2e_ci_high"] = \
            timing.speedup_interval(ref_t["e2e"], t["e2e"])
        row["speedup_p50"], row["speedup_ci_low"], row["speedup_ci_high"] = \
            timing.speedup_interval(ref_t["lat"], t["lat"])
        row["speedup"] = ctx["ref_mean"] / s["mean"]
    if t["gpu"]:
        g = np.concatenate(t["gpu"])
        row.update(gpu_lat_mean_ms=float(g.mean()), gpu_lat_p50_ms=float(np.median(g)))
    if t["pipe"]:
        row["gpu_pipelined_ms"] = float(np.median(t["pipe"]))
    n_e2e = sum(len(x) for x in t["e2e"])
    notes.append(f"answers while timed: {100.0 * t['e2e_ok'] / n_e2e:.1f}% right on {n_e2e} calls")
    if acc:
        row.update(accuracy_fields(acc))
        if "seeds" in acc:
            mean, std, lo, hi = timing.mean_interval(list(acc["seeds"].values()))
            row.update(acc_mean=mean, acc_std=std, acc_ci_low=lo, acc_ci_high=hi,
                       acc_seeds=";".join(f"{k}:{a:.2f}" for k, a in acc["seeds"].items()))
    if ctx["clocks"]:
        notes.append("sm/mem clock, temp, power before [{}] after [{}]".format(*ctx["clocks"]))
    row["notes"] = "; ".join(notes)
    return row


def print_table(rows, ctx, results):
    print(f"\n{ctx['invocation']}  {ctx['card']}  ({ctx['runs']} runs x {ctx['e2e_iters']} end-to-end calls, "
          "batch 1, ms)")
    hdr = (f"{'variant':<20s} {'acc %':>6s} {'split':>5s} {'seeds':>6s} {'e2e p50':>8s} {'e2e p95':>8s} "
           f"{'e2e mean':>8s} {'dev p50':>8s} {'gpu p50':>8s} {'speedup e2e [95% CI]':>22s}")
    print(hdr)
    print("-" * len(hdr))

    def f(v, fmt):
        return format(v, fmt) if isinstance(v, (int, float)) else "-"
    for r in rows:
        ci = f"{r['speedup_e2e']:.2f}x [{r['speedup_e2e_ci_low']:.2f}-{r['speedup_e2e_ci_high']:.2f}]" \
            if r.get("speedup_e2e") is not None else "no reference"
        print(f"{r['variant']:<20s} {f(r.get('acc'), '6.2f'):>6s} {r['split']:>5s} {f(r.get('acc_mean'), '6.2f'):>6s} "
              f"{r['e2e_p50_ms']:8.4f} {r['e2e_p95_ms']:8.4f} {r['e2e_mean_ms']:8.4f} {r['lat_p50_ms']:8.4f} "
              f"{f(r.get('gpu_lat_p50_ms'), '8.4f'):>8s} {ci:>22s}")
    print(f"rows appended to {results}")


def main():
    a, cfg, p = parse_args()
    results = resolve_path(cfg, cfg.paths.results)
    utils.check_results_file(results)
    device = utils.resolve_device(a.device or cfg.bench.device)
    names, ref = drop_missing_reference(cfg, select_variants(cfg, a.variant, cfg.bench.reference), a.variant)
    utils.set_seed(cfg.seed)
    torch.backends.cudnn.deterministic = False                  # inference: let cuDNN choose freely ...
    torch.backends.cudnn.benchmark = cfg.bench.cudnn_benchmark  # ... and autotune the fixed shapes
    env = utils.env_info()
    ctx = dict(invocation=f"bench-{time.strftime('%Y%m%d-%H%M%S')}-{np.random.default_rng().integers(1 << 16):04x}",
               card=env["gpu"] or env["cpu"], runs=p["runs"], e2e_iters=p["e2e_iters"])
    if device.type == "cpu":
        utils.log("bench: no GPU in use: timing on the CPU (FP32 eager fallback; not the study's numbers)")
    utils.log(f"bench: {ctx['invocation']} on {device} ({ctx['card']}), torch {env['torch']}, variants "
              f"{', '.join(names)}; {p['runs']} runs x ({p['e2e_iters']} end-to-end + {p['warmup']} warm-up + "
              f"{p['iters']} device-side calls)")
    smi = (lambda: utils.nvidia_smi(SMI_FIELDS)) if device.type == "cuda" else (lambda: "")
    clocks0 = smi()
    t0 = time.time()
    need = {split_of(cfg, n) for n in names}
    data = host_splits(cfg, sorted(need))  # one read, before the builds: bad data stops at once
    ims, failed = build_variants(cfg, names, device)
    splits = {n: data[split_of(cfg, n)] for n in ims}
    gc.collect()
    gc.freeze()  # everything built so far is long-lived: later collections skip it (cheap, fast)
    t1 = time.time()
    t = time_interleaved(ims, splits, device, p)
    ctx["clocks"] = (clocks0, smi()) if clocks0 else None
    t2 = time.time()
    accs = {} if a.no_acc else evaluate_all(cfg, ims, splits)
    utils.log(f"bench: wall {time.time() - t0:.0f} s = data + build {t1 - t0:.0f} s, timed runs {t2 - t1:.0f} s, "
              f"accuracies {time.time() - t2:.0f} s")
    ctx["ref_mean"] = timing.summarize_runs(t[ref]["lat"])["mean"] if ref in t else None
    rows = [make_row(cfg, device, ims[n], t[n], accs.get(n), t[ref] if ref in t else None, ctx) for n in ims]
    for row in rows:
        utils.append_result(results, row)
    if a.raw:
        np.savez_compressed(a.raw, **{f"{n}_e2e_run{r}": t[n]["e2e"][r] for n in ims for r in range(p["runs"])},
                            **{f"{n}_device_run{r}": t[n]["lat"][r] for n in ims for r in range(p["runs"])})
    print_table(rows, ctx, results)
    if failed:
        print(f"error: {len(failed)} variant(s) failed to build: {', '.join(failed)}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    utils.run_main(main)
