"""Tune the tiles of whole nets, layer by layer inside the net's own end-to-end call, on the GPU.

    python tools/chain_tune.py [--variants F,F85_triton] [--rounds 2] [--calls 400] [--workers 14] [--out PATH]

tools/kernel_tune.py times each layer alone.  In the net's call a layer's kernel runs between
two others: with programmatic dependent launch the next kernel's programs launch while it runs
and take SMs, and a split-K layer's extra programs delay them in turn, so the tiles fastest
alone need not be fastest in the chain.  This tool starts from the variant's tiles and does
coordinate descent: for each layer, every candidate of kernel_net.candidates is timed through
the variant's own end-to-end call (Predictor, on validation images that change every call,
timing.time_e2e as bench.py times it), then the `--top` fastest and the current tiles again,
`--repeats` times interleaved; the median decides, and the current tiles are replaced only when
beaten by more than `--margin-us`.  A last pass tries each layer's other PDL trigger (early:
the next kernel may launch after this one's wait; late: after its K loop).  Finally the start
and the result are timed against each other (`--check` rounds, interleaved); the result is
saved only if its median is lower by more than the margin and it won 3 of every 4 rounds
(worth_saving), as whole-net entries of the tile cache (kernel_net.chain_key:
GPU, maps per call, PDL mode, the net's layer shapes), which KernelNet takes before the
per-layer ones.  A candidate whose answers differ from the start's on more than 1 % of the
calls is refused (a wrong kernel, not a slow one).  Compiling the candidates dominates: phase 1
compiles them in --workers processes (Triton's disk cache), phase 2 times them in this one.
"""
import multiprocessing as mp
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import kernel_net as K  # noqa: E402
import timing  # noqa: E402
import utils  # noqa: E402
from config import add_config_args, load_config, resolve_path  # noqa: E402
from data import host_split  # noqa: E402
from inference import Predictor  # noqa: E402


# ============================================================================= coordinate descent
def descend(start, cands, measure, rounds=2, top=4, repeats=3, margin=0.1, log=print, what="tiles"):
    """Coordinate descent over the layers: start = one tile dict per layer, cands[i] = layer i's
    candidates, measure(tiles) -> µs (noisy; float('inf') refuses a candidate).  Per layer, each
    candidate once, then the `top` fastest and the current one `repeats` times in turn; the
    lowest median replaces the current one if it beats it by more than `margin` µs.  Stops after
    `rounds` passes or a pass that changed nothing.  Returns the tiles (a new list)."""
    cur = [dict(t) for t in start]
    for r in range(rounds):
        changed = False
        for i in range(len(cur)):
            def trial(t):
                return cur[:i] + [t] + cur[i + 1:]
            first = sorted((measure(trial(t)), k) for k, t in enumerate(cands[i]) if t != cur[i])
            pool = [cur[i]] + [cands[i][k] for us, k in first[:top] if us != float("inf")]
            times = [[] for _ in pool]
            for _ in range(repeats):
                for j, t in enumerate(pool):
                    times[j].append(measure(trial(t)))
            med = [float(np.median(ts)) for ts in times]
            j = int(np.argmin(med))
            took = j != 0 and med[j] < med[0] - margin
            log(f"  {what} round {r + 1} L{i}: {len(first)} candidates; kept {med[0]:.2f} us"
                + (f" -> {med[j]:.2f} us {_short(pool[j])}" if took else
                   f" (best other {min(med[1:]):.2f} us)" if len(med) > 1 else ""))
            if took:
                cur[i], changed = dict(pool[j]), True
        if not changed:
            break
    return cur


def _short(t):
    return " ".join(f"{k}={t[k]}" for k in ("BP", "BN", "BK", "SPLIT", "trigger") if k in t)


def trigger_cands(tiles, triggers=tuple(K.PDL_TRIGGERS)):
    """Each layer's tiles with each PDL trigger: the candidates of the trigger pass (none for
    the last layer: no kernel of the call follows it)."""
    return [[dict(t, trigger=tr) for tr in triggers] for t in tiles[:-1]] + [[]]


# ============================================================================= phase 1: compile
_WORKER = {}  # variant -> Predictor, one per worker process


def _compile_job(job):
    """Worker: build the variant's predictor once, then set each candidate of one layer
    (capturing its graphs compiles the kernels exactly as the timed call runs them)."""
    cfg_path, overrides, variant, i, chunk = job
    cfg = load_config(cfg_path, overrides)
    if variant not in _WORKER:
        _WORKER[variant] = Predictor(cfg, variant, torch.device("cuda"))
    clf = _WORKER[variant]
    start = clf.kn.tiles()
    t0 = time.time()
    oversized = []
    from triton.runtime.errors import OutOfResources
    for t in chunk:
        try:
            clf.set_kernel_tiles(start[:i] + [t] + start[i + 1:])
        except OutOfResources:  # more shared memory than the SM has (raised at its first launch)
            oversized.append(t)
    clf.set_kernel_tiles(start)
    return (f"{variant} L{i}: {len(chunk)} candidates compiled in {time.time() - t0:.1f}s"
            f"{f' ({len(oversized)} over the SM shared memory, left out)' if oversized else ''}",
            variant, i, oversized)


def compile_all(a, jobs):
    """Compile every job's candidates in a.workers processes; {(variant, layer): [oversized tiles]}."""
    t0 = time.time()
    oversized = {}
    with mp.get_context("spawn").Pool(a.workers) as pool:
        for line, variant, i, over in pool.imap_unordered(_compile_job, jobs):
            print("  " + line, flush=True)
            oversized.setdefault((variant, i), []).extend(over)
    print(f"phase 1: {len(jobs)} jobs compiled in {time.time() - t0:.0f}s with {a.workers} processes", flush=True)
    return oversized


def layer_cands(clf):
    """kernel_net.candidates of every layer of the predictor's net (the variant's PDL trigger)."""
    kn = clf.kn
    return [K.candidates(sp["meta"], kn.nb, kn.n_sm) for sp in kn.specs]


# ============================================================================= phase 2: time
class Timer:
    """measure(tiles) for descend: set the tiles, then the p50 µs of `calls` end-to-end calls on
    validation images (rotated on from call to call); a candidate whose answers differ from the
    start's on > 1 % of its calls is refused (inf)."""

    def __init__(self, clf, imgs, calls):
        self.clf, self.imgs, self.calls, self.offset, self.n = clf, imgs, calls, 0, 0
        self.ref = clf.predict(imgs)  # the start tiles' answers

    def __call__(self, tiles):
        self.clf.set_kernel_tiles(tiles)
        timing.time_e2e(self.clf, self.imgs, 20, self.offset, sync=self.clf.settle)  # warm
        ms, answers, idx = timing.time_e2e(self.clf, self.imgs, self.calls, self.offset, sync=self.clf.settle)
        self.offset = (self.offset + self.calls) % len(self.imgs)
        self.n += 1
        differ = float((answers != self.ref[idx]).mean())
        if differ > 0.01:
            print(f"  refused (answers differ on {differ * 100:.1f} % of calls): "
                  f"{_short(tiles[0])} ...", flush=True)
            return float("inf")
        return 1e3 * float(np.percentile(ms, 50))


def check(timer, start, tuned, rounds):
    """Start vs tuned tiles, `rounds` times in turn: (µs of each start round, of each tuned round)."""
    a, b = [], []
    for _ in range(rounds):
        a.append(timer(start))
        b.append(timer(tuned))
    return a, b


def wins(a, b):
    """Rounds in which b (timed in turn with a) was faster."""
    return sum(y < x for x, y in zip(a, b))


def worth_saving(a, b, margin):
    """The tuned tiles (rounds b) replace the start (rounds a, timed in turn with b) only if
    their median is lower by more than `margin` µs AND they won at least 3 of every 4 rounds:
    the card's e2e time drifts by a few µs over seconds, more than most tile changes, and a
    pair timed back to back cancels that drift where a median alone may not."""
    return float(np.median(a)) - float(np.median(b)) > margin and 4 * wins(a, b) >= 3 * len(a)


def main():
    ap = utils.ArgParser(__doc__)
    ap.add_argument("--variants", default="F,F85_triton", help="comma-separated variants of our kernels")
    ap.add_argument("--rounds", type=int, default=2, help="passes over the layers (tiles)")
    ap.add_argument("--calls", type=int, default=400, help="end-to-end calls per measurement")
    ap.add_argument("--top", type=int, default=4, help="candidates re-timed against the current tiles")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved re-timings of those")
    # 0.3: two predictors of the very same tiles (their own buffers) read 0.14 µs apart in 8 of 10
    # interleaved rounds of 1,000 calls on the H200
    ap.add_argument("--margin-us", type=float, default=0.3, help="how much faster a change must be (µs)")
    ap.add_argument("--check", type=int, default=8, help="interleaved rounds of start vs result")
    ap.add_argument("--workers", type=int, default=14)
    ap.add_argument("--out", default="", help="tile cache file (default: paths.kernel_tiles)")
    add_config_args(ap)
    a = ap.parse_args()
    cfg = load_config(a.config, a.overrides)
    variants = [v for v in a.variants.split(",") if v]
    bad = [v for v in variants if v not in cfg.variants or not cfg.variants[v].kernels]
    if bad:
        ours = [v for v in cfg.variants if cfg.variants[v].kernels]
        raise utils.KitError(f"--variants: '{bad[0]}' is not a variant of our kernels (valid: {', '.join(ours)})")
    if min(a.rounds, a.calls, a.top, a.repeats, a.check, a.workers) < 1 or a.margin_us < 0:
        raise utils.KitError("--rounds, --calls, --top, --repeats, --check and --workers must be >= 1, "
                             "--margin-us >= 0")
    out = a.out or resolve_path(cfg, cfg.paths.kernel_tiles)
    about = K.begin_tuning(out, "chain_tune.py", "times the end-to-end call")
    imgs = host_split(cfg, "val")[0]
    clfs = {v: Predictor(cfg, v, torch.device("cuda")) for v in variants}  # compiles the start tiles here, once
    cands = {v: layer_cands(clf) for v, clf in clfs.items()}
    jobs = [(a.config, a.overrides, v, i, cs[k:k + 8]) for v in clfs for i, cs in enumerate(cands[v])
            for k in range(0, len(cs), 8)]
    oversized = compile_all(a, jobs)
    for v, clf in clfs.items():
        t0 = time.time()
        start = clf.kn.tiles()
        print(f"{v}: {len(start)} layers, start tiles from {', '.join(clf.kn.tile_sources())}", flush=True)
        timer = Timer(clf, imgs, a.calls)
        fit = [[t for t in cs if t not in oversized.get((v, i), [])] for i, cs in enumerate(cands[v])]
        tuned = descend(start, fit, timer, a.rounds, a.top, a.repeats, a.margin_us)
        if clf.kn.pdl:
            tuned = descend(tuned, trigger_cands(tuned), timer, 1, 1, a.repeats, a.margin_us, what="trigger")
        rs, rt = check(timer, start, tuned, a.check)
        keep = tuned != start and worth_saving(rs, rt, a.margin_us)
        print(f"{v}: e2e p50 start {np.median(rs):.2f} us, tuned {np.median(rt):.2f} us, tuned faster in "
              f"{wins(rs, rt)} of {len(rs)} rounds "
              f"({'saved' if keep else 'not saved: not faster beyond the margin in 3 of 4 rounds'}; "
              f"{timer.n} measurements, {time.time() - t0:.0f}s)", flush=True)
        for i, (s, t) in enumerate(zip(start, tuned)):
            print(f"   L{i} {_short(s)} -> {_short(t) if t != s else 'same'}", flush=True)
        if keep:
            clf.set_kernel_tiles(tuned)
            K.write_tile_cache(out, clf.kn.chain_entries(), about)
    print(f"tile cache {out}")


if __name__ == "__main__":
    utils.run_main(main)
