"""Where every µs of one batch-1 call goes: the per-kernel table of variants' CUDA graphs, built
by the kit's Predictor exactly as bench.py times them (GPU only).

    python tools/kernel_profile.py --out results/kernel_profile.json [--variants F,F_cudnn,F85_triton]

For each variant: end-to-end host p50 (the user's wait), the device-side call's host p50,
its CUDA-event GPU time and pipelined time (200 back-to-back replays / 200), and the kernels
of one end-to-end graph replay in launch order with their mean µs over 20 replays
(torch.profiler).  A variant launched ahead (F) is profiled on its per-call graph: the same
kernels, without the wait at the gate.  Writes the JSON the report reads and prints the table.
"""
import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import timing  # noqa: E402
import utils  # noqa: E402
from config import add_config_args, load_config  # noqa: E402
from data import host_split  # noqa: E402
from inference import Predictor  # noqa: E402


def profile_kernels(graph, n_rep=20):
    """[(kernel name, mean µs)] of one replay of a CUDA graph, from torch.profiler's records."""
    from torch.profiler import ProfilerActivity, profile
    graph.replay()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(n_rep):
            graph.replay()
        torch.cuda.synchronize()
    ev = sorted((e for e in prof.events() if e.device_type.name == "CUDA"), key=lambda e: e.time_range.start)
    per = len(ev) // n_rep
    if per == 0 or len(ev) % n_rep:
        raise utils.KitError(f"the profiler saw {len(ev)} GPU records for {n_rep} replays "
                             "(not a whole number a replay)")
    return [(ev[j].name[:70], sum(ev[r * per + j].time_range.elapsed_us() for r in range(n_rep)) / n_rep)
            for j in range(per)]


def measure(clf, imgs, device, runs=10, iters=300):
    """Host and GPU times (µs) and the per-kernel list of one variant."""
    timing.time_e2e(clf, imgs, 50, sync=clf.settle)
    e2e = [timing.time_e2e(clf, imgs, iters, r * iters, sync=clf.settle)[0] for r in range(runs)]
    dev = [timing.time_calls(clf.run_static, device, 50, iters) for _ in range(runs)]
    return {"e2e_p50": 1e3 * timing.summarize_runs(e2e)["p50"], "device_p50": 1e3 * timing.summarize_runs(dev)["p50"],
            "gpu": 1e3 * float(np.median(timing.time_gpu_events(clf.run_static, 200))),
            "pipe": 1e3 * timing.time_pipelined(clf.run_static, 200),
            "kernels": profile_kernels(clf._e2e_graph)}  # the per-call graph: no gate to release


def main():
    ap = utils.ArgParser(__doc__)
    ap.add_argument("--out", required=True, help="the JSON file to write")
    ap.add_argument("--variants", default="F,F_cudnn,F85_triton", help="CUDA-graph variants, comma-separated")
    add_config_args(ap)
    a = ap.parse_args()
    if not torch.cuda.is_available():
        raise utils.KitError("kernel_profile.py profiles CUDA graphs: run it on a machine with a CUDA GPU")
    utils.check_writable(a.out, "give a writable --out file")
    cfg = load_config(a.config, a.overrides)
    device = torch.device("cuda")
    env = utils.env_info()
    imgs, _ = host_split(cfg, "test")
    res = {"env": env, "variants": {}}
    print(f"{env['gpu']} (driver {env['driver']}), torch {env['torch']}, commit {env['git_commit']}")
    for v in [s for s in a.variants.split(",") if s]:
        clf = Predictor(cfg, v, device)
        if not clf.cuda_graph:
            raise utils.KitError(f"variant {v} has no CUDA graph to profile")
        r = measure(clf, imgs, device)
        r.update(label=clf.label, notes="; ".join(clf.notes), shape=clf.ck_meta["shape"], tta=clf.tta)
        res["variants"][v] = r
        print(f"{v}: e2e p50 {r['e2e_p50']:.1f} us, device-side p50 {r['device_p50']:.1f}, GPU {r['gpu']:.1f}, "
              f"pipelined {r['pipe']:.1f}; {len(r['kernels'])} GPU records, "
              f"sum {sum(t for _, t in r['kernels']):.1f} us")
        for k, t in r["kernels"]:
            print(f"    {t:6.2f} us  {k}")
    utils.atomic_write_bytes(a.out, (json.dumps(res, indent=1) + "\n").encode())
    print(f"wrote {a.out}")


if __name__ == "__main__":
    utils.run_main(main)
