"""How long one training epoch of a fastnet shape takes on this CPU (issue 8: the README's
CPU training estimate), measured on a few full batch-size steps of the real training loop and
scaled to one epoch of 50,000 images.

    python tools/cpu_epoch.py                      # config's fastnet (AB94 shape), 3 timed steps
    python tools/cpu_epoch.py --shape w7 --steps 2 # a front shape
Prints one line: shape, threads, seconds per step, seconds per epoch (extrapolated).
"""
import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import train  # noqa: E402
import utils  # noqa: E402
from config import Config, front_model_kwargs, load_config  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shape", help="a front shape of config.yaml (default: models.fastnet)")
    ap.add_argument("--steps", type=int, default=3, help="timed steps (one more runs untimed first)")
    a = ap.parse_args()
    cfg = load_config(None, [])
    if a.shape:
        cfg["models"]["fastnet"] = Config(front_model_kwargs(cfg, a.shape))
    tcfg, dev = cfg.train.fastnet, torch.device("cpu")
    data = utils.load_data(cfg, dev)
    bs = tcfg.batch_size
    n = bs * (a.steps + 1)  # the loop's real steps, on as many images as they need
    data = dict(data, x_train=data["x_train"][:n], y_train=data["y_train"][:n])
    model = utils.build_model("fastnet", cfg)
    gen = torch.Generator().manual_seed(cfg.seed)
    ce = torch.nn.CrossEntropyLoss(label_smoothing=tcfg.label_smoothing)
    opt = train.make_optimizer(model, tcfg)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, train.lr_lambda(1000, 10, tcfg.lr_start))
    ctx = dict(steps=1, total=1000, amp=False, gen=gen, lookahead=None, loss_fn=lambda lg, yb, xb: ce(lg, yb),
               flip_base=torch.rand(n, generator=gen) < 0.5)
    sub = dict(data, x_train=data["x_train"][:bs], y_train=data["y_train"][:bs])
    train.train_epoch(model, model, opt, sched, sub, tcfg, cfg, ctx, 1)  # warm-up step, untimed
    ctx["steps"] = a.steps
    t0 = time.time()
    train.train_epoch(model, model, opt, sched, dict(data, x_train=data["x_train"][bs:], y_train=data["y_train"][bs:]),
                      tcfg, cfg, ctx, 2)
    per_step = (time.time() - t0) / a.steps
    print(f"cpu epoch: fastnet {a.shape or 'models.fastnet'} batch {bs}, {torch.get_num_threads()} threads: "
          f"{per_step:.2f} s/step -> {per_step * 50000 / bs:.0f} s per 50k-image epoch (extrapolated from {a.steps} steps)")


if __name__ == "__main__":
    main()
