"""results.csv: one schema, atomic appends, header check."""
import csv
import multiprocessing as mp
import os
import subprocess
import sys

import pytest

import utils
from conftest import ROOT, git_in


def _writer(path, wid, n):
    for i in range(n):
        utils.append_result(path, {"script": "test", "variant": f"w{wid}", "notes": f"row {i} " + "x" * 3000,
                                   "acc": 50.0 + i, "label": 'quote " and, comma'})


def test_concurrent_appends_never_tear_rows(tmp_path):
    path = str(tmp_path / "r.csv")
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_writer, args=(path, w, 60)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
        assert p.exitcode == 0
    with open(path, newline="") as f:
        r = list(csv.reader(f))
    assert r[0] == utils.RESULT_COLUMNS
    body = r[1:]
    assert len(body) == 240 and all(len(x) == len(utils.RESULT_COLUMNS) for x in body)
    notes = utils.RESULT_COLUMNS.index("notes")
    seen = {(x[utils.RESULT_COLUMNS.index("variant")], x[notes].split(" x")[0]) for x in body}
    assert len(seen) == 240  # every row arrived exactly once, whole
    assert all(x[utils.RESULT_COLUMNS.index("label")] == 'quote " and, comma' for x in body)


def test_other_header_is_refused_and_left_alone(tmp_path):
    path = str(tmp_path / "r.csv")
    with open(path, "w") as f:
        f.write("timestamp,acc\n1,2\n")
    with pytest.raises(utils.KitError, match="header differs"):
        utils.append_result(path, {"script": "x"})
    assert open(path).read() == "timestamp,acc\n1,2\n"


def test_unknown_column_is_a_bug_not_a_row(tmp_path):
    path = str(tmp_path / "r.csv")
    with pytest.raises(utils.KitError, match="unknown columns"):
        utils.append_result(path, {"script": "x", "latency": 1})
    assert not os.path.exists(path)


def test_values_are_formatted_stably(tmp_path):
    path = str(tmp_path / "r.csv")
    utils.append_result(path, {"acc": 92.3456789, "cuda_graph": True, "speedup": float("nan"), "runs": 3})
    row = next(csv.DictReader(open(path)))
    assert row["acc"] == "92.3457" and row["cuda_graph"] == "true" and row["speedup"] == "" and row["runs"] == "3"


def test_git_commit_is_not_dirty_from_the_kits_own_outputs(tmp_path, monkeypatch):
    # section 2: writing results/ or checkpoints/ used to mark every later row '-dirty'
    monkeypatch.delenv("KIT_GIT_COMMIT", raising=False)
    repo = tmp_path / "kit"
    for rel in ("code.py", "results/results.csv", "checkpoints/README.md"):
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        (repo / rel).write_text("v1\n")
    git_in(repo, "init", "-q")
    git_in(repo, "add", ".")
    git_in(repo, "commit", "-qm", "init")
    clean = utils.git_commit(str(repo))
    assert len(clean) == 12 and not clean.endswith("-dirty")
    (repo / "results" / "results.csv").write_text("v1\nrow\n")
    (repo / "checkpoints" / "README.md").write_text("v2\n")
    assert utils.git_commit(str(repo / "results")) == clean  # from a subfolder too
    (repo / "code.py").write_text("v2\n")
    assert utils.git_commit(str(repo)) == clean + "-dirty"


def test_an_older_header_is_upgraded_with_its_renamed_columns(tmp_path):
    """A results.csv whose header used the old names (fuse, front) and fewer columns keeps every
    row: the current header, the renamed columns carrying their old values, the new ones empty."""
    old_cols = [{"cudnn_relu": "fuse", "shape": "front"}.get(c, c) for c in utils.RESULT_COLUMNS[:56]]
    path = tmp_path / "r.csv"
    row = ["x"] * 56
    row[old_cols.index("front")] = "AB94"
    path.write_text(",".join(old_cols) + "\n" + ",".join(row) + "\n")
    utils.check_results_file(str(path))
    rows = list(csv.DictReader(open(path)))
    assert open(path).readline().strip() == utils.HEADER_LINE and len(rows) == 1
    assert rows[0]["shape"] == "AB94" and rows[0]["split"] == "" and rows[0]["timestamp"] == "x"


def test_env_records_torchvisions_version_without_importing_it():
    """env_info reads torchvision's version from its version.py (its import costs seconds); in a
    fresh Python the string must be the one `import torchvision` gives, and nothing imported it."""
    code = ("import sys, utils; v = utils.env_info()['torchvision']; "
            "assert 'torchvision' not in sys.modules, 'torchvision was imported'; "
            "import torchvision; assert v == torchvision.__version__, (v, torchvision.__version__); print(v)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                       env=dict(os.environ, CUDA_VISIBLE_DEVICES=""), timeout=120)
    assert r.returncode == 0 and r.stdout.strip(), r.stderr
