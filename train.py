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

import copy
import os
import time

import torch
import torch.nn as nn

from config import MODEL_NAMES, Config, add_config_args, front_model_kwargs, front_tag, load_config, resolve_path
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


def lr_lambda(total_steps, warmup_steps, start=0.0):
    """Linear warm-up from start x the peak to the peak, then linear decay to 0 at the last step."""
    def f(step):
        if step < warmup_steps:
            return start + (1.0 - start) * (step + 1) / warmup_steps
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))
    return f


def make_optimizer(model, tcfg):
    """Nesterov SGD, three groups.  Weights (ndim > 1) at lr with weight_decay; biases at
    lr * bias_lr_scale (airbench's idea: BN biases learn much faster), decayed by
    weight_decay / bias_lr_scale when decay_biases (the same decay per step), else not at all;
    learnt BN weights at lr without decay (a 64x lr on a scale would blow the net up)."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    s = tcfg.bias_lr_scale
    groups = [{"params": [p for _, p in named if p.ndim > 1], "lr": tcfg.lr, "weight_decay": tcfg.weight_decay},
              {"params": [p for n, p in named if p.ndim <= 1 and n.endswith("bias")], "lr": tcfg.lr * s,
               "weight_decay": tcfg.weight_decay / s if tcfg.decay_biases else 0.0},
              {"params": [p for n, p in named if p.ndim <= 1 and not n.endswith("bias")], "lr": tcfg.lr,
               "weight_decay": 0.0}]
    # fused: one CUDA kernel per group instead of several multi-tensor ones (the same update);
    # at batch-1024 steps of a small net the host's launches, not the GPU, set the pace
    fused = tcfg.fused_optimizer and all(p.is_cuda for _, p in named)
    return torch.optim.SGD([g for g in groups if g["params"]], lr=tcfg.lr, momentum=tcfg.momentum,
                           nesterov=tcfg.momentum > 0, fused=fused or None)


class Lookahead:
    """Every `every` steps: slow <- slow + (1 - alpha) (fast - slow), then fast <- slow, with
    alpha = base^every * progress^3 (no averaging early, strong late).  At the end the slow
    weights are kept.  (Lookahead/EMA as in hlb-cifar10 and airbench; our own formulation.)"""

    def __init__(self, model, every, base):
        self.every, self.base = every, base
        self.live = [t for t in model.state_dict().values() if t.dtype.is_floating_point]
        self.slow = [t.detach().clone() for t in self.live]

    @torch.no_grad()
    def step(self, step, total):
        if step % self.every:
            return
        alpha = 1.0 if step >= total else self.base ** self.every * (step / total) ** 3
        torch._foreach_lerp_(self.slow, self.live, 1.0 - alpha)  # 2 multi-tensor kernels, not 2 per tensor
        torch._foreach_copy_(self.live, self.slow)


def flip_views(xb, idx, flip_base, epoch, mode, gen):
    """'random': flip each image with p = 0.5; 'alternate': each image is flipped on every other
    epoch (a fixed random half on odd epochs, the other half on even ones: airbench's idea, every
    image is seen both ways within two epochs); 'none'."""
    if mode == "none":
        return xb
    if mode == "alternate":
        m = flip_base[idx] ^ bool(epoch % 2 == 0)
    else:
        m = torch.rand(len(xb), generator=gen, device=xb.device) < 0.5
    return torch.where(m[:, None, None, None], xb.flip(3), xb)


def epoch_batches(x, perm, pad, tcfg, cfg, ctx, epoch):
    """The whole epoch's augmented images in step order, made in one pass (crop, flip, layout):
    a handful of big kernels per epoch instead of ~20 small launches per step."""
    xs = augment(x[perm], pad, False, ctx["gen"])
    xs = flip_views(xs, perm, ctx["flip_base"], epoch, tcfg.flip if cfg.data.flip else "none", ctx["gen"])
    return xs.contiguous(memory_format=torch.channels_last) if tcfg.channels_last else xs


def train_epoch(net, model, opt, sched, data, tcfg, cfg, ctx, epoch):
    """One epoch of SGD steps; returns the summed loss (a device tensor, no host sync)."""
    x, y = data["x_train"], data["y_train"]
    n, bs, steps = len(x), tcfg.batch_size, ctx["steps"]
    pad = cfg.data.pad if tcfg.pad < 0 else tcfg.pad
    model.train()
    perm = torch.randperm(n, generator=ctx["gen"], device=x.device)[:steps * bs]  # full batches only
    xs, ys = epoch_batches(x, perm, pad, tcfg, cfg, ctx, epoch), y[perm]
    loss_sum = torch.zeros((), device=x.device)
    for s in range(steps):
        xb, yb = xs[s * bs:(s + 1) * bs], ys[s * bs:(s + 1) * bs]
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=ctx["amp"]):
            loss = ctx["loss_fn"](net(xb), yb, xb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        loss_sum += loss.detach()
        if ctx["lookahead"] is not None:
            ctx["lookahead"].step((epoch - 1) * steps + s + 1, ctx["total"])
    return loss_sum


def compile_warmup(net, model, data, tcfg, ctx):
    """Run a few training and eval steps of the (compiled) net on a copy of the state, so that
    compilation and cuDNN autotuning stay out of train_time_s (reported apart as compile_s);
    the state is restored after.  Eval runs at batch 1000, the size accuracy() uses."""
    t0 = time.time()
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.0)
    xb = data["x_train"][:tcfg.batch_size]
    if tcfg.channels_last:
        xb = xb.contiguous(memory_format=torch.channels_last)
    for train_mode in (True, True, False):
        model.train(train_mode)
        with torch.autocast(xb.device.type, dtype=torch.bfloat16, enabled=ctx["amp"]), \
                torch.set_grad_enabled(train_mode):
            out = net(xb if train_mode else xb[:1000])
        if train_mode:
            out.float().sum().backward()
            opt.zero_grad(set_to_none=True)
    model.load_state_dict(state)
    torch.cuda.synchronize()
    return time.time() - t0


def fit(model, data, tcfg, cfg, device, loss_fn=None, desc="train"):
    """Train with Nesterov SGD (warm-up + linear decay), label smoothing, bf16 autocast on CUDA;
    optional whitening stem init, BN-bias lr scale, lookahead, alternating flips, torch.compile.

    Validates each epoch on the held-out split (the test set is never looked at here) and keeps
    the best-by-validation weights (select: best_val) or the last epoch's (select: last, for
    fixed schedules).  loss_fn(logits, y, x) replaces the plain cross-entropy (distill.py).
    Returns best_epoch, val_acc, history, train_time_s, compile_s; the model holds the weights.
    """
    x = data["x_train"]
    steps = max(1, len(x) // tcfg.batch_size)
    amp = tcfg.amp and device.type == "cuda"
    model.to(device)
    if tcfg.channels_last:
        model.to(memory_format=torch.channels_last)
    utils.init_whitening(model, x[:5000])
    ce = nn.CrossEntropyLoss(label_smoothing=tcfg.label_smoothing)
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    ctx = dict(steps=steps, total=steps * tcfg.epochs, amp=amp, gen=gen, lookahead=None,
               loss_fn=loss_fn or (lambda logits, yb, xb: ce(logits, yb)),
               flip_base=torch.rand(len(x), generator=gen, device=device) < 0.5)
    net = model
    compile_s = 0.0
    if device.type == "cuda" and tcfg.cudnn_benchmark:  # speed over bit-reproducibility (seeds still fix init/order)
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = True, False
    if tcfg.compile and device.type == "cuda":
        net = torch.compile(model)
    if device.type == "cuda" and (tcfg.compile or tcfg.cudnn_benchmark):
        compile_s = compile_warmup(net, model, data, tcfg, ctx)  # compilation / autotuning out of train_time_s
    opt = make_optimizer(model, tcfg)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lr_lambda(ctx["total"], int(tcfg.warmup_epochs * steps), tcfg.lr_start))
    if tcfg.lookahead:
        ctx["lookahead"] = Lookahead(model, tcfg.lookahead_every, tcfg.lookahead_base)
    info = run_epochs(net, model, opt, sched, data, tcfg, cfg, ctx, desc)
    info["compile_s"] = compile_s
    model.to(memory_format=torch.contiguous_format)
    return info


def run_epochs(net, model, opt, sched, data, tcfg, cfg, ctx, desc):
    """The epoch loop of fit(): train, validate, keep the selected weights."""
    has_val = len(data["y_val"]) > 0
    best = {"score": -1.0, "epoch": 0, "state": None, "val": float("nan")}
    history = []
    sync = torch.cuda.synchronize if data["x_train"].is_cuda else (lambda: None)  # time the GPU's work, not its queue
    t_start = time.time()
    for epoch in range(1, tcfg.epochs + 1):
        t0 = time.time()
        if tcfg.whiten_bias_epochs and epoch == tcfg.whiten_bias_epochs + 1 and isinstance(model, utils.FastNet):
            stem = model.features[0]
            if isinstance(stem, utils.WhitenStem):  # the stem's bias stops training (then it only adds noise)
                stem.conv.bias.requires_grad_(False)
        loss_sum = train_epoch(net, model, opt, sched, data, tcfg, cfg, ctx, epoch)
        if not torch.isfinite(loss_sum):
            raise KitError(f"{desc}: the loss diverged (non-finite) in epoch {epoch}; lower the lr")
        last = epoch == tcfg.epochs
        val = accuracy(model, data["x_val"], data["y_val"], amp=ctx["amp"], channels_last=tcfg.channels_last) \
            if has_val and (tcfg.select == "best_val" or last or tcfg.val_every_epoch) else float("nan")
        score = val if (has_val and tcfg.select == "best_val") else float(epoch)
        if score > best["score"]:
            keep = tcfg.select == "best_val" and not last
            best = {"score": score, "epoch": epoch, "val": val,
                    "state": {k: v.detach().clone() for k, v in model.state_dict().items()} if keep else None}
        rec = {"epoch": epoch, "loss": float(loss_sum) / ctx["steps"], "val_acc": val, "time_s": time.time() - t0}
        history.append(rec)
        log(f"{desc} epoch {epoch:3d}/{tcfg.epochs}  loss {rec['loss']:.4f}  val {val:6.2f}%  "
            f"lr {sched.get_last_lr()[0]:.4f}  {rec['time_s']:.2f}s")
    sync()
    train_time = time.time() - t_start
    if best["state"] is not None:
        model.load_state_dict(best["state"])
    return {"best_epoch": best["epoch"], "val_acc": best["val"] if has_val else float("nan"),
            "history": history, "train_time_s": train_time}


# ============================================================================= train, save, register
def merge_val(data):
    """Train on train + validation (train_on_val): for a fixed schedule whose every setting was
    already chosen on the validation split; no validation accuracy is left to report."""
    d = dict(data)
    d["x_train"], d["y_train"] = torch.cat([data["x_train"], data["x_val"]]), torch.cat([data["y_train"], data["y_val"]])
    d["x_val"], d["y_val"] = data["x_val"][:0], data["y_val"][:0]
    return d


def train_and_save(cfg, model_name, device, tag, save_as=None, script="train", loss_factory=None, notes="",
                   front=""):
    """Train model_name with train.<model_name>; save, register and record it.  Shared with distill.py."""
    utils.check_tag(tag)
    results = resolve_path(cfg, cfg.paths.results)
    utils.check_results_file(results)
    if model_name not in cfg.train:
        raise utils.KitError(f"no training recipe train.{model_name} in the config (have: {', '.join(cfg.train)})")
    tcfg = cfg.train[model_name]
    utils.set_seed(cfg.seed)
    data = utils.load_data(cfg, device)
    if tcfg.train_on_val:
        data = merge_val(data)
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
                train_time_s=info["train_time_s"], compile_s=info.get("compile_s", 0.0), history=info["history"],
                front=front)
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
               checkpoint=rel, n_params=sum(p.numel() for p in model.parameters()), front=front,
               compile_s=info.get("compile_s", 0.0),
               notes=(f"best epoch {info['best_epoch']}/{tcfg.epochs} by validation" if tcfg.select == "best_val"
                      else f"last epoch of {tcfg.epochs} (fixed schedule)") + "; acc = FP32 test accuracy"
                     + (f"; {notes}" if notes else ""))
    utils.append_result(results, row)
    utils.log(f"{script}: {tag} best epoch {info['best_epoch']} val {val_acc:.2f}% test {test_acc:.2f}% "
              f"in {info['train_time_s']:.1f}s -> {rel}" + (f" and {save_as}" if save_as else ""))
    return path, test_acc


def train_front(cfg, device, shapes=None):
    """Every front shape x every front seed (config.yaml: front), tags front_<shape>_s<seed>."""
    shapes = shapes or list(cfg.front.shapes)
    unknown = [s for s in shapes if s not in cfg.front.shapes]
    if unknown:
        raise KitError(f"unknown front shape '{unknown[0]}' (valid: {', '.join(cfg.front.shapes) or 'none'})")
    for shape in shapes:
        kw = front_model_kwargs(cfg, shape)
        try:
            utils.FastNet(**kw)
        except (KitError, TypeError, ValueError) as e:
            raise KitError(f"front shape '{shape}' cannot be built: {e}") from None
        for seed in cfg.front.seeds:
            c = copy.deepcopy(cfg)
            c["seed"], c["models"]["fastnet"] = seed, Config(kw)
            train_and_save(c, "fastnet", device, front_tag(shape, seed), notes=f"front shape {shape}", front=shape)


def main():
    ap = utils.ArgParser(__doc__)
    ap.add_argument("--model", choices=MODEL_NAMES, help="architecture to train")
    ap.add_argument("--front", nargs="?", const="all", metavar="SHAPES",
                    help="train the front instead: every shape (or the comma-separated SHAPES) x front.seeds")
    ap.add_argument("--tag", help="manifest tag and file-name prefix (default: the model name)")
    ap.add_argument("--save-as", help="also write the checkpoint to this path")
    ap.add_argument("--final", action="store_true", help="also write it to paths.final_model (the shipped F model)")
    ap.add_argument("--force", action="store_true", help="allow --final to replace an existing paths.final_model")
    ap.add_argument("--device", default="auto", help="auto (GPU if any), cuda, cuda:N or cpu (default: auto)")
    add_config_args(ap)
    a = ap.parse_args()
    if bool(a.model) == bool(a.front):
        ap.error("give either --model NAME or --front")
    cfg = load_config(a.config, a.overrides)
    device = utils.resolve_device(a.device)
    if device.type == "cpu":
        utils.log("train: no GPU in use: training on the CPU (slow; fine for short runs)")
    if a.front:
        return train_front(cfg, device, None if a.front == "all" else a.front.split(","))
    save_as = a.save_as or (cfg.paths.final_model if a.final else None)
    check_overwrite(cfg, save_as, a.force)
    train_and_save(cfg, a.model, device, utils.check_tag(a.tag or a.model), save_as)


def check_overwrite(cfg, save_as, force):
    """The shipped final model (or any --save-as file) is replaced only on purpose: one CPU epoch
    once turned the committed 92.35 % F into a 47.35 % one without a word."""
    if save_as and not force and os.path.exists(resolve_path(cfg, save_as)):
        raise KitError(f"{resolve_path(cfg, save_as)} exists (with --final: paths.final_model, the shipped model); "
                       "add --force to replace it, or write elsewhere with --save-as PATH")


if __name__ == "__main__":
    utils.run_main(main)
