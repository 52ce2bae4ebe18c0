"""Which kernel-path options make a variant fastest (issue 10): tiles, PDL, fewer kernels.

    python tools/kernel_paths.py [--variants F,F@none,F85] [--options heuristic,tuned,tuned+pairs]
                                 [--wide-tiles PATH] [--runs 10 --iters 300]

Each variant's checkpoint is built through InferenceModel (its path exactly as bench.py times
it) once per option.  An option is a tile source and any of +pdl, +stem, +pairs:
  heuristic | tuned (paths.kernel_tiles, from tools/kernel_tune.py) | wide (the tile cache at
  --wide-tiles, e.g. from kernel_tune.py --wide --out PATH; the heuristic where it lacks a layer)
  +pdl: kernel_pdl; +stem: kernel_fuse_stem; +pairs: kernel_fuse_pairs (layers paired in one
  persistent kernel each).
Interleaved runs as bench.py; host p50 = median of run medians; GPU time per call from CUDA
events; pipelined = back-to-back replays; the logits of every option against the first one's on
the same random images (the options change the schedule, not the sums, beyond fp32 atomics' order).
"""
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import inference  # noqa: E402
import utils  # noqa: E402
from config import Config, add_config_args, load_config  # noqa: E402

OPTIONS = "heuristic,tuned,tuned+pdl,tuned+stem,tuned+pdl+stem"
FLAGS = {"pdl": "kernel_pdl", "stem": "kernel_fuse_stem", "pairs": "kernel_fuse_pairs"}


def parse_option(opt):
    """'tuned+pdl+pairs' -> ('tuned', {'kernel_pdl': True, ...}); a bad token -> KitError."""
    src, *flags = opt.split("+")
    if src not in ("heuristic", "tuned", "wide") or any(f not in FLAGS for f in flags):
        raise utils.KitError(f"--options: bad option '{opt}' (a tile source heuristic | tuned | wide, then any of "
                             f"{', '.join('+' + f for f in FLAGS)})")
    return src, {FLAGS[f]: True for f in flags}


def build_all(cfg, variants, options, wide_tiles, dev):
    """{'F tuned +pairs': InferenceModel} for every variant ('F@none': F with another tta) x option."""
    ims, tiles_path = {}, cfg.paths.kernel_tiles
    for v in variants:
        base, _, tta = v.partition("@")
        for opt in options:
            src, flags = parse_option(opt)
            name = " ".join([v, src] + [f"+{f}" for f in opt.split("+")[1:]])
            off = dict(kernel_pdl=False, kernel_fuse_stem=False, kernel_fuse_pairs=False)
            cfg.variants[name] = Config(dict(cfg.variants[base], kernel_tiles="heuristic" if src == "heuristic" else "tuned",
                                             tta=tta or cfg.variants[base].tta, **dict(off, **flags)))
            cfg.paths["kernel_tiles"] = wide_tiles if src == "wide" else tiles_path  # read at build only
            try:
                ims[name] = inference.InferenceModel(cfg, name, dev)
            finally:
                cfg.paths["kernel_tiles"] = tiles_path
    return ims


def main():
    ap = utils.ArgParser(__doc__)
    ap.add_argument("--variants", default="F,F@none,F85", help="V or V@tta (V with another tta mode)")
    ap.add_argument("--options", default=OPTIONS, help="comma-separated: heuristic|tuned|wide, then +pdl +stem +pairs")
    ap.add_argument("--wide-tiles", default="", help="the tile cache of the 'wide' options")
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--iters", type=int, default=300)
    add_config_args(ap)
    a = ap.parse_args()
    cfg = load_config(a.config, a.overrides)
    options = a.options.split(",")
    for o in options:
        parse_option(o)  # a typo stops here, before anything is built
    if any(o.startswith("wide") for o in options) and not os.path.isfile(a.wide_tiles):
        raise utils.KitError(f"--wide-tiles: no tile cache '{a.wide_tiles}' for the wide options "
                             "(make one: tools/kernel_tune.py --wide --out PATH)")
    if not torch.cuda.is_available():
        raise utils.KitError("kernel_paths.py times the kernel path on a GPU: run it on the lent machine")
    dev = torch.device("cuda")
    ims = build_all(cfg, a.variants.split(","), options, a.wide_tiles, dev)
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
