"""Batch-1 latency benchmark of the study's variants (config.yaml: variants, bench).

    python bench.py --variant all --runs 3          # every variant: table rows + F's ablation
    python bench.py --variant table                 # B1 B2 O1 O2 O3 D1 F
    python bench.py --variant O2 --runs 3           # O2 (and the reference B1, for the speedup)
    python bench.py --variant F,F_fp32 --iters 200 --no-acc --device cpu

Protocol (J5-07/J5-08): every variant is built once (weights loaded, BN folded, compiled,
CUDA graph captured: build time is not timed).  Then for run = 1..runs, for every variant in
turn (runs interleaved, so slow drifts of the card hit all variants alike): `warmup` untimed
calls, then `iters` timed calls of one batch-1 forward, each between two
torch.cuda.synchronize() (host wall clock: launch overhead + GPU time + the wait).  The
input is already on the device, in the variant's dtype and layout, in its input buffer.
End to end (unless --no-e2e): a uint8 32x32x3 image on the host -> copy to pinned memory ->
device -> preprocessing -> forward -> argmax -> class id on the host, `e2e_iters` calls a run.

Reported per variant: mean and std of the run means (and their coefficient of variation),
p50/p95/p99 of all timed calls, end-to-end mean/p50/p95, size (MB of weights as run),
speedup = mean latency of the reference (bench.reference, B1) / mean latency of the variant,
and speedup_p50 = median of the reference's run medians / the variant's, with a bootstrap 95 %
interval over runs (the reference always measured in the same invocation); on a GPU also the
GPU-side time per call from CUDA events (gpu_lat_*) and, for CUDA-graph variants, the GPU time
per call of 200 back-to-back replays (gpu_pipelined_ms): host minus GPU time is launch + sync.
Accuracy: the test set through the same inference object (unless --no-acc); for a front
point (and F/F85, chosen from the front), every front seed's checkpoint is swapped into the
same compiled, graphed path and evaluated: acc_mean, acc_std, acc_seeds.
One row per variant goes to results.csv.
"""
import gc
import os
import sys
import time

import numpy as np
import torch

from config import add_config_args, front_tag, load_config, resolve_path
import utils
from inference import InferenceModel, accuracy_fields, evaluate_inference

SMI_FIELDS = "clocks.sm,clocks.mem,temperature.gpu,power.draw"


def select_variants(cfg, spec, reference):
    """Variant names for --variant: ids, or all (every non-front variant) | table | ablation | front."""
    names = [n for n in cfg.variants if not cfg.variants[n].front]
    groups = {"all": names, "table": [n for n in names if cfg.variants[n].table],
              "ablation": [n for n in names if not cfg.variants[n].table] + (["F"] if "F" in names else []),
              "front": [n for n in cfg.variants if cfg.variants[n].front]}
    chosen = []
    for s in (s.strip() for s in spec.split(",") if s.strip()):
        if s in groups:
            chosen += groups[s]
        elif s in cfg.variants:
            chosen.append(s)
        else:
            raise utils.KitError(f"unknown variant '{s}' (valid: {', '.join(cfg.variants)}, or all, table, "
                                 "ablation, front)")
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
    ap.add_argument("--iters", type=int, help="timed calls per run (default: bench.iters)")
    ap.add_argument("--warmup", type=int, help="untimed calls before each run (default: bench.warmup)")
    ap.add_argument("--e2e-iters", type=int, help="end-to-end calls per run (default: bench.e2e_iters)")
    ap.add_argument("--no-e2e", action="store_true", help="skip the end-to-end latency")
    ap.add_argument("--no-acc", action="store_true", help="skip the test-set accuracy of each variant")
    ap.add_argument("--device", help="auto, cuda or cpu (default: bench.device)")
    ap.add_argument("--raw", help="also save every timed call (ms) to this .npz")
    add_config_args(ap)
    a = ap.parse_args()
    cfg = load_config(a.config, a.overrides)
    b = cfg.bench
    p = dict(runs=a.runs if a.runs is not None else b.runs, iters=a.iters if a.iters is not None else b.iters,
             warmup=a.warmup if a.warmup is not None else b.warmup,
             e2e_iters=0 if a.no_e2e else (a.e2e_iters if a.e2e_iters is not None else b.e2e_iters))
    if p["runs"] < 1 or p["iters"] < 2 or p["warmup"] < 0 or p["e2e_iters"] < 0:
        raise utils.KitError("need --runs >= 1, --iters >= 2, --warmup >= 0, --e2e-iters >= 0")
    if a.raw:  # found now, not after the rows were appended
        utils.check_writable(a.raw if a.raw.endswith(".npz") else a.raw + ".npz", "give --raw a writable .npz path")
    return a, cfg, p


def build_variants(cfg, names, device):
    """Build every variant once (not timed).  A missing checkpoint or bad variant stops the run;
    a build failure (compiler, graph capture) of a non-reference variant loses that variant only."""
    ims, failed = {}, {}
    for n in names:
        try:
            ims[n] = InferenceModel(cfg, n, device)
        except utils.KitError:
            raise
        except Exception as e:  # noqa: BLE001 - reported loudly below and in the exit code
            if n == cfg.bench.reference:
                raise
            failed[n] = f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:300]}"
            print(f"error: variant {n} failed to build, left out of this run: {failed[n]}", file=sys.stderr, flush=True)
            continue
        im = ims[n]
        utils.log(f"  built {n:<14s} {im.model_name:<12s} {im.precision} {im.memory_format:<13s} tta={im.tta:<5s} "
                  f"compile={im.compile:<8s} graph={im.cuda_graph!s:<5s} in {im.build_s:.1f}s")
    return ims, failed


def e2e_run(im, data, device, warmup, iters, offset):
    """End-to-end calls on host images: (per-call ms, number correct)."""
    imgs, lbls = data["host_imgs"], data["host_lbls"]
    k, preds = [offset], []

    def call():
        i = k[0] % len(imgs)
        k[0] += 1
        preds.append((im.predict_host(imgs[i]), i))
    utils.time_calls(call, device, 0, min(warmup, 20) + 1)  # warm the e2e path
    preds.clear()
    k[0] = offset
    ms = utils.time_calls(call, device, 0, iters)
    return ms, sum(int(p == lbls[i]) for p, i in preds)


def time_interleaved(ims, data, device, p):
    """runs x (every variant in turn): host-clock batch-1 calls, end to end, and GPU events."""
    t = {n: {"lat": [], "e2e": [], "e2e_ok": 0, "gpu": [], "pipe": []} for n in ims}
    for r in utils.progress(range(p["runs"]), f"bench {len(ims)} variant(s)", "run"):
        for n, im in ims.items():
            x = im.static_in
            t[n]["lat"].append(utils.time_calls(lambda: im(x), device, p["warmup"], p["iters"]))
            if device.type == "cuda":
                t[n]["gpu"].append(utils.time_gpu_events(lambda: im(x), max(20, p["iters"] // 3)))
                if im.cuda_graph:
                    t[n]["pipe"].append(utils.time_pipelined(lambda: im(x), 200))
            if p["e2e_iters"]:
                ms, ok = e2e_run(im, data, device, p["warmup"], p["e2e_iters"], r * p["e2e_iters"])
                t[n]["e2e"].append(ms)
                t[n]["e2e_ok"] += ok
            s = utils.latency_stats(t[n]["lat"][-1])
            utils.log(f"  run {r + 1}/{p['runs']} {n:<14s} mean {s['mean']:.4f} ms  p50 {s['p50']:.4f}  "
                      f"p95 {s['p95']:.4f}")
    return t


def seed_checkpoints(cfg, im):
    """{seed: path} of every front seed of this variant's shape (a front point, or F/F85 whose
    checkpoint came from one), or {} when it is no front net or a seed is missing."""
    shape = cfg.variants[im.variant].front or im.ck_meta.get("front") or ""
    if not shape or shape not in cfg.front.shapes:
        return {}
    try:
        return {s: utils.resolve_checkpoint(cfg, "@" + front_tag(shape, s)) for s in cfg.front.seeds}
    except utils.KitError:
        return {}


def evaluate_all(cfg, ims, data):
    """Accuracy of each variant through its own path; for front nets, of every seed too."""
    accs = {}
    for n, im in ims.items():
        t0 = time.time()
        r = evaluate_inference(im, data, cfg.eval.batch_size, cfg.eval.batch1_check)
        seeds = seed_checkpoints(cfg, im)
        if seeds:
            per, swapped = {}, False
            for s, path in seeds.items():
                if os.path.realpath(path) == os.path.realpath(im.ckpt_path):
                    per[s] = r["acc"]  # the timed weights themselves: evaluated just above
                    continue
                im.swap_weights(path)
                swapped = True
                per[s] = evaluate_inference(im, data, cfg.eval.batch_size, 0)["acc"]
            if swapped:
                im.swap_weights(im.ckpt_path)  # back to the timed weights
            r["seeds"] = per
        accs[n] = r
        extra = f"  seeds {per}" if seeds else ""
        utils.log(f"  acc {n:<14s} {r['acc']:.2f}%{extra}  ({time.time() - t0:.1f}s)")
    return accs


def make_row(cfg, device, im, t, acc, ref_t, ctx):
    """One results.csv row for a variant."""
    s = utils.summarize_runs(t["lat"])
    sp, lo, hi = utils.speedup_interval(ref_t["lat"], t["lat"]) if ref_t else (None, None, None)
    row = utils.base_row(cfg, "bench", device)
    row.update(im.info())
    notes = list(im.notes) + [f"cudnn.benchmark={cfg.bench.cudnn_benchmark}", f"build {im.build_s:.1f}s"]
    row.update(invocation=ctx["invocation"], lat_mean_ms=s["mean"], lat_std_ms=s["std"], cv_pct=s["cv_pct"],
               lat_p50_ms=s["p50"], lat_p95_ms=s["p95"], lat_p99_ms=s["p99"],
               run_means_ms=";".join(f"{m:.5f}" for m in s["run_means"]),
               run_p50s_ms=";".join(f"{m:.5f}" for m in s["run_p50s"]),
               speedup=ctx["ref_mean"] / s["mean"] if ref_t else None,
               speedup_p50=sp, speedup_ci_low=lo, speedup_ci_high=hi,
               runs=len(t["lat"]), iters=len(t["lat"][0]), train_time_s=im.ck_meta.get("train_time_s"),
               compile_s=im.ck_meta.get("compile_s"), front=cfg.variants[im.variant].front)
    if im.ck_meta.get("front") and not cfg.variants[im.variant].front:
        notes.append(f"front shape {im.ck_meta['front']} (chosen by front.py)")
    if t["gpu"]:
        g = np.concatenate(t["gpu"])
        row.update(gpu_lat_mean_ms=float(g.mean()), gpu_lat_p50_ms=float(np.median(g)))
    if t["pipe"]:
        row.update(gpu_pipelined_ms=float(np.median(t["pipe"])))
    if t["e2e"]:
        es = utils.latency_stats(np.concatenate(t["e2e"]))
        row.update(e2e_mean_ms=es["mean"], e2e_p50_ms=es["p50"], e2e_p95_ms=es["p95"])
        n_e2e = sum(len(e) for e in t["e2e"])
        notes.append(f"e2e top-1 on {n_e2e} images {100.0 * t['e2e_ok'] / n_e2e:.1f}%")
    if acc:
        row.update(accuracy_fields(acc))
        if "seeds" in acc:
            v = np.array(list(acc["seeds"].values()))
            row.update(acc_mean=float(v.mean()), acc_std=float(v.std(ddof=1)) if len(v) > 1 else 0.0,
                       acc_seeds=";".join(f"{k}:{a:.2f}" for k, a in acc["seeds"].items()))
    if ctx["clocks"]:
        notes.append("sm/mem clock, temp, power before [{}] after [{}]".format(*ctx["clocks"]))
    row["notes"] = "; ".join(notes)
    return row


def print_table(rows, ctx, results):
    print(f"\n{ctx['invocation']}  {ctx['card']}  ({ctx['runs']} runs x {ctx['iters']} calls, batch 1, ms)")
    hdr = (f"{'variant':<14s} {'acc %':>6s} {'seeds':>6s} {'p50':>8s} {'p95':>8s} {'gpu p50':>8s} {'pipe':>7s} "
           f"{'mean':>8s} {'cv%':>5s} {'speedup p50 [95% CI]':>22s}")
    print(hdr)
    print("-" * len(hdr))

    def f(v, fmt):
        return format(v, fmt) if isinstance(v, (int, float)) else "-"
    for r in rows:
        ci = f"{r['speedup_p50']:.2f}x [{r['speedup_ci_low']:.2f}-{r['speedup_ci_high']:.2f}]" \
            if r["speedup_p50"] is not None else "no reference"
        print(f"{r['variant']:<14s} {f(r.get('acc'), '6.2f'):>6s} {f(r.get('acc_mean'), '6.2f'):>6s} "
              f"{r['lat_p50_ms']:8.4f} {r['lat_p95_ms']:8.4f} {f(r.get('gpu_lat_p50_ms'), '8.4f'):>8s} "
              f"{f(r.get('gpu_pipelined_ms'), '7.4f'):>7s} {r['lat_mean_ms']:8.4f} {r['cv_pct']:5.2f} {ci:>22s}")
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
               card=env["gpu"] or env["cpu"], runs=p["runs"], iters=p["iters"])
    if device.type == "cpu":
        utils.log("bench: no GPU in use: timing on the CPU (FP32 eager fallback; not the study's numbers)")
    utils.log(f"bench: {ctx['invocation']} on {device} ({ctx['card']}), torch {env['torch']}, variants "
              f"{', '.join(names)}; {p['runs']} runs x ({p['warmup']} warm-up + {p['iters']} timed), e2e {p['e2e_iters']}")
    smi = (lambda: utils.nvidia_smi(SMI_FIELDS)) if device.type == "cuda" else (lambda: "")
    clocks0 = smi()
    t0 = time.time()
    ims, failed = build_variants(cfg, names, device)
    data = utils.load_data(cfg, device, need_train=False) if (not a.no_acc or p["e2e_iters"]) else {}
    if p["e2e_iters"]:
        data["host_imgs"] = data["test_u8"].permute(0, 2, 3, 1).contiguous().cpu().numpy()
        data["host_lbls"] = data["y_test"].cpu().numpy()
    gc.collect()
    gc.freeze()  # everything built so far is long-lived: later collections skip it (cheap, fast)
    t1 = time.time()
    t = time_interleaved(ims, data, device, p)
    ctx["clocks"] = (clocks0, smi()) if clocks0 else None
    t2 = time.time()
    accs = {} if a.no_acc else evaluate_all(cfg, ims, data)
    utils.log(f"bench: wall {time.time() - t0:.0f} s = build + data {t1 - t0:.0f} s, timed runs {t2 - t1:.0f} s, "
              f"accuracies {time.time() - t2:.0f} s")
    ctx["ref_mean"] = utils.summarize_runs(t[ref]["lat"])["mean"] if ref else None
    rows = [make_row(cfg, device, ims[n], t[n], accs.get(n), t[ref] if ref else None, ctx) for n in ims]
    for row in rows:
        utils.append_result(results, row)
    if a.raw:
        np.savez(a.raw, **{f"{n}_run{r}": t[n]["lat"][r] for n in ims for r in range(p["runs"])},
                 **{f"{n}_e2e_run{r}": t[n]["e2e"][r] for n in ims for r in range(len(t[n]["e2e"]))})
    print_table(rows, ctx, results)
    if failed:
        print(f"error: {len(failed)} variant(s) failed to build: {', '.join(failed)}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    utils.run_main(main)
