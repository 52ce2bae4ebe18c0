"""Timers and statistics of the benchmark (bench.py): batch-1 calls on the host clock, GPU time
from CUDA events, back-to-back (pipelined) GPU time, per-run summaries with percentiles, and
the speedup's bootstrap interval.

Every timer returns per-call milliseconds as a numpy array, so a caller can keep the raw
samples (bench.py --raw) and take any percentile it wants.
"""
from __future__ import annotations

import gc
import time

import numpy as np
import torch


def sync_fn(device):
    return torch.cuda.synchronize if device.type == "cuda" else (lambda: None)


def time_calls(fn, device, warmup, iters):
    """Batch-1 latency: per-call wall time in ms, the device synchronised before and after
    each call (so launch overhead, GPU work and the wait are all inside)."""
    sync = sync_fn(device)
    for _ in range(warmup):
        fn()
    sync()
    out = np.empty(iters, dtype=np.float64)
    clock = time.perf_counter_ns
    gc.collect(0)  # the young objects only: a full collection over a big heap (compiled graphs, the
    # data) took ~0.3 s and, called ~100 times a run, made a 10-run bench 3x longer than its timed calls
    gc_was_on = gc.isenabled()
    gc.disable()  # a collection inside a timed call would be noise, not the model
    try:
        for i in range(iters):
            sync()
            t0 = clock()
            fn()
            sync()
            out[i] = (clock() - t0) / 1e6
    finally:
        if gc_was_on:
            gc.enable()
    return out


def time_gpu_events(fn, iters):
    """GPU-side time per call (ms) from CUDA events recorded around each call, the device
    synchronised between calls: the span from the call's first to its last GPU work, without
    the host's launch-and-wait overhead outside it (but with any launch gaps inside it)."""
    ev = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(iters)]
    torch.cuda.synchronize()
    for s, e in ev:
        s.record()
        fn()
        e.record()
        torch.cuda.synchronize()
    return np.array([s.elapsed_time(e) for s, e in ev], dtype=np.float64)


def time_pipelined(fn, n):
    """GPU time per call (ms) of n calls enqueued back to back (CUDA-graph replays), one sync."""
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    s.record()
    for _ in range(n):
        fn()
    e.record()
    torch.cuda.synchronize()
    return s.elapsed_time(e) / n


def speedup_interval(ref_runs, runs, n_boot=2000, seed=0):
    """Speedup from p50s: median of the reference's run medians / median of the variant's run
    medians, and a bootstrap 95 % interval (runs resampled with replacement, both sides)."""
    a = np.array([np.percentile(r, 50) for r in ref_runs])
    b = np.array([np.percentile(r, 50) for r in runs])
    rng = np.random.default_rng(seed)
    ia = rng.integers(0, len(a), (n_boot, len(a)))
    ib = rng.integers(0, len(b), (n_boot, len(b)))
    boot = np.median(a[ia], axis=1) / np.median(b[ib], axis=1)
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return float(np.median(a) / np.median(b)), float(lo), float(hi)


def latency_stats(ms):
    ms = np.asarray(ms, dtype=np.float64)
    return {"mean": float(ms.mean()), "std": float(ms.std(ddof=1)) if len(ms) > 1 else 0.0,
            "p50": float(np.percentile(ms, 50)), "p95": float(np.percentile(ms, 95)),
            "p99": float(np.percentile(ms, 99)), "min": float(ms.min())}


def summarize_runs(runs):
    """Stats across runs (list of per-run arrays of ms): mean/std of the run means, CV,
    percentiles of all calls pooled."""
    means = np.array([np.mean(r) for r in runs])
    p50s = np.array([np.percentile(r, 50) for r in runs])
    pooled = latency_stats(np.concatenate(runs))
    std = float(means.std(ddof=1)) if len(means) > 1 else 0.0
    return {"mean": float(means.mean()), "std": std, "cv_pct": 100.0 * std / float(means.mean()),
            "p50": float(np.median(p50s)),  # median of the run medians: one slow run cannot move it
            "p50_pooled": pooled["p50"], "p95": pooled["p95"], "p99": pooled["p99"],
            "run_means": [float(m) for m in means], "run_p50s": [float(p) for p in p50s]}


class Stopwatch:
    """Elapsed seconds of a region of work: CUDA events on a GPU (the GPU's work between
    start() and stop(), what airbench counts), the host clock on the CPU."""

    def __init__(self, device):
        self.cuda = device.type == "cuda"

    def start(self):
        if self.cuda:
            self.e0, self.e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            self.e0.record()
        self.t0 = time.perf_counter()
        return self

    def stop(self):
        if self.cuda:
            self.e1.record()
            self.e1.synchronize()
            return self.e0.elapsed_time(self.e1) / 1e3
        return time.perf_counter() - self.t0


def time_e2e(clf, imgs, iters, offset=0, sync=None):
    """End-to-end latency of a Predictor (ms per call) on host images that change every call
    (imgs rotated from `offset`), and its answers.  Only the call is timed, as the user waits
    for it; sync runs between calls, outside the timed region (bench.py passes the predictor's
    settle(): every call starts on a predictor ready for it, its GPU work of the previous call
    ended)."""
    sync = sync or (lambda: None)
    n = len(imgs)
    ms = np.empty(iters, dtype=np.float64)
    answers = np.empty(iters, dtype=np.int64)
    idx = (offset + np.arange(iters)) % n
    clock = time.perf_counter_ns
    gc_was_on = gc.isenabled()
    gc.disable()
    try:
        for i in range(iters):
            img = imgs[idx[i]]
            sync()
            t0 = clock()
            answers[i] = clf(img)
            ms[i] = (clock() - t0) / 1e6
    finally:
        if gc_was_on:
            gc.enable()
    return ms, answers, idx


# Student's t quantile t_{0.975, df} for df = 1..30 (larger df: the normal's 1.96 is within 2 %)
_T975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
         2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
         2.045, 2.042]


def mean_interval(values):
    """(mean, std, low, high): the sample mean of seed accuracies (say) and its two-sided 95 %
    Student-t interval; one value gives no interval (low = high = NaN)."""
    v = np.asarray(values, dtype=np.float64)
    mean = float(v.mean())
    if len(v) < 2:
        return mean, 0.0, float("nan"), float("nan")
    std = float(v.std(ddof=1))
    t = _T975[len(v) - 2] if len(v) - 1 <= len(_T975) else 1.96
    half = t * std / np.sqrt(len(v))
    return mean, std, mean - half, mean + half
