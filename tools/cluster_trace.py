"""Where the µs of the cluster kernel go: every block stamps the GPU's clocks at each phase of one
call (ClusterNet.trace), and this prints, per phase, when block 0 and the earliest and latest
block got there (µs after the first block started, %globaltimer) and block 0's SM cycles since
its start (clock64, the finer of the two).  GPU only; the cluster engine's per-kernel table.

    python tools/cluster_trace.py [--variant F85_cluster] [--calls 200] [--input host|device]

The calls run on random images, one after another with a synchronise between them (the trace is
read after each); the first 20 are left out.
"""
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from cluster_plan import TRACE  # noqa: E402
import utils  # noqa: E402
from config import add_config_args, load_config  # noqa: E402
from inference import Predictor  # noqa: E402

def phases(n):
    """The stamps of cluster_net.source() for a net of n conv layers, in the order a call passes them."""
    out = [(0, "start"), (5, "start barrier"), (9, "image rows in"), (1, "layer 1 weights in"), (2, "stem"),
           (3, "layer 1 GEMM"), (4, "layer 1 pushed")]
    for i in range(1, n):
        out += [(4 * i + 2, f"layer {i + 1} input in"), (4 * i + 3, f"layer {i + 1} GEMM")]
        out += [(4 * i + 4, f"layer {i + 1} pushed")] if i < n - 1 else []
    return out + [(4 * n, "head: logits sent"), (4 * n + 1, "block 0: logits in"),
                  (TRACE - 1, "block 0: answer written")]


def trace(clf, calls, on_host, rng):
    """[calls, ranks, 2 * TRACE] int64 stamps: %globaltimer (ns) in the first TRACE columns, clock64 in the others."""
    kn = clf.kn
    kn.trace = torch.zeros(kn.plan["ranks"], 2 * TRACE, dtype=torch.int64, device=clf.device)
    out = []
    try:
        for _ in range(calls):
            img = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
            if on_host:
                clf._h_in_np[...] = img
                x = clf.h_in
            else:
                x = torch.from_numpy(img[None]).to(clf.device)
            torch.cuda.synchronize()
            kn.trace.zero_()
            kn(x)
            torch.cuda.synchronize()
            out.append(kn.trace.cpu().numpy())
    finally:
        kn.trace = None
    return np.stack(out)


def main():
    ap = utils.ArgParser(__doc__)
    ap.add_argument("--variant", default="F85_cluster", help="a variant with kernel_engine: cluster")
    ap.add_argument("--calls", type=int, default=200, help="traced calls (the first 20 left out)")
    ap.add_argument("--input", choices=("host", "device"), default="host",
                    help="the image in pinned host memory (as the end-to-end call reads it) or on the GPU")
    add_config_args(ap)
    a = ap.parse_args()
    cfg = load_config(a.config, a.overrides)
    ours = [v for v in cfg.variants if cfg.variants[v].kernels and cfg.variants[v].kernel_engine == "cluster"]
    if a.variant not in ours:
        raise utils.KitError(f"--variant: '{a.variant}' is not a variant with kernel_engine: cluster "
                             f"(valid: {', '.join(ours)})")
    if a.calls <= 20:
        raise utils.KitError(f"--calls {a.calls}: needs more than the 20 warm-up calls")
    if not torch.cuda.is_available():
        raise utils.KitError("tools/cluster_trace.py runs on a machine with a CUDA GPU (a Hopper one: the cluster "
                             "kernel's)")
    clf = Predictor(cfg, a.variant, torch.device("cuda"))
    t = trace(clf, a.calls, a.input == "host", np.random.default_rng(0))[20:]
    ns, cyc = t[:, :, :TRACE], t[:, :, TRACE:]
    end = TRACE - 1
    rel = (ns - ns[:, :, :1].min(axis=1, keepdims=True)) / 1000.0
    ghz = np.median((cyc[:, 0, end] - cyc[:, 0, 0]) / (ns[:, 0, end] - ns[:, 0, 0]))
    print(f"{a.variant} on {torch.cuda.get_device_name()}, image in {a.input} memory, {len(t)} calls, "
          f"SM clock {ghz:.2f} GHz; medians over calls")
    print(f"{'phase':26s} {'block 0 µs':>10s} {'first':>7s} {'last':>7s} {'block 0 cycles':>15s}")
    for ph, name in phases(len(clf.kn.plan["convs"])):
        hit = ns[:, :, ph] > 0  # blocks that idle in a layer, and blocks other than 0 at its end, stamp nothing
        first = np.where(hit, rel[:, :, ph], np.inf).min(axis=1)
        last = np.where(hit, rel[:, :, ph], -np.inf).max(axis=1)
        c0 = cyc[:, 0, ph] - cyc[:, 0, 0]
        print(f"{name:26s} {np.median(rel[:, 0, ph]):10.2f} {np.median(first):7.2f} {np.median(last):7.2f} "
              f"{np.median(c0):15.0f}")


if __name__ == "__main__":
    utils.run_main(main)
