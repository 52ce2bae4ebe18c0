"""The real scripts end to end on the CPU with tiny data: train -> checkpoint -> eval -> the
front (validation split) -> selection -> final runs -> one bench -> distill -> export, each
leaving its rows in a temp results.csv; and seeding."""
import csv
import glob
import json
import os

import torch

import utils
from conftest import run_script
from front import best_run_p50
from models import load_model


def rows(cfg_path):
    p = os.path.join(os.path.dirname(cfg_path), "results.csv")
    with open(p, newline="") as f:
        return list(csv.DictReader(f))


def ok(r):
    assert r.returncode == 0, f"rc={r.returncode}\nSTDOUT:\n{r.stdout[-3000:]}\nSTDERR:\n{r.stderr[-3000:]}"
    return r


def test_full_pipeline_on_cpu(tiny):
    d = os.path.dirname(tiny)
    ckpt = os.path.join(d, "ckpt")
    ok(run_script("train.py", "--model", "resnet18", "--config", tiny))
    ok(run_script("train.py", "--model", "mobilenetv3", "--config", tiny))
    names = sorted(os.path.basename(p) for p in glob.glob(os.path.join(ckpt, "*.pth")))
    assert any(n.startswith("resnet18_e1_acc") for n in names)  # the plan's naming (J5-06)
    r = rows(tiny)
    assert [x["script"] for x in r] == ["train"] * 2
    assert all(x["acc"] and x["val_acc"] and x["split"] == "test" and x["config_hash"] for x in r)
    assert all(float(x["recipe_time_s"]) > 0 for x in r)

    out = ok(run_script("distill.py", "--config", tiny)).stdout
    assert "teacher resnet18" in out
    assert "mobilenetv3_kd" in json.load(open(os.path.join(ckpt, "manifest.json")))

    # the front: every shape x seed trained on the training split only, scored on validation
    ok(run_script("train.py", "--front", "--config", tiny))
    man = json.load(open(os.path.join(ckpt, "manifest.json")))
    assert {"front_ta_s42", "front_ta_s1", "front_tb_s42", "front_tb_s1"} <= set(man)
    fr_train = [x for x in rows(tiny) if x["script"] == "train" and x["shape"]]
    assert len(fr_train) == 4 and all(x["acc"] == "" and x["val_acc"] and x["split"] == "val" for x in fr_train)
    assert all("test set not read" in x["notes"] for x in fr_train)
    ok(run_script("bench.py", "--variant", "front", "--config", tiny))
    front = [x for x in rows(tiny) if x["script"] == "bench" and x["shape"]]
    points = {f"P_{s}{t}" for s in ("ta", "tb") for t in ("", "_flip", "_flip_translate")}
    assert {x["variant"] for x in front} == points and {x["split"] for x in front} == {"val"}
    for x in front:
        seeds = dict(s.split(":") for s in x["acc_seeds"].split(";"))
        assert set(seeds) == {"42", "1"} and abs(float(seeds["42"]) - float(x["acc"])) < 1e-6
        assert abs(float(x["acc_mean"]) - (float(seeds["42"]) + float(seeds["1"])) / 2) < 0.01
        assert float(x["acc_ci_low"]) <= float(x["acc_mean"]) <= float(x["acc_ci_high"])
        assert float(x["e2e_p95_ms"]) >= float(x["e2e_p50_ms"]) > 0
    ok(run_script("front.py", "--config", tiny))
    sel = json.load(open(os.path.join(d, "front_selection.json")))
    fastest = min(front, key=lambda x: (best_run_p50(x["e2e_run_p50s_ms"], float(x["e2e_p50_ms"])),
                                        float(x["e2e_p50_ms"])))  # the rule's speed measure
    assert sel["chosen"]["F85"]["variant"] == fastest["variant"] and sel["F_reached_threshold"]
    assert sel["split"] == "val" and len(sel["candidates"]) == 6 and not sel["partial"]
    r = run_script("front.py", "--config", tiny)  # a second choice does not replace the first silently
    assert r.returncode == 2 and "--force" in r.stderr

    # the final runs: the chosen shapes x final.seeds on train + validation, first seed shipped
    ok(run_script("train.py", "--final-runs", "--config", tiny))
    man = json.load(open(os.path.join(ckpt, "manifest.json")))
    assert {"final_F_s42", "final_F_s1", "final_F85_s42", "final_F85_s1"} <= set(man)
    shipped = utils.load_checkpoint(os.path.join(ckpt, "f85_model.pth"))
    assert shipped["tta"] == fastest["tta"] and shipped["role"] == "F85" and shipped["seed"] == 42
    assert shipped["shape"] == fastest["shape"] and shipped["tag"] == "final_F85_s42"
    r = run_script("train.py", "--final-runs", "--config", tiny)  # the shipped files stay without --force
    assert r.returncode == 2 and "--force" in r.stderr

    out = ok(run_script("eval.py", "--variant", "F", "--config", tiny)).stdout
    assert "test accuracy" in out and "airplane" in out and "compile=none" in out  # CPU: eager fallback
    out = ok(run_script("eval.py", "--variant", "O1", "--config", tiny)).stdout
    assert "batch-1 re-check: 0 mismatches in the first 4 images" in out  # eager path: batched + re-checked
    ok(run_script("eval.py", "--ckpt", "@resnet18", "--model", "resnet18", "--config", tiny))

    out = ok(run_script("bench.py", "--variant", "all,front", "--config", tiny, "--raw",
                        os.path.join(d, "raw.npz"))).stdout
    assert "speedup e2e" in out
    inv = [x for x in rows(tiny) if x["script"] == "bench"][-1]["invocation"]
    bench = [x for x in rows(tiny) if x["script"] == "bench" and x["invocation"] == inv]
    table = {"B1", "B2", "O1", "O2", "O3", "D1", "F", "F85", "O2d", "F_fp32", "F_fp16", "F_fold", "F_graph",
             "F_cudnn", "F_copy_sync", "F_copy", "F_sync", "F_ahead", "F_stem", "F_call", "F85_ahead", "F_pdl", "F_nopdl",
             "F85_nopdl", "F85_cudnn", "F85_cluster", "F85_cluster8", "F85_cluster_ahead", "F85_triton", "F85_tagged",
             "F_cluster", "F_next", "F_flag"}
    assert {x["variant"] for x in bench} == table | points  # ONE invocation: table, ablation and front
    for x in bench:
        assert x["runs"] == "2" and x["iters"] == "3" and x["acc"] != "" and float(x["size_mb"]) > 0
        assert x["split"] == ("val" if x["shape"] and x["variant"].startswith("P_") else "test")
        lo, mid, hi = (float(x[k]) for k in ("speedup_e2e_ci_low", "speedup_e2e", "speedup_e2e_ci_high"))
        assert lo <= mid <= hi
        assert float(x["e2e_p95_ms"]) >= float(x["e2e_p50_ms"]) > 0 and x["device"] == "cpu"
        ref = next(y for y in bench if y["variant"] == "B1")
        assert abs(float(x["speedup_e2e"]) - float(ref["e2e_p50_ms"]) / float(x["e2e_p50_ms"])) < 1e-3 * mid
    f_row = next(x for x in bench if x["variant"] == "F")
    assert "cpu fallback" in f_row["notes"] and f_row["precision"] == "fp32"  # said, not hidden
    assert set(dict(s.split(":") for s in f_row["acc_seeds"].split(";"))) == {"42", "1"}  # the final seeds
    assert os.path.isfile(os.path.join(d, "raw.npz"))

    # one variant + the reference, as in `python bench.py --variant O2 --runs 3`
    ok(run_script("bench.py", "--variant", "F_fold", "--runs", "1", "--no-acc", "--config", tiny))
    last = [x for x in rows(tiny) if x["script"] == "bench"][-2:]
    assert [x["variant"] for x in last] == ["B1", "F_fold"] and last[0]["speedup_e2e"] == "1"

    out = ok(run_script("export.py", "--config", tiny, "--n-check", "8")).stdout
    assert "TorchScript" in out and "ONNX" in out and "agreement 100.00%" in out
    assert os.path.isfile(os.path.join(ckpt, "final_model.ts"))


def test_same_seed_same_weights_other_seed_other_weights(tiny):
    d = os.path.dirname(tiny)
    for tag, seed in (("a", 42), ("b", 42), ("c", 7)):
        ok(run_script("train.py", "--model", "fastnet", "--tag", tag, "--set", f"seed={seed}", "--config", tiny,
                      fresh=True))  # separate Pythons, as separate users' runs (each its own hash seed)
    man = json.load(open(os.path.join(d, "ckpt", "manifest.json")))
    sd = {t: utils.load_checkpoint(os.path.join(d, man[t]["path"]))["state_dict"] for t in "abc"}
    assert all(torch.equal(sd["a"][k], sd["b"][k]) for k in sd["a"])
    assert not all(torch.equal(sd["a"][k], sd["c"][k]) for k in sd["a"])
    model, ck = load_model(os.path.join(d, man["a"]["path"]))
    assert ck["model"] == "fastnet" and ck["config"]["seed"] == 42 and "env" in ck and ck["epoch"] == 1
