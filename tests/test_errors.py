"""Bad input: one-line error on stderr, non-zero exit, nothing half-written."""
import glob
import os

import pytest
import torch

from conftest import run_script, tiny_config


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = str(tmp_path_factory.mktemp("err"))
    cfg = tiny_config(tmp)
    for args in (("--model", "fastnet", "--final"), ("--model", "resnet18")):
        r = run_script("train.py", *args, "--config", cfg)
        assert r.returncode == 0, r.stderr
    return cfg


def snapshot(cfg):
    d = os.path.dirname(cfg)
    files = sorted(glob.glob(os.path.join(d, "**", "*"), recursive=True))
    return files, open(os.path.join(d, "results.csv")).read()


def fails_cleanly(cfg, r, *words):
    err = r.stderr.strip()
    assert r.returncode != 0, r.stdout
    assert len(err.splitlines()) == 1, err
    assert err.startswith("error:") and all(w in err for w in words), err


def check(cfg, script, args, *words, env=None):
    before = snapshot(cfg)
    r = run_script(script, *args, "--config", cfg, env_extra=env)
    fails_cleanly(cfg, r, *words)
    assert snapshot(cfg) == before  # no new files, no new rows
    return r


def test_missing_checkpoint(trained):
    check(trained, "eval.py", ["--ckpt", "nope.pth"], "checkpoint not found", "nope.pth")


def test_corrupt_and_truncated_checkpoints(trained, tmp_path):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint at all")
    check(trained, "eval.py", ["--ckpt", str(bad)], "not a readable checkpoint")
    good = os.path.join(os.path.dirname(trained), "ckpt", "final_model.pth")
    cut = tmp_path / "cut.pth"
    data = open(good, "rb").read()
    cut.write_bytes(data[: len(data) // 2])
    check(trained, "eval.py", ["--ckpt", str(cut)], "not a readable checkpoint")
    other = tmp_path / "other.pth"
    torch.save({"weights": torch.zeros(3)}, other)
    check(trained, "eval.py", ["--ckpt", str(other)], "not a checkpoint of this kit")


def test_checkpoint_of_another_architecture(trained, tmp_path):
    check(trained, "eval.py", ["--ckpt", "@resnet18", "--model", "fastnet"], "holds a 'resnet18' model, not 'fastnet'")
    check(trained, "eval.py", ["--variant", "F", "--ckpt", "@resnet18"], "not 'fastnet'")
    good = os.path.join(os.path.dirname(trained), "ckpt", "final_model.pth")
    ck = torch.load(good, weights_only=True)
    ck["model"] = "mobilenetv3"  # fastnet weights labelled as another net
    lied = tmp_path / "lied.pth"
    torch.save(ck, lied)
    check(trained, "eval.py", ["--ckpt", str(lied)], "weights do not fit a 'mobilenetv3' model")


def test_unknown_model_and_variant(trained):
    check(trained, "train.py", ["--model", "vgg16"], "invalid choice", "vgg16")
    check(trained, "bench.py", ["--variant", "Z9"], "unknown variant 'Z9'", "B1")
    check(trained, "eval.py", ["--variant", "Z9"], "unknown variant 'Z9'")


def test_config_errors(trained):
    check(trained, "train.py", ["--model", "fastnet", "--set", "train.fastnet.epochz=1"],
          "unknown config key 'train.fastnet.epochz'", "epochs")
    check(trained, "train.py", ["--model", "fastnet", "--set", "train.fastnet.epochs=abc"],
          "train.fastnet.epochs", "expected int")
    check(trained, "bench.py", ["--set", "bench.device=tpu"], "bench.device", "cuda, cpu")
    check(trained, "eval.py", ["--variant", "F_ahead", "--set", "variants.F_ahead.e2e_input=copy"],
          "e2e_launch 'ahead' needs", "e2e_input: mapped", "use e2e_launch: call")
    check(trained, "eval.py", ["--variant", "F", "--set", "variants.F.e2e_ahead_ms=0"], "variants.F.e2e_ahead_ms")
    check(trained, "eval.py", ["--variant", "F_call", "--set", "variants.F_call.e2e_gate=stem"],
          "e2e_gate 'stem' needs e2e_launch: ahead", "kernel_engine: triton")
    check(trained, "eval.py", ["--variant", "F", "--set", "variants.F.e2e_gate=door"],
          "variants.F.e2e_gate", "kernel, stem")
    check(trained, "eval.py", ["--variant", "F_ahead", "--set", "variants.F_ahead.e2e_polls=4"],
          "e2e_polls 4 needs e2e_gate: stem or stage")
    check(trained, "eval.py", ["--variant", "F", "--set", "variants.F.e2e_polls=2"], "variants.F.e2e_polls", "1, 4")
    check(trained, "eval.py", ["--variant", "F", "--set", "variants.F.kernel_pdl=false"],
          "kernel_pdl_trigger 'late' needs", "kernel_pdl: true")
    check(trained, "eval.py", ["--variant", "F", "--set", "variants.F.kernel_pdl_trigger=soon"],
          "variants.F.kernel_pdl_trigger", "early, late")
    check(trained, "eval.py", ["--variant", "F_cluster", "--set", "variants.F_cluster.kernel_split_meet=next"],
          "kernel_split_meet 'next' needs", "kernel_engine: triton")
    check(trained, "eval.py", ["--variant", "F", "--set", "variants.F.kernel_split_meet=later"],
          "variants.F.kernel_split_meet", "count, next")


def test_missing_data(trained):
    check(trained, "train.py", ["--model", "fastnet", "--set", "paths.data_npz=/nonexistent/c.npz",
                                "--set", "data.download=false"],
          "CIFAR-10 not found", "unpack.py", "data.download=true")


def test_cuda_requested_without_gpu(trained):
    check(trained, "train.py", ["--model", "fastnet", "--device", "cuda"], "no CUDA GPU", "--device cpu")
    check(trained, "bench.py", ["--variant", "F", "--set", "bench.device=cuda"], "no CUDA GPU")


def test_results_file_with_another_header(trained):
    p = os.path.join(os.path.dirname(trained), "results.csv")
    good = open(p).read()
    try:
        with open(p, "w") as f:
            f.write("a,b,c\n1,2,3\n")
        check(trained, "eval.py", ["--variant", "F"], "header differs", "results.csv")
        check(trained, "train.py", ["--model", "fastnet"], "header differs")
    finally:
        with open(p, "w") as f:
            f.write(good)


# ---- script level ----
def test_final_model_is_not_replaced_without_force(trained):
    # b. one CPU epoch once silently replaced the shipped 92.35 % model with a 47.35 % one
    check(trained, "train.py", ["--model", "fastnet", "--final"], "exists", "--force", "final_model.pth")


def test_tag_is_a_name_not_a_path(trained):
    # l. --tag ../.. wrote outside checkpoints/
    check(trained, "train.py", ["--model", "fastnet", "--tag", "../.."], "tag '../..'", "not a path")


def test_unwritable_results_path_stops_before_the_work(trained):
    # d. was found after a full evaluation (PermissionError traceback), or after training
    afile = os.path.join(os.path.dirname(trained), "afile")
    open(afile, "w").close()
    for script, args in (("eval.py", ["--variant", "F"]), ("train.py", ["--model", "fastnet"])):
        r = check(trained, script, [*args, "--set", f"paths.results={afile}/r.csv"], "cannot write", "paths.results")
        assert "epoch" not in r.stdout + r.stderr.split("error:")[0]


def test_export_arguments(trained):
    # m. --n-check 0 was a traceback, -5 checked 9,995 images silently; --out-dir <a file> a traceback
    check(trained, "export.py", ["--n-check", "0"], "--n-check 0", ">= 1")
    check(trained, "export.py", ["--n-check", "-5"], "--n-check -5")
    check(trained, "export.py", ["--out-dir", trained], "is a file, not a folder")


def test_bench_raw_to_a_bad_path_stops_before_any_row(trained):
    # m. bench.py --raw to a bad path failed after the rows were appended
    bad = os.path.join(trained, "raw.npz")  # under a file
    check(trained, "bench.py", ["--variant", "F", "--raw", bad], "cannot write", "--raw")


def test_bench_without_the_reference_checkpoint_benches_what_is_there(trained):
    # c. on a clean clone B1 is never trained: bench.py --variant F stopped; now it times F,
    # says in one line that no speedup was measured and why, and writes F's row alone
    import csv
    results = os.path.join(os.path.dirname(trained), "results.csv")
    n0 = len(list(csv.DictReader(open(results))))
    r = run_script("bench.py", "--variant", "F", "--no-acc", "--config", trained)
    assert r.returncode == 0, r.stderr
    assert "no speedups this time: reference B1 is missing" in r.stdout and "train.py --model mobilenetv3" in r.stdout
    new = list(csv.DictReader(open(results)))[n0:]
    assert [x["variant"] for x in new] == ["F"] and new[0]["speedup_e2e"] == "" and float(new[0]["e2e_p50_ms"]) > 0
    check(trained, "bench.py", ["--variant", "B1,F"], "no checkpoint for '@mobilenetv3'")  # asked for: an error


def test_gpu_tools_say_they_need_a_gpu(trained):
    """tools/kernel_tune.py, kernel_profile.py, chain_tune.py, cluster_trace.py, host_phases.py and e2e_trace.py on a machine
    without CUDA, or
    asked for what is not there: one line."""
    check(trained, "tools/kernel_tune.py", ["--shapes", "ta"], "on a machine with a CUDA GPU")
    check(trained, "tools/kernel_tune.py", ["--shapes", "zz"], "unknown front shape 'zz'")
    check(trained, "tools/kernel_profile.py", ["--out", os.path.join(os.path.dirname(trained), "kp.json")],
          "on a machine with a CUDA GPU")
    check(trained, "tools/chain_tune.py", ["--variants", "F85"], "on a machine with a CUDA GPU")
    check(trained, "tools/chain_tune.py", ["--variants", "B1"], "'B1' is not a variant of our kernels")
    check(trained, "tools/chain_tune.py", ["--calls", "0"], "must be >= 1")
    check(trained, "tools/cluster_trace.py", [], "on a machine with a CUDA GPU")
    check(trained, "tools/cluster_trace.py", ["--variant", "F85_triton"],
          "'F85_triton' is not a variant with kernel_engine: cluster")
    check(trained, "tools/cluster_trace.py", ["--calls", "5"], "more than the 20 warm-up calls")
    check(trained, "tools/host_phases.py", [], "on a machine with a CUDA GPU")
    check(trained, "tools/host_phases.py", ["--variants", "F85"], "'F85' is not a variant launching our kernels' graph")
    check(trained, "tools/host_phases.py", ["--calls", "5"], "--calls >= 10")
    check(trained, "tools/e2e_trace.py", [], "on a machine with a CUDA GPU")
    check(trained, "tools/e2e_trace.py", ["--variants", "F85"], "'F85' is not a variant of our Triton kernels")
    check(trained, "tools/e2e_trace.py", ["--calls", "2000"], "--calls from 10 to 1024")
