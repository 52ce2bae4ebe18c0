"""Which kernel-path options make a variant fastest (issue 10): heuristic vs tuned tiles, PDL off/on.

    python tools/kernel_paths.py [--variants F,F@none,F85] [--runs 10 --iters 300]

Each variant's checkpoint is built through InferenceModel (its path exactly as bench.py times
it) once per option: kernel_tiles heuristic | tuned (paths.kernel_tiles, from
tools/kernel_tune.py) x kernel_pdl off | on x kernel_fuse_stem off | on (OPTIONS).  Interleaved runs as bench.py; host p50 = median
of run medians; GPU time per call from CUDA events; pipelined = back-to-back replays; the
logits of every option against the heuristic one's on the same random images (the options
change the schedule, not the sums, beyond fp32 atomics' order).
"""
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import inference  # noqa: E402
import utils  # noqa: E402
from config import Config, add_config_args, load_config  # noqa: E402

OPTIONS = [("heuristic", False, False), ("tuned", False, False), ("tuned", True, False), ("tuned", False, True),
           ("tuned", True, True)]  # (kernel_tiles, kernel_pdl, kernel_fuse_stem)


def build_all(cfg, variants, dev):
    ims = {}
    for v in variants:  # "F@none": variant F with another tta mode
        base, _, tta = v.partition("@")
        for tiles, pdl, stem in OPTIONS:
            name = f"{v} {tiles}{' +pdl' if pdl else ''}{' +stem' if stem else ''}"
            cfg.variants[name] = Config(dict(cfg.variants[base], kernel_tiles=tiles, kernel_pdl=pdl,
                                             kernel_fuse_stem=stem, tta=tta or cfg.variants[base].tta))
            ims[name] = inference.InferenceModel(cfg, name, dev)
    return ims


def main():
    ap = utils.ArgParser(__doc__)
    ap.add_argument("--variants", default="F,F@none,F85", help="V or V@tta (V with another tta mode)")
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--iters", type=int, default=300)
    add_config_args(ap)
    a = ap.parse_args()
    cfg = load_config(a.config, a.overrides)
    dev = torch.device("cuda")
    ims = build_all(cfg, a.variants.split(","), dev)
    tm = utils.path_timings(ims, dev, a.runs, a.iters)
    x = torch.randint(0, 256, (64, 1, 3, 32, 32), dtype=torch.uint8, device=dev)
    env = utils.env_info()
    print(f"{env['gpu']}, torch {env['torch']}, commit {env['git_commit']}; {a.runs} runs x {a.iters} calls")
    print(f"{'path':<24s} {'p50 us':>7s} {'p95 us':>7s} {'gpu us':>7s} {'pipe us':>7s} {'max|dlogit|':>11s}  notes")
    base = {}
    for n, im in ims.items():
        p50, p95, gpu, pipe = (1e3 * tm[n][k] for k in ("p50", "p95", "gpu", "pipe"))
        outs = torch.stack([im(im.prepare(xi)).float().clone() for xi in x])
        key = n.split(" ")[0]
        base.setdefault(key, outs)
        diff = (outs - base[key]).abs().max().item()
        print(f"{n:<24s} {p50:7.1f} {p95:7.1f} {gpu:7.1f} {pipe:7.1f} {diff:11.2e}  {'; '.join(im.notes)}",
              flush=True)


if __name__ == "__main__":
    utils.run_main(main)
