"""Defects a hostile new user found, each pinned by a test (in-process, so they stay fast; the
script-level ones are in test_errors.py and test_reliability.py)."""
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

import data
import models
import utils
from config import load_config
from conftest import make_tiny_npz


# ---- a. a torn last line: the next append must not glue onto it -------------------------------
def test_append_after_a_torn_line_keeps_the_file_readable(tmp_path):
    path = str(tmp_path / "r.csv")
    utils.append_result(path, {"script": "a", "acc": 1.0})
    with open(path, "a") as f:
        f.write("2025-01-01T00:00:00,train,cuda,H1")  # a write killed mid-row: no newline
    utils.append_result(path, {"script": "b", "acc": 2.0})
    d = pd.read_csv(path)
    assert list(d.script) == ["a", "b"] and list(d.columns) == utils.RESULT_COLUMNS
    torn = [f for f in os.listdir(tmp_path) if ".torn" in f]  # kept aside, not silently dropped
    assert len(torn) == 1 and "train,cuda,H1" in open(tmp_path / torn[0]).read()


# ---- f. the data file is validated: keys, uint8 (N, 32, 32, 3), labels 0-9, equal lengths -----
def _cfg_with(tmp_path, **arrays):
    npz = make_tiny_npz(str(tmp_path / "ok.npz"))
    with np.load(npz) as z:
        a = {k: z[k] for k in z.files}
    a.update(arrays)
    a = {k: v for k, v in a.items() if v is not None}
    bad = str(tmp_path / "bad.npz")
    np.savez(bad, **a)
    return load_config(None, [f"paths.data_npz={bad}", f"paths.download_root={tmp_path}/tv",
                              "data.download=false"])


@pytest.mark.parametrize("change, words", [
    (dict(y_test=np.full(40, 12)), ["y_test", "0-9", "12"]),
    (dict(y_test=np.full(40, -1)), ["y_test", "0-9"]),
    (dict(x_test=np.zeros((40, 32, 32, 3), np.float32)), ["x_test", "uint8", "float32"]),
    (dict(x_test=np.zeros((40, 64, 64, 3), np.uint8)), ["x_test", "(N, 32, 32, 3)", "(40, 64, 64, 3)"]),
    (dict(y_test=np.zeros(39, np.int64)), ["x_test", "y_test", "40", "39"]),
    (dict(y_test=None), ["y_test", "missing"]),
    (dict(y_test=np.zeros(40, np.float64) + 0.5), ["y_test", "integer"]),
])
def test_bad_data_arrays_are_refused_in_one_line(tmp_path, change, words):
    cfg = _cfg_with(tmp_path, **change)
    with pytest.raises(utils.KitError) as e:
        data.load_cifar10_arrays(cfg, need_train=False)
    msg = str(e.value)
    assert all(w in msg for w in words) and "\n" not in msg, msg


def test_truncated_npz_is_refused_in_one_line(tmp_path):
    good = make_tiny_npz(str(tmp_path / "ok.npz"))
    blob = open(good, "rb").read()
    cut = tmp_path / "cut.npz"
    cut.write_bytes(blob[: len(blob) // 2])
    cfg = load_config(None, [f"paths.data_npz={cut}"])
    with pytest.raises(utils.KitError, match="not a readable CIFAR-10 .npz") as e:
        data.load_cifar10_arrays(cfg, need_train=False)
    assert "\n" not in str(e.value)


# ---- g. temp files of writers that died are swept; a live writer's are not --------------------
def test_stale_temp_files_of_dead_processes_are_swept(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    stale = tmp_path / f"old.pth.tmp{dead}"
    stale.write_bytes(b"x" * 1000)
    live = tmp_path / f"other.pth.tmp{os.getppid()}"  # a live process (pytest's parent) still writing
    live.write_bytes(b"y")
    keep = tmp_path / "notes.tmp12ab"  # not one of ours
    keep.write_bytes(b"z")
    utils.atomic_write_bytes(str(tmp_path / "new.pth"), b"data")
    assert not stale.exists() and live.exists() and keep.exists()
    assert (tmp_path / "new.pth").read_bytes() == b"data"


# ---- i. a weights-only refusal says why, in the kit's words ------------------------------------
class Payload:  # a class torch.load(weights_only=True) will not unpickle
    pass


def test_checkpoint_with_code_objects_is_refused_with_the_reason(tmp_path):
    p = tmp_path / "code.pth"
    torch.save({"format": utils.CKPT_FORMAT, "state_dict": {}, "extra": Payload()}, p)
    with pytest.raises(utils.KitError) as e:
        utils.load_checkpoint(str(p))
    msg = str(e.value)
    assert "code objects" in msg and "not plain tensors" in msg and "refused" in msg, msg
    assert "Payload" in msg and "\n" not in msg


def test_load_error_is_not_cut_short(tmp_path):
    p = tmp_path / ("x" * 150 + ".pth")
    p.write_bytes(b"\x80\x02garbage that is not a zip nor a pickle")
    with pytest.raises(utils.KitError) as e:
        utils.load_checkpoint(str(p))
    assert str(e.value).startswith(str(p)) and "\n" not in str(e.value)


# ---- j. a checkpoint's model_kwargs are validated against the models.fastnet schema -----------
def _fastnet_ckpt(tmp_path, **kw_changes):
    cfg = load_config(None, ["models.fastnet.widths=[8, 16]", "models.fastnet.depths=[1, 1]"])
    model = models.build_model("fastnet", cfg)
    path = utils.save_checkpoint(str(tmp_path / "f.pth"), model, "fastnet", cfg)
    ck = torch.load(path, weights_only=True)
    ck["model_kwargs"].update(kw_changes)
    torch.save(ck, path)
    return path


@pytest.mark.parametrize("change, words", [
    (dict(colour="red"), ["model_kwargs", "colour"]),
    (dict(widths=[200000, 16]), ["model_kwargs", "widths[0]", "<="]),
    (dict(depths=[0, 1]), ["model_kwargs", "depths[0]", ">= 1"]),
    (dict(act="tanh"), ["model_kwargs", "act", "relu"]),
])
def test_checkpoint_model_kwargs_are_validated(tmp_path, change, words):
    path = _fastnet_ckpt(tmp_path, **change)
    with pytest.raises(utils.KitError) as e:
        models.load_model(path)
    msg = str(e.value)
    assert all(w in msg for w in words) and "\n" not in msg, msg


# ---- k. two runs with the same tag, epoch and accuracy get two files ---------------------------
def test_checkpoint_names_do_not_collide():
    a, b = utils.checkpoint_name("fastnet", 3, 47.35), utils.checkpoint_name("fastnet", 3, 47.35)
    assert a != b
    assert a.startswith("fastnet_e3_acc47.35") and a.endswith(".pth")


# ---- l. a tag is a name, not a path -------------------------------------------------------------
@pytest.mark.parametrize("tag", ["../..", "a/b", "..", "", ".hidden", "x y", "/abs"])
def test_bad_tags_are_refused(tag):
    with pytest.raises(utils.KitError, match="tag"):
        utils.check_tag(tag)


@pytest.mark.parametrize("tag", ["fastnet", "mobilenetv3_kd", "front_t3_s42", "run-2.b"])
def test_good_tags_pass(tag):
    assert utils.check_tag(tag) == tag


# ---- m. a manifest that is a list, or whose entry lacks `path` ---------------------------------
@pytest.mark.parametrize("body, words", [
    ('["fastnet"]\n', ["manifest", "mapping"]),
    ('{"fastnet": {"model": "fastnet"}}\n', ["manifest", "'fastnet'", "path"]),
    ('{"fastnet": "x.pth"}\n', ["manifest", "'fastnet'", "path"]),
])
def test_bad_manifest_is_one_line(tmp_path, body, words):
    m = tmp_path / "manifest.json"
    m.write_text(body)
    cfg = load_config(None, [f"paths.manifest={m}"])
    with pytest.raises(utils.KitError) as e:
        utils.resolve_checkpoint(cfg, "@fastnet")
    assert all(w in str(e.value) for w in words) and "\n" not in str(e.value), str(e.value)


# ---- d. an unwritable results path is found before any work ------------------------------------
def test_unwritable_results_path_is_found_at_once(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("")
    with pytest.raises(utils.KitError, match="cannot write") as e:
        utils.check_results_file(str(afile / "results.csv"))  # its folder is a file
    assert "paths.results" in str(e.value)
    assert not os.path.exists(str(afile / "results.csv"))


# ---- the data set is found without a manual step ---------------------------------------------
FAKE_UNPACK = """import sys, os
sys.path.insert(0, {tests!r})
from conftest import make_tiny_npz
with open(os.path.join(os.path.dirname(__file__), "calls"), "a") as f:
    f.write("x")
if {fail!r}:
    sys.exit("error: SHA-256 mismatch in test.webp")
make_tiny_npz(sys.argv[1] + ".tmp.npz")
os.replace(sys.argv[1] + ".tmp.npz", sys.argv[1])
"""


def _bundle(tmp_path, fail=False):
    b = tmp_path / "shared" / "cifar10"
    b.mkdir(parents=True)
    (b / "unpack.py").write_text(FAKE_UNPACK.format(tests=os.path.dirname(__file__), fail=fail))
    npz = tmp_path / "kit" / "data" / "c.npz"
    return b, npz, load_config(None, [f"paths.data_npz={npz}", f"paths.data_bundle={b}", "data.download=false",
                                      f"paths.download_root={tmp_path}/tv"])


def test_bundle_beside_the_project_is_unpacked_once(tmp_path, capsys):
    b, npz, cfg = _bundle(tmp_path)
    a = data.load_cifar10_arrays(cfg, need_train=True)
    assert a["x_test"].shape[1:] == (32, 32, 3) and npz.is_file()
    data.load_cifar10_arrays(cfg, need_train=False)
    assert (b / "calls").read_text() == "x"  # the second run read the .npz, no second unpack
    out = capsys.readouterr().out
    assert "unpacking the offline bundle" in out and f"data: {npz}" in out
    assert sorted(os.listdir(npz.parent)) == ["c.npz", "c.npz.lock"]  # no partial files


def test_failed_unpack_leaves_nothing_and_says_why(tmp_path):
    b, npz, cfg = _bundle(tmp_path, fail=True)
    with pytest.raises(utils.KitError, match="SHA-256 mismatch") as e:
        data.load_cifar10_arrays(cfg, need_train=False)
    assert "data.download=true" in str(e.value) and not npz.exists()
    assert [f for f in os.listdir(npz.parent) if "part" in f] == []


def test_no_data_anywhere_names_both_ways(tmp_path):
    cfg = load_config(None, [f"paths.data_npz={tmp_path}/c.npz", f"paths.data_bundle={tmp_path}/none",
                             "data.download=false", f"paths.download_root={tmp_path}/tv"])
    with pytest.raises(utils.KitError) as e:
        data.load_cifar10_arrays(cfg, need_train=False)
    msg = str(e.value)
    assert "unpack.py" in msg and "data.download=true" in msg and "\n" not in msg, msg
