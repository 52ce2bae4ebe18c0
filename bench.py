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
the reference always measured in the same invocation, and the test accuracy through the
same inference object (unless --no-acc).  One row per variant goes to results.csv.
"""
import sys
import time

import numpy as np
import torch

from config import add_config_args, load_config, resolve_path
import utils
from inference import InferenceModel, accuracy_fields, evaluate_inference


def select_variants(cfg, spec, reference):
    names = list(cfg.variants)
    if spec == "all":
        chosen = names
    elif spec == "table":
        chosen = [n for n in names if cfg.variants[n].table]
    elif spec == "ablation":
        chosen = [n for n in names if not cfg.variants[n].table] + (["F"] if "F" in names else [])
    else:
        chosen = [s.strip() for s in spec.split(",") if s.strip()]
        for n in chosen:
            if n not in cfg.variants:
                raise utils.KitError(f"unknown variant '{n}' (valid: {', '.join(names)}, or all, table, ablation)")
    if reference not in cfg.variants:
        raise utils.KitError(f"bench.reference '{reference}' is not a variant")
    return [reference] + [n for n in chosen if n != reference]


def main():
    ap = utils.ArgParser(__doc__)
    ap.add_argument("--variant", default="table",
                    help="variant ids, comma-separated, or all | table | ablation (default: table)")
    ap.add_argument("--runs", type=int, help="number of runs (default: bench.runs)")
    ap.add_argument("--iters", type=int, help="timed calls per run (default: bench.iters)")
    ap.add_argument("--warmup", type=int, help="untimed calls before each run (default: bench.warmup)")
    ap.add_argument("--e2e-iters", type=int, help="end-to-end calls per run (default: bench.e2e_iters)")
    ap.add_argument("--no-e2e", action="store_true", help="skip the end-to-end latency")
    ap.add_argument("--no-acc", action="store_true", help="skip the test-set accuracy of each variant")
    ap.add_argument("--device", help="cuda or cpu (default: bench.device)")
    ap.add_argument("--raw", help="also save every timed call (ms) to this .npz")
    add_config_args(ap)
    a = ap.parse_args()
    cfg = load_config(a.config, a.overrides)
    b = cfg.bench
    runs = a.runs if a.runs is not None else b.runs
    iters = a.iters if a.iters is not None else b.iters
    warmup = a.warmup if a.warmup is not None else b.warmup
    e2e_iters = 0 if a.no_e2e else (a.e2e_iters if a.e2e_iters is not None else b.e2e_iters)
    if runs < 1 or iters < 2 or warmup < 0 or e2e_iters < 0:
        raise utils.KitError("need --runs >= 1, --iters >= 2, --warmup >= 0, --e2e-iters >= 0")
    results = resolve_path(cfg, cfg.paths.results)
    utils.check_results_file(results)
    device = utils.resolve_device(a.device or b.device)
    names = select_variants(cfg, a.variant, b.reference)

    utils.set_seed(cfg.seed)
    torch.backends.cudnn.deterministic = False          # inference: let cuDNN choose freely ...
    torch.backends.cudnn.benchmark = b.cudnn_benchmark  # ... and autotune the fixed shapes
    env = utils.env_info()
    invocation = f"bench-{time.strftime('%Y%m%d-%H%M%S')}-{np.random.default_rng().integers(1 << 16):04x}"
    utils.log(f"bench: {invocation} on {device} ({env['gpu'] or env['cpu']}), torch {env['torch']}, "
              f"variants {', '.join(names)}; {runs} runs x ({warmup} warm-up + {iters} timed), e2e {e2e_iters}")
    clocks0 = utils._nvidia_smi("clocks.sm,clocks.mem,temperature.gpu,power.draw") if device.type == "cuda" else ""

    ims, failed = {}, {}
    for n in names:
        try:
            ims[n] = InferenceModel(cfg, n, device)
        except utils.KitError:
            raise  # missing/bad checkpoint, bad variant: the user must fix it
        except Exception as e:  # a build failure (compiler, graph capture) loses that variant only: say so loudly
            if n == b.reference:
                raise
            failed[n] = f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:300]}"
            print(f"error: variant {n} failed to build, left out of this run: {failed[n]}", file=sys.stderr, flush=True)
            continue
        utils.log(f"  built {n:<10s} {ims[n].model_name:<12s} {ims[n].precision} {ims[n].memory_format:<13s} "
                  f"compile={ims[n].compile:<8s} graph={ims[n].cuda_graph!s:<5s} in {ims[n].build_s:.1f}s")

    names = [n for n in names if n in ims]
    need_data = (not a.no_acc) or e2e_iters > 0
    data = utils.load_data(cfg, device, need_train=False) if need_data else None
    host_imgs = data["test_u8"].permute(0, 2, 3, 1).contiguous().cpu().numpy() if e2e_iters else None
    host_lbls = data["y_test"].cpu().numpy() if e2e_iters else None

    lat = {n: [] for n in names}
    e2e = {n: [] for n in names}
    e2e_correct = {n: 0 for n in names}
    for r in range(runs):
        for n in names:
            im = ims[n]
            x = im.static_in
            lat[n].append(utils.time_calls(lambda: im(x), device, warmup, iters))
            if e2e_iters:
                k = [0]
                preds = []

                def call():
                    i = k[0] % len(host_imgs)
                    k[0] += 1
                    preds.append((im.predict_host(host_imgs[i]), i))
                utils.time_calls(call, device, 0, min(warmup, 20) + 1)  # warm the e2e path
                preds.clear()
                k[0] = r * e2e_iters
                e2e[n].append(utils.time_calls(call, device, 0, e2e_iters))
                e2e_correct[n] += sum(int(p == host_lbls[i]) for p, i in preds)
            s = utils.latency_stats(lat[n][-1])
            utils.log(f"  run {r + 1}/{runs} {n:<10s} mean {s['mean']:.4f} ms  p50 {s['p50']:.4f}  p95 {s['p95']:.4f}"
                      + (f"  e2e p50 {np.percentile(e2e[n][-1], 50):.4f}" if e2e_iters else ""))
    clocks1 = utils._nvidia_smi("clocks.sm,clocks.mem,temperature.gpu,power.draw") if device.type == "cuda" else ""

    accs = {}
    if not a.no_acc:
        for n in names:
            t0 = time.time()
            accs[n] = evaluate_inference(ims[n], data, cfg.eval.batch_size, cfg.eval.batch1_check)
            utils.log(f"  acc {n:<10s} {accs[n]['acc']:.2f}%  ({time.time() - t0:.1f}s)")

    summ = {n: utils.summarize_runs(lat[n]) for n in names}
    ref = summ[b.reference]["mean"]
    rows = []
    for n in names:
        im, s = ims[n], summ[n]
        row = utils.base_row(cfg, "bench", device)
        row.update(im.info())
        notes = list(im.notes) + [f"cudnn.benchmark={b.cudnn_benchmark}", f"build {im.build_s:.1f}s"]
        if e2e_iters:
            notes.append(f"e2e top-1 on {runs * e2e_iters} images {100.0 * e2e_correct[n] / (runs * e2e_iters):.1f}%")
        if clocks0:
            notes.append(f"sm/mem clock, temp, power before [{clocks0}] after [{clocks1}]")
        row.update(invocation=invocation, lat_mean_ms=s["mean"], lat_std_ms=s["std"], cv_pct=s["cv_pct"], lat_p50_ms=s["p50"],
                   lat_p95_ms=s["p95"], lat_p99_ms=s["p99"],
                   run_means_ms=";".join(f"{m:.5f}" for m in s["run_means"]),
                   run_p50s_ms=";".join(f"{m:.5f}" for m in s["run_p50s"]),
                   speedup=ref / s["mean"], runs=runs, iters=iters,
                   notes="; ".join(notes))
        if e2e_iters:
            es = utils.latency_stats(np.concatenate(e2e[n]))
            row.update(e2e_mean_ms=es["mean"], e2e_p50_ms=es["p50"], e2e_p95_ms=es["p95"])
        if n in accs:
            row.update(accuracy_fields(accs[n]))
        rows.append(row)
    for row in rows:
        utils.append_result(results, row)
    if a.raw:
        np.savez(a.raw, **{f"{n}_run{r}": lat[n][r] for n in names for r in range(runs)},
                 **{f"{n}_e2e_run{r}": e2e[n][r] for n in names for r in range(len(e2e[n]))})

    print(f"\n{invocation}  {env['gpu'] or env['cpu']}  ({runs} runs x {iters} calls, batch 1, ms)")
    hdr = f"{'variant':<10s} {'model':<12s} {'acc %':>6s} {'mean':>8s} {'± std':>7s} {'cv%':>5s} {'p50':>8s} " \
          f"{'p95':>8s} {'p99':>8s} {'e2e p50':>8s} {'MB':>6s} {'speedup':>8s}"
    print(hdr)
    print("-" * len(hdr))
    for row in rows:
        acc = f"{row['acc']:.2f}" if row.get("acc") is not None else "-"
        e2 = f"{row['e2e_p50_ms']:.4f}" if row.get("e2e_p50_ms") is not None else "-"
        print(f"{row['variant']:<10s} {row['model']:<12s} {acc:>6s} {row['lat_mean_ms']:8.4f} {row['lat_std_ms']:7.4f} "
              f"{row['cv_pct']:5.2f} {row['lat_p50_ms']:8.4f} {row['lat_p95_ms']:8.4f} {row['lat_p99_ms']:8.4f} "
              f"{e2:>8s} {row['size_mb']:6.2f} {row['speedup']:7.2f}x")
    print(f"rows appended to {results}")
    if failed:
        print(f"error: {len(failed)} variant(s) failed to build: {', '.join(failed)}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    utils.run_main(main)
