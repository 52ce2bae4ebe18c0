"""What every script of the kit shares: errors and the command line, seeding and the
environment record, checkpoints and the manifest, and results.csv.

Data: data.py; networks: models.py; timers and statistics: timing.py; inference paths:
inference.py; the training loop: train.py.  Nothing here reads global state: every function
takes the Config object (config.py) or plain arguments, so the module imports cheaply and is
tested on the CPU (tests/).
"""
from __future__ import annotations

import argparse
import csv
import datetime
import importlib.util
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
from contextlib import contextmanager

import numpy as np
import torch

from config import ConfigError, MODEL_NAMES, config_hash, resolve_path

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


# What the kit writes itself: changes there are outputs, not a different kit, so they do
# not mark a row's commit '-dirty' (else every row after the first would be).
OUTPUT_PATHS = ("results", "checkpoints", "report/rapport.pdf", "report/figures")


def git_commit(repo=None):
    """HEAD of the kit's repository (+'-dirty' with uncommitted changes to tracked files outside
    OUTPUT_PATHS); KIT_GIT_COMMIT wins."""
    if os.environ.get("KIT_GIT_COMMIT"):
        return os.environ["KIT_GIT_COMMIT"]
    here = repo or os.path.dirname(os.path.abspath(__file__))
    try:
        sha = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=here, capture_output=True,
                             text=True, timeout=10)
        if sha.returncode != 0:
            return "unknown"
        outputs = [f":(top,exclude){d}" for d in OUTPUT_PATHS]
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ":(top)", *outputs],
                               cwd=here, capture_output=True, text=True, timeout=10)
        return sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


_ENV = None


def torchvision_version():
    """torchvision.__version__ without importing torchvision where it is not loaded yet: its import
    takes seconds (torchvision.models imports torch._dynamo), and only the torchvision nets need it.
    The string is the one torchvision's own version.py assigns."""
    if "torchvision" not in sys.modules:
        spec = importlib.util.find_spec("torchvision")
        try:
            with open(os.path.join(spec.submodule_search_locations[0], "version.py")) as f:
                return re.search(r"""^__version__ = ['"]([^'"]+)['"]$""", f.read(), re.M).group(1)
        except (AttributeError, TypeError, IndexError, OSError):  # not a plain install: import it
            pass
    import torchvision
    return str(torchvision.__version__)


def env_info():
    """Versions and hardware of this run (J5-05), as flat strings."""
    global _ENV
    if _ENV is None:
        cuda = torch.cuda.is_available()
        _ENV = {
            "python": platform.python_version(),
            "torch": str(torch.__version__),
            "torchvision": torchvision_version(),
            "cuda": torch.version.cuda or "",
            "cudnn": str(torch.backends.cudnn.version() or "") if cuda else "",
            "gpu": torch.cuda.get_device_name(0) if cuda else "",
            "driver": nvidia_smi("driver_version") if cuda else "",
            "cpu": _cpu_name(),
            "git_commit": git_commit(),
        }
    return dict(_ENV)


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
    atomic_write_files({path: data})


def atomic_write_files(files):
    """Write {path: bytes} all or none: every file goes to its '<path>.tmp<PID>' (fsynced) first,
    and only once all of them are written are they renamed into place (a rename in the same
    folder needs no space), so a full disk or an unwritable folder leaves every path as it was."""
    tmps = {}
    try:
        for path, data in files.items():
            folder = os.path.dirname(os.path.abspath(path))
            os.makedirs(folder, exist_ok=True)
            sweep_stale_temps(folder)
            tmps[path] = f"{path}.tmp{os.getpid()}"
            with open(tmps[path], "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        for path, tmp in tmps.items():
            os.replace(tmp, path)
    finally:
        for tmp in tmps.values():
            if os.path.exists(tmp):
                os.remove(tmp)


def save_checkpoint(path, model, name, cfg, **meta):
    """state_dict + metadata, written to a temp file then renamed (never half-written)."""
    ck = {
        "format": CKPT_FORMAT,
        "model": name,
        "model_kwargs": dict(cfg.models.fastnet) if name == "fastnet" else {},
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "config": cfg.to_dict(),
        "config_hash": config_hash(cfg),
        "env": env_info(),
        "created": datetime.datetime.now().isoformat(timespec="seconds"),
    }
    ck.update(meta)
    return write_checkpoint(path, ck)


def write_checkpoint(path, ck):
    """A checkpoint dict, as torch.save writes it, atomically."""
    atomic_write_bytes(path, checkpoint_bytes(ck))
    return path


def checkpoint_bytes(ck):
    """A checkpoint dict as torch.save writes it, in memory (for atomic_write_files)."""
    buf = io.BytesIO()
    torch.save(ck, buf)
    return buf.getvalue()


def json_number(v, digits=None):
    """A float for a JSON file: None for NaN or inf (json.dumps would write NaN: not JSON)."""
    if v is None or not math.isfinite(float(v)):
        return None
    return round(float(v), digits) if digits is not None else float(v)


# torch's weights-only unpickler names what it blocked as "GLOBAL module.name", in several
# wordings ("Unsupported global: GLOBAL x", "unsupported GLOBAL posix.system whose module posix is
# blocked"): any of them is code in the file.  Its advice lines (re-run with weights_only=False,
# trust the source) are left out: the kit never loads a checkpoint that way.
_GLOBAL_RE = re.compile(r"GLOBAL ([\w.]+)")
_ADVICE_RE = re.compile(r"weights_only|weights only load failed|trust", re.I)


def _load_error_words(e):
    """torch.load's many-line error in the kit's words, whole (no cut), without torch's advice."""
    text = str(e)
    found = _GLOBAL_RE.search(text)
    if found:
        return (f"refused: the file holds code objects ({found.group(1)}), not plain tensors; the kit loads "
                "plain tensors only and never runs code from a checkpoint")
    detail = re.search(r"WeightsUnpickler error:\s*(.+?)\s*(?:\n\n|$)", text, re.S)  # the reason, not the advice
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not _ADVICE_RE.search(ln)]
    reason = " ".join(detail.group(1).split()) if detail else (lines or [type(e).__name__])[0]
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
        # allow_nan=False: NaN is not JSON (strict readers fail on it); numbers go in through json_number
        atomic_write_bytes(path, (json.dumps(m, indent=2, sort_keys=True, allow_nan=False) + "\n").encode())


def resolve_checkpoint(cfg, spec):
    """'@final' -> paths.final_model; '@tag' -> the manifest's newest checkpoint of that tag;
    otherwise a path (relative to the config file's folder)."""
    if spec in ("@final", "@f85"):
        path = resolve_path(cfg, cfg.paths.final_model if spec == "@final" else cfg.paths.f85_model)
        if not os.path.isfile(path):
            raise KitError(f"no checkpoint at {path} ('{spec}'): make it with `sh reproduce.sh front` then "
                           "`sh reproduce.sh final` (the front, front.py's choice, train.py --final-runs)")
        return path
    if spec.startswith("@"):
        tag = spec[1:]
        entry = read_manifest(cfg).get(tag)
        if entry is None:
            hint = f"python train.py --model {tag}" if tag in MODEL_NAMES else \
                "python train.py --front" if tag.startswith("front_") else \
                "python train.py --final-runs" if tag.startswith("final_") else "python distill.py"
            raise KitError(f"no checkpoint for '{spec}' in {cfg.paths.manifest}: make it first ({hint})")
        return resolve_path(cfg, entry["path"])
    return resolve_path(cfg, spec)


# ============================================================================= results
RESULT_COLUMNS = [
    "timestamp", "script", "variant", "model", "precision", "memory_format", "compile", "cuda_graph",
    "device", "gpu", "acc", "lat_mean_ms", "lat_std_ms", "lat_p50_ms", "lat_p95_ms", "lat_p99_ms",
    "size_mb", "speedup", "runs", "iters", "checkpoint", "config_hash", "git_commit", "torch",
    "torchvision", "cuda", "cudnn", "python", "driver", "seed",
    "invocation", "label", "fold_bn", "cudnn_relu", "cv_pct", "run_means_ms", "run_p50s_ms",
    "e2e_mean_ms", "e2e_p50_ms", "e2e_p95_ms", "val_acc", "per_class_acc", "batch1_check",
    "epochs", "train_time_s", "n_params", "cpu", "notes",
    "tta", "shape", "acc_mean", "acc_std", "acc_seeds", "compile_s", "gpu_lat_mean_ms", "gpu_lat_p50_ms",
    "gpu_pipelined_ms", "speedup_p50", "speedup_ci_low", "speedup_ci_high", "kernels",
    "split", "io", "e2e_std_ms", "e2e_p99_ms", "e2e_run_p50s_ms", "speedup_e2e", "speedup_e2e_ci_low",
    "speedup_e2e_ci_high", "acc_ci_low", "acc_ci_high", "recipe_time_s",
]
# e2e_*: the headline latency, end to end (uint8 image in host memory -> class id on the host);
# lat_*: the device-side call (input on the GPU, host clock around a synchronise); gpu_lat_*: its
# CUDA-event time; speedup_e2e*: the reference's e2e p50 / this row's (+ bootstrap interval),
# speedup*: the same from lat_*; acc: on `split` through the e2e path, acc_mean/std/ci_*: over
# acc_seeds; recipe_time_s: whitening + training + final evaluation (CUDA events).
HEADER_LINE = ",".join(RESULT_COLUMNS)
RENAMED = {"fuse": "cudnn_relu", "front": "shape"}  # old column names -> the current ones


def _upgrade_results_file(path, first):
    """A results.csv of an earlier schema, whose columns (after RENAMED) are a prefix of the
    current ones, gets the current header and the new columns (empty in old rows), rewritten
    atomically; nothing is lost."""
    old = [RENAMED.get(c, c) for c in first.split(",")]
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
    except OSError as e:  # 'File exists' / 'Not a directory' for a file in the folder's place: say which
        blocker = _file_in_the_way(folder)
        raise KitError(f"cannot write {path} ({f'{blocker} is a file, not a folder' if blocker else e.strerror or e}); "
                       f"{hint}") from None


def _file_in_the_way(folder):
    """The nearest existing ancestor of folder (itself included) if it is not a folder, else None."""
    p = folder
    while not os.path.exists(p) and os.path.dirname(p) != p:
        p = os.path.dirname(p)
    return None if os.path.isdir(p) else p


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
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    return f"{v:.6g}" if isinstance(v, float) else str(v)


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
