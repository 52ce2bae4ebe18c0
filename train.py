"""Train models on CIFAR-10: one model, the accuracy-latency front, or the final runs.

    python train.py --model mobilenetv3                      # B1 (and O1-O3) weights
    python train.py --model resnet18                         # B2, also the distillation teacher
    python train.py --model resnet18 --set train.resnet18.epochs=5 --device cpu
    python train.py --front                                  # every front shape x front.seeds (45k split)
    python train.py --front t3,AB94
    python train.py --final-runs                             # F's and F85's shapes x final.seeds (50k)

The recipe is train.<model> in config.yaml (epochs, batch size, lr, ...).  The 50k train images
are split into training / validation (data.val_size, fixed by data.split_seed).  Models with
select: best_val are validated each epoch and keep their best epoch; fastnet keeps its last
epoch of a fixed schedule.  The front never sees the test set: its final evaluation is on the
validation split.  The final runs train on all 50k (train_on_val) and are evaluated once on
the test set, with the chosen point's TTA mode.

Timed like airbench: whitening init, training and the final evaluation, with CUDA events
(recipe_time_s); compilation and cuDNN's autotuning run before, on a copy of the state, and
are reported apart (compile_s); train_time_s is the epoch loop alone.
Writes checkpoints/<tag>_e<epoch>_acc<acc>.pth, points the manifest's entry <tag> at it
(variants refer to it as "@<tag>") and appends a row to results.csv.
"""

import copy
import json
import os
import time

import torch
import torch.nn as nn

from config import (ConfigError, Config, MODEL_NAMES, add_config_args, final_tag, front_model_kwargs, front_tag,
                    load_config, resolve_path)
import utils
from data import augment, load_data
from models import FastNet, WhitenStem, build_model, check_fastnet_kwargs, init_whitening
from timing import Stopwatch
from tta import TTANet
from utils import KitError, log

ROLES = {"F": "final_model", "F85": "f85_model"}  # front.py's roles -> the paths.* key of the shipped file


# ============================================================================= training loop
@torch.no_grad()
def accuracy(model, x, y, batch_size=1000, amp=False, channels_last=False, tta="none"):
    """Top-1 accuracy (%) of a model on normalised inputs, under the TTA views of `tta`."""
    model.eval()
    net = model if tta == "none" else TTANet(model, tta, device=x.device)
    correct = 0
    dev = x.device
    for i in range(0, len(x), batch_size):
        xb = x[i:i + batch_size]
        if channels_last:
            xb = xb.contiguous(memory_format=torch.channels_last)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp and dev.type == "cuda"):
            correct += int((net(xb).argmax(1) == y[i:i + batch_size]).sum())
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
    """One epoch of SGD steps; returns the summed loss (a device tensor, no host sync).  On the
    CPU the first step is timed and the whole run's duration estimated, at once."""
    x, y = data["x_train"], data["y_train"]
    n, bs, steps = len(x), tcfg.batch_size, ctx["steps"]
    pad = cfg.data.pad if tcfg.pad < 0 else tcfg.pad
    model.train()
    perm = torch.randperm(n, generator=ctx["gen"], device=x.device)[:steps * bs]  # full batches only
    xs, ys = epoch_batches(x, perm, pad, tcfg, cfg, ctx, epoch), y[perm]
    loss_sum = torch.zeros((), device=x.device)
    for s in range(steps):
        t0 = time.time()
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
        if epoch == 1 and s == 0 and not x.is_cuda:
            dt = time.time() - t0
            log(f"{ctx['desc']}: one step took {dt:.1f} s on the CPU: about {duration_words(dt * ctx['total'])} for "
                f"{tcfg.epochs} epochs of {steps} steps (a GPU takes seconds to minutes)")
    return loss_sum


def duration_words(s):
    """Seconds as a rough duration read at a glance: '40 s', '12 min', '3.5 h'."""
    return f"{s:.0f} s" if s < 90 else f"{s / 60:.0f} min" if s < 5400 else f"{s / 3600:.1f} h"


def compile_warmup(net, model, data, tcfg, ctx):
    """Run a few training and eval steps of the (compiled) net on a copy of the state, so that
    compilation and cuDNN autotuning stay out of the timed recipe (reported apart as compile_s);
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


def fit(model, data, tcfg, cfg, device, loss_fn=None, desc="train", final_eval=None):
    """Train with Nesterov SGD (warm-up + linear decay), label smoothing, bf16 autocast on CUDA;
    optional whitening stem init, BN-bias lr scale, lookahead, alternating flips, torch.compile.

    Validates on the held-out split (each epoch with select: best_val, else at the end) and
    keeps the best-by-validation weights or the last epoch's.  loss_fn(logits, y, x) replaces
    the plain cross-entropy (distill.py).  final_eval = (x, y, tta): the evaluation inside the
    timed region (airbench counts it), or None.  Returns best_epoch, val_acc, final_acc,
    history, train_time_s, recipe_time_s, compile_s; the model holds the weights.
    """
    x = data["x_train"]
    steps = max(1, len(x) // tcfg.batch_size)
    amp = tcfg.amp and device.type == "cuda"
    model.to(device)
    if tcfg.channels_last:
        model.to(memory_format=torch.channels_last)
    ce = nn.CrossEntropyLoss(label_smoothing=tcfg.label_smoothing)
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    ctx = dict(steps=steps, total=steps * tcfg.epochs, amp=amp, gen=gen, lookahead=None, desc=desc,
               loss_fn=loss_fn or (lambda logits, yb, xb: ce(logits, yb)),
               flip_base=torch.rand(len(x), generator=gen, device=device) < 0.5)
    net = model
    compile_s = 0.0
    if device.type == "cuda" and tcfg.cudnn_benchmark:  # speed over bit-reproducibility (seeds still fix init/order)
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = True, False
    if tcfg.compile and device.type == "cuda":
        net = torch.compile(model)
    if device.type == "cuda" and (tcfg.compile or tcfg.cudnn_benchmark):
        compile_s = compile_warmup(net, model, data, tcfg, ctx)  # compilation / autotuning out of the timed recipe
    opt = make_optimizer(model, tcfg)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lr_lambda(ctx["total"], int(tcfg.warmup_epochs * steps), tcfg.lr_start))
    clock = Stopwatch(device).start()  # the recipe as airbench times it: whitening, training, final evaluation
    init_whitening(model, x[:5000])
    if tcfg.lookahead:
        ctx["lookahead"] = Lookahead(model, tcfg.lookahead_every, tcfg.lookahead_base)
    info = run_epochs(net, model, opt, sched, data, tcfg, cfg, ctx, desc)
    info["final_acc"] = float("nan")
    if final_eval is not None:
        fx, fy, tta = final_eval
        info["final_acc"] = accuracy(model, fx, fy, amp=amp, channels_last=tcfg.channels_last, tta=tta)
    info["recipe_time_s"] = clock.stop()
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
        if tcfg.whiten_bias_epochs and epoch == tcfg.whiten_bias_epochs + 1 and isinstance(model, FastNet):
            stem = model.features[0]
            if isinstance(stem, WhitenStem):  # the stem's bias stops training (then it only adds noise)
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
    d["x_train"] = torch.cat([data["x_train"], data["x_val"]])
    d["y_train"] = torch.cat([data["y_train"], data["y_val"]])
    d["x_val"], d["y_val"] = data["x_val"][:0], data["y_val"][:0]
    return d


def check_buildable(kw, what):
    """fastnet arguments checked as a checkpoint's are (schema keys, types, bounds, choices and
    the size bound), then one forward of a 32x32 image on the CPU: a shape that cannot run
    stops here, in one line, before any training."""
    try:
        check_fastnet_kwargs(kw)
        with torch.no_grad():
            FastNet(**kw).eval()(torch.zeros(1, 3, 32, 32))
    except (ConfigError, KitError, RuntimeError, ValueError, TypeError) as e:
        raise KitError(f"{what} cannot be built: {(str(e).strip().splitlines() or [type(e).__name__])[0]}") from None


def check_outputs(cfg, *files, hint="write elsewhere with --save-as PATH"):
    """Every file a run will write, checked before the work: results.csv, the checkpoint folder,
    the manifest, and any extra destination (`hint` says how to move those)."""
    utils.check_results_file(resolve_path(cfg, cfg.paths.results))
    where = "set another place with --set paths.checkpoints=DIR / paths.manifest=FILE"
    utils.check_writable(os.path.join(resolve_path(cfg, cfg.paths.checkpoints), ".new-checkpoint"), where)
    utils.check_writable(resolve_path(cfg, cfg.paths.manifest), where)
    for f in files:
        utils.check_writable(resolve_path(cfg, f), hint)


def train_and_save(cfg, model_name, device, tag, *, data=None, save_as=None, script="train", loss_factory=None,
                   notes="", shape="", tta="none", role="", front=False):
    """Train model_name with train.<model_name>; save, register and record it.  front=True: a
    front run (validation split only: the test set is not read).  Shared with distill.py."""
    utils.check_tag(tag)
    check_outputs(cfg, *([save_as] if save_as else []))
    if model_name not in cfg.train:
        raise KitError(f"no training recipe train.{model_name} in the config (have: {', '.join(cfg.train)})")
    if model_name == "fastnet":
        check_buildable(dict(cfg.models.fastnet), "models.fastnet")
    tcfg = cfg.train[model_name]
    if front and tcfg.train_on_val:
        raise KitError("internal: a front run must keep the validation split apart")
    utils.set_seed(cfg.seed)
    data = data if data is not None else load_data(cfg, device)
    if tcfg.train_on_val:
        data = merge_val(data)
    log(f"{script}: {tag} ({model_name}) on {device} ({utils.env_info()['gpu'] or utils.env_info()['cpu']}), "
        f"{len(data['y_train'])} train / {len(data['y_val'])} val images, {tcfg.epochs} epochs")
    model = build_model(model_name, cfg)
    loss_fn = loss_factory(tcfg) if loss_factory else None
    final_eval = None if front else (data["x_test"], data["y_test"], tta)
    info = fit(model, data, tcfg, cfg, device, loss_fn=loss_fn, desc=tag, final_eval=final_eval)
    test_acc, val_acc = info["final_acc"], info["val_acc"]
    ckpt_dir = resolve_path(cfg, cfg.paths.checkpoints)
    path = os.path.join(ckpt_dir, utils.checkpoint_name(tag, info["best_epoch"], val_acc if front else test_acc))
    meta = dict(tag=tag, epoch=info["best_epoch"], val_acc=val_acc, test_acc=test_acc, seed=cfg.seed,
                train_time_s=info["train_time_s"], recipe_time_s=info["recipe_time_s"], compile_s=info["compile_s"],
                history=info["history"], shape=shape, tta=tta, role=role)
    utils.save_checkpoint(path, model.cpu(), model_name, cfg, **meta)
    rel = os.path.relpath(path, os.path.dirname(cfg.config_file))
    if rel.startswith(".."):  # outside the project: keep it absolute
        rel = os.path.abspath(path)
    utils.update_manifest(cfg, tag, {"path": rel, "model": model_name, "epoch": info["best_epoch"],
                                     "val_acc": utils.json_number(val_acc, 2),
                                     "test_acc": utils.json_number(test_acc, 2),
                                     "recipe_time_s": round(info["recipe_time_s"], 2),
                                     "gpu": utils.env_info()["gpu"], "script": script})
    if save_as:
        utils.save_checkpoint(resolve_path(cfg, save_as), model, model_name, cfg, **meta)
    row = utils.base_row(cfg, script, device)
    row.update(model=model_name, label=tag, precision="bf16-amp" if tcfg.amp and device.type == "cuda" else "fp32",
               memory_format="channels_last" if tcfg.channels_last else "contiguous", tta=tta,
               acc=test_acc, val_acc=val_acc, split="val" if front else "test", epochs=info["best_epoch"],
               train_time_s=info["train_time_s"], recipe_time_s=info["recipe_time_s"], checkpoint=rel,
               n_params=sum(p.numel() for p in model.parameters()), shape=shape, compile_s=info["compile_s"],
               notes=(f"best epoch {info['best_epoch']}/{tcfg.epochs} by validation" if tcfg.select == "best_val"
                      else f"last epoch of {tcfg.epochs} (fixed schedule)")
               + ("; front run: validation split only, test set not read" if front else
                  f"; acc: the timed final evaluation on the test set (bf16 autocast, tta {tta})")
               + (f"; {notes}" if notes else ""))
    utils.append_result(resolve_path(cfg, cfg.paths.results), row)
    shown = f"val {val_acc:.2f}%" if front else f"test {test_acc:.2f}%"
    log(f"{script}: {tag} epoch {info['best_epoch']} {shown}, recipe {info['recipe_time_s']:.2f} s "
        f"(epochs {info['train_time_s']:.2f} s, warm-up {info['compile_s']:.1f} s apart) -> {rel}"
        + (f" and {save_as}" if save_as else ""))
    return path, test_acc


def shape_config(cfg, shape, seed, train_on_val):
    """cfg with models.fastnet = the front shape's arguments, the seed, and train_on_val set."""
    c = copy.deepcopy(cfg)
    c["seed"], c["models"]["fastnet"] = seed, Config(front_model_kwargs(cfg, shape))
    c["train"]["fastnet"]["train_on_val"] = train_on_val
    return c


def train_front(cfg, device, shapes=None):
    """Every front shape x every front seed on the training split (tags front_<shape>_s<seed>);
    every shape is checked before the first one trains."""
    shapes = shapes or list(cfg.front.shapes)
    unknown = [s for s in shapes if s not in cfg.front.shapes]
    if unknown:
        raise KitError(f"unknown front shape '{unknown[0]}' (valid: {', '.join(cfg.front.shapes) or 'none'})")
    for shape in shapes:
        check_buildable(front_model_kwargs(cfg, shape), f"front shape '{shape}'")
    check_outputs(cfg)
    t0 = time.time()
    data = load_data(shape_config(cfg, shapes[0], cfg.seed, False), device)
    for shape in shapes:
        for seed in cfg.front.seeds:
            train_and_save(shape_config(cfg, shape, seed, False), "fastnet", device, front_tag(shape, seed), data=data,
                           notes=f"front shape {shape}", shape=shape, front=True)
    log(f"train: front of {len(shapes)} shape(s) x {len(cfg.front.seeds)} seed(s) in {time.time() - t0:.0f} s wall")


def read_selection(cfg):
    """front.py's record: {role: {shape, tta, ...}} for F and F85."""
    path = resolve_path(cfg, cfg.paths.front_selection)
    try:
        with open(path) as f:
            sel = json.load(f)
        return {role: sel["chosen"][role] for role in ROLES}
    except FileNotFoundError:
        raise KitError(f"no {path}: choose F and F85 first (python front.py)") from None
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise KitError(f"{path}: not a selection record of front.py ({type(e).__name__}: {e}); "
                       "rerun front.py") from None


def final_runs(cfg, device, force=False):
    """F's and F85's chosen shapes x final.seeds on all 50k images (tags final_<role>_s<seed>);
    then the first seed's file of each becomes the shipped one.  Everything is checked first
    (selection, shapes, destinations, --force); both shipped files are written, or neither."""
    chosen = read_selection(cfg)
    dests = {role: resolve_path(cfg, cfg.paths[key]) for role, key in ROLES.items()}
    for role, c in chosen.items():
        if c.get("shape") not in cfg.front.shapes:
            raise KitError(f"{role}'s shape {c.get('shape')!r} is not in front.shapes; rerun front.py")
        check_buildable(front_model_kwargs(cfg, c["shape"]), f"{role}'s shape '{c['shape']}'")
    check_destinations(chosen, dests, cfg.final.seeds[0], force)
    check_outputs(cfg, *dests.values(),
                  hint="set other places with --set paths.final_model=FILE / paths.f85_model=FILE")
    t0 = time.time()
    data = load_data(cfg, device)
    first = {}
    for role, c in chosen.items():
        for seed in cfg.final.seeds:
            sc = shape_config(cfg, c["shape"], seed, cfg.train.fastnet.train_on_val)
            path, _ = train_and_save(sc, "fastnet", device, final_tag(role, seed), data=data, shape=c["shape"],
                                     tta=c["tta"], role=role, notes=f"final run of {role}: shape {c['shape']}")
            first.setdefault(role, path)
    install_shipped(cfg, chosen, first, dests)
    what = ", ".join(f"{r}: {c['shape']} tta {c['tta']}" for r, c in chosen.items())
    log(f"train: final runs ({what}) x {len(cfg.final.seeds)} seeds in {time.time() - t0:.0f} s wall; shipped "
        + ", ".join(dests.values()))


def shipped_words(path):
    """What a shipped model file holds, in words, for the refusal to replace it."""
    try:
        ck = utils.load_checkpoint(path)
    except KitError:  # the refusal still stands; it just cannot say what the file held
        return "an unreadable file"
    sel = ck.get("selected") or {}
    shape, tta = sel.get("shape") or ck.get("shape") or ck.get("model"), sel.get("tta") or ck.get("tta") or "none"
    return f"{shape} tta {tta}, seed {ck.get('seed')}"


def check_destinations(chosen, dests, seed, force):
    """The shipped files: one path each, and an existing one replaced only with --force (the
    refusal says what each would change from and to)."""
    if len({os.path.realpath(d) for d in dests.values()}) < len(dests):
        raise KitError(f"paths.final_model and paths.f85_model are the same file ({dests['F']}): give each its own")
    taken = [f"{d}: {shipped_words(d)} -> {chosen[r]['shape']} tta {chosen[r]['tta']}, seed {seed}"
             for r, d in dests.items() if os.path.exists(d)]
    if taken and not force:
        raise KitError(f"the shipped models exist and are replaced only with --force ({'; '.join(taken)})")


def install_shipped(cfg, chosen, first, dests):
    """The first seed's checkpoint of each role becomes its shipped file, with the choice recorded
    in it: every source read first, then both files written or neither."""
    files = {}
    for role, path in first.items():
        ck = utils.load_checkpoint(path)
        ck["selected"] = dict(chosen[role], role=role, source=os.path.relpath(path, os.path.dirname(cfg.config_file)))
        files[dests[role]] = utils.checkpoint_bytes(ck)
    try:
        utils.atomic_write_files(files)
    except OSError as e:  # e.g. the disk filled up after the up-front check
        kept = resolve_path(cfg, cfg.paths.checkpoints)
        raise KitError(f"cannot install {' and '.join(files)} ({e.filename}: {e.strerror or e}): neither was "
                       f"changed; the final runs' checkpoints stay in {kept}") from None


def check_overwrite(cfg, save_as, force):
    """The shipped final model (or any --save-as file) is replaced only on purpose."""
    if save_as and not force and os.path.exists(resolve_path(cfg, save_as)):
        raise KitError(f"{resolve_path(cfg, save_as)} exists (with --final: paths.final_model, the shipped model); "
                       "add --force to replace it, or write elsewhere with --save-as PATH")


def main():
    ap = utils.ArgParser(__doc__)
    ap.add_argument("--model", choices=MODEL_NAMES, help="architecture to train")
    ap.add_argument("--front", nargs="?", const="all", metavar="SHAPES",
                    help="train the front instead: every shape (or the comma-separated SHAPES) x front.seeds")
    ap.add_argument("--final-runs", action="store_true",
                    help="train F's and F85's chosen shapes x final.seeds on all 50k, then ship the first seed's")
    ap.add_argument("--tag", help="with --model: manifest tag and file-name prefix (default: the model name)")
    ap.add_argument("--save-as", help="with --model: also write the checkpoint to this path")
    ap.add_argument("--final", action="store_true", help="with --model: also write it to paths.final_model")
    ap.add_argument("--force", action="store_true", help="allow replacing an existing shipped model")
    ap.add_argument("--device", default="auto", help="auto (GPU if any), cuda, cuda:N or cpu (default: auto)")
    add_config_args(ap)
    a = ap.parse_args()
    if sum((bool(a.model), bool(a.front), a.final_runs)) != 1:
        ap.error("give exactly one of --model NAME, --front [SHAPES] or --final-runs")
    if not a.model and (a.tag or a.save_as or a.final):
        ap.error("--tag, --save-as and --final go with --model only")
    cfg = load_config(a.config, a.overrides)
    device = utils.resolve_device(a.device)
    if device.type == "cpu":
        log("train: no GPU in use: training on the CPU (slow; fine for short runs)")
    if a.front:
        return train_front(cfg, device, None if a.front == "all" else [s for s in a.front.split(",") if s])
    if a.final_runs:
        return final_runs(cfg, device, a.force)
    save_as = a.save_as or (cfg.paths.final_model if a.final else None)
    check_overwrite(cfg, save_as, a.force)
    train_and_save(cfg, a.model, device, utils.check_tag(a.tag or a.model), save_as=save_as)


if __name__ == "__main__":
    utils.run_main(main)
