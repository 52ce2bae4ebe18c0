"""Shared fixtures: a tiny synthetic CIFAR-like data set and a config pointing at a temp dir.

The images are random noise plus a class-dependent colour and stripe pattern, so a few
training steps already beat chance; nothing here needs the real data set or a GPU.
"""
import atexit
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading

import numpy as np
import pytest
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

TINY_FASTNET = {"stem_width": 8, "stem_kernel": 3, "widths": [8, 16], "depths": [1, 2], "act": "relu"}
# the tiny shape of config.yaml's fastnet style (whitening stem, pool -> BN -> GELU, frozen BN weight)
TINY_FASTNET_V2 = dict(TINY_FASTNET, stem="whiten", stem_width=24, stem_kernel=2, act="gelu", order="pool_bn",
                       bn_frozen=True, bn_momentum=0.4, bn_eps=1e-12, head_bias=False, logit_scale=0.1111, dirac=True)


def make_tiny_npz(path, n_train=96, n_test=40, seed=0):
    rng = np.random.default_rng(seed)

    def images(n):
        y = np.arange(n) % 10
        rng.shuffle(y)
        x = rng.integers(0, 80, size=(n, 32, 32, 3)).astype(np.int64)
        for c in range(10):
            m = y == c
            x[m, :, :, c % 3] += 60 + 15 * c
            x[m, (c * 3) % 32::10, :, :] += 90
        return np.clip(x, 0, 255).astype(np.uint8), y.astype(np.int64)

    xtr, ytr = images(n_train)
    xte, yte = images(n_test)
    np.savez(path, x_train=xtr, y_train=ytr, x_test=xte, y_test=yte)
    return path


def tiny_config(tmp, tiny_fastnet=True, **extra):
    """Write a copy of config.yaml with tiny settings and paths inside tmp; return its path."""
    with open(os.path.join(ROOT, "config.yaml")) as f:
        raw = yaml.safe_load(f)
    npz = make_tiny_npz(os.path.join(tmp, "tiny.npz"))
    raw["paths"] = {"checkpoints": os.path.join(tmp, "ckpt"), "manifest": os.path.join(tmp, "ckpt", "manifest.json"),
                    "results": os.path.join(tmp, "results.csv"),
                    "final_model": os.path.join(tmp, "ckpt", "final_model.pth"),
                    "f85_model": os.path.join(tmp, "ckpt", "f85_model.pth"),
                    "front_selection": os.path.join(tmp, "front_selection.json"),
                    "kernel_tiles": os.path.join(tmp, "tiles.json"),
                    "data_npz": npz, "download_root": os.path.join(tmp, "tv")}
    # a tiny front: two shapes x two seeds, thresholds any tiny net reaches; two final seeds
    raw["front"].update(seeds=[42, 1], f_min_acc=0.0, f85_min_acc=0.0,
                        shapes={"ta": {"widths": [8, 16], "depths": [1, 1]}, "tb": {"widths": [8], "depths": [1]}})
    raw["final"] = {"seeds": [42, 1]}
    raw["data"]["val_size"] = 16
    if tiny_fastnet:
        raw["models"]["fastnet"] = dict(TINY_FASTNET_V2)
    for m in raw["train"].values():
        m.update(epochs=1, batch_size=32, warmup_epochs=0.5)
    raw["eval"] = {"batch_size": 16, "batch1_check": 4}
    raw["bench"].update(device="cpu", warmup=1, iters=3, runs=2, e2e_iters=2)
    for k, v in extra.items():
        raw[k] = v
    path = os.path.join(tmp, "config.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(raw, f)
    return path


def git_in(repo, *args):
    """git in a test's own repository, with an author (the tests make throw-away commits)."""
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True,
                   env=dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t",
                            GIT_COMMITTER_EMAIL="t@t"))


class _Launcher:
    """tests/launcher.py: a Python that has imported torch once and forks a child per script run.
    A script's run costs its own work, not the seconds of `import torch` on top (CI: tens of runs)."""

    def __init__(self, env):
        self.env = env
        self.dir = tempfile.mkdtemp(prefix="kit-launcher-")
        with open(os.path.join(self.dir, "launcher.log"), "w") as log:
            self.proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "tests", "launcher.py")], env=env,
                                         cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                                         text=True)
        self.lock = threading.Lock()
        atexit.register(self.close)

    def _answer(self, timeout):
        if not select.select([self.proc.stdout], [], [], timeout)[0]:
            return None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"tests/launcher.py ended (see {self.dir}/launcher.log)")
        return json.loads(line)

    def run(self, argv, env, timeout):
        with self.lock:
            fd, out = tempfile.mkstemp(dir=self.dir)
            os.close(fd)
            err = out + ".err"
            self.proc.stdin.write(json.dumps(dict(argv=argv, cwd=ROOT, env=env, stdout=out, stderr=err)) + "\n")
            self.proc.stdin.flush()
            pid = self._answer(60)["pid"]
            done = self._answer(timeout)
            if done is None:
                os.kill(pid, signal.SIGKILL)
                self._answer(60)
            try:
                with open(out) as f, open(err) as g:
                    stdout, stderr = f.read(), g.read()
            finally:
                os.remove(out)
                os.remove(err)
            if done is None:
                raise subprocess.TimeoutExpired(argv, timeout, stdout, stderr)
            return subprocess.CompletedProcess([sys.executable, *argv], done["rc"], stdout, stderr)

    def close(self):
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(30)
        shutil.rmtree(self.dir, ignore_errors=True)


_LAUNCHER = None


def run_script(script, *args, env_extra=None, fresh=False):
    """Run one of the kit's scripts as a user would (`python script args` from the kit's folder, in
    its own process); returns CompletedProcess (text).  The process is forked from tests/launcher.py,
    which has imported torch already, so runs share its str hash seed; fresh=True (for runs compared
    with each other), env_extra or KIT_TESTS_FRESH_PYTHON=1 start a new Python instead."""
    global _LAUNCHER
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", PYTHONUNBUFFERED="1")
    env.update(env_extra or {})
    argv = [os.path.join(ROOT, script), *args]
    if fresh or env_extra or os.environ.get("KIT_TESTS_FRESH_PYTHON") == "1" or not hasattr(os, "fork"):
        return subprocess.run([sys.executable, *argv], capture_output=True, text=True, env=env, cwd=ROOT,
                              timeout=600)
    started = {k: v for k, v in env.items() if k != "PYTEST_CURRENT_TEST"}  # pytest sets it per test
    if _LAUNCHER is None or _LAUNCHER.env != started or _LAUNCHER.proc.poll() is not None:
        if _LAUNCHER is not None:
            _LAUNCHER.close()
        _LAUNCHER = _Launcher(started)
    return _LAUNCHER.run(argv, env, timeout=600)


@pytest.fixture
def tiny(tmp_path):
    return tiny_config(str(tmp_path))
