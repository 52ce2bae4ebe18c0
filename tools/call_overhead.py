"""The host's own time of one end-to-end call of our kernels' polled paths, with the GPU's part
taken out: Predictor's call (the fast closure) against its general call (_call), per path.

    python tools/call_overhead.py [--rounds 10] [--calls 20000]

No GPU is used: the predictor gets host buffers only, a launch that does nothing, and before each
call (untimed) the answer word already holding that call's answer, so a timed call is the input
check, the image copy into the pinned buffer, the flag word, the launch's Python call, one poll of
the answer word and the return.  Rounds of the two calls are interleaved; the medians of the round
medians are printed, per path (launched ahead, a graph per call, a serving kernel).  On the GPU's
own host this is the part of the e2e time that is Python, not PCIe or the GPU.
"""
import argparse
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from inference import Predictor  # noqa: E402
from utils import env_info  # noqa: E402


class _NoGraph:
    def replay(self):
        pass


def host_only(launch):
    """A Predictor of our kernels' path `launch` (ahead, call, serve) with host buffers only."""
    p = Predictor.__new__(Predictor)
    p.variant, p.kernels, p.e2e_input, p.e2e_wait, p.e2e_launch = "F", True, "mapped", "poll", launch
    p.timeout_s, p.calls, p.expired_calls, p._pending, p._cuda, p.cuda_graph = 1.0, 0, 0, True, True, True
    p._h_in_np, p._word_np = np.zeros((32, 32, 3), np.uint8), np.array([0, -1, -1, 0], np.int32)
    p._flag_np, p._seq = np.zeros(4, np.int32), torch.zeros(1, dtype=torch.int32)
    p._launch_ahead, p._e2e_graph = (lambda: None), _NoGraph()
    p.drain = lambda: None
    p._fast = p._fast_call()
    return p


def time_calls(p, imgs, use_fast):
    """Per-call ns of len(imgs) calls, the answer put in place before each."""
    call = p if use_fast else p._call
    word, clock = p._word_np, time.perf_counter_ns
    out = np.empty(len(imgs), dtype=np.int64)
    for i, img in enumerate(imgs):
        word[0] = ((p.calls + 1) << 4) | 3
        t0 = clock()
        call(img)
        out[i] = clock() - t0
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--calls", type=int, default=20000)
    a = ap.parse_args(argv)
    env = env_info()
    print(f"host: {env.get('cpu')}, python {env.get('python')}, numpy {np.__version__}")
    imgs = np.random.default_rng(0).integers(0, 256, (256, 32, 32, 3), dtype=np.uint8)
    imgs = imgs[np.arange(a.calls) % len(imgs)]
    print(f"{'path':8s} {'fast call ns':>13s} {'general ns':>11s} {'saved ns':>9s}")
    for launch in ("ahead", "call", "serve"):
        p = host_only(launch)
        med = {True: [], False: []}
        for _ in range(a.rounds):
            for use_fast in (True, False):
                med[use_fast].append(float(np.median(time_calls(p, imgs, use_fast))))
        f, g = np.median(med[True]), np.median(med[False])
        print(f"{launch:8s} {f:13.0f} {g:11.0f} {g - f:9.0f}")


if __name__ == "__main__":
    main()
