"""README's Quick start works on a fresh clone, with no data in data/ (the offline
bundle beside the project is unpacked by the kit itself), on a CPU-only machine."""
import csv
import os
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT

BUNDLE = os.path.join(os.path.dirname(ROOT), "shared", "cifar10")
QUICK_START = ["eval.py", "--variant", "F"]  # README, Quick start: the command after pip install


def fresh_clone(dest):
    """What a clone of this working tree would hold: tracked and not-ignored files (so no data/,
    no trained checkpoints but the shipped one), copied, with the bundle beside it as in CI."""
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split("\0")
    for rel in filter(None, files):
        src = os.path.join(ROOT, rel)
        if os.path.isfile(src):
            os.makedirs(os.path.dirname(os.path.join(dest, "kit", rel)), exist_ok=True)
            shutil.copy2(src, os.path.join(dest, "kit", rel))
    os.symlink(os.path.dirname(BUNDLE), os.path.join(dest, "shared"))
    return os.path.join(dest, "kit")


def rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_readme_quick_start_names_this_command():
    readme = open(os.path.join(ROOT, "README.md")).read()
    quick = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    assert "pip install -r requirements.txt" in quick and "python " + " ".join(QUICK_START) in quick


@pytest.mark.skipif(not os.path.isfile(os.path.join(BUNDLE, "unpack.py")), reason="no ../shared/cifar10 bundle")
def test_quick_start_on_a_fresh_clone_without_data(tmp_path):
    kit = fresh_clone(str(tmp_path))
    assert not os.path.exists(os.path.join(kit, "data", "cifar10.npz"))
    before = rows(os.path.join(kit, "results", "results.csv"))
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", PYTHONUNBUFFERED="1")
    r = subprocess.run([sys.executable, *QUICK_START], cwd=kit, capture_output=True, text=True, env=env, timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "unpacking the offline bundle" in r.stdout  # the log says where the data came from
    after = rows(os.path.join(kit, "results", "results.csv"))
    assert len(after) == len(before) + 1
    assert after[-1]["script"] == "eval" and after[-1]["variant"] == "F" and float(after[-1]["acc"]) > 85
    assert os.path.isfile(os.path.join(kit, "data", "cifar10.npz"))
