"""GPU check of the fused TTA views of the kernel path (issue 9/10), one invocation:
front points through the front template's path (FP16, folded, our kernels, one CUDA graph),
the flip views fused into the kernels vs the earlier TTANet path (torch flip + cat + batch-2
kernels + weighted mean), interleaved runs, and each path's test accuracy through itself.

    python tools/tta_check.py --points AB94,w7,t3 [--runs 10 --iters 300] [--set paths.manifest=...]
Needs the front checkpoints front_<shape>_s<seed> in the manifest (train.py --front ...).
"""
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import inference  # noqa: E402
import utils  # noqa: E402
from config import add_config_args, load_config  # noqa: E402

_FOLDED = inference.InferenceModel.folded_net


def build(cfg, variant, dev, fused=True):
    """The variant's InferenceModel; fused=False builds its TTA views the earlier way (TTANet)."""
    if not fused:
        inference.InferenceModel.folded_net = staticmethod(lambda c, m, a: _FOLDED(c, m, dict(a, tta_fused=False)))
    try:
        return inference.InferenceModel(cfg, variant, dev)
    finally:
        inference.InferenceModel.folded_net = staticmethod(_FOLDED)


def main():
    ap = utils.ArgParser(__doc__)
    ap.add_argument("--points", default="AB94,w7,t3")
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--iters", type=int, default=300)
    add_config_args(ap)
    a = ap.parse_args()
    cfg = load_config(a.config, a.overrides)
    dev = torch.device("cuda")
    ims = {}
    for p in a.points.split(","):
        ims[f"P_{p}"] = build(cfg, f"P_{p}", dev)
        ims[f"P_{p}_flip"] = build(cfg, f"P_{p}_flip", dev)
        ims[f"P_{p}_flip_old"] = build(cfg, f"P_{p}_flip", dev, fused=False)
    tm = utils.path_timings(ims, dev, a.runs, a.iters)
    data = utils.load_data(cfg, dev, need_train=False)
    print(f"{torch.cuda.get_device_name()}, {a.runs} runs x {a.iters} calls; host p50 = median of run medians")
    print(f"{'path':<18s} {'p50 ms':>8s} {'p95 ms':>8s} {'gpu ms':>8s} {'pipe ms':>8s} {'kernels':>7s} {'acc %':>7s}")
    for n, im in ims.items():
        p50, p95, gpu, pipe = (tm[n][k] for k in ("p50", "p95", "gpu", "pipe"))
        kn = getattr(inference.kernel_net_of(im.net), "kernel_count", None)
        acc = inference.evaluate_inference(im, data, cfg.eval.batch_size, 0)["acc"]
        print(f"{n:<18s} {p50:8.4f} {p95:8.4f} {gpu:8.4f} {pipe:8.4f} {kn() if kn else '-':>7} {acc:7.2f}")


if __name__ == "__main__":
    utils.run_main(main)
