"""report/: input errors (one line, exit 2, nothing written), F / F85 taken from the invocation
front.py chose them from (never newer rows named "F"), the config-hash check, a whole build on a
synthetic single invocation, and the table recovered from a synthetic cut bench's run lines."""
import json
import os
import sys

import numpy as np
import pandas as pd
import pytest

from conftest import ROOT, run_script

sys.path.insert(0, os.path.join(ROOT, "report"))
import build  # noqa: E402
import facts  # noqa: E402
import layout  # noqa: E402
from config import config_hash, load_config  # noqa: E402

OUTPUTS = [os.path.join(ROOT, "results", "final_table.md"), os.path.join(ROOT, "results", "v2_tables.md"),
           os.path.join(ROOT, "checkpoints", "README.md")]
KERNELS = os.path.join(ROOT, "results", "kernels", "call2", "kernel_bench.json")
COMMITTED = os.path.join(ROOT, "results", "results.csv")


@pytest.mark.parametrize("content", [b"", b'a,b\n1,"2\n', b"\xff\xfe\x00bad bytes\x00\n", None,
                                     b"script,device,invocation,variant,timestamp\ntrain,cuda,,,2026\n"])
def test_unreadable_results_csv_is_one_line_exit_2(tmp_path, content):
    # issue 8 m: an unreadable CSV was a pandas traceback; a CSV without GPU bench rows is one line too
    p = tmp_path / "r.csv"
    if content is not None:
        p.write_bytes(content)
    before = [os.path.getmtime(o) if os.path.exists(o) else None for o in OUTPUTS]
    r = run_script("report/build.py", "--results", str(p), "--table-only")
    err = r.stderr.strip()
    assert r.returncode == 2, (r.returncode, err)
    assert len(err.splitlines()) == 1 and err.startswith("error:"), err
    assert str(p) in err or "no GPU bench rows" in err, err
    assert [os.path.getmtime(o) if os.path.exists(o) else None for o in OUTPUTS] == before


# ============================================================================= synthetic results
def row(inv, ts, variant, p50, acc, h, **kw):
    """One GPU bench row with the columns the report reads."""
    r = dict(script="bench", device="cuda", invocation=inv, timestamp=ts, variant=variant, gpu="Test GPU 80GB",
             torch="2.x", cuda="13.0", driver="1.0", runs=10, iters=300, config_hash=h, acc=acc, lat_p50_ms=p50,
             lat_p95_ms=p50 * 1.1, lat_mean_ms=p50 * 1.02, cv_pct=2.0, gpu_lat_p50_ms=p50 * 0.9,
             gpu_pipelined_ms=p50 * 0.8, e2e_p50_ms=p50 + 0.04, size_mb=1.0, label=f"{variant} label", model="fastnet",
             precision="fp16", memory_format="channels_last", fold_bn=True, fuse=False, compile="none",
             cuda_graph=True, kernels=True, tta="none", speedup_p50=4.0 / p50, speedup_ci_low=3.0 / p50,
             speedup_ci_high=5.0 / p50)
    r.update(kw)
    return r


def single_invocation(inv, ts, h, cfg):
    """Every table variant, the ablation and both TTA modes of every configured front shape."""
    rows = [row(inv, ts, v, p, a, h, model="mobilenetv3", cuda_graph=False, kernels=False)
            for v, p, a in (("B1", 4.0, 88.0), ("B2", 2.0, 92.8), ("O1", 5.0, 88.0), ("O2", 0.6, 88.0),
                            ("O3", 4.5, 88.0), ("D1", 5.5, 88.5), ("O2d", 3.0, 88.0))]
    rows += [row(inv, ts, v, p, 94.4, h) for v, p in (("F", 0.058), ("F_fp32", 0.9), ("F_fp16", 1.1), ("F_cl", 0.87),
                                                   ("F_fold", 0.64), ("F_fuse", 0.35), ("F_graph", 0.1),
                                                   ("F_compile", 0.075), ("F_cudnn", 0.084), ("F_kern", 0.058))]
    rows += [row(inv, ts, "F85", 0.030, 86.2, h), row(inv, ts, "F85_cudnn", 0.045, 86.2, h)]
    for i, shape in enumerate(cfg.front.shapes):
        for tta, dl, da in (("none", 0.0, 0.0), ("flip", 0.012, 0.7)):
            acc = 86.0 + 1.7 * i + da
            rows.append(row(inv, ts, f"P_{shape}" + ("" if tta == "none" else "_flip"), 0.030 + 0.006 * i + dl, acc, h,
                            front=shape, tta=tta, acc_mean=acc + 0.1, acc_std=0.15, acc_seeds="42:1;1:2;2:3"))
    rows += [dict(script="train", device="cuda", timestamp="2026-12-01T00:00:00", label=f"front_{s}_s42", front=s,
                  acc=90.0, epochs=30, train_time_s=7.0, model="fastnet") for s in cfg.front.shapes]
    return rows


def write_study(tmp_path, h):
    """results.csv: an old partial invocation, the complete one, then a newer partial one (only F);
    and a front_selection.json naming points of the complete one."""
    cfg = load_config()
    old = [row("bench-old", "2026-11-30T00:00:00", v, p, 90.0, h) for v, p in (("B1", 4.0), ("F", 0.07))]
    full = single_invocation("bench-full", "2026-12-01T01:00:00", h, cfg)
    newer = [row("bench-newer", "2026-12-02T00:00:00", "F", 0.05, 94.4, h)]
    cols = list(pd.read_csv(COMMITTED, nrows=0).columns)
    csv = tmp_path / "results.csv"
    pd.DataFrame(old + full + newer).reindex(columns=cols).to_csv(csv, index=False)
    shapes = list(cfg.front.shapes)
    sel = {role: {"variant": f"P_{s}", "front": s, "tta": "none", "acc": 90.0, "acc_mean": 90.0,
                  "invocation": "bench-full"} for role, s in (("F", shapes[-1]), ("F85", shapes[0]))}
    (tmp_path / "sel.json").write_text(json.dumps(dict(sel, F_reached_threshold=True)))
    return str(csv), str(tmp_path / "sel.json"), shapes


def test_single_invocation_is_chosen_and_the_whole_report_builds(tmp_path, capsys):
    h = config_hash(load_config())
    csv, sel, shapes = write_study(tmp_path, h)
    out = build.outputs(str(tmp_path / "out"))
    f = build.run(csv, KERNELS, out=out, selection=sel)
    said = capsys.readouterr().out
    assert f.mode == "single" and list(f.invs.invocation) == ["bench-full"]  # not the newer one
    assert "ONE GPU invocation, bench-full" in said and "No single bench invocation" not in said
    assert list(f.table.index) == list(facts.TABLE_IDS) and list(f.ablation.index) == list(facts.ABLATION_IDS)
    assert f.table.loc["AB94"].variant == "P_AB94" and len(f.front) == 2 * len(shapes)
    # F / F85 are the selection's front points, not the rows named "F" / "F85" (nor bench-newer's F)
    assert f.table.loc["F"].variant == f"P_{shapes[-1]}" and f.table.loc["F85"].variant == f"P_{shapes[0]}"
    p_f = 0.030 + 0.006 * (len(shapes) - 1)
    assert f.table.loc["F"].lat_p50_ms == pytest.approx(p_f) and f.table.loc["F"].sp == pytest.approx(4.0 / p_f)
    assert f.n["f_cudnn"]["x"] == pytest.approx(0.084 / 0.058)  # F_cudnn vs F_kern, complete rows
    assert f.n["rule"]["F85"] == f"P_{shapes[0]}"  # front.py's rule re-applied to this front
    assert f.hash_check["ok"] and "Config check: the rows used carry" in said
    assert f.rec.empty and not f.recovered  # nothing recovered when the invocation holds every row
    table = open(out["table"]).read()
    assert "bench-full" in table and "bench-newer" not in table.split("Not used:")[0]  # named only as not used
    acc_f = 86.0 + 1.7 * (len(shapes) - 1)
    assert f"| F | fastnet {shapes[-1]} | {acc_f:.2f} |" in table and f"{p_f:.4f}" in table
    assert "NOT committed" in open(out["ckpt"]).read() or "NOT in the repository" in open(out["ckpt"]).read()
    assert os.path.getsize(out["pdf"]) > 10_000 and os.path.isfile(os.path.join(out["figs"], "front.png"))


def test_config_hash_mismatch_warns(tmp_path, capsys):
    csv, sel, _ = write_study(tmp_path, "0123456789ab")
    out = build.outputs(str(tmp_path / "out"))
    f = build.run(csv, KERNELS, table_only=True, out=out, selection=sel)
    said = capsys.readouterr().out
    assert not f.hash_check["ok"]
    line = "warning: config hash differs: config.yaml hashes to"
    assert line in said and "carry 0123456789ab" in said and line in open(out["table"]).read()


def test_committed_results_take_f_from_the_front_invocation_and_recover_the_cut_bench():
    f = facts.gather(COMMITTED, KERNELS)
    if f.mode == "single":
        pytest.skip("results.csv now holds one invocation with every row")
    sel = json.load(open(os.path.join(ROOT, "results", "front_selection.json")))
    inv = sel["F"]["invocation"]
    assert list(f.invs.invocation) == [inv] and f.front_inv == inv
    for role in ("F", "F85"):  # the selected P_ rows, not the newest rows named F / F85
        assert f.table.loc[role].variant == sel[role]["variant"] and f.table.loc[role].invocation == inv
    assert f.table.loc["B1"].invocation == inv and pd.notna(f.table.loc["F"].sp)
    assert layout.provenance(f)[0].startswith("No single bench invocation holds every row")
    rec = f.recovered
    assert rec["used"] in rec["invs"] and list(f.rec.index) == list(facts.TABLE_IDS + facts.ABLATION_IDS)
    assert set(f.rec.loc[["F", "F85", "AB94"]].acc_src) == {"path"} and f.rec.loc["B2"].acc_src == "ckpt"
    assert f.rec.loc["F"].acc == f.table.loc["F"].acc


def test_host_vs_gpu_cells():
    # rows benched before the GPU-side columns existed say so; others give the launch + host share
    new = pd.Series({"lat_p50_ms": 0.1, "gpu_lat_p50_ms": 0.04, "gpu_pipelined_ms": 0.03})
    old = pd.Series({"lat_p50_ms": 4.0, "gpu_lat_p50_ms": float("nan"), "gpu_pipelined_ms": float("nan")})
    assert layout.host_gpu_cells(new) == ["0.1000", "0.0400", "0.0300", "60"]
    assert layout.host_gpu_cells(old) == ["4.0000", "not measured", "not measured", "–"]


def test_pareto_keeps_only_undominated_points():
    fr = pd.DataFrame({"lat_p50_ms": [0.03, 0.031, 0.04, 0.05], "acc_mean": [86.0, 85.0, 90.0, 89.0]},
                      index=["a", "b", "c", "d"])
    assert facts.pareto(fr) == ["a", "c"]


# ============================================================================= recovered cut bench
def cut_runs(inv, variants, p50, runs, drop=()):
    """Run lines of one cut bench: variant v's run r has p50 p50[v] * (1 + r / 100); (r, v) in drop is
    missing (the run was cut there)."""
    return [dict(invocation=inv, gpu="Test GPU 80GB", run=r, variant=v, mean_ms=p50[v] * (1 + r / 100) * 1.1,
                 p50_ms=p50[v] * (1 + r / 100), p95_ms=p50[v] * 1.5) for r in range(1, runs + 1) for v in variants
            if (r, v) not in drop]


def test_recovered_table_from_a_synthetic_cut_bench(tmp_path):
    import utils
    h = config_hash(load_config())
    csv, sel, shapes = write_study(tmp_path, h)
    d = pd.read_csv(csv)  # keep only B1 and the front points of the complete invocation: a front stage
    d = d[(d.invocation != "bench-full") | d.variant.isin(["B1"]) | d.variant.str.startswith("P_", na=False)
          | (d.script != "bench")]
    d.to_csv(csv, index=False)
    ids = list(facts.TABLE_IDS + facts.ABLATION_IDS)
    p50 = {v: 4.0 if v in facts.BASELINES else 0.05 + 0.001 * i for i, v in enumerate(ids)}
    old = cut_runs("bench-20990101-000000-aaaa", ids[:-1], p50, 3)  # lacks F85_cudnn: not usable
    new = cut_runs("bench-20990101-010000-bbbb", ids, p50, 4, drop={(4, "F_kern")})  # run 4 incomplete
    runs = tmp_path / "cut.csv"
    pd.DataFrame(old + new).to_csv(runs, index=False)
    out = build.outputs(str(tmp_path / "out"))
    f = build.run(csv, KERNELS, out=out, selection=sel, cut_runs=str(runs))
    assert f.mode == "partial" and f.recovered["used"] == "bench-20990101-010000-bbbb"
    assert f.recovered["n_full"] == 3 and list(f.rec.index) == ids
    r = f.rec.loc["F_fp32"]
    expect = [p50["F_fp32"] * (1 + k / 100) for k in (1, 2, 3)]  # complete runs only
    assert r.runs == 3 and r.p50_ms == pytest.approx(np.median(expect))
    sp = utils.speedup_interval([[p50["B1"] * (1 + k / 100)] for k in (1, 2, 3)], [[x] for x in expect])
    assert (r.speedup_p50, r.ci_low, r.ci_high) == pytest.approx(sp)
    assert r.hw == pytest.approx(100 * max(sp[0] - sp[1], sp[2] - sp[0]) / sp[0])
    assert r.other_p50 == pytest.approx(np.median([p50["F_fp32"] * (1 + k / 100) for k in (1, 2, 3)]))
    # accuracy: through the path for the selected points, the checkpoint's train row otherwise
    assert f.rec.loc["F"].acc_src == "path" and f.rec.loc["F"].acc == f.table.loc["F"].acc
    assert f.rec.loc["F_fp32"].acc_src == "ckpt" and f.rec.loc["F_fp32"].acc_of == f"front_{shapes[-1]}_s42"
    assert f.rec.loc["B2"].acc_src in ("ckpt", "")  # no resnet18 train row in the synthetic study: left empty
    table = open(out["table"]).read()
    assert "timing only, recovered from the log of a cut bench" in table and "bench-20990101-010000-bbbb" in table
    assert "No single bench invocation holds every row" in table
    assert os.path.getsize(out["pdf"]) > 10_000 and os.path.isfile(os.path.join(out["figs"], "latency_bar.png"))


@pytest.mark.parametrize("f_shape_ok", [True, False])
def test_the_complete_bench_after_the_front_stage_is_used(tmp_path, capsys, f_shape_ok):
    # reproduce.sh: the front stage's invocation (front points + B1) is where front.py chose F / F85;
    # the bench stage's later invocation holds every row, its F / F85 rows benching those files
    h, cfg = config_hash(load_config()), load_config()
    shapes = list(cfg.front.shapes)
    front_only = [r for r in single_invocation("bench-front", "2026-12-01T01:00:00", h, cfg)
                  if r.get("variant") in ("B1",) or str(r.get("variant", "")).startswith("P_") or r["script"] == "train"]
    full = [r for r in single_invocation("bench-full", "2026-12-01T02:00:00", h, cfg) if r["script"] == "bench"]
    full.append(row("bench-full", "2026-12-01T02:00:00", "AB94", 0.05, 94.0, h))  # the table's own AB94 variant
    for r in full:
        if r["variant"] in ("F", "F85"):
            shape = shapes[-1] if r["variant"] == "F" else shapes[0]
            r["notes"] = f"front shape {shape if f_shape_ok else 'other'} (chosen by front.py)"
    cols = list(pd.read_csv(COMMITTED, nrows=0).columns)
    csv = tmp_path / "results.csv"
    pd.DataFrame(front_only + full).reindex(columns=cols).to_csv(csv, index=False)
    sel = {role: {"variant": f"P_{s}", "front": s, "tta": "none", "acc": 90.0, "acc_mean": 90.0,
                  "invocation": "bench-front"} for role, s in (("F", shapes[-1]), ("F85", shapes[0]))}
    (tmp_path / "sel.json").write_text(json.dumps(dict(sel, F_reached_threshold=True)))
    f = build.run(str(csv), KERNELS, out=build.outputs(str(tmp_path / "out")), selection=str(tmp_path / "sel.json"),
                  table_only=True)
    said = capsys.readouterr().out
    if f_shape_ok:
        assert f.mode == "single" and f.front_inv == "bench-full" and f.select_inv == "bench-front", said
        assert f.table.loc["F"].variant == "F" and f.table.loc["F"].lat_p50_ms == pytest.approx(0.058)
        assert "chose F and F85 from bench-front" in said
    else:  # its F row benched another file: not the shipped F's bench, so not used
        assert f.front_inv == "bench-front" and f.mode == "partial", said


def _paths_log(path, rows):
    head = f"{'path':<24s} {'p50 us':>7s} {'p95 us':>7s} {'gpu us':>7s} {'pipe us':>7s} {'max|dlogit|':>11s}  notes"
    lines = ["GPU X, torch 2.x, commit abc; 10 runs x 300 calls", head]
    lines += [f"{n:<24s} {p:7.1f} {p + 5:7.1f} {p - 3:7.1f} {p - 9:7.1f} {0.0:11.2e}  kernel tiles: 7 cache" for n, p in rows]
    os.makedirs(os.path.dirname(path), exist_ok=True)
    open(path, "w").write("\n".join(lines) + "\n")


def test_kernel_option_logs_calls_deltas_and_repeats(tmp_path, monkeypatch):
    """tools/kernel_paths.py logs: a lease with one log is named by its folder, one with several by
    folder + the log's suffix; each option against tuned tiles; F tuned timed twice is grouped by
    file (logs with 'F@none' rows were made while F was another file)."""
    import analysis
    k = tmp_path / "kernels"
    _paths_log(str(k / "gpuA" / "kernel_paths_old.log"), [("F heuristic", 48.0), ("F tuned", 44.0),
                                                           ("F tuned +pdl", 47.0), ("F@none tuned", 40.0)])
    _paths_log(str(k / "gpuB" / "kernel_paths_pairs.log"), [("F heuristic", 40.0), ("F tuned", 37.0),
                                                            ("F tuned +pairs", 39.0), ("F tuned +stem +pairs", 41.0)])
    _paths_log(str(k / "gpuB" / "kernel_paths_wide.log"), [("F tuned", 41.0), ("F wide", 40.5)])
    monkeypatch.setattr(facts, "RES", str(tmp_path))
    rows = facts.kernel_option_logs()
    assert list(dict.fromkeys(r["call"] for r in rows)) == ["gpuA", "gpuB pairs", "gpuB wide"]
    e = {x["call"]: x for x in facts.option_effects(rows) if x["base"] == "F"}
    assert e["gpuA"]["f_then"] and e["gpuA"]["+pdl"] == pytest.approx(3.0) and e["gpuA"]["heur"] == 48.0
    assert not e["gpuB pairs"]["f_then"] and e["gpuB pairs"]["+pairs"] == pytest.approx(2.0)
    assert e["gpuB pairs"]["+stem +pairs"] == pytest.approx(4.0)
    assert e["gpuB wide"]["heur"] is None and e["gpuB wide"]["wide"] == pytest.approx(-0.5)

    class F:  # the two fields analysis reads
        n = {"opts": facts.option_effects(rows)}
    assert analysis.f_repeats(F) == [("today's F", [("gpuB pairs", 37.0), ("gpuB wide", 41.0)])]
    s = analysis.tuned_tiles(F)
    assert "F 40.0 → 37.0 µs" in s and "F -0.5 µs" in s and "gpuB/kernel_paths_pairs.log" in s, s


def test_gpu_test_log_is_read_and_a_failed_run_is_not_cited(tmp_path):
    import analysis
    p = tmp_path / "test_gpu.log"
    p.write_text("torch 2.x | triton 3.x | NVIDIA H100 80GB HBM3\ncommit 0123456789ab\n..\n"
                 "F_kern vs FP32 on 10000 test images: top-1 agreement 99.96 % (4 differ), accuracy 94.27 % vs 94.23 %; "
                 "kernel tiles: 7 cache\n14 passed in 73.69s (0:01:13)\n")
    t = facts.gpu_test_log(str(p))
    assert t["passed"].startswith("14 passed") and t["commit"] == "0123456789ab" and t["gpu"] == "NVIDIA H100 80GB HBM3"
    assert t["f_kern"].endswith("94.27 % vs 94.23 %") and t["failed"] is None
    assert facts.gpu_test_log(str(tmp_path / "none.log")) == {}
    p.write_text(p.read_text().replace("14 passed", "1 failed, 13 passed"))
    assert facts.gpu_test_log(str(p))["failed"] == "1 failed"

    class F:  # what analysis.our_kernels reads
        n = {"f_cudnn": {"a": 0.073, "b": 0.0385, "x": 1.9}, "f85_cudnn": None}
        timing_src = "invocation X"
        kernels = {}
        gpu_tests = facts.gpu_test_log(str(p))
    assert "agreement" not in analysis.our_kernels(F)  # a failed run is not cited as a result
    p.write_text(p.read_text().replace("1 failed, 13 passed", "14 passed"))
    F.gpu_tests = facts.gpu_test_log(str(p))
    assert "top-1 agreement 99.96 % (4 differ)" in analysis.our_kernels(F)
    p.write_text("note: an earlier run at this commit had a timer test fail\n" + p.read_text())
    F.gpu_tests = facts.gpu_test_log(str(p))
    assert "; an earlier run at this commit had a timer test fail)" in analysis.our_kernels(F)


def test_fuse_tail_reads_the_paired_measurement(monkeypatch, tmp_path):
    """Next steps: fuse_pairs on today's F, its kernel counts from the row notes; 'not faster' only
    when every measurement says so."""
    import analysis
    k = tmp_path / "kernels" / "gpuB" / "kernel_paths.log"
    _paths_log(str(k), [("F heuristic", 40.0), ("F tuned", 37.0), ("F tuned +pairs", 39.0)])
    txt = k.read_text().splitlines()
    txt = [ln + ("; 4 kernels" if "+pairs" in ln else "; 7 kernels") if ln.startswith("F ") else ln for ln in txt]
    k.write_text("\n".join(txt) + "\n")
    monkeypatch.setattr(facts, "RES", str(tmp_path))

    class F:
        n = {"f_kernels": {"tail3": 15.9, "sum": 26.5}, "opts": facts.option_effects(facts.kernel_option_logs())}
        tta_kernels = {}
    s = analysis.fuse_tail(F)
    assert "4 kernels instead of 7" in s and "+2.0 µs host p50 (gpuB)" in s and "not faster" in s, s
    k.write_text(k.read_text().replace("F tuned +pairs              39.0", "F tuned +pairs              36.0"))
    F.n["opts"] = facts.option_effects(facts.kernel_option_logs())
    s = analysis.fuse_tail(F)
    assert "-1.0 µs" in s and "not faster" not in s, s
