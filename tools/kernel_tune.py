"""Tune the Triton kernels' tiles for every front shape once, on the GPU, into the tile cache.

    python tools/kernel_tune.py [--shapes t3,AB94] [--tta none,flip] [--wide] [--workers 14] [--out PATH]

For each front shape (config front.shapes) and each TTA mode of the front (front.tta: none runs
1 map per layer, flip 2), a randomly initialised fastnet of that shape is folded as the kit's
inference path folds it (so the layer shapes and keys match), and every layer's candidate
tiles (kernel_net.candidates) are timed alone (the first on an image in pinned host memory,
as the end-to-end call reads it); the fastest go into the cache file (default
paths.kernel_tiles), keyed by GPU name, maps per call and layer shape.  KernelNet reads it at
build: variants with kernel_tiles: tuned use it, the heuristic where a key is missing.
Compiling the ~10-30 (BP, BN, BK) kernels of each layer dominates, so phase 1 compiles them
in --workers processes (Triton's disk cache), phase 2 times them in this one process.
Prints, per net, the heuristic's and the tuned tiles' GPU µs of each layer alone.
--wide: also 8 warps and 2 / 4 pipeline stages on the long-K layers (6x the compiles).
"""
import multiprocessing as mp
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import kernel_net as K  # noqa: E402
import utils  # noqa: E402
from config import add_config_args, front_model_kwargs, load_config, resolve_path  # noqa: E402
from tta import TTA_VIEWS  # noqa: E402
from models import FastNet  # noqa: E402


def folded_random(cfg, shape):
    """A random fastnet of the front shape, folded as path_net.kernel_net folds a checkpoint."""
    torch.manual_seed(0)
    model = FastNet(**front_model_kwargs(cfg, shape)).eval()
    return model.folded_spec(cfg.data.mean, cfg.data.std)


def nets(cfg, shapes, ttas=None):
    """(name, layers, head, KernelNet kwargs) for every shape x TTA mode (default: the front's)."""
    for shape in shapes:
        layers, head = folded_random(cfg, shape)
        for tta in ttas or cfg.front.tta:
            yield f"{shape}/{tta}", layers, head, dict(views=TTA_VIEWS[tta])


def _compile_job(job):
    """Worker: compile (launch once) every candidate tile of one layer of one net."""
    cfg_path, overrides, name, kw, i, mode = job
    cfg = load_config(cfg_path, overrides)
    layers, head = folded_random(cfg, name.split("/")[0])
    kn = K.KernelNet(layers, head, batch=1, **kw)
    t0 = time.time()
    kn.search_tiles(kn.specs[i], timed=False, autotune=mode)
    n = len(K.candidates(kn.specs[i]["meta"], kn.nb, kn.n_sm, wide=mode == "wide"))
    return f"{name} L{i}: {n} candidates compiled in {time.time() - t0:.1f}s ({kn.oversized} " \
           f"over the SM's shared memory, left out)"


def compile_all(a, cfg, shapes, ttas, mode):
    jobs = []
    for name, layers, head, kw in nets(cfg, shapes, ttas):
        n_specs = len(K.KernelNet(layers, head, batch=1, **kw).specs)
        jobs += [(a.config, a.overrides, name, kw, i, mode) for i in range(n_specs)]
    t0 = time.time()
    with mp.get_context("spawn").Pool(a.workers) as pool:
        for line in pool.imap_unordered(_compile_job, jobs):
            print("  " + line, flush=True)
    print(f"phase 1: {len(jobs)} layers compiled in {time.time() - t0:.0f}s with {a.workers} processes", flush=True)


def main():
    ap = utils.ArgParser(__doc__)
    ap.add_argument("--shapes", default="", help="comma-separated front shapes (default: all)")
    ap.add_argument("--tta", default="", help="comma-separated TTA modes (default: the front's, front.tta)")
    ap.add_argument("--workers", type=int, default=14)
    ap.add_argument("--wide", action="store_true", help="8 warps, 2/4 stages too on the long-K layers")
    ap.add_argument("--out", default="", help="tile cache file (default: paths.kernel_tiles)")
    add_config_args(ap)
    a = ap.parse_args()
    cfg = load_config(a.config, a.overrides)
    shapes = [s for s in a.shapes.split(",") if s] or list(cfg.front.shapes)
    bad = [s for s in shapes if s not in cfg.front.shapes]
    if bad:
        raise utils.KitError(f"--shapes: unknown front shape '{bad[0]}' (valid: {', '.join(cfg.front.shapes)})")
    ttas = [t for t in a.tta.split(",") if t]
    bad = [t for t in ttas if t not in cfg.front.tta]
    if bad:
        raise utils.KitError(f"--tta: '{bad[0]}' is not a TTA mode of the front (valid: {', '.join(cfg.front.tta)})")
    out = a.out or resolve_path(cfg, cfg.paths.kernel_tiles)
    about = K.begin_tuning(out, "kernel_tune.py", "times kernels")
    mode = "wide" if a.wide else True
    compile_all(a, cfg, shapes, ttas, mode)
    t0 = time.time()
    for name, layers, head, kw in nets(cfg, shapes, ttas):
        heur = K.KernelNet(layers, head, batch=1, **kw)
        tuned = K.KernelNet(layers, head, batch=1, autotune=mode, **kw)
        x = heur.random_input(0)  # the image in pinned host memory, as the e2e call reads it
        rows_h, rows_t = heur.time_kernels(x), tuned.time_kernels(x)
        print(f"{name}: sum of layers alone, heuristic {sum(u for _, u in rows_h):.1f} us, "
              f"tuned {sum(u for _, u in rows_t):.1f} us", flush=True)
        for (nh, uh), (nt, ut) in zip(rows_h, rows_t):
            print(f"   {uh:6.2f} -> {ut:6.2f} us  {nt}", flush=True)
        K.write_tile_cache(out, tuned.tuned_entries(), about)
    print(f"phase 2: timed in {time.time() - t0:.0f}s; tile cache {out}")


if __name__ == "__main__":
    utils.run_main(main)
