"""report/: the whole report (table, checkpoints README, figures, PDF) built from a synthetic
results.csv, front_selection.json and kernel_profile.json in a temporary folder; the table's
columns and computed speedups; goals met and missed; bad inputs as one 'error:' line, exit 2."""
import json
import os
import sys

import pytest

from conftest import ROOT, run_script

sys.path.insert(0, os.path.join(ROOT, "report"))
import build  # noqa: E402
import facts  # noqa: E402
import inputs  # noqa: E402
import utils  # noqa: E402
from config import front_variant_name, load_config  # noqa: E402

CFG = load_config()
GPU = "Synthetic GPU 141GB"
FORBIDDEN = ("lease", "lent ", "today", "gpu6", "issue")


def bench_row(inv, variant, e2e, acc=90.0, **kw):
    """One bench row as bench.py writes it (the numbers made up, their relations kept)."""
    v = CFG.variants[variant]
    r = dict(script="bench", invocation=inv, variant=variant, label=v.label, model=v.model or "fastnet", gpu=GPU,
             driver="999.1", torch="2.x", cuda="13.0", git_commit="abc123def456", config_hash="feedbeef0001",
             acc=acc, split="val" if v.shape else "test", e2e_p50_ms=e2e, e2e_mean_ms=e2e * 1.05, e2e_p95_ms=e2e * 1.3,
             e2e_p99_ms=e2e * 1.6, e2e_std_ms=e2e * 0.1, lat_p50_ms=e2e * 0.8, lat_mean_ms=e2e * 0.82,
             lat_p95_ms=e2e, gpu_lat_p50_ms=e2e * 0.6, gpu_pipelined_ms=e2e * 0.5 if v.cuda_graph else None,
             size_mb=1.5, tta="none", shape=v.shape or "", io="mapped+poll" if v.kernels else "copy+sync",
             cuda_graph=v.cuda_graph, runs=10, iters=200, seed=42, checkpoint=f"/x/ckpt/{variant}_e18.pth",
             speedup_e2e_ci_low=None, speedup_e2e_ci_high=None)
    r.update(kw)
    return r


def seeds_fields(values):
    n = len(values)
    mean = sum(values) / n
    std = (sum((x - mean) ** 2 for x in values) / (n - 1)) ** 0.5
    return dict(acc_mean=mean, acc_std=std, acc_ci_low=mean - std, acc_ci_high=mean + std,
                acc_seeds=";".join(f"{s}:{a:.2f}" for s, a in zip(CFG.final.seeds, values)))


def study_rows(inv, f_e2e=0.025, f_ci_low=94.3, f85_e2e=0.012):
    """A complete invocation: every table and ablation variant and every front point."""
    base = {"B1": 3.5, "B2": 1.8, "O1": 4.6, "O2": 0.58, "O3": 3.9, "D1": 4.7, "F": f_e2e, "F85": f85_e2e}
    rows = []
    for v in inputs.table_variants(CFG) + inputs.ablation_variants(CFG):
        e2e = base.get(v, f_e2e * 1.5)
        r = bench_row(inv, v, e2e, acc=94.5 if v.startswith("F") and "85" not in v else 88.0,
                      speedup_e2e_ci_low=0.9 * base["B1"] / e2e, speedup_e2e_ci_high=1.1 * base["B1"] / e2e)
        if v in ("F", "F85"):
            vals = [94.5, 94.4, 94.6] if v == "F" else [86.0, 86.4, 86.2]
            r.update(seeds_fields(vals), shape="AB94" if v == "F" else "t3", recipe_time_s=4.2)
            r["acc_ci_low"] = f_ci_low if v == "F" else 85.5
        rows.append(r)
    for i, shape in enumerate(CFG.front.shapes):
        for tta in CFG.front.tta:
            acc = 86.0 + i * 1.8 + (0.3 if tta != "none" else 0.0)
            e2e = 0.01 + 0.006 * i + (0.004 if tta != "none" else 0)
            rows.append(bench_row(inv, front_variant_name(shape, tta), e2e, acc=acc, tta=tta,
                                  **seeds_fields([acc - 0.1, acc, acc + 0.1])))
    return rows


def train_rows():
    rows = [dict(script="train", label=f"final_{role}_s{seed}", shape=shape, acc=acc, recipe_time_s=4.0 + 0.1 * k)
            for role, shape, acc in (("F", "AB94", 94.5), ("F85", "t3", 86.2))
            for k, seed in enumerate(CFG.final.seeds)]
    rows += [dict(script="train", label=f"front_{shape}_s{seed}", shape=shape, val_acc=90.0, recipe_time_s=3.0)
             for shape in CFG.front.shapes for seed in CFG.front.seeds]
    return rows


def write_study(folder, rows, selection=True, profile=True):
    path = os.path.join(folder, "results.csv")
    for r in rows:
        utils.append_result(path, r)
    if selection:
        cand = [{"variant": r["variant"], "acc_mean": r["acc_mean"], "e2e_p50_ms": r["e2e_p50_ms"]}
                for r in rows if r.get("variant", "").startswith("P_")]
        sel = {"rule": "F = the fastest point >= f_min_acc; F85 = the fastest point >= f85_min_acc", "split": "val",
               "calibration": "none", "f_min_acc": 94.0, "f85_min_acc": 85.0, "F_reached_threshold": True,
               "invocation": "bench-front", "gpu": GPU, "seeds": [42, 1, 2], "partial": [],
               "chosen": {"F": cand[-1], "F85": cand[0]}, "candidates": cand}
        with open(os.path.join(folder, "front_selection.json"), "w") as fh:
            json.dump(sel, fh)
    if profile:
        kern = {"F": [["conv1_kernel", 3.1], ["conv2_kernel", 5.2], ["head", 1.0]],
                "F_cudnn": [["cudnn_conv", 6.0], ["triton_pool", 4.0], ["cudnn_conv", 7.5], ["amax", 2.0]]}
        prof = {"env": {"gpu": GPU}, "variants": {v: {"e2e_p50": 25.0, "device_p50": 20.0, "gpu": 15.0, "pipe": 12.0,
                                                      "kernels": k, "label": v, "notes": "", "shape": "AB94",
                                                      "tta": "none"} for v, k in kern.items()}}
        with open(os.path.join(folder, "kernel_profile.json"), "w") as fh:
            json.dump(prof, fh)
    os.makedirs(os.path.join(folder, "logs"), exist_ok=True)
    with open(os.path.join(folder, "logs", "bench.log"), "w") as fh:
        fh.write("== bench: 2026\n...\n== bench: wall time 415 s, exit 0\n")
    with open(os.path.join(folder, "logs", "test_gpu.log"), "w") as fh:
        fh.write("F e2e vs FP32 on 10000 test images: top-1 agreement 99.96 %\n15 passed in 60.2s\n")
    return path


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The whole report from a complete invocation, with a newer incomplete one after it."""
    tmp = tmp_path_factory.mktemp("report")
    rows = study_rows("bench-complete") + train_rows() + [bench_row("bench-newer-cut", "B1", 9.9)]
    path = write_study(str(tmp), rows)
    s, blocks = build.build(path, root=str(tmp / "out"), pages_dir=str(tmp / "pages"))
    return tmp, s, blocks


def read(tmp, *parts):
    with open(os.path.join(tmp, "out", *parts), encoding="utf-8") as fh:
        return fh.read()


def test_table_has_the_plans_columns_and_one_row_per_table_variant(built):
    tmp, s, _ = built
    assert s.invocation == "bench-complete"  # the newer invocation lacks variants: not used
    text = read(tmp, "results", "final_table.md")
    lines = text.splitlines()
    head = next(i for i, ln in enumerate(lines) if ln.startswith("| ID |"))
    header = [c.strip() for c in lines[head].strip("|").split("|")]
    assert header[:7] == ["ID", "Variant", "Acc. (%)", "Lat. mean (ms)", "Lat. p95 (ms)", "Size (MB)", "Speedup [95 %]"]
    assert {"e2e p50 (ms)", "device p50 (ms)", "GPU p50 (ms)"} <= set(header)
    body = [ln for ln in lines[head + 2:] if ln.startswith("|")]
    ids = [ln.strip("|").split("|")[0].strip() for ln in body[:8]]
    assert ids == inputs.table_variants(CFG) == ["B1", "B2", "O1", "O2", "O3", "D1", "F", "F85"]
    assert "| 3.6750 |" in body[0]  # B1's e2e mean (3.5 x 1.05), not the newer cut invocation's 9.9


def test_speedup_is_computed_from_the_e2e_p50s(built):
    _, s, _ = built
    header, rows = facts.main_table(s)
    col = {r[0]: r[header.index("Speedup [95 %]")] for r in rows}
    assert col["B1"].startswith("1.00×")
    assert col["O2"].startswith(f"{3.5 / 0.58:.2f}×") and col["F"].startswith(f"{3.5 / 0.025:.2f}×")
    assert "[" in col["F"]  # the bootstrap interval from the row


def test_markdown_outputs_name_the_source_and_no_build_history(built):
    tmp, _, blocks = built
    table, readme = read(tmp, "results", "final_table.md"), read(tmp, "checkpoints", "README.md")
    assert "bench-complete" in table and GPU in table and "abc123def456" in table
    assert "final_model.pth" in readme and "f85_model.pth" in readme and "Predictor.load" in readme
    assert "<tag>_e<epoch>_acc<accuracy>_<run id>.pth" in readme
    words = (table + readme + " ".join(t for _, t in blocks)).lower()
    assert not [w for w in FORBIDDEN if w in words]


def test_pdf_has_the_five_parts_and_its_pages(built):
    tmp, _, blocks = built
    heads = [t for k, t in blocks if k == "h1"]
    assert heads == ["1. Introduction", "2. Method", "3. Results", "4. Conclusion", "Appendix: provenance"]
    assert {"latency.png", "accuracy_latency.png", "host_gpu.png"} <= {t for k, t in blocks if k == "image"}
    with open(os.path.join(tmp, "out", "report", "rapport.pdf"), "rb") as fh:
        assert fh.read(5) == b"%PDF-"
    assert len(os.listdir(tmp / "pages")) >= 4
    text = " ".join(t for k, t in blocks if k == "p")
    assert "15 passed in 60.2s" in text and "F e2e vs FP32" in text
    tables = [t for k, t in blocks if k == "table"]
    assert "Anchor | Published | Ours (F) | Comparable?" in tables and "Stage | Wall time (s) | Exit" in tables


def goal_verdicts(tmp, **kw):
    path = write_study(str(tmp), study_rows("bench-goals", **kw) + train_rows(), selection=False, profile=False)
    return {key: (text, met) for key, (_, _, text, met) in facts.goals(inputs.load(CFG, path)).items()}


def test_goals_met(tmp_path):
    g = goal_verdicts(tmp_path, f_e2e=0.5 * CFG.goals.f_e2e_ms, f_ci_low=CFG.goals.f_acc_low + 0.25)
    assert g["f_e2e_ms"] == (f"met ({0.5 * CFG.goals.f_e2e_ms:.4f} ms to spare)", True)
    assert g["f_acc_low"] == ("met (0.25 points to spare)", True)
    assert g["recipe_s"] == (f"met ({CFG.goals.recipe_s - 4.35:.2f} s to spare)", True)  # the final runs' mean


def test_goals_missed_by_how_much(tmp_path):
    g = goal_verdicts(tmp_path, f_e2e=1.4 * CFG.goals.f_e2e_ms, f_ci_low=CFG.goals.f_acc_low - 0.5,
                      f85_e2e=CFG.goals.f85_e2e_ms)
    assert g["f_e2e_ms"] == (f"missed by {0.4 * CFG.goals.f_e2e_ms:.4f} ms (40 %)", False)
    assert g["f_acc_low"] == ("missed by 0.50 points", False)
    assert g["f85_e2e_ms"][1] is True  # exactly at the goal is met


def _without_seeds(rows, f_acc=None):
    for r in rows:
        if r["variant"] in ("F", "F85"):
            r.update(acc_mean=None, acc_std=None, acc_seeds="", acc_ci_low=None, acc_ci_high=None)
            if f_acc is not None and r["variant"] == "F":
                r["acc"] = f_acc
    return rows


def test_seed_statistics_come_from_an_earlier_invocation_of_the_same_files(tmp_path):
    """An invocation without the final runs' seed files shows the seeds of the newest earlier one
    whose shipped files scored the same, and says so; not where F's file scored otherwise."""
    old = study_rows("bench-with-seeds")
    path = write_study(str(tmp_path / "a"), old + _without_seeds(study_rows("bench-no-seeds")) + train_rows())
    s = inputs.load(CFG, path)
    assert s.invocation == "bench-no-seeds" and s.seed_source["F"][0] == "bench-with-seeds"
    assert s.rows.at["F", "acc_ci_low"] == 94.3 and "From invocation bench-with-seeds" in facts.seed_line(s, "F")
    path = write_study(str(tmp_path / "b"), old + _without_seeds(study_rows("bench-no-seeds"), 94.4) + train_rows())
    s = inputs.load(CFG, path)
    assert "F" not in s.seed_source and "F85" in s.seed_source
    assert facts.seed_line(s, "F") == "F: no seed accuracies in its row."
    assert facts.goals(s)["f_acc_low"][2] != "met (0.30 points to spare)"


def test_mixed_gpus_in_one_invocation_is_an_error(tmp_path):
    rows = study_rows("bench-mixed")
    rows[3]["gpu"] = "Another GPU"
    path = write_study(str(tmp_path), rows, selection=False, profile=False)
    with pytest.raises(inputs.ReportError, match="mixes GPUs"):
        inputs.load(CFG, path)


def test_missing_selection_is_said_in_one_line(tmp_path):
    path = write_study(str(tmp_path), study_rows("bench-nosel"), selection=False, profile=False)
    _, blocks = build.build(path, root=str(tmp_path / "out"))
    said = [t for _, t in blocks if "front_selection.json" in t]
    assert len(said) == 1 and said[0].startswith("No results/front_selection.json")


def test_failed_gpu_tests_are_named_beside_every_agreement_line(tmp_path):
    log = tmp_path / "test_gpu.log"
    log.write_text("===== FAILURES =====\n____ test_e2e_path_agrees_with_fp32_on_all_test_images[F85] ____\n"
                   "F85 e2e vs FP32 on 10000 test images: top-1 agreement 99.89 %\n===== PASSES =====\n"
                   "____ test_e2e_path_agrees_with_fp32_on_all_test_images[F] ____\n"
                   "F e2e vs FP32 on 10000 test images: top-1 agreement 99.96 %\n"
                   "==== 1 failed, 13 passed in 61.0s ====\n")
    t = inputs.read_gpu_tests(str(log))
    assert t["failed"] == ["test_e2e_path_agrees_with_fp32_on_all_test_images[F85]"]
    assert t["summary"] == "1 failed, 13 passed in 61.0s" and [a[:3] for a in t["agreement"]] == ["F85", "F e"]


def bad_results(tmp, kind):
    p = tmp / "results.csv"
    if kind == "empty":
        p.write_bytes(b"")
    elif kind == "binary":
        p.write_bytes(b'\xff\xfe\x00bad"\nbytes\x00,"\n')
    elif kind == "incomplete":
        return write_study(str(tmp), [bench_row("bench-cut", v, 1.0) for v in ("B1", "B2", "F")], selection=False)
    return str(p)


def test_a_folder_for_results_is_a_report_error(tmp_path):
    with pytest.raises(inputs.ReportError, match="cannot read"):
        inputs.read_csv(str(tmp_path))


@pytest.mark.parametrize("kind", ["empty", "binary", "incomplete"])
def test_bad_results_is_one_error_line_and_exit_2(tmp_path, kind):
    path = bad_results(tmp_path, kind)
    out = tmp_path / "out"
    r = run_script("report/build.py", "--results", path, "--root", str(out))
    err = r.stderr.strip()
    assert r.returncode == 2, (r.returncode, err)
    assert len(err.splitlines()) == 1 and err.startswith("error:") and path in err, err
    assert not out.exists()  # nothing written


def test_the_cluster_rows_are_the_newest_invocation_that_ran_the_cluster_engine():
    import pandas as pd
    cfg = load_config()

    def row(inv, variant, gpu="NVIDIA H200"):
        return dict(script="bench", invocation=inv, variant=variant, gpu=gpu)
    df = pd.DataFrame([row("a", "F85"), row("a", "F85_cluster"), row("b", "F85"), row("b", "F85_cluster_ahead"),
                       row("b", "F85_cluster_ahead"), row("c", "F")])
    got = inputs.cluster_rows(cfg, df)
    assert list(got.index) == ["F85", "F85_cluster_ahead"] and set(got["invocation"]) == {"b"}
    assert inputs.cluster_rows(cfg, df[df["invocation"] == "c"]) is None
    with pytest.raises(inputs.ReportError, match="mixes GPUs"):
        inputs.cluster_rows(cfg, pd.concat([df, pd.DataFrame([row("b", "F85_nopdl", gpu="other")])]))
