"""CIFAR-10 for the kit: found or unpacked without a manual step, checked, split, normalised
and augmented on the device (airbench's habit: the whole set lives on the GPU as uint8).

    from data import load_data
    d = load_data(cfg, device)          # x_train/y_train, x_val/y_val, test_u8, x_test, y_test
    d = load_data(cfg, device, need_train=False)

Where the images come from, first of: paths.data_npz; the offline bundle beside the project
(paths.data_bundle), unpacked once into paths.data_npz; torchvision's download
(data.download), cached in paths.download_root.  The log says which one was used.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
import zipfile

import numpy as np
import torch
import torch.nn.functional as F

from config import resolve_path
from utils import KitError, file_lock, log

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


# ============================================================================= find the arrays
def load_cifar10_arrays(cfg, need_train=True):
    """CIFAR-10 as uint8 NHWC numpy arrays (keras layout), found without a manual step, first of:
    paths.data_npz; the offline bundle beside the project (paths.data_bundle), unpacked once into
    paths.data_npz; torchvision's download (data.download), cached in paths.download_root.
    The log says which one was used."""
    npz = resolve_path(cfg, cfg.paths.data_npz)
    if os.path.isdir(npz):  # else it would be taken as missing: an unpack into it, a download
        raise KitError(f"paths.data_npz {npz} is a folder; give the .npz file's path (e.g. {npz}/cifar10.npz)")
    if not os.path.isfile(npz) and os.path.isfile(os.path.join(resolve_path(cfg, cfg.paths.data_bundle), "unpack.py")):
        unpack_bundle(resolve_path(cfg, cfg.paths.data_bundle), npz)
    if os.path.isfile(npz):
        log(f"data: {npz}")
        return read_npz(npz, need_train, cfg)
    return torchvision_arrays(cfg, need_train, npz)


def open_npz(npz):
    """np.load of a .npz archive, never unpickling; a bare .npy array (np.load returns the array
    itself for one, whatever the file is named) is a ValueError like any other wrong file."""
    z = np.load(npz, allow_pickle=False)
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise ValueError("a single .npy array, not a .npz archive of named arrays")
    return z


def read_npz(npz, need_train, cfg):
    try:
        with open_npz(npz) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:  # a truncated file: BadZipFile
        reason = str(e).split(". ")[0]  # numpy's first sentence; the next ones advise loading pickles unsafely
        raise KitError(f"{npz}: not a readable CIFAR-10 .npz ({type(e).__name__}: {reason}); "
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


# ============================================================================= split, normalise, augment
def split_indices(n, val_size, seed):
    """A fixed (seeded) train/validation split of n train images."""
    if n == 0:
        raise KitError("the train split holds no images: the data file is empty; delete it and run again")
    if not 0 < val_size < n:
        raise KitError(f"data.val_size={val_size} must be > 0 and < {n} (the number of train images)")
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
    if len(a["x_test"]) == 0:
        raise KitError("the test split holds no images: the data file is empty; delete it and run again")
    d = {}
    mean, std = cfg.data.mean, cfg.data.std
    if need_train:
        tr, va = split_indices(len(a["x_train"]), cfg.data.val_size, cfg.data.split_seed)
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


def host_split(cfg, split):
    """One split as the user holds it: uint8 (N, 32, 32, 3) images and int64 labels, numpy, in
    host memory.  'test' (10,000 images) or 'val' (the data.val_size held-out train images)."""
    return host_splits(cfg, [split])[split]


def host_splits(cfg, splits):
    """{split: (images, labels)} of several splits (host_split's), from one read of the data."""
    bad = [s for s in splits if s not in ("test", "val")]
    if bad:
        raise KitError(f"unknown split '{bad[0]}' (valid: test, val)")
    a = load_cifar10_arrays(cfg, need_train="val" in splits)
    out = {}
    for split in splits:
        if split == "test":
            x, y = a["x_test"], a["y_test"]
        else:
            va = split_indices(len(a["x_train"]), cfg.data.val_size, cfg.data.split_seed)[1].numpy()
            x, y = a["x_train"][va], a["y_train"][va]
        if len(x) == 0:
            raise KitError(f"the {split} split holds no images (check data.val_size and the data file)")
        out[split] = np.ascontiguousarray(x), np.asarray(y, dtype=np.int64)
    return out
