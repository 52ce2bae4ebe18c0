"""reproduce.sh on the CPU with tiny data, in a copy of the kit: the stages run in order, each
stage's log ends with its wall time, a failing command stops its stage and the script."""
import os
import shutil
import subprocess
import sys

from conftest import ROOT, tiny_config


def _kit_copy(tmp):
    kit = os.path.join(tmp, "kit")
    shutil.copytree(ROOT, kit, ignore=shutil.ignore_patterns(".git", ".venv", "data", ".cifar-parts", ".gpu",
                                                             "__pycache__", "*.pth", ".pytest_cache"))
    return kit


def _run(kit, *args):
    env = dict(os.environ, PYTHON=sys.executable, CUDA_VISIBLE_DEVICES="", PYTHONUNBUFFERED="1")
    return subprocess.run(["sh", "reproduce.sh", *args], cwd=kit, capture_output=True, text=True, env=env, timeout=900)


def test_stages_log_their_wall_time_and_stop_at_a_failure(tmp_path):
    kit = _kit_copy(str(tmp_path))
    cfg = tiny_config(str(tmp_path))
    r = _run(kit, "front", "--config", cfg)
    assert r.returncode == 0, r.stdout + r.stderr
    for stage in ("front-train", "front-bench"):
        lines = open(os.path.join(kit, "results", "logs", f"{stage}.log")).read().strip().splitlines()
        assert lines[0].startswith(f"== {stage}: ") and lines[-1].startswith(f"== {stage}: wall time ")
        assert lines[-1].endswith("exit 0")
    assert os.path.isfile(os.path.join(str(tmp_path), "front_selection.json"))
    r = _run(kit, "final", "--config", cfg, "--set", "final.seeds=[]")  # an invalid config: the stage fails
    assert r.returncode != 0
    last = open(os.path.join(kit, "results", "logs", "final.log")).read().strip().splitlines()[-1]
    assert last.startswith("== final: wall time ") and not last.endswith("exit 0")
    r = _run(kit, "nonsense")
    assert r.returncode == 2 and "unknown stage 'nonsense'" in r.stderr
