"""Where the GPU's part of one end-to-end call goes, for variants of our Triton kernels launched
per call or ahead (GPU only): the Predictor's own graphs captured again with the kernels'
GPU-clock stamps on (kernels.conv_layer_kernel, TRACE), then timed as bench.py times them.

    python tools/e2e_trace.py [--variants F,F_stem,F_call] [--rounds 5] [--calls 1000] [--out FILE]

Per call, from the GPU's %globaltimer (ns, the same on every SM): the flag seen by the gate's
polling program, the image staged by it (e2e_gate: stage), and each layer's end (the latest of
its programs' ends; the last layer's end is the answer written), and its last program past its PDL
wait and past its K loop.  Printed as medians: the gate's steps, each layer's time from the previous
one's end (and its three parts), flag-to-answer on the GPU, and the host's
e2e time of the same calls; e2e minus flag-to-answer is the host's part plus the two trips across
PCIe (the flag's and the answer's).  The stamps cost each program three atomics: read the times
beside each other, not as the untraced variant's.
"""
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import timing  # noqa: E402
import utils  # noqa: E402
import variant_tool  # noqa: E402
from config import add_config_args  # noqa: E402
from inference import Predictor, capture_graph  # noqa: E402

ROWS = 1024  # rows of the trace buffer: one per call, by call number


def traced(clf):
    """clf's end-to-end graph captured again with the trace buffer on (the same kernels and
    buffers, stamping); returns the buffer."""
    clf.drain()
    clf.kn.trace = torch.zeros(ROWS, 32, dtype=torch.int64, device=clf.device)
    if clf.e2e_launch == "ahead":
        clf._build_ahead()
    else:
        clf._e2e_graph, _ = capture_graph(clf._e2e_graph_body)
    clf._resync()  # the captures' warm-up runs counted calls on the GPU
    return clf.kn.trace


def main():
    ap = utils.ArgParser(__doc__)
    ap.add_argument("--variants", default="F,F_stem,F_call", help="variants of our Triton kernels, comma-separated")
    ap.add_argument("--rounds", type=int, default=5, help="timed rounds per variant")
    ap.add_argument("--calls", type=int, default=1000, help=f"calls per round (<= {ROWS})")
    ap.add_argument("--out", help="also write the medians as JSON here")
    add_config_args(ap)
    a = ap.parse_args()
    if a.rounds < 1 or not 10 <= a.calls <= ROWS:  # (and nets of <= 8 layers: the row's columns)
        raise utils.KitError(f"give --rounds >= 1 and --calls from 10 to {ROWS}")

    def ours(c):  # our Triton kernels in a CUDA graph reading the mapped image, launched per call or ahead
        return (c.kernels and c.cuda_graph and c.kernel_engine == "triton" and c.e2e_launch in ("call", "ahead")
                and c.e2e_input == "mapped")
    cfg, variants, device, env, imgs = variant_tool.start(a, ours, "a variant of our Triton kernels reading the "
                                                          "mapped image", "e2e_trace.py reads the GPU's clock")
    res = {"env": env, "variants": {}}
    for v in variants:
        clf = Predictor(cfg, v, device)
        buf = traced(clf)
        nl = clf.kn.kernel_count()  # the conv layers' kernels, and the head kernel after them if there is one
        if nl > 8:
            raise utils.KitError(f"variant {v}: {nl} kernels; the trace's row holds stamps of 8 at most")
        timing.time_e2e(clf, imgs, 50, sync=clf.settle)  # warm-up
        e2e, stamps = [], []
        for r in range(a.rounds):
            first = clf.calls + 1
            ms, _, _ = timing.time_e2e(clf, imgs, a.calls, r * a.calls, sync=clf.settle)
            clf.drain()
            torch.cuda.synchronize()
            rows = buf.cpu().numpy()[(first + np.arange(a.calls)) % ROWS]  # call n stamps row n % ROWS
            e2e.append(ms)
            stamps.append(rows)
        st = np.concatenate(stamps).astype(np.float64) / 1e3  # µs
        us = np.concatenate(e2e) * 1e3
        ends = st[:, 2:2 + nl]
        gated = bool(np.all(st[:, 0] > 0))
        out = {"e2e_p50": 1e3 * timing.summarize_runs(e2e)["p50"]}
        if gated:
            out["gate_to_l0_end"] = float(np.median(ends[:, 0] - st[:, 0]))
            if np.all(st[:, 1] > 0):
                out["stage"] = float(np.median(st[:, 1] - st[:, 0]))
            fta = ends[:, -1] - st[:, 0]
            out["flag_to_answer"] = float(np.median(fta))
            out["e2e_minus_flag_to_answer"] = float(np.median(us - fta))
        out["layers"] = [float(np.median(ends[:, i] - ends[:, i - 1])) for i in range(1, nl)]
        # each layer's parts: the previous end -> its last program past the PDL wait -> its last
        # program past the K loop -> its end (split-K's meeting, the epilogue, the head)
        waits, kends = st[:, 16:16 + nl], st[:, 24:24 + nl]
        out["parts"] = [[float(np.median(waits[:, i] - ends[:, i - 1])), float(np.median(kends[:, i] - waits[:, i])),
                         float(np.median(ends[:, i] - kends[:, i]))] for i in range(1, nl)]
        out["l0_end_to_answer"] = float(np.median(ends[:, -1] - ends[:, 0]))
        res["variants"][v] = out
        print(f"{v}: e2e p50 {out['e2e_p50']:.2f} us; " + (
            f"flag -> answer {out['flag_to_answer']:.2f} us (e2e - that {out['e2e_minus_flag_to_answer']:.2f}); "
            f"flag -> layer 0's end {out['gate_to_l0_end']:.2f}" + (f" (staging {out['stage']:.2f})" if "stage" in out
                                                                      else "") + "; " if gated else "")
              + "layers 1.. from the previous end: " + ", ".join(f"{t:.2f}" for t in out["layers"])
              + f"; layer 0's end -> answer {out['l0_end_to_answer']:.2f} us\n  layers 1.. (previous end -> past the "
              "PDL wait, -> past the K loop, -> end): " + ", ".join("/".join(f"{x:.2f}" for x in p)
                                                                 for p in out["parts"]))
        clf.drain()
        del clf
    variant_tool.write(a.out, res)


if __name__ == "__main__":
    utils.run_main(main)
