"""A hostile new user's bad input, case by case: one line on stderr that names the fix, a
non-zero exit, no traceback, nothing half-written, nothing lost.

Most scripts run in this process (run_here: the script's own __main__, its exit code and
output; an unexpected exception fails the test as a traceback would fail the user); a few
run as a separate process, as a user runs them (run_script).  One small study (two front
shapes, crafted bench rows, front.py's choice, the final runs) is shared by the module.
"""
import collections
import contextlib
import hashlib
import io
import json
import os
import pickle
import runpy
import sys

import numpy as np
import pytest
import torch
import yaml

from conftest import ROOT, git_in, make_tiny_npz, run_script, tiny_config
import config
import kernel_net
import models
import train
import utils
from config import ConfigError, front_variant_name, load_config

Result = collections.namedtuple("Result", "returncode stdout stderr")


# ============================================================================= helpers
def run_here(script, *args):
    """`python script args` in this process: (exit code, stdout, stderr)."""
    out, err, argv = io.StringIO(), io.StringIO(), sys.argv
    sys.argv = [os.path.join(ROOT, script), *args]
    code = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            runpy.run_path(sys.argv[0], run_name="__main__")
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    finally:
        sys.argv = argv
    return Result(code, out.getvalue(), err.getvalue())


def snapshot(folder):
    """{relative path: sha256} of every file under folder: 'nothing written' means equal."""
    out = {}
    for root, _, files in os.walk(folder):
        for name in files:
            p = os.path.join(root, name)
            with open(p, "rb") as f:
                out[os.path.relpath(p, folder)] = hashlib.sha256(f.read()).hexdigest()
    return out


def refused(r, *words):
    """One 'error:' line naming words, a non-zero exit, no traceback; returns the line."""
    err = r.stderr.strip()
    assert r.returncode != 0, r.stdout + r.stderr
    assert len(err.splitlines()) == 1 and err.startswith("error:") and "Traceback" not in err, err
    assert all(w in err for w in words), err
    return err


def refused_untouched(folder, script, *args, words=()):
    """script refuses in one line and nothing under folder changes (files, rows, bytes)."""
    before = snapshot(folder)
    err = refused(run_here(script, *args), *words)
    assert snapshot(folder) == before
    return err


def edit_config(path, **sections):
    """Update sections of a config file in place (section -> dict of keys)."""
    with open(path) as f:
        raw = yaml.safe_load(f)
    for name, keys in sections.items():
        raw[name].update(keys)
    with open(path, "w") as f:
        yaml.safe_dump(raw, f)
    return path


def front_row(shape, seed_accs, p50, invocation="bench-20261201-000000-0001", **extra):
    """A crafted bench row of one front point (tta none) on the validation split."""
    accs = list(seed_accs.values())
    row = {"script": "bench", "variant": front_variant_name(shape, "none"), "shape": shape, "tta": "none",
           "split": "val", "invocation": invocation, "device": "cpu", "e2e_p50_ms": p50, "e2e_p95_ms": p50 * 1.2,
           "acc": accs[0], "acc_mean": sum(accs) / len(accs), "acc_std": float("nan"),
           "acc_seeds": ";".join(f"{s}:{a:.2f}" for s, a in seed_accs.items())}
    row.update(extra)
    assert set(row) <= set(utils.RESULT_COLUMNS)
    return row


def strict_json(path):
    """json.load that fails on NaN / Infinity (not JSON: other readers reject them)."""
    def bad(name):
        raise ValueError(f"{path}: {name} is not JSON")
    with open(path) as f:
        return json.load(f, parse_constant=bad)


def crafted_checkpoint(src, dst, change):
    """A copy of checkpoint src with change(ck) applied, written as the kit writes checkpoints."""
    ck = utils.load_checkpoint(src)
    change(ck)
    return utils.write_checkpoint(str(dst), ck)


# ============================================================================= the shared study
FULL_FRONT = {"ta": {42: 50.0, 1: 40.0}, "tb": {42: 30.0, 1: 20.0}}  # seed -> validation accuracy


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A tiny study up to the shipped models: crafted bench rows of both front points (ta: more
    accurate, tb: faster), front.py's choice (F = ta, F85 = tb), train.py --final-runs."""
    tmp = str(tmp_path_factory.mktemp("study"))
    cfg = edit_config(tiny_config(tmp), front={"tta": ["none"], "f_min_acc": 40.0}, final={"seeds": [42]})
    results = os.path.join(tmp, "results.csv")
    utils.append_result(results, front_row("ta", FULL_FRONT["ta"], 0.05))
    utils.append_result(results, front_row("tb", FULL_FRONT["tb"], 0.03))
    for args in (("front.py",), ("train.py", "--final-runs", "--device", "cpu")):
        r = run_here(*args, "--config", cfg)
        assert r.returncode == 0, r.stdout + r.stderr
    return cfg


def study_dir(cfg):
    return os.path.dirname(cfg)


def shipped(cfg):
    d = study_dir(cfg)
    return os.path.join(d, "ckpt", "final_model.pth"), os.path.join(d, "ckpt", "f85_model.pth")


# ============================================================================= 1. no silent replacement
def test_front_py_refuses_to_replace_its_record_and_says_old_and_new_choice(study, tmp_path):
    d = study_dir(study)
    results = str(tmp_path / "results.csv")  # a newer bench where ta is the fastest too: F85 moves to ta
    with open(os.path.join(d, "results.csv")) as f:
        open(results, "w").write(f.read())
    for shape, p50 in (("ta", 0.02), ("tb", 0.03)):
        utils.append_result(results, front_row(shape, FULL_FRONT[shape], p50, invocation="bench-20261201-000000-0002"))
    args = ("front.py", "--config", study, "--set", f"paths.results={results}")
    err = refused_untouched(d, *args, words=("front_selection.json exists", "--force"))
    assert "choice F P_ta, F85 P_tb -> F P_ta, F85 P_ta" in err, err
    # with --force the record is replaced, and front.py still never touches the shipped models
    sel = str(tmp_path / "sel.json")
    open(sel, "wb").write(open(os.path.join(d, "front_selection.json"), "rb").read())
    before = snapshot(d)
    r = run_here(*args, "--set", f"paths.front_selection={sel}", "--force")
    assert r.returncode == 0, r.stderr
    assert "(choice F P_ta, F85 P_tb -> F P_ta, F85 P_ta)" in r.stdout
    assert strict_json(sel)["chosen"]["F85"]["variant"] == "P_ta"
    assert snapshot(d) == before  # final_model.pth and f85_model.pth byte for byte


def test_final_runs_refuse_to_replace_shipped_models_and_say_what_would_change(study, tmp_path):
    sel = strict_json(os.path.join(study_dir(study), "front_selection.json"))
    sel["chosen"]["F"]["shape"] = "tb"  # a new choice: F would change from ta to tb
    new = tmp_path / "sel.json"
    new.write_text(json.dumps(sel))
    err = refused_untouched(study_dir(study), "train.py", "--final-runs", "--device", "cpu", "--config", study,
                            "--set", f"paths.front_selection={new}", words=("replaced only with --force",))
    final, f85 = shipped(study)
    assert f"{final}: ta tta none, seed 42 -> tb tta none, seed 42" in err, err
    assert f"{f85}: tb tta none, seed 42 -> tb tta none, seed 42" in err, err


# ============================================================================= 2. both shipped files or neither
def test_final_runs_with_an_unwritable_destination_change_neither_file(study, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("a regular file, so no folder can be made here\n")
    refused_untouched(study_dir(study), "train.py", "--final-runs", "--force", "--device", "cpu", "--config", study,
                      "--set", f"paths.f85_model={blocker}/f85_model.pth",
                      words=(f"{blocker} is a file, not a folder", "paths.f85_model"))


def test_final_runs_refuse_one_path_for_both_shipped_files(study):
    final, _ = shipped(study)
    refused_untouched(study_dir(study), "train.py", "--final-runs", "--force", "--device", "cpu", "--config", study,
                      "--set", f"paths.f85_model={final}", words=("are the same file",))


def test_atomic_write_files_writes_all_or_none(tmp_path):
    good, blocker = tmp_path / "good.pth", tmp_path / "a_file"
    good.write_bytes(b"old")
    blocker.write_bytes(b"")
    with pytest.raises(OSError):
        utils.atomic_write_files({str(good): b"new", str(blocker / "f85.pth"): b"new"})
    assert good.read_bytes() == b"old" and sorted(os.listdir(tmp_path)) == ["a_file", "good.pth"]  # no temp left


def test_install_that_fails_late_changes_neither_shipped_file(study, tmp_path):
    # the disk fills (or the folder goes) after the up-front check: one line, neither file changed
    cfg = load_config(study)
    first = {role: utils.resolve_checkpoint(cfg, "@" + config.final_tag(role, 42)) for role in train.ROLES}
    final, blocker = tmp_path / "final_model.pth", tmp_path / "a_file"
    final.write_bytes(b"the shipped F")
    blocker.write_bytes(b"")
    dests = {"F": str(final), "F85": str(blocker / "f85_model.pth")}
    with pytest.raises(utils.KitError) as e:
        train.install_shipped(cfg, train.read_selection(cfg), first, dests)
    assert "neither was changed" in str(e.value) and "\n" not in str(e.value)
    assert final.read_bytes() == b"the shipped F" and sorted(os.listdir(tmp_path)) == ["a_file", "final_model.pth"]


# ============================================================================= 3. model arguments before training
@pytest.mark.parametrize("override, words", [
    ("front.shapes.ta.act=swish", ["front.shapes.ta.act", "swish", "relu, gelu"]),
    ("front.shapes.ta.stem=banana", ["front.shapes.ta.stem", "banana", "conv, whiten"]),
    ("front.shapes.ta.stem_kernel=31", ["front shape 'ta' cannot be built"]),
    ("front.shapes.tb.widths=[4096, 4096, 4096]", ["front shape 'tb' cannot be built"]),
])
def test_front_shape_arguments_are_refused_before_any_training(study, override, words):
    refused_untouched(study_dir(study), "train.py", "--front", "--device", "cpu", "--config", study,
                      "--set", override, words=words)


def test_front_shape_choices_are_the_fastnet_schema_s(tiny):
    with pytest.raises(ConfigError, match=r"'front.shapes.ta.act': 'swish' is not one of relu, gelu"):
        load_config(tiny, ["front.shapes.ta.act=swish"])
    with pytest.raises(ConfigError, match=r"'front.shapes.ta.widths\[0\]': 5000 is out of range"):
        load_config(tiny, ["front.shapes.ta.widths=[5000]"])
    cfg = load_config(tiny, ["front.shapes.ta.act=gelu", "front.shapes.ta.stem=conv"])
    assert cfg.front.shapes.ta.act == "gelu" and cfg.front.shapes.tb.act is None  # unset keys stay None


@pytest.mark.parametrize("args", [["--front", "--final"], ["--front", "--tag", "X"], ["--final-runs", "--tag", "X"]])
def test_front_and_final_runs_refuse_the_single_model_options(study, args):
    refused_untouched(study_dir(study), "train.py", *args, "--config", study, words=("go with --model only",))


# ============================================================================= 4. garbage in
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_weights_are_refused_before_any_row(study, tmp_path, value):
    def poison(ck):
        ck["state_dict"]["fc.weight"].view(-1)[0] = value
    bad = crafted_checkpoint(shipped(study)[0], tmp_path / "bad.pth", poison)
    d = study_dir(study)
    refused_untouched(d, "eval.py", "--ckpt", bad, "--device", "cpu", "--config", study,
                      words=("non-finite weights", "fc.weight"))
    refused_untouched(d, "bench.py", "--variant", "F", "--config", study, "--set", f"variants.F.checkpoint={bad}",
                      words=("non-finite weights",))


def _npz_without(tmp_path, split):
    """The tiny data file with the split's arrays emptied."""
    with np.load(make_tiny_npz(str(tmp_path / "ok.npz"))) as z:
        a = {k: z[k] for k in z.files}
    a[f"x_{split}"], a[f"y_{split}"] = a[f"x_{split}"][:0], a[f"y_{split}"][:0]
    path = str(tmp_path / f"no_{split}.npz")
    np.savez(path, **a)
    return path


@pytest.mark.parametrize("script, args, split, words", [
    ("eval.py", ["--ckpt", "@final", "--device", "cpu"], "test", ["the test split holds no images"]),
    ("bench.py", ["--variant", "F"], "test", ["the test split holds no images"]),
    ("eval.py", ["--ckpt", "@final", "--split", "val", "--device", "cpu"], "train",
     ["the train split holds no images"]),
    ("bench.py", ["--variant", "P_ta"], "train", ["the train split holds no images"]),
])
def test_an_empty_split_is_one_line_and_no_row(study, tmp_path, script, args, split, words):
    refused_untouched(study_dir(study), script, *args, "--config", study,
                      "--set", f"paths.data_npz={_npz_without(tmp_path, split)}", words=words)


@pytest.mark.parametrize("override, key", [
    ("data.mean=[.nan, 0.5, 0.5]", "data.mean[0]"),
    ("train.fastnet.lr=.inf", "train.fastnet.lr"),
    ("front.f_min_acc=.nan", "front.f_min_acc"),
])
def test_non_finite_config_numbers_are_refused(study, override, key):
    refused_untouched(study_dir(study), "train.py", "--model", "fastnet", "--device", "cpu", "--config", study,
                      "--set", override, words=(f"config key '{key}'", "not a finite number"))


@pytest.mark.parametrize("value", ["nan", "inf", "-1", "101"])
def test_eval_min_acc_must_be_a_percentage(study, value):
    refused_untouched(study_dir(study), "eval.py", "--ckpt", "@final", "--min-acc", value, "--config", study,
                      words=("--min-acc", "between 0 and 100"))


# ============================================================================= 5. unwritable outputs, found first
@pytest.fixture
def blocker(tmp_path):
    """A regular file: nothing can be made under it, not even by root."""
    p = tmp_path / "a_file"
    p.write_text("x\n")
    return str(p)


@pytest.mark.parametrize("override, words", [
    ("paths.checkpoints=/proc/kit-checkpoints", ["cannot write /proc/kit-checkpoints", "paths.checkpoints"]),
    ("paths.checkpoints={blocker}/ckpt", ["{blocker} is a file, not a folder", "paths.checkpoints"]),
    ("paths.manifest={folder}", ["cannot write {folder} (Is a directory)", "paths.manifest"]),
    ("paths.results={blocker}/results.csv", ["{blocker} is a file, not a folder", "paths.results"]),
])
def test_unwritable_training_outputs_stop_before_the_work(study, blocker, tmp_path, override, words):
    fill = dict(blocker=blocker, folder=str(tmp_path))
    refused_untouched(study_dir(study), "train.py", "--model", "fastnet", "--device", "cpu", "--config", study,
                      "--set", override.format(**fill), words=[w.format(**fill) for w in words])


@pytest.mark.parametrize("out_dir, words", [
    ("/proc/kit-export", ["cannot write /proc/kit-export/final_model.ts", "--out-dir"]),
    ("{blocker}/export", ["{blocker} is a file, not a folder", "--out-dir"]),
    ("{blocker}", ["--out-dir {blocker} is a file, not a folder"]),
])
def test_export_to_an_unwritable_folder_stops_before_the_export(study, blocker, tmp_path, out_dir, words):
    refused_untouched(study_dir(study), "export.py", "--out-dir", out_dir.format(blocker=blocker), "--config", study,
                      words=[w.format(blocker=blocker) for w in words])
    assert sorted(os.listdir(tmp_path)) == ["a_file"]


def test_front_selection_to_an_unwritable_place_stops_first(study, blocker):
    refused_untouched(study_dir(study), "front.py", "--force", "--config", study,
                      "--set", f"paths.front_selection={blocker}/sel.json",
                      words=(f"{blocker} is a file, not a folder", "paths.front_selection"))


# ============================================================================= 6. huge or malformed model arguments
def test_a_huge_model_within_the_bounds_is_refused_before_allocating(study, tmp_path):
    kw = dict(load_config(study).models.fastnet, widths=[4096] * 4, depths=[64] * 4)
    with pytest.raises(ConfigError, match="M parameters"):
        models.check_fastnet_kwargs(kw)  # counted from the arguments: nothing is allocated

    def grow(ck):
        ck["model_kwargs"].update(widths=[4096] * 4, depths=[64] * 4)
    bad = crafted_checkpoint(shipped(study)[0], tmp_path / "huge.pth", grow)
    refused_untouched(study_dir(study), "eval.py", "--ckpt", bad, "--device", "cpu", "--config", study,
                      words=("bad model_kwargs", "M parameters", f"at most {models.MAX_PARAMS // 1_000_000} M"))


def test_model_kwargs_that_are_a_string_are_one_line(study, tmp_path):
    def stringify(ck):
        ck["model_kwargs"] = "widths=[8, 16]"
    bad = crafted_checkpoint(shipped(study)[0], tmp_path / "str.pth", stringify)
    refused_untouched(study_dir(study), "eval.py", "--ckpt", bad, "--device", "cpu", "--config", study,
                      words=("bad model_kwargs", "must be a mapping", "not str"))


# ============================================================================= 7. files of the wrong kind
def test_a_binary_config_file_is_one_line(tmp_path):
    binary = tmp_path / "config.yaml"
    binary.write_bytes(bytes(range(256)) * 4)
    r = run_script("eval.py", "--ckpt", "@final", "--config", str(binary))  # as a user runs it
    refused(r, str(binary), "not a readable YAML text file")


def test_a_npy_renamed_npz_is_one_line(study, tmp_path):
    with np.load(make_tiny_npz(str(tmp_path / "ok.npz"))) as z:
        np.save(tmp_path / "x_test.npy", z["x_test"])
    renamed = tmp_path / "cifar10.npz"
    os.rename(tmp_path / "x_test.npy", renamed)
    refused_untouched(study_dir(study), "eval.py", "--ckpt", "@final", "--device", "cpu", "--config", study,
                      "--set", f"paths.data_npz={renamed}", words=(str(renamed), "a single .npy array"))


def test_a_pickle_named_npz_is_refused_without_numpy_s_advice(study, tmp_path):
    pickled = tmp_path / "cifar10.npz"
    pickled.write_bytes(pickle.dumps({"x_test": [1, 2, 3]}))
    err = refused_untouched(study_dir(study), "eval.py", "--ckpt", "@final", "--device", "cpu", "--config", study,
                            "--set", f"paths.data_npz={pickled}", words=("not a readable CIFAR-10 .npz",))
    assert "allow_pickle" not in err and "trust" not in err, err


def test_data_npz_pointing_at_a_folder_is_one_line_and_fetches_nothing(study, tmp_path):
    err = refused_untouched(study_dir(study), "eval.py", "--ckpt", "@final", "--device", "cpu", "--config", study,
                            "--set", f"paths.data_npz={tmp_path}", words=(f"paths.data_npz {tmp_path} is a folder",))
    assert "download" not in err
    assert os.listdir(tmp_path) == []


# ============================================================================= 8. code in a checkpoint
class RunsCode:
    """What a malicious checkpoint holds: unpickling it would run a shell command."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_checkpoint_that_holds_code_is_refused_without_torch_s_advice(study, tmp_path):
    marker, evil = tmp_path / "code_ran", tmp_path / "evil.pth"
    torch.save({"format": utils.CKPT_FORMAT, "model": "fastnet", "state_dict": {}, "x": RunsCode(marker)}, evil)
    before = snapshot(study_dir(study))
    r = run_script("eval.py", "--ckpt", str(evil), "--config", study)  # as a user runs it, in its own process
    err = refused(r, str(evil), "refused", "holds code objects", "system")
    assert "weights_only=False" not in err and "Re-running" not in err and "trust" not in err, err
    assert not marker.exists() and snapshot(study_dir(study)) == before


@pytest.mark.parametrize("payload", ["dict", "bare"])
def test_code_objects_are_named_in_every_wording_torch_uses(tmp_path, payload):
    evil = tmp_path / "evil.pth"
    torch.save({"x": RunsCode(tmp_path / "m")} if payload == "dict" else RunsCode(tmp_path / "m"), evil)
    with pytest.raises(utils.KitError) as e:
        utils.load_checkpoint(str(evil))
    msg = str(e.value)
    assert "holds code objects" in msg and "system" in msg and "\n" not in msg and "weights_only" not in msg, msg


# ============================================================================= 9. the CPU's training time, said at once
def test_training_on_the_cpu_estimates_its_duration_in_the_first_step(tiny):
    r = run_here("train.py", "--model", "fastnet", "--device", "cpu", "--config", tiny)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    est = [i for i, ln in enumerate(lines) if "one step took" in ln and "on the CPU: about" in ln]
    first_epoch = [i for i, ln in enumerate(lines) if "epoch   1/" in ln]
    assert est and first_epoch and est[0] < first_epoch[0], r.stdout  # before the first epoch ends


@pytest.mark.parametrize("seconds, words", [(40, "40 s"), (600, "10 min"), (12600, "3.5 h")])
def test_durations_read_at_a_glance(seconds, words):
    assert train.duration_words(seconds) == words


# ============================================================================= 10. the report's files are outputs
def test_rebuilding_the_report_does_not_mark_rows_dirty(tmp_path, monkeypatch):
    monkeypatch.delenv("KIT_GIT_COMMIT", raising=False)
    repo = tmp_path / "kit"
    files = ("train.py", "report/build.py", "report/rapport.pdf", "report/figures/front.png",
             "results/results.csv", "checkpoints/README.md")
    for rel in files:
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        (repo / rel).write_bytes(b"v1\n")
    git_in(repo, "init", "-q")
    git_in(repo, "add", *files)
    git_in(repo, "commit", "-qm", "init")
    clean = utils.git_commit(str(repo))
    assert len(clean) == 12, clean
    for rel in ("report/rapport.pdf", "report/figures/front.png", "results/results.csv"):  # what build.py writes
        (repo / rel).write_bytes(b"rebuilt\n")
    assert utils.git_commit(str(repo)) == clean
    (repo / "report" / "build.py").write_bytes(b"v2\n")  # the report's code is the kit's code
    assert utils.git_commit(str(repo)) == clean + "-dirty"


# ============================================================================= 11. partial fronts, NaN
def _front_config(tmp_path, rows):
    """A tiny config whose results.csv holds the given crafted bench rows."""
    cfg = edit_config(tiny_config(str(tmp_path)), front={"tta": ["none"]})
    for row in rows:
        utils.append_result(str(tmp_path / "results.csv"), row)
    return cfg


@pytest.mark.parametrize("rows, missing", [
    ([front_row("ta", FULL_FRONT["ta"], 0.05), front_row("tb", {42: 30.0}, 0.03)], "P_tb seed(s) 1"),
    ([front_row("ta", FULL_FRONT["ta"], 0.05)], "point P_tb"),
])
def test_front_py_does_not_choose_from_a_partial_front(tmp_path, rows, missing):
    cfg = _front_config(tmp_path, rows)
    err = refused_untouched(str(tmp_path), "front.py", "--config", cfg,
                            words=("incomplete", missing, "--allow-partial"))
    assert not os.path.exists(tmp_path / "front_selection.json"), err
    r = run_here("front.py", "--config", cfg, "--allow-partial")
    assert r.returncode == 0, r.stderr
    sel = strict_json(tmp_path / "front_selection.json")  # NaN columns (acc_std, gpu_*) are null, not NaN
    assert sel["partial"] == [missing] and sel["chosen"]["F"]["acc_std"] is None


def test_the_study_s_json_files_hold_no_nan(study):
    d = study_dir(study)
    sel = strict_json(os.path.join(d, "front_selection.json"))
    assert sel["partial"] == [] and [sel["chosen"][r]["variant"] for r in ("F", "F85")] == ["P_ta", "P_tb"]
    manifest = strict_json(os.path.join(d, "ckpt", "manifest.json"))
    assert manifest["final_F_s42"]["val_acc"] is None  # trained on train + validation: no validation accuracy


def test_the_manifest_refuses_nan_rather_than_writing_it(tiny):
    cfg = load_config(tiny)
    with pytest.raises(ValueError):
        utils.update_manifest(cfg, "x", {"path": "x.pth", "val_acc": float("nan")})
    assert not os.path.exists(utils.resolve_path(cfg, cfg.paths.manifest))


# ============================================================================= 12. tile cache, --tol, '@' values
@pytest.mark.parametrize("body", ["", '{"tiles": {"F_', "[1, 2]", "\udcff"])
def test_a_damaged_tile_cache_is_one_line(tmp_path, body):
    p = tmp_path / "tiles.json"
    p.write_bytes(body.encode("utf-8", "surrogateescape"))
    with pytest.raises(utils.KitError) as e:
        kernel_net.read_tile_cache(str(p))
    assert str(e.value).startswith(f"{p}: not a") and "delete it" in str(e.value) and "\n" not in str(e.value)


def test_kernel_tune_checks_the_tile_cache_before_any_work(study, tmp_path):
    tiles = tmp_path / "tiles.json"
    tiles.write_text('{"about": {}, "tiles": {"NVIDIA H200|1|')  # cut mid-write
    refused_untouched(str(tmp_path), "tools/kernel_tune.py", "--config", study, "--set", f"paths.kernel_tiles={tiles}",
                      words=(str(tiles), "not a readable tile cache", "delete it"))


@pytest.mark.parametrize("tol", ["-1", "nan"])
def test_export_refuses_a_bad_tolerance_before_writing(study, tol):
    refused_untouched(study_dir(study), "export.py", "--tol", tol, "--config", study, words=("--tol", ">= 0"))


def test_a_checkpoint_reference_needs_no_quotes(study):
    cfg = load_config(study, ["variants.F.checkpoint=@f85"])
    assert cfg.variants.F.checkpoint == "@f85"
    assert utils.resolve_checkpoint(cfg, cfg.variants.F.checkpoint) == shipped(study)[1]
