"""Per-kernel table of F (issue 10): where every µs of one batch-1 call goes, on F's own path
(our Triton kernels) and on the same weights through cuDNN + torch.compile (variant F_cudnn),
both built by the kit's InferenceModel exactly as bench.py times them.

    python tools/kernel_profile.py --out DIR [--variants F,F_cudnn] [--set paths.final_model=...]
Writes DIR/kernel_bench.json ({path: {p50, p95, gpu, pipe, kernels: [[name, µs], ...]}}, the
format report/facts.py reads; "cudnn graph" and "kernels" name the two paths) and
DIR/kernel_bench.log.  Host p50/p95: 10 runs x 300 synchronised replays; gpu: CUDA events per
call (median); pipe: 200 back-to-back replays / 200; kernels: torch.profiler's CUDA kernel
records of 20 replays, mean µs per kernel per call, in launch order.
"""
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import utils  # noqa: E402
from config import add_config_args, load_config  # noqa: E402
from inference import InferenceModel  # noqa: E402
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from kernel_bench import profile_kernels  # noqa: E402  (the profiler's kernels of one graph replay)

LOG = []


def log(s):
    print(s, flush=True)
    LOG.append(s)


def measure(im, dev):
    """Host p50/p95, GPU-event and pipelined time (µs) and the per-kernel list of one path."""
    t = utils.path_timings({"path": im}, dev, 10, 300)["path"]
    return {**{k: 1e3 * v for k, v in t.items()}, "kernels": profile_kernels(im._graph)}


def main():
    ap = utils.ArgParser(__doc__)
    ap.add_argument("--out", required=True)
    ap.add_argument("--variants", default="F,F_cudnn", help="ours,cudnn: two graph variants on the same weights")
    add_config_args(ap)
    a = ap.parse_args()
    cfg = load_config(a.config, a.overrides)
    dev = torch.device("cuda")
    os.makedirs(a.out, exist_ok=True)
    env = utils.env_info()
    log(f"{env['gpu']} (driver {env['driver']}), torch {env['torch']}, triton {__import__('triton').__version__}, "
        f"commit {env['git_commit']}")
    ours, cudnn = a.variants.split(",")
    res = {}
    for name, v in (("kernels", ours), ("cudnn graph", cudnn)):
        im = InferenceModel(cfg, v, dev)
        log(f"{name}: variant {v}, {im.ckpt_path} folded: shape {im.ck_meta.get('front') or '-'}, tta {im.tta}")
        res[name] = measure(im, dev)
        r = res[name]
        log(f"  host p50 {r['p50']:.1f} us  p95 {r['p95']:.1f}  gpu {r['gpu']:.1f}  pipelined {r['pipe']:.1f}  "
            f"{len(r['kernels'])} kernels, sum {sum(t for _, t in r['kernels']):.1f} us")
        for k, t in r["kernels"]:
            log(f"    {t:6.2f} us  {k}")
    json.dump(res, open(os.path.join(a.out, "kernel_bench.json"), "w"), indent=1)
    open(os.path.join(a.out, "kernel_bench.log"), "w").write("\n".join(LOG) + "\n")


if __name__ == "__main__":
    utils.run_main(main)
