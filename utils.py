"""Shared code of the CIFAR-10 batch-1 latency kit (train.py, eval.py, bench.py, distill.py).

Sections:  errors & CLI · seeding & environment · data · models
           · checkpoints · timing · results   (inference paths: inference.py; training loop: train.py)

Nothing here reads global state: every function takes the Config object (config.py) or
plain arguments, so the module imports cheaply and is tested on the CPU (tests/).
"""
from __future__ import annotations

import argparse
import csv
import datetime
import gc
import io
import json
import math
import os
import platform
import random
import re
import subprocess
import sys
import tempfile
import time
import zipfile
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from config import ConfigError, MODEL_NAMES, check_model_kwargs, config_hash, resolve_path

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


def progress(it, desc, unit="it"):
    """A tqdm bar on stderr for a step longer than a few seconds; only on a terminal (disable=None),
    so logs, pipes and tests get no bar."""
    from tqdm import tqdm
    return tqdm(it, desc=desc, unit=unit, disable=None, leave=False, dynamic_ncols=True)


# ============================================================================= seeding & environment
def set_seed(seed=42):
    """The plan's J5-04 seeding: Python, NumPy, torch (CPU and CUDA), deterministic cuDNN."""
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)
    np.random.seed(seed)
    random.seed(seed)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


def nvidia_smi(field):
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


# What the kit writes while it runs: changes there are outputs, not a different kit, so they do
# not mark a row's commit '-dirty' (else every row after the first would be).
OUTPUT_DIRS = ("results", "checkpoints")


def git_commit(repo=None):
    """HEAD of the kit's repository (+'-dirty' with uncommitted changes to tracked files outside
    OUTPUT_DIRS); KIT_GIT_COMMIT wins."""
    if os.environ.get("KIT_GIT_COMMIT"):
        return os.environ["KIT_GIT_COMMIT"]
    here = repo or os.path.dirname(os.path.abspath(__file__))
    try:
        sha = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=here, capture_output=True,
                             text=True, timeout=10)
        if sha.returncode != 0:
            return "unknown"
        outputs = [f":(top,exclude){d}" for d in OUTPUT_DIRS]
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ":(top)", *outputs],
                               cwd=here, capture_output=True, text=True, timeout=10)
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
            "driver": nvidia_smi("driver_version") if cuda else "",
            "cpu": _cpu_name(),
            "git_commit": git_commit(),
        }
    return dict(_ENV)


# ============================================================================= data
def load_cifar10_arrays(cfg, need_train=True):
    """CIFAR-10 as uint8 NHWC numpy arrays (keras layout), found without a manual step, first of:
    paths.data_npz; the offline bundle beside the project (paths.data_bundle), unpacked once into
    paths.data_npz; torchvision's download (data.download), cached in paths.download_root.
    The log says which one was used."""
    npz = resolve_path(cfg, cfg.paths.data_npz)
    if not os.path.isfile(npz) and os.path.isfile(os.path.join(resolve_path(cfg, cfg.paths.data_bundle), "unpack.py")):
        unpack_bundle(resolve_path(cfg, cfg.paths.data_bundle), npz)
    if os.path.isfile(npz):
        log(f"data: {npz}")
        return read_npz(npz, need_train, cfg)
    return torchvision_arrays(cfg, need_train, npz)


def read_npz(npz, need_train, cfg):
    try:
        with np.load(npz) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:  # a truncated file: BadZipFile
        raise KitError(f"{npz}: not a readable CIFAR-10 .npz ({type(e).__name__}: {e}); "
                       "delete it and run again to rebuild it") from None
    if need_train and "x_train" not in arrays:
        raise KitError(f"{npz} holds the test split only; delete it and run again (the kit rebuilds it "
                       f"whole from {cfg.paths.data_bundle})")
    check_cifar10_arrays(arrays, npz, ("train", "test") if need_train else ("test",))
    return arrays


def unpack_bundle(bundle, npz):
    """Decode the offline bundle into npz, once: under a lock (a second process waits, then finds
    the file), into a temporary name renamed at the end, so an interrupted unpack is never read."""
    with file_lock(npz):
        if os.path.isfile(npz):
            return
        log(f"data: no {npz}; unpacking the offline bundle {bundle} into it, once (~5-20 s)")
        tmp = f"{npz}.part{os.getpid()}"
        t0 = time.time()
        try:
            r = subprocess.run([sys.executable, os.path.join(bundle, "unpack.py"), tmp], capture_output=True,
                               text=True)
            if r.returncode != 0:
                last = (r.stderr.strip().splitlines() or ["no message"])[-1]
                raise KitError(f"unpacking {bundle} failed ({last}); or fetch with --set data.download=true")
            os.replace(tmp, npz)
        finally:
            for leftover in (tmp, tmp + ".tmp.npz"):
                if os.path.exists(leftover):
                    os.remove(leftover)
        log(f"data: unpacked in {time.time() - t0:.1f}s")


def torchvision_arrays(cfg, need_train, npz):
    """torchvision's CIFAR-10 (downloaded with its progress bar if data.download; it checks the
    archive's MD5, so a partial download is fetched again, never used)."""
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
        log(f"data: torchvision's CIFAR-10 in {root}")
        return arrays
    except (RuntimeError, OSError) as e:
        how = "data.download is off" if not cfg.data.download else f"the download failed: {' '.join(str(e).split())}"
        raise KitError(f"CIFAR-10 not found: no {npz}, no offline bundle at {resolve_path(cfg, cfg.paths.data_bundle)} "
                       f"and no torchvision copy in {root} ({how}); get it offline with `python "
                       f"<bundle>/unpack.py {npz}` or online with --set data.download=true") from None


def check_cifar10_arrays(arrays, where, splits):
    """Each split's x is uint8 (N, 32, 32, 3) and its y N integer labels in 0-9: a wrong file
    must stop here, not give a 0.2 % row or a shape error deep in a conv."""
    for s in splits:
        for k in (f"x_{s}", f"y_{s}"):
            if k not in arrays:
                raise KitError(f"{where}: array '{k}' is missing (have: {', '.join(sorted(arrays)) or 'none'})")
        x, y = arrays[f"x_{s}"], arrays[f"y_{s}"]
        if x.dtype != np.uint8:
            raise KitError(f"{where}: x_{s} must be uint8 pixels 0-255, not {x.dtype}")
        if x.ndim != 4 or x.shape[1:] != (32, 32, 3):
            raise KitError(f"{where}: x_{s} must be (N, 32, 32, 3) images, not {tuple(x.shape)}")
        if y.ndim != 1 or len(y) != len(x):
            raise KitError(f"{where}: x_{s} holds {len(x)} images but y_{s} {len(y)} labels (shape {tuple(y.shape)})")
        if not np.issubdtype(y.dtype, np.integer):
            raise KitError(f"{where}: y_{s} must hold integer labels 0-9, not {y.dtype}")
        if len(y) and (y.min() < 0 or y.max() > 9):
            raise KitError(f"{where}: y_{s} must hold labels 0-9, found {int(y.min())}..{int(y.max())}")


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
def act_fn(name):
    """The activation of a fastnet layer: 'relu' or exact (erf) 'gelu'."""
    return F.relu if name == "relu" else F.gelu


class ConvBNAct(nn.Module):
    """conv (no bias) -> [max-pool 2] -> BatchNorm -> activation: the unit fastnet is made of.

    pool=2 puts the max-pool between conv and BN (airbench's order).  With the BN weight frozen
    at 1 (bn_frozen) BN's scale 1/sqrt(var+eps) is > 0, so folding it into the conv before the
    pool is exact for any activation: max(s*z) = s*max(z) for s > 0.
    """

    def __init__(self, cin, cout, k, padding, act, pool=0, bn_frozen=False, bn_momentum=0.1, bn_eps=1e-5):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, momentum=bn_momentum, eps=bn_eps)
        if bn_frozen:
            self.bn.weight.requires_grad_(False)
        self.act, self.pool = act, pool

    def forward(self, x):
        x = self.conv(x)
        if self.pool:
            x = F.max_pool2d(x, self.pool)
        return act_fn(self.act)(self.bn(x))


class WhitenStem(nn.Module):
    """k x k valid conv 3 -> 2*3*k*k with bias, then the activation.  Its weights are the +/-
    eigenvectors of the train set's k x k patch covariance, scaled to unit variance
    (init_whitening), and stay frozen; only the bias trains (idea: airbench, arXiv 2404.00498)."""

    def __init__(self, k, act):
        super().__init__()
        self.conv = nn.Conv2d(3, 2 * 3 * k * k, k, padding=0, bias=True)
        self.conv.weight.requires_grad_(False)
        self.act = act

    def forward(self, x):
        return act_fn(self.act)(self.conv(x))


class FastNet(nn.Module):
    """Our family of batch-1 nets: few, fat 3x3 convolutions, no residuals, no depthwise.

    stem:   k x k conv, no padding, on the image (so normalisation folds into it exactly):
            'conv' = ConvBNAct(3 -> stem_width), or 'whiten' = WhitenStem (6k^2 channels, frozen)
    blocks: for each width w and depth d: a conv to w with a 2x2 max-pool, then d-1 convs w -> w.
            order 'act_pool' (v1):  conv -> BN -> act -> pool  (relu only folds exactly)
            order 'pool_bn' (v2):   conv -> pool -> BN -> act  (exact for any act if bn_frozen)
    head:   global max pool -> linear (no bias in v2) -> * logit_scale
    At inference (fold_for_inference / folded_spec) BN, the input normalisation and the logit
    scale are folded into the weights.
    """

    def __init__(self, stem_width=32, stem_kernel=3, widths=(64, 192, 256), depths=(2, 2, 2), act="relu",
                 stem="conv", order="act_pool", bn_frozen=False, bn_momentum=0.1, bn_eps=1e-5,
                 head_bias=True, logit_scale=1.0, dirac=False, num_classes=10):
        super().__init__()
        if len(widths) != len(depths) or not widths or min(depths) < 1 or min(widths) < 1:
            raise KitError(f"fastnet: widths {list(widths)} and depths {list(depths)} must be non-empty, "
                           "of equal length, all >= 1")
        if order == "act_pool" and act != "relu":
            raise KitError("fastnet: order 'act_pool' folds exactly only with act 'relu'; use order 'pool_bn'")
        self.act, self.order, self.logit_scale = act, order, logit_scale
        bn = dict(bn_frozen=bn_frozen, bn_momentum=bn_momentum, bn_eps=bn_eps)
        if stem == "whiten":
            layers, c = [WhitenStem(stem_kernel, act)], 2 * 3 * stem_kernel ** 2
        else:
            layers, c = [ConvBNAct(3, stem_width, stem_kernel, 0, act, **bn)], stem_width
        for w, d in zip(widths, depths):
            if order == "act_pool":
                layers += [ConvBNAct(c, w, 3, 1, act, **bn), nn.MaxPool2d(2)]
            else:
                layers += [ConvBNAct(c, w, 3, 1, act, pool=2, **bn)]
            layers += [ConvBNAct(w, w, 3, 1, act, **bn) for _ in range(d - 1)]
            c = w
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(c, num_classes, bias=head_bias)
        if dirac:  # identity init of each block conv's first Cin filters: the net starts near a shallow one
            for m in self.features[1:]:
                if isinstance(m, ConvBNAct):
                    nn.init.dirac_(m.conv.weight.data[:m.conv.in_channels])

    def forward(self, x):
        return self.fc(torch.amax(self.features(x), dim=(2, 3))) * self.logit_scale

    @torch.no_grad()
    def folded_spec(self, mean, std):
        """The eval-mode net as plain layers (the contract of inference.py and kernels.py):

        layers: [dict(weight [Cout,Cin,k,k], bias [Cout], padding, pool 0|2, act)], float32
                each computes y = act(maxpool_pool(conv(x, weight, padding)) + bias)
        head:   dict(weight [10, C], bias [10]): logits = weight @ max_over_HW(x) + bias
        The first layer takes raw pixels 0..255: the normalisation is folded into it (exact,
        the stem has no padding).
        """
        a = 1.0 / (255.0 * torch.tensor(std, dtype=torch.float64))
        b = -torch.tensor(mean, dtype=torch.float64) / torch.tensor(std, dtype=torch.float64)
        layers = []
        for m in self.features:
            if isinstance(m, nn.MaxPool2d):  # act_pool order, relu: pool(relu(z)) = relu(pool(z))
                layers[-1]["pool"] = 2
                continue
            w, bias = fold_conv_bn(m.conv, getattr(m, "bn", None))
            if not layers:
                bias = bias + (w * b.view(1, 3, 1, 1)).sum(dim=(1, 2, 3))
                w = w * a.view(1, 3, 1, 1)
            pool = getattr(m, "pool", 0)
            if pool and isinstance(m, ConvBNAct) and self._bn_scale(m.bn).min() <= 0:
                raise KitError("fastnet: a BN scale <= 0 after a max-pool cannot be folded (use bn_frozen)")
            layers.append(dict(weight=w.float(), bias=bias.float(), padding=int(m.conv.padding[0]),
                               pool=pool, act=m.act))
        wfc = self.fc.weight.detach().double() * self.logit_scale
        bfc = (self.fc.bias.detach().double() if self.fc.bias is not None
               else torch.zeros(wfc.shape[0], dtype=torch.float64)) * self.logit_scale
        return layers, dict(weight=wfc.float(), bias=bfc.float())

    @staticmethod
    def _bn_scale(bn):
        return bn.weight.detach().double() / torch.sqrt(bn.running_var.double() + bn.eps)

    def fold_for_inference(self, mean, std, fuse=True):
        """An equivalent eval-mode net built from folded_spec: takes raw pixels 0..255 (any float
        dtype), NCHW; fuse=True runs conv+bias+ReLU as one cuDNN kernel where the net allows."""
        layers, head = self.folded_spec(mean, std)
        return nn.Sequential(*[FoldedConv(fuse=fuse, **s) for s in layers], GlobalMaxLinear(head))


@torch.no_grad()
def init_whitening(model, x, eps=5e-4):
    """Set a WhitenStem's weights from train-set patches: the eigenvectors of the k x k x 3
    patch covariance of normalised images x (N, 3, 32, 32; a few thousand suffice), each scaled
    by 1/sqrt(eigenvalue + eps), and their negatives (so the activation keeps both signs).
    Does nothing for a conv stem."""
    stem = model.features[0] if isinstance(model, FastNet) else None
    if not isinstance(stem, WhitenStem):
        return
    k = stem.conv.kernel_size[0]
    patches = x.double().unfold(2, k, 1).unfold(3, k, 1).permute(0, 2, 3, 1, 4, 5).reshape(-1, 3 * k * k)
    patches = patches - patches.mean(0)
    cov = patches.T @ patches / len(patches)
    evals, evecs = torch.linalg.eigh(cov)
    filt = (evecs.T / torch.sqrt(evals.clamp_min(0) + eps)[:, None]).reshape(-1, 3, k, k)
    stem.conv.weight.copy_(torch.cat([filt, -filt]).to(stem.conv.weight))


def fold_conv_bn(conv, bn):
    """Weights and bias (float64) of conv followed by eval-mode BN (or none), as one conv."""
    w = conv.weight.detach().double()
    bias = conv.bias.detach().double() if conv.bias is not None else torch.zeros(w.shape[0], dtype=torch.float64)
    if bn is None:
        return w, bias
    scale = FastNet._bn_scale(bn)
    return w * scale.view(-1, 1, 1, 1), (bias - bn.running_mean.double()) * scale + bn.bias.detach().double()


class FoldedConv(nn.Module):
    """act(maxpool(conv(x, W) + b)): one layer of folded_spec.  pool(z + b) = pool(z) + b, and for
    ReLU act-then-pool equals pool-then-act, so with fuse=True, ReLU and a CUDA input the conv,
    bias and ReLU run as one cuDNN kernel (torch.cudnn_convolution_relu) and the pool follows."""

    def __init__(self, weight, bias, padding, pool, act, fuse):
        super().__init__()
        self.weight = nn.Parameter(weight.float(), requires_grad=False)
        self.bias = nn.Parameter(bias.float(), requires_grad=False)
        self.padding, self.pool, self.act, self.fuse = (padding, padding), pool, act, fuse

    def forward(self, x):
        if self.fuse and self.act == "relu" and x.is_cuda:
            x = torch.cudnn_convolution_relu(x, self.weight, self.bias, (1, 1), self.padding, (1, 1), 1)
            return F.max_pool2d(x, self.pool) if self.pool else x
        x = F.conv2d(x, self.weight, self.bias, 1, self.padding)
        if self.pool:
            x = F.max_pool2d(x, self.pool)
        return act_fn(self.act)(x)


class GlobalMaxLinear(nn.Module):
    """Global max over H, W then the (folded) linear head."""

    def __init__(self, head):
        super().__init__()
        self.weight = nn.Parameter(head["weight"].float(), requires_grad=False)
        self.bias = nn.Parameter(head["bias"].float(), requires_grad=False)

    def forward(self, x):
        return F.linear(torch.amax(x, dim=(2, 3)), self.weight, self.bias)


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
_TMP_RE = re.compile(r"\.tmp(\d+)$")


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True


def sweep_stale_temps(folder):
    """Remove '<name>.tmp<PID>' files (ours, see atomic_write_bytes) whose writer is dead: a kill
    mid-write would otherwise leave a full-size checkpoint copy behind forever."""
    for name in os.listdir(folder):
        m = _TMP_RE.search(name)
        if m and not _pid_alive(int(m.group(1))):
            try:
                os.remove(os.path.join(folder, name))
            except FileNotFoundError:  # another sweeper got there first
                pass


def atomic_write_bytes(path, data):
    """Write to '<path>.tmp<PID>', fsync, rename: readers see the old file or the new, never half."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    sweep_stale_temps(folder)
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


def _load_error_words(e):
    """torch.load's many-line error in the kit's words, whole (no cut)."""
    text = str(e)
    found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
    if found:
        return (f"refused: the file holds code objects ({found.group(1)}), not plain tensors; the kit loads "
                "checkpoints with weights_only=True and never runs code from one")
    detail = re.search(r"WeightsUnpickler error:\s*(.+?)\s*(?:\n\n|$)", text, re.S)  # the reason, not the advice
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()] or [type(e).__name__]
    reason = " ".join(detail.group(1).split()) if detail else lines[0]
    return f"not a readable checkpoint ({type(e).__name__}: {reason})"


def load_checkpoint(path):
    if not os.path.isfile(path):
        raise KitError(f"checkpoint not found: {path}")
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch.load raises many types on a bad file; one line each
        raise KitError(f"{path}: {_load_error_words(e)}") from None
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
        kw = {k: v for k, v in ck.get("model_kwargs", {}).items() if k != "head"}  # v1 files carry an unused 'head'
        try:  # against the models.fastnet schema: an extra key or widths of 200000 stop here, in one line
            check_model_kwargs("fastnet", kw)
        except ConfigError as e:
            raise KitError(f"{path}: bad model_kwargs: {e}") from None
        model = FastNet(**kw)
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
    """The plan's J5-06 naming, <model>_e<epoch>_acc<accuracy>, then a run id (time, pid and a
    random part): two runs reaching the same epoch and accuracy must not replace each other."""
    run = f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}-{random.SystemRandom().getrandbits(16):04x}"
    return f"{tag}_e{epoch}_acc{acc:.2f}_{run}.pth"


TAG_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def check_tag(tag):
    """A manifest tag is also a file-name prefix in paths.checkpoints: a name, never a path."""
    if not isinstance(tag, str) or not TAG_RE.fullmatch(tag) or ".." in tag:
        raise KitError(f"tag {tag!r}: use letters, digits, '_', '-' and '.' only (a name, not a path), "
                       "starting with a letter or digit, at most 64 characters")
    return tag


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
            m = json.load(f)
    except (OSError, ValueError) as e:
        raise KitError(f"{path}: unreadable manifest ({e})") from None
    if not isinstance(m, dict):
        raise KitError(f"{path}: the manifest must be a mapping tag -> entry, not a {type(m).__name__}; "
                       "move it aside (train.py rebuilds it)")
    for tag, entry in m.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
            raise KitError(f"{path}: manifest entry '{tag}' has no 'path' (a checkpoint file); fix or delete it")
    return m


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
    if spec in ("@final", "@f85"):
        path = resolve_path(cfg, cfg.paths.final_model if spec == "@final" else cfg.paths.f85_model)
        if not os.path.isfile(path):
            raise KitError(f"no checkpoint at {path} ('{spec}'): make it with `sh reproduce.sh front` "
                           "(train.py --front, bench.py --variant front, front.py)")
        return path
    if spec.startswith("@"):
        tag = spec[1:]
        entry = read_manifest(cfg).get(tag)
        if entry is None:
            hint = f"python train.py --model {tag}" if tag in MODEL_NAMES else \
                "python train.py --front" if tag.startswith("front_") else "python distill.py"
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
    gc.collect(0)  # the young objects only: a full collection over a big heap (compiled graphs, the
    # data) took ~0.3 s and, called ~100 times a run, made a 10-run bench 3x longer than its timed calls
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


def time_gpu_events(fn, iters):
    """GPU-side time per call (ms) from CUDA events recorded around each call, the device
    synchronised between calls: the span from the call's first to its last GPU work, without
    the host's launch-and-wait overhead outside it (but with any launch gaps inside it)."""
    ev = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(iters)]
    torch.cuda.synchronize()
    for s, e in ev:
        s.record()
        fn()
        e.record()
        torch.cuda.synchronize()
    return np.array([s.elapsed_time(e) for s, e in ev], dtype=np.float64)


def time_pipelined(fn, n):
    """GPU time per call (ms) of n calls enqueued back to back (CUDA-graph replays), one sync."""
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    s.record()
    for _ in range(n):
        fn()
    e.record()
    torch.cuda.synchronize()
    return s.elapsed_time(e) / n


def path_timings(ims, device, runs, iters, warmup=100, n_gpu=200):
    """The GPU tools' timing of InferenceModels (tools/kernel_paths.py, tta_check.py,
    kernel_profile.py): `runs` interleaved runs of `iters` host-clock calls on each static input,
    then per path (ms): p50 = median of the run medians, p95 of all calls, GPU time per call from
    CUDA events (median of n_gpu), pipelined time (n_gpu back-to-back calls / n_gpu)."""
    lat = {n: [] for n in ims}
    for _ in range(runs):  # interleaved, as bench.py does
        for n, im in ims.items():
            lat[n].append(time_calls(lambda: im(im.static_in), device, warmup, iters))
    out = {}
    for n, im in ims.items():
        fn = lambda: im(im.static_in)  # noqa: E731
        s = summarize_runs(lat[n])  # p50: median of the run medians; p95: all calls pooled
        out[n] = {"p50": s["p50"], "p95": s["p95"],
                  "gpu": float(np.median(time_gpu_events(fn, n_gpu))), "pipe": float(time_pipelined(fn, n_gpu))}
    return out


def speedup_interval(ref_runs, runs, n_boot=2000, seed=0):
    """Speedup from p50s: median of the reference's run medians / median of the variant's run
    medians, and a bootstrap 95 % interval (runs resampled with replacement, both sides)."""
    a = np.array([np.percentile(r, 50) for r in ref_runs])
    b = np.array([np.percentile(r, 50) for r in runs])
    rng = np.random.default_rng(seed)
    ia = rng.integers(0, len(a), (n_boot, len(a)))
    ib = rng.integers(0, len(b), (n_boot, len(b)))
    boot = np.median(a[ia], axis=1) / np.median(b[ib], axis=1)
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return float(np.median(a) / np.median(b)), float(lo), float(hi)


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
            "p50": float(np.median(p50s)),  # median of the run medians: one slow run cannot move it
            "p50_pooled": pooled["p50"], "p95": pooled["p95"], "p99": pooled["p99"],
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
    # v2 (issues 8-10): TTA, the front, seed statistics, GPU-side time, speedup intervals
    "tta", "front", "acc_mean", "acc_std", "acc_seeds", "compile_s", "gpu_lat_mean_ms", "gpu_lat_p50_ms",
    "gpu_pipelined_ms", "speedup_p50", "speedup_ci_low", "speedup_ci_high", "kernels",
]
HEADER_LINE = ",".join(RESULT_COLUMNS)


def _upgrade_results_file(path, first):
    """A results.csv of an earlier schema whose columns are a prefix of today's gets the new
    columns (empty in old rows), rewritten atomically; nothing is lost."""
    old = first.split(",")
    if old != RESULT_COLUMNS[:len(old)]:
        return False
    with open(path, newline="") as f:
        lines = f.read().splitlines()
    pad = "," * (len(RESULT_COLUMNS) - len(old))
    body = "".join(ln + pad + "\n" for ln in lines[1:] if ln)
    atomic_write_bytes(path, (HEADER_LINE + "\n" + body).encode())
    return True


def check_writable(path, hint="set another file with --set paths.results=FILE"):
    """Can path be written (appended to)?  Found before any work, not after a full evaluation."""
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
        if os.path.exists(path):
            with open(path, "a"):
                pass
        else:
            with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-check-"):
                pass
    except OSError as e:
        raise KitError(f"cannot write {path} ({e.strerror or e}); {hint}") from None


def check_results_file(path):
    """Fail early (before any work) if results.csv cannot be written or has another header."""
    check_writable(path)
    if os.path.isfile(path) and os.path.getsize(path) > 0:
        with open(path, newline="") as f:
            first = f.readline().rstrip("\r\n")
        if first != HEADER_LINE and not _upgrade_results_file(path, first):
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


def _set_torn_line_aside(path):
    """A row cut by a kill has no newline; the next append would glue onto it and make the file
    unreadable.  Move the torn bytes to '<path>.torn-<time>' (kept, said once) and cut the file
    back to its last whole line.  Called under the file lock."""
    if not os.path.isfile(path) or os.path.getsize(path) == 0:
        return
    with open(path, "rb+") as f:
        f.seek(-1, os.SEEK_END)
        if f.read(1) == b"\n":
            return
        f.seek(0)
        data = f.read()
        keep = data.rfind(b"\n") + 1
        aside = f"{path}.torn-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
        with open(aside, "wb") as t:
            t.write(data[keep:])
        f.truncate(keep)
    print(f"warning: {path} ended in a torn row (a write was cut); its {len(data) - keep} bytes were moved to "
          f"{aside}", file=sys.stderr, flush=True)


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
        _set_torn_line_aside(path)
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
