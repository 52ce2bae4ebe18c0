"""Train one model on CIFAR-10 and save its best-by-validation checkpoint.

    python train.py --model mobilenetv3                      # B1 (and O1-O3) weights
    python train.py --model resnet18                         # B2, also the distillation teacher
    python train.py --model fastnet --final               # F: also written to paths.final_model
    python train.py --model resnet18 --set train.resnet18.epochs=5 --device cpu

The recipe is train.<model> in config.yaml (epochs, batch size, lr, ...).  The 50k train
images are split into train / validation (data.val_size, fixed by the seed); each epoch is
validated and the best epoch's weights are kept; the test set is evaluated once, at the end,
for the record.  Writes checkpoints/<tag>_e<epoch>_acc<test acc>.pth, points the manifest's
entry <tag> at it (variants refer to it as "@<tag>") and appends a row to results.csv.
"""

import os
import sys
import time

import torch
import torch.nn as nn

from config import MODEL_NAMES, add_config_args, load_config, resolve_path
import utils
from utils import KitError, augment, log


# ============================================================================= training loop
@torch.no_grad()
def accuracy(model, x, y, batch_size=1000, amp=False, channels_last=False):
    """Top-1 accuracy (%) of a model on normalised inputs."""
    model.eval()
    correct = 0
    dev = x.device
    for i in range(0, len(x), batch_size):
        xb = x[i:i + batch_size]
        if channels_last:
            xb = xb.contiguous(memory_format=torch.channels_last)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp and dev.type == "cuda"):
            correct += int((model(xb).argmax(1) == y[i:i + batch_size]).sum())
    return 100.0 * correct / max(len(x), 1)


def lr_lambda(total_steps, warmup_steps):
    """Linear warm-up to the peak, then linear decay to 0 at the last step."""
    def f(step):
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))
    return f


def fit(model, data, tcfg, cfg, device, loss_fn=None, desc="train"):
    """Train with SGD+Nesterov, warm-up + linear decay, label smoothing, bf16 autocast on CUDA.

    Validates each epoch on the held-out split and keeps the best-by-validation weights
    (the test set is never looked at here).  loss_fn(logits, y, x) replaces the plain
    cross-entropy (distill.py passes the distillation loss).  Returns a dict with
    best_epoch, val_acc, history, train_time_s; the model holds the best weights.
    """
    from tqdm import tqdm
    x, y = data["x_train"], data["y_train"]
    n, bs = len(x), tcfg.batch_size
    steps = n // bs if n >= bs else 1
    total = steps * tcfg.epochs
    cl = tcfg.channels_last
    amp = tcfg.amp and device.type == "cuda"
    model.to(device)
    if cl:
        model.to(memory_format=torch.channels_last)
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    opt = torch.optim.SGD([{"params": decay, "weight_decay": tcfg.weight_decay},
                           {"params": no_decay, "weight_decay": 0.0}],
                          lr=tcfg.lr, momentum=tcfg.momentum, nesterov=tcfg.momentum > 0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(total, int(tcfg.warmup_epochs * steps)))
    ce = nn.CrossEntropyLoss(label_smoothing=tcfg.label_smoothing)
    loss_fn = loss_fn or (lambda logits, yb, xb: ce(logits, yb))
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    has_val = len(data["y_val"]) > 0
    best = {"val_acc": -1.0, "epoch": 0, "state": None}
    history = []
    t_start = time.time()
    show_bar = sys.stderr.isatty()
    for epoch in range(1, tcfg.epochs + 1):
        model.train()
        t0 = time.time()
        perm = torch.randperm(n, generator=gen, device=device)
        loss_sum = torch.zeros((), device=device)
        bar = tqdm(range(steps), desc=f"{desc} {epoch}/{tcfg.epochs}", leave=False, disable=not show_bar)
        for s in bar:
            idx = perm[s * bs:(s + 1) * bs]
            xb = augment(x[idx], cfg.data.pad, cfg.data.flip, gen)
            if cl:
                xb = xb.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                loss = loss_fn(model(xb), y[idx], xb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += loss.detach()
        if not torch.isfinite(loss_sum):
            raise KitError(f"{desc}: the loss diverged (non-finite) in epoch {epoch}; lower the lr")
        val = accuracy(model, data["x_val"], data["y_val"], amp=amp, channels_last=cl) if has_val else float("nan")
        score = val if has_val else float(epoch)  # no validation split: keep the last epoch
        if score > best["val_acc"]:
            best = {"val_acc": score, "epoch": epoch,
                    "state": {k: v.detach().clone() for k, v in model.state_dict().items()}}
        rec = {"epoch": epoch, "loss": float(loss_sum) / steps, "val_acc": val, "time_s": time.time() - t0}
        history.append(rec)
        log(f"{desc} epoch {epoch:3d}/{tcfg.epochs}  loss {rec['loss']:.4f}  val {val:6.2f}%  "
            f"lr {sched.get_last_lr()[0]:.4f}  {rec['time_s']:.1f}s")
    train_time = time.time() - t_start
    model.load_state_dict(best["state"])
    model.to(memory_format=torch.contiguous_format)
    return {"best_epoch": best["epoch"], "val_acc": best["val_acc"] if has_val else float("nan"),
            "history": history, "train_time_s": train_time}


# ============================================================================= train, save, register
def train_and_save(cfg, model_name, device, tag, save_as=None, script="train", loss_factory=None, notes=""):
    """Train model_name with train.<model_name>; save, register and record it.  Shared with distill.py."""
    results = resolve_path(cfg, cfg.paths.results)
    utils.check_results_file(results)
    if model_name not in cfg.train:
        raise utils.KitError(f"no training recipe train.{model_name} in the config (have: {', '.join(cfg.train)})")
    tcfg = cfg.train[model_name]
    utils.set_seed(cfg.seed)
    data = utils.load_data(cfg, device)
    utils.log(f"{script}: {model_name} on {device} ({utils.env_info()['gpu'] or utils.env_info()['cpu']}), "
              f"{len(data['y_train'])} train / {len(data['y_val'])} val images, {tcfg.epochs} epochs")
    model = utils.build_model(model_name, cfg)
    loss_fn = loss_factory(tcfg) if loss_factory else None
    info = fit(model, data, tcfg, cfg, device, loss_fn=loss_fn, desc=tag)
    test_acc = accuracy(model, data["x_test"], data["y_test"])  # FP32, once, for the record
    val_acc = info["val_acc"]
    ckpt_dir = resolve_path(cfg, cfg.paths.checkpoints)
    path = os.path.join(ckpt_dir, utils.checkpoint_name(tag, info["best_epoch"], test_acc))
    meta = dict(tag=tag, epoch=info["best_epoch"], val_acc=val_acc, test_acc=test_acc,
                train_time_s=info["train_time_s"], history=info["history"])
    utils.save_checkpoint(path, model.cpu(), model_name, cfg, **meta)
    rel = os.path.relpath(path, os.path.dirname(cfg.config_file))
    if rel.startswith(".."):  # outside the project: keep it absolute
        rel = os.path.abspath(path)
    utils.update_manifest(cfg, tag, {"path": rel, "model": model_name, "epoch": info["best_epoch"],
                                     "val_acc": round(val_acc, 2), "test_acc": round(test_acc, 2),
                                     "train_time_s": round(info["train_time_s"], 1),
                                     "gpu": utils.env_info()["gpu"], "script": script})
    if save_as:
        utils.save_checkpoint(resolve_path(cfg, save_as), model, model_name, cfg, **meta)
    row = utils.base_row(cfg, script, device)
    row.update(model=model_name, label=tag, precision="bf16-amp" if tcfg.amp and device.type == "cuda" else "fp32",
               memory_format="channels_last" if tcfg.channels_last else "contiguous",
               acc=test_acc, val_acc=val_acc, epochs=info["best_epoch"], train_time_s=info["train_time_s"],
               checkpoint=rel, n_params=sum(p.numel() for p in model.parameters()),
               notes=f"best epoch {info['best_epoch']}/{tcfg.epochs} by validation; acc = FP32 test accuracy"
                     + (f"; {notes}" if notes else ""))
    utils.append_result(results, row)
    utils.log(f"{script}: {tag} best epoch {info['best_epoch']} val {val_acc:.2f}% test {test_acc:.2f}% "
              f"in {info['train_time_s']:.1f}s -> {rel}" + (f" and {save_as}" if save_as else ""))
    return path, test_acc


def main():
    ap = utils.ArgParser(__doc__)
    ap.add_argument("--model", required=True, choices=MODEL_NAMES, help="architecture to train")
    ap.add_argument("--tag", help="manifest tag and file-name prefix (default: the model name)")
    ap.add_argument("--save-as", help="also write the checkpoint to this path")
    ap.add_argument("--final", action="store_true", help="also write it to paths.final_model (the shipped F model)")
    ap.add_argument("--device", default="auto", help="auto (GPU if any), cuda, cuda:N or cpu (default: auto)")
    add_config_args(ap)
    a = ap.parse_args()
    cfg = load_config(a.config, a.overrides)
    device = utils.resolve_device(a.device)
    if device.type == "cpu":
        utils.log("train: no GPU in use: training on the CPU (slow; fine for short runs)")
    save_as = a.save_as or (cfg.paths.final_model if a.final else None)
    train_and_save(cfg, a.model, device, a.tag or a.model, save_as)


if __name__ == "__main__":
    utils.run_main(main)
