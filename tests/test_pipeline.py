"""The real scripts end to end on the CPU with tiny data: train -> checkpoint -> eval ->
bench -> distill -> export, each leaving its rows in a temp results.csv; and seeding."""
import csv
import glob
import json
import os

import torch

import utils
from conftest import run_script


def rows(cfg_path):
    p = os.path.join(os.path.dirname(cfg_path), "results.csv")
    with open(p, newline="") as f:
        return list(csv.DictReader(f))


def ok(r):
    assert r.returncode == 0, f"rc={r.returncode}\nSTDOUT:\n{r.stdout[-3000:]}\nSTDERR:\n{r.stderr[-3000:]}"
    return r


def test_full_pipeline_on_cpu(tiny):
    d = os.path.dirname(tiny)
    ok(run_script("train.py", "--model", "fastnet", "--final", "--config", tiny, "--device", "cpu"))
    ok(run_script("train.py", "--model", "resnet18", "--config", tiny))
    ok(run_script("train.py", "--model", "mobilenetv3", "--config", tiny))
    names = sorted(os.path.basename(p) for p in glob.glob(os.path.join(d, "ckpt", "*.pth")))
    assert "final_model.pth" in names
    assert any(n.startswith("fastnet_e1_acc") for n in names)  # the plan's naming (J5-06)
    manifest = json.load(open(os.path.join(d, "ckpt", "manifest.json")))
    assert {"fastnet", "resnet18", "mobilenetv3"} <= set(manifest)
    r = rows(tiny)
    assert [x["script"] for x in r] == ["train"] * 3
    assert all(x["acc"] and x["config_hash"] and x["torch"] for x in r)
    # fastnet's fixed schedule trains on train + validation (train_on_val): no val accuracy left
    assert all(bool(x["val_acc"]) != (x["model"] == "fastnet") for x in r)

    # the checkpoint reloads with its metadata and the resolved config inside
    model, ck = utils.load_model(os.path.join(d, "ckpt", "final_model.pth"))
    assert ck["model"] == "fastnet" and ck["config"]["seed"] == 42 and "env" in ck and ck["epoch"] == 1

    out = ok(run_script("distill.py", "--config", tiny)).stdout
    assert "teacher resnet18" in out
    assert "mobilenetv3_kd" in json.load(open(os.path.join(d, "ckpt", "manifest.json")))

    out = ok(run_script("eval.py", "--variant", "F", "--config", tiny)).stdout
    assert "test accuracy" in out and "airplane" in out and "compile=none" in out  # CPU: eager fallback
    out = ok(run_script("eval.py", "--variant", "O1", "--config", tiny)).stdout
    assert "batch-1 re-check: 0 mismatches in the first 4 images" in out  # eager path: batched + re-checked
    ok(run_script("eval.py", "--ckpt", "@resnet18", "--model", "resnet18", "--config", tiny))

    # the front: every shape x seed trained, benched (seed accuracies through the path), F/F85 chosen
    ok(run_script("train.py", "--front", "--config", tiny))
    assert {"front_ta_s42", "front_ta_s1", "front_tb_s42", "front_tb_s1"} <= set(
        json.load(open(os.path.join(d, "ckpt", "manifest.json"))))
    ok(run_script("bench.py", "--variant", "front", "--no-e2e", "--config", tiny))
    front = [x for x in rows(tiny) if x["script"] == "bench" and x["front"]]
    assert {x["variant"] for x in front} == {"P_ta", "P_ta_flip", "P_tb", "P_tb_flip"}
    for x in front:
        seeds = dict(s.split(":") for s in x["acc_seeds"].split(";"))
        assert set(seeds) == {"42", "1"} and abs(float(seeds["42"]) - float(x["acc"])) < 1e-6
        assert abs(float(x["acc_mean"]) - (float(seeds["42"]) + float(seeds["1"])) / 2) < 0.01
    ok(run_script("front.py", "--config", tiny))
    sel = json.load(open(os.path.join(d, "front_selection.json")))
    fastest = min(front, key=lambda x: float(x["lat_p50_ms"]))
    assert sel["F85"]["variant"] == fastest["variant"] and sel["F_reached_threshold"]
    assert utils.load_checkpoint(os.path.join(d, "ckpt", "f85_model.pth"))["tta"] == fastest["tta"]

    out = ok(run_script("bench.py", "--variant", "all", "--config", tiny, "--raw", os.path.join(d, "raw.npz"))).stdout
    assert "speedup" in out
    bench = [x for x in rows(tiny) if x["script"] == "bench" and not x["front"]]
    cfg_variants = {"B1", "B2", "O1", "O2", "O3", "D1", "F", "F85", "AB94", "O2d", "F_fp32", "F_fp16", "F_cl", "F_fold",
                    "F_fuse", "F_graph", "F_compile", "F_kern", "F_cudnn", "F85_cudnn"}
    assert {x["variant"] for x in bench} == cfg_variants
    assert len({x["invocation"] for x in bench if x["variant"] != "B1"}) == 1
    for x in bench:
        assert float(x["lat_mean_ms"]) > 0 and float(x["lat_p95_ms"]) >= float(x["lat_p50_ms"]) > 0
        if x["invocation"] != bench[-1]["invocation"]:
            continue  # the front invocation's reference row
        assert x["runs"] == "2" and x["iters"] == "3" and x["acc"] != "" and float(x["size_mb"]) > 0
        lo, mid, hi = (float(x[k]) for k in ("speedup_ci_low", "speedup_p50", "speedup_ci_high"))
        assert lo <= mid <= hi
        assert x["e2e_p50_ms"] != "" and x["device"] == "cpu"
        ref = next(y for y in bench if y["variant"] == "B1" and y["invocation"] == x["invocation"])
        assert abs(float(x["speedup"]) - float(ref["lat_mean_ms"]) / float(x["lat_mean_ms"])) < 1e-3 * float(x["speedup"])
    f_row = next(x for x in bench if x["variant"] == "F")
    assert "cpu fallback" in f_row["notes"] and f_row["precision"] == "fp32"  # said, not hidden
    assert os.path.isfile(os.path.join(d, "raw.npz"))

    # one variant + the reference, as in `python bench.py --variant O2 --runs 3`
    ok(run_script("bench.py", "--variant", "F_fold", "--runs", "1", "--no-e2e", "--no-acc", "--config", tiny))
    last = [x for x in rows(tiny) if x["script"] == "bench"][-2:]
    assert [x["variant"] for x in last] == ["B1", "F_fold"] and last[0]["speedup"] == "1"

    out = ok(run_script("export.py", "--config", tiny, "--n-check", "8")).stdout
    assert "TorchScript" in out and "ONNX" in out and "agreement 100.00%" in out
    assert os.path.isfile(os.path.join(d, "ckpt", "final_model.ts"))


def test_same_seed_same_weights_other_seed_other_weights(tiny):
    d = os.path.dirname(tiny)
    for tag, seed in (("a", 42), ("b", 42), ("c", 7)):
        ok(run_script("train.py", "--model", "fastnet", "--tag", tag, "--set", f"seed={seed}", "--config", tiny))
    man = json.load(open(os.path.join(d, "ckpt", "manifest.json")))
    sd = {t: utils.load_checkpoint(os.path.join(d, man[t]["path"]))["state_dict"] for t in "abc"}
    assert all(torch.equal(sd["a"][k], sd["b"][k]) for k in sd["a"])
    assert not all(torch.equal(sd["a"][k], sd["c"][k]) for k in sd["a"])
