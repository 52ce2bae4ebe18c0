"""Shared code of the CIFAR-10 batch-1 latency kit (train.py, eval.py, bench.py, distill.py).

Sections:  errors & CLI · seeding & environment · data · models
           · checkpoints · timing · results   (inference paths: inference.py; training loop: train.py)

Nothing here reads global state: every function takes the Config object (config.py) or
plain arguments, so the module imports cheaply and is tested on the CPU (tests/).
"""
from __future__ import annotations

import argparse
import copy
import csv
import datetime
import gc
import io
import json
import math
import os
import platform
import random
import subprocess
import sys
import time
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from config import ConfigError, MODEL_NAMES, config_hash, resolve_path

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CKPT_FORMAT = "cifar10-latency-kit/1"


# ============================================================================= errors & CLI
class KitError(RuntimeError):
    """A problem the user can fix; scripts print it as one line and exit with code 2."""


def run_main(main):
    """Run a script's main(); turn user errors into one line on stderr and exit code 2."""
    try:
        main()
    except (KitError, ConfigError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except BrokenPipeError:  # output piped into e.g. `head`: stop quietly
        sys.stderr.close()
        sys.exit(141)


class ArgParser(argparse.ArgumentParser):
    """argparse with one-line errors ('error: ...'), exit code 2, and the module docstring as help."""

    def __init__(self, doc, **kw):
        super().__init__(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter, **kw)

    def error(self, message):
        print(f"error: {self.prog}: {message} (see --help)", file=sys.stderr)
        sys.exit(2)


def resolve_device(name):
    """'auto' -> cuda if available else cpu; 'cuda' without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise KitError(f"--device {name}: no CUDA GPU is visible to PyTorch; use --device cpu")
        return torch.device(name)
    if name == "cpu":
        return torch.device("cpu")
    raise KitError(f"--device {name}: expected auto, cpu or cuda[:N]")


def log(msg):
    print(msg, flush=True)


# ============================================================================= seeding & environment
def set_seed(seed=42):
    """The plan's J5-04 seeding: Python, NumPy, torch (CPU and CUDA), deterministic cuDNN."""
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)
    np.random.seed(seed)
    random.seed(seed)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


def _nvidia_smi(field):
    try:
        out = subprocess.run(["nvidia-smi", f"--query-gpu={field}", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip().splitlines()[0].strip() if out.returncode == 0 and out.stdout.strip() else ""


def _cpu_name():
    """CPU model from /proc/cpuinfo (Linux); elsewhere what the platform module knows."""
    if os.path.isfile("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def git_commit():
    """HEAD of the kit's repository (+'-dirty' with uncommitted changes); KIT_GIT_COMMIT wins."""
    if os.environ.get("KIT_GIT_COMMIT"):
        return os.environ["KIT_GIT_COMMIT"]
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        sha = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=here, capture_output=True,
                             text=True, timeout=10)
        if sha.returncode != 0:
            return "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=10)
        return sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


_ENV = None


def env_info():
    """Versions and hardware of this run (J5-05), as flat strings."""
    global _ENV
    if _ENV is None:
        import torchvision
        cuda = torch.cuda.is_available()
        _ENV = {
            "python": platform.python_version(),
            "torch": str(torch.__version__),
            "torchvision": str(torchvision.__version__),
            "cuda": torch.version.cuda or "",
            "cudnn": str(torch.backends.cudnn.version() or "") if cuda else "",
            "gpu": torch.cuda.get_device_name(0) if cuda else "",
            "driver": _nvidia_smi("driver_version") if cuda else "",
            "cpu": _cpu_name(),
            "git_commit": git_commit(),
        }
    return dict(_ENV)


# ============================================================================= data
def load_cifar10_arrays(cfg, need_train=True):
    """CIFAR-10 as uint8 NHWC numpy arrays (keras layout): the offline .npz, else torchvision."""
    npz = resolve_path(cfg, cfg.paths.data_npz)
    if os.path.isfile(npz):
        try:
            with np.load(npz) as z:
                arrays = {k: z[k] for k in z.files}
        except (OSError, ValueError) as e:
            raise KitError(f"{npz}: not a readable CIFAR-10 .npz ({e})") from None
        if need_train and "x_train" not in arrays:
            raise KitError(f"{npz} holds the test split only; rebuild it without --test-only "
                           f"(python ../shared/cifar10/unpack.py {cfg.paths.data_npz})")
        return arrays
    root = resolve_path(cfg, cfg.paths.download_root)
    try:
        from torchvision.datasets import CIFAR10
        arrays = {}
        for split, train in (("train", True), ("test", False)):
            if split == "train" and not need_train:
                continue
            ds = CIFAR10(root, train=train, download=cfg.data.download)
            arrays[f"x_{split}"] = np.asarray(ds.data, dtype=np.uint8)
            arrays[f"y_{split}"] = np.asarray(ds.targets, dtype=np.int64)
        return arrays
    except (RuntimeError, OSError) as e:
        how = "set --set data.download=true to fetch it (needs internet)" if not cfg.data.download else f"download failed: {e}"
        raise KitError(f"CIFAR-10 not found: no {npz} (make it offline with "
                       f"`python ../shared/cifar10/unpack.py {cfg.paths.data_npz}`) and no torchvision copy "
                       f"in {root} ({how})") from None


def split_indices(n, val_size, seed):
    """A fixed (seeded) train/validation split of n train images."""
    if not 0 <= val_size < n:
        raise KitError(f"data.val_size={val_size} must be >= 0 and < {n} (the number of train images)")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[val_size:], perm[:val_size]


def to_nchw_u8(x_nhwc, device):
    """uint8 NHWC numpy -> uint8 NCHW tensor on the device."""
    return torch.from_numpy(np.ascontiguousarray(x_nhwc)).to(device).permute(0, 3, 1, 2).contiguous()


def norm_consts(mean, std, device):
    """Per-channel (1, 3, 1, 1) mean and std tensors on the device."""
    return (torch.tensor(mean, device=device).view(1, 3, 1, 1),
            torch.tensor(std, device=device).view(1, 3, 1, 1))


def normalize(x_u8, mean, std, dtype=torch.float32):
    """uint8 NCHW -> normalised float; mean/std as lists or as norm_consts() tensors."""
    if not torch.is_tensor(mean):
        mean, std = norm_consts(mean, std, x_u8.device)
    return ((x_u8.float() * (1.0 / 255.0) - mean) / std).to(dtype)


def load_data(cfg, device, need_train=True):
    """Data on the device, normalised once (airbench style).

    Returns a dict: train/val (normalised float32 NCHW + labels) when need_train, and
    test_u8 (uint8 NCHW, for the inference paths, which do their own preprocessing),
    test (normalised float32) and y_test.
    """
    a = load_cifar10_arrays(cfg, need_train)
    d = {}
    mean, std = cfg.data.mean, cfg.data.std
    if need_train:
        tr, va = split_indices(len(a["x_train"]), cfg.data.val_size, cfg.seed)
        x = to_nchw_u8(a["x_train"], device)
        y = torch.from_numpy(a["y_train"].astype(np.int64)).to(device)
        tr, va = tr.to(device), va.to(device)
        d["x_train"], d["y_train"] = normalize(x[tr], mean, std), y[tr]
        d["x_val"], d["y_val"] = normalize(x[va], mean, std), y[va]
    d["test_u8"] = to_nchw_u8(a["x_test"], device)
    d["x_test"] = normalize(d["test_u8"], mean, std)
    d["y_test"] = torch.from_numpy(a["y_test"].astype(np.int64)).to(device)
    return d


def augment(x, pad, flip, gen):
    """Random crop (reflect padding) and horizontal flip of a whole batch on its device."""
    b, _, h, w = x.shape
    if pad:
        xp = F.pad(x, (pad, pad, pad, pad), mode="reflect")
        dy, dx = torch.randint(0, 2 * pad + 1, (2, b), generator=gen, device=x.device)
        rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
        cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
        bi = torch.arange(b, device=x.device)[:, None, None, None]
        ci = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
        x = xp[bi, ci, rows, cols]
    if flip:
        m = torch.rand(b, generator=gen, device=x.device) < 0.5
        x = torch.where(m[:, None, None, None], x.flip(3), x)
    return x


# ============================================================================= models
class ConvBNAct(nn.Module):
    """conv (no bias) -> BatchNorm -> activation: the unit fastnet is made of."""

    def __init__(self, cin, cout, k, padding, act):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.act = act

    def forward(self, x):
        x = self.bn(self.conv(x))
        return F.relu(x) if self.act == "relu" else F.gelu(x)


class FastNet(nn.Module):
    """Our final net: few, fat 3x3 convolutions, built for batch-1 latency.

    stem:   k x k conv, no padding, on the image (so normalisation folds into it exactly)
    blocks: for each width w and depth d: ConvBNAct(->w) -> maxpool 2 -> (d-1) x ConvBNAct(w->w)
    head:   global max pool -> linear
    At inference (fold_for_inference) BN and the input normalisation are folded into the
    convolutions and conv+bias+ReLU runs as one cuDNN kernel.
    """

    def __init__(self, stem_width=32, stem_kernel=3, widths=(64, 192, 256), depths=(2, 2, 2),
                 act="relu", head="pool_linear", num_classes=10):
        super().__init__()
        if len(widths) != len(depths) or not widths or min(depths) < 1:
            raise KitError(f"fastnet: widths {list(widths)} and depths {list(depths)} must be non-empty, "
                           "of equal length, depths >= 1")
        self.act = act
        layers = [ConvBNAct(3, stem_width, stem_kernel, 0, act)]
        c = stem_width
        for w, d in zip(widths, depths):
            layers += [ConvBNAct(c, w, 3, 1, act), nn.MaxPool2d(2)]
            layers += [ConvBNAct(w, w, 3, 1, act) for _ in range(d - 1)]
            c = w
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(c, num_classes)

    def forward(self, x):
        return self.fc(torch.amax(self.features(x), dim=(2, 3)))

    @torch.no_grad()
    def fold_for_inference(self, mean, std, fuse=True):
        """An equivalent eval-mode net with BN and input normalisation folded in.

        The returned net takes unnormalised pixels (0..255, any float dtype), NCHW.
        """
        a = 1.0 / (255.0 * torch.tensor(std, dtype=torch.float64))
        b = -torch.tensor(mean, dtype=torch.float64) / torch.tensor(std, dtype=torch.float64)
        layers, first = [], True
        for m in self.features:
            if isinstance(m, ConvBNAct):
                w, bias = fold_conv_bn(m.conv, m.bn)
                if first:  # x_norm = a*x + b per channel; the stem has no padding, so this is exact
                    bias = bias + (w * b.view(1, 3, 1, 1)).sum(dim=(1, 2, 3))
                    w = w * a.view(1, 3, 1, 1)
                    first = False
                layers.append(FusedConvAct(w, bias, m.conv.stride, m.conv.padding, m.act, fuse))
            else:
                layers.append(m)
        return nn.Sequential(*layers, GlobalMaxLinear(copy.deepcopy(self.fc)))


def fold_conv_bn(conv, bn):
    """Weights and bias (float64) of conv followed by eval-mode BN, as one conv."""
    w = conv.weight.detach().double()
    bias = conv.bias.detach().double() if conv.bias is not None else torch.zeros(w.shape[0], dtype=torch.float64)
    scale = bn.weight.detach().double() / torch.sqrt(bn.running_var.double() + bn.eps)
    return w * scale.view(-1, 1, 1, 1), (bias - bn.running_mean.double()) * scale + bn.bias.detach().double()


class FusedConvAct(nn.Module):
    """conv + bias + activation.  With fuse=True, ReLU and a CUDA input, one cuDNN kernel
    (torch.cudnn_convolution_relu); otherwise conv2d then the activation (same maths)."""

    def __init__(self, weight, bias, stride, padding, act, fuse):
        super().__init__()
        self.weight = nn.Parameter(weight.float(), requires_grad=False)
        self.bias = nn.Parameter(bias.float(), requires_grad=False)
        self.stride, self.padding, self.act, self.fuse = tuple(stride), tuple(padding), act, fuse

    def forward(self, x):
        if self.fuse and self.act == "relu" and x.is_cuda:
            return torch.cudnn_convolution_relu(x, self.weight, self.bias, self.stride, self.padding, (1, 1), 1)
        x = F.conv2d(x, self.weight, self.bias, self.stride, self.padding)
        return F.relu(x) if self.act == "relu" else F.gelu(x)


class GlobalMaxLinear(nn.Module):
    def __init__(self, fc):
        super().__init__()
        self.fc = fc

    def forward(self, x):
        return self.fc(torch.amax(x, dim=(2, 3)))


def build_model(name, cfg=None):
    """A fresh, randomly initialised model; every one gives (N, 10) logits on 32x32 RGB."""
    import torchvision.models as tvm
    if name == "mobilenetv3":
        m = tvm.mobilenet_v3_small(num_classes=10)
        m.features[0][0].stride = (1, 1)            # stem: no downsampling on 32x32 inputs
        m.features[1].block[0][0].stride = (1, 1)   # first depthwise block: likewise (final map 4x4)
        for bn in m.modules():  # torchvision's momentum 0.01 leaves eval-mode statistics stale in short runs
            if isinstance(bn, nn.BatchNorm2d):
                bn.momentum = 0.1
        return m
    if name == "shufflenet":
        m = tvm.shufflenet_v2_x1_0(num_classes=10)
        m.conv1[0].stride = (1, 1)
        m.maxpool = nn.Identity()                   # final map 4x4
        return m
    if name == "resnet18":
        m = tvm.resnet18(num_classes=10)
        m.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)  # CIFAR stem: 3x3, stride 1, no max-pool
        m.maxpool = nn.Identity()
        return m
    if name == "fastnet":
        kw = dict(cfg.models.fastnet) if cfg is not None else {}
        return FastNet(**kw)
    raise KitError(f"unknown model '{name}' (valid: {', '.join(MODEL_NAMES)})")


def model_kwargs(name, cfg):
    return dict(cfg.models.fastnet) if name == "fastnet" else {}


def fold_bn_generic(model):
    """Fold every Conv->BN pair of a torchvision model (torch.fx), for eval-mode inference."""
    from torch.fx.experimental.optimization import fuse
    try:
        return fuse(model.eval())
    except Exception as e:  # fx tracing failures come in many types; say which model and why
        raise KitError(f"cannot fold BatchNorm of {type(model).__name__}: {type(e).__name__}: {e}") from None


def param_bytes(module):
    return sum(t.numel() * t.element_size() for t in list(module.parameters()) + list(module.buffers()))


# ============================================================================= checkpoints
def atomic_write_bytes(path, data):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def save_checkpoint(path, model, name, cfg, **meta):
    """state_dict + metadata, written to a temp file then renamed (never half-written)."""
    ck = {
        "format": CKPT_FORMAT,
        "model": name,
        "model_kwargs": model_kwargs(name, cfg),
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "config": cfg.to_dict(),
        "config_hash": config_hash(cfg),
        "env": env_info(),
        "created": datetime.datetime.now().isoformat(timespec="seconds"),
    }
    ck.update(meta)
    buf = io.BytesIO()
    torch.save(ck, buf)
    atomic_write_bytes(path, buf.getvalue())
    return path


def load_checkpoint(path):
    if not os.path.isfile(path):
        raise KitError(f"checkpoint not found: {path}")
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch.load raises many types on a bad file; report it in one line
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()] or [type(e).__name__]
        msg = next((ln for ln in lines if "Unpickler error" in ln), lines[0])[:200]
        raise KitError(f"{path}: not a readable checkpoint ({msg})") from None
    if not isinstance(ck, dict) or ck.get("format") != CKPT_FORMAT or "state_dict" not in ck:
        raise KitError(f"{path}: not a checkpoint of this kit (no '{CKPT_FORMAT}' format tag)")
    return ck


def load_model(path, expected_model=None, cfg=None):
    """(model on CPU in eval mode, checkpoint dict).  Wrong architecture -> KitError."""
    ck = load_checkpoint(path)
    name = ck["model"]
    if expected_model and name != expected_model:
        raise KitError(f"{path} holds a '{name}' model, not '{expected_model}'")
    if name == "fastnet":
        model = FastNet(**ck.get("model_kwargs", {}))
    else:
        model = build_model(name, cfg)
    try:
        result = model.load_state_dict(ck["state_dict"], strict=False)
    except RuntimeError as e:  # size mismatches
        detail = next((ln.strip() for ln in str(e).splitlines() if "size mismatch" in ln), str(e).splitlines()[0])
        raise KitError(f"{path}: weights do not fit a '{name}' model ({detail[:200]})") from None
    missing, unexpected = list(result.missing_keys), list(result.unexpected_keys)
    if not missing and not unexpected:
        return model.eval(), ck
    what = [f"{len(missing)} missing keys (e.g. {missing[0]})" if missing else "",
            f"{len(unexpected)} unexpected keys (e.g. {unexpected[0]})" if unexpected else ""]
    raise KitError(f"{path}: weights do not fit a '{name}' model: " + ", ".join(w for w in what if w))


def checkpoint_name(tag, epoch, acc):
    """The plan's J5-06 naming: <model>_e<epoch>_acc<accuracy>.pth."""
    return f"{tag}_e{epoch}_acc{acc:.2f}.pth"


@contextmanager
def file_lock(path):
    """An exclusive advisory lock on path + '.lock' (POSIX)."""
    import fcntl
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path + ".lock", "a") as lf:
        fcntl.flock(lf, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lf, fcntl.LOCK_UN)


def read_manifest(cfg):
    path = resolve_path(cfg, cfg.paths.manifest)
    if not os.path.isfile(path):
        return {}
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise KitError(f"{path}: unreadable manifest ({e})") from None


def update_manifest(cfg, tag, entry):
    """Record the newest checkpoint of a tag (atomic, locked)."""
    path = resolve_path(cfg, cfg.paths.manifest)
    with file_lock(path):
        m = read_manifest(cfg)
        m[tag] = entry
        atomic_write_bytes(path, (json.dumps(m, indent=2, sort_keys=True) + "\n").encode())


def resolve_checkpoint(cfg, spec):
    """'@final' -> paths.final_model; '@tag' -> the manifest's newest checkpoint of that tag;
    otherwise a path (relative to the config file's folder)."""
    if spec == "@final":
        return resolve_path(cfg, cfg.paths.final_model)
    if spec.startswith("@"):
        tag = spec[1:]
        entry = read_manifest(cfg).get(tag)
        if entry is None:
            hint = f"python train.py --model {tag}" if tag in MODEL_NAMES else "python distill.py"
            raise KitError(f"no checkpoint for '{spec}' in {cfg.paths.manifest}: make it first ({hint})")
        return resolve_path(cfg, entry["path"])
    return resolve_path(cfg, spec)


# ============================================================================= timing
def sync_fn(device):
    return torch.cuda.synchronize if device.type == "cuda" else (lambda: None)


def time_calls(fn, device, warmup, iters):
    """Batch-1 latency: per-call wall time in ms, the device synchronised before and after
    each call (so launch overhead, GPU work and the wait are all inside)."""
    sync = sync_fn(device)
    for _ in range(warmup):
        fn()
    sync()
    out = np.empty(iters, dtype=np.float64)
    clock = time.perf_counter_ns
    gc.collect()
    gc_was_on = gc.isenabled()
    gc.disable()  # a collection inside a timed call would be noise, not the model
    try:
        for i in range(iters):
            sync()
            t0 = clock()
            fn()
            sync()
            out[i] = (clock() - t0) / 1e6
    finally:
        if gc_was_on:
            gc.enable()
    return out


def latency_stats(ms):
    ms = np.asarray(ms, dtype=np.float64)
    return {"mean": float(ms.mean()), "std": float(ms.std(ddof=1)) if len(ms) > 1 else 0.0,
            "p50": float(np.percentile(ms, 50)), "p95": float(np.percentile(ms, 95)),
            "p99": float(np.percentile(ms, 99)), "min": float(ms.min())}


def summarize_runs(runs):
    """Stats across runs (list of per-run arrays of ms): mean/std of the run means, CV,
    percentiles of all calls pooled."""
    means = np.array([np.mean(r) for r in runs])
    p50s = np.array([np.percentile(r, 50) for r in runs])
    pooled = latency_stats(np.concatenate(runs))
    std = float(means.std(ddof=1)) if len(means) > 1 else 0.0
    return {"mean": float(means.mean()), "std": std, "cv_pct": 100.0 * std / float(means.mean()),
            "p50": pooled["p50"], "p95": pooled["p95"], "p99": pooled["p99"],
            "run_means": [float(m) for m in means], "run_p50s": [float(p) for p in p50s]}


# ============================================================================= results
RESULT_COLUMNS = [
    "timestamp", "script", "variant", "model", "precision", "memory_format", "compile", "cuda_graph",
    "device", "gpu", "acc", "lat_mean_ms", "lat_std_ms", "lat_p50_ms", "lat_p95_ms", "lat_p99_ms",
    "size_mb", "speedup", "runs", "iters", "checkpoint", "config_hash", "git_commit", "torch",
    "torchvision", "cuda", "cudnn", "python", "driver", "seed",
    # beyond the minimum
    "invocation", "label", "fold_bn", "fuse", "cv_pct", "run_means_ms", "run_p50s_ms",
    "e2e_mean_ms", "e2e_p50_ms", "e2e_p95_ms", "val_acc", "per_class_acc", "batch1_check",
    "epochs", "train_time_s", "n_params", "cpu", "notes",
]
HEADER_LINE = ",".join(RESULT_COLUMNS)


def check_results_file(path):
    """Fail early (before any work) if an existing results.csv has another header."""
    if os.path.isfile(path) and os.path.getsize(path) > 0:
        with open(path, newline="") as f:
            first = f.readline().rstrip("\r\n")
        if first != HEADER_LINE:
            raise KitError(f"{path}: its header differs from this kit's schema ({len(first.split(','))} vs "
                           f"{len(RESULT_COLUMNS)} columns); move the file aside or fix its header")


def _fmt(v):
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.6g}"
    return str(v)


def append_result(path, row):
    """Append one row to results.csv: one schema, locked, one write (rows never tear)."""
    unknown = set(row) - set(RESULT_COLUMNS)
    if unknown:
        raise KitError(f"internal: result row has unknown columns {sorted(unknown)}")
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow([_fmt(row.get(c)) for c in RESULT_COLUMNS])
    line = buf.getvalue()
    with file_lock(path):
        check_results_file(path)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            data = (line if os.fstat(fd).st_size > 0 else HEADER_LINE + "\n" + line).encode()
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)


def base_row(cfg, script, device):
    """The columns every row shares: time, script, environment, config hash, seed."""
    e = env_info()
    return {"timestamp": datetime.datetime.now().isoformat(timespec="seconds"), "script": script,
            "device": device.type, "gpu": e["gpu"] if device.type == "cuda" else "",
            "config_hash": config_hash(cfg), "git_commit": e["git_commit"], "torch": e["torch"],
            "torchvision": e["torchvision"], "cuda": e["cuda"], "cudnn": e["cudnn"], "python": e["python"],
            "driver": e["driver"], "seed": cfg.seed, "cpu": e["cpu"]}
