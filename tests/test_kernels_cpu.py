"""kernels.py under Triton's CPU interpreter (TRITON_INTERPRET=1) against reference_forward.

Tolerance: activations are stored in fp16 between layers (accumulation is fp32), so the
logits carry ~1e-3 relative error; we allow 1e-2 (||out - ref|| / ||ref||, ref in float64).
The interpreter is slow (every tl op is numpy on the host), so the nets are tiny and the
tiles large (few programs), yet split-K, the fused pool and the fused head all run.
Not run here, with the reason: programmatic dependent launch (griddepcontrol is a GPU
instruction the interpreter lacks) and timing; tools/kernel_bench.py checks those on a GPU.
"""
import functools
import json
import os
import pathlib
import subprocess
import sys

import pytest
import torch

ROOT = pathlib.Path(__file__).resolve().parents[1]
TOL = 1e-2


@functools.lru_cache(maxsize=None)
def _run_case(case):
    """Run one interpreter case in a fresh Python: triton.jit reads TRITON_INTERPRET when a
    module is imported, Triton's own library (tl.max, tl.sum...) included, and another test may
    already have imported Triton in compiled mode in this process.  Returns the case's dict."""
    pytest.importorskip("triton")
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, __file__, case], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"case {case} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def K():
    """kernels.py as imported normally, for the host-side tests that launch no kernel."""
    import kernels
    return kernels


def _big_tiles(K, layers, head, batch, split, **kw):
    """The heuristic tiles with whole-map row tiles (few programs: the interpreter is slow)
    and split-K forced to `split` wherever a layer has >= 2 K steps."""
    net = K.KernelNet(layers, head, batch=batch, **kw)
    out = []
    for sp in net.specs:
        m, t = sp["meta"], dict(sp["tiles"])
        t["BP"] = 64 if m["S"] == 4 else 256
        t["SPLIT"] = max(1, min(split, K._k_steps(m, t) // 2))
        out.append(t)
    return out


def _rel_err(out, ref):
    assert torch.isfinite(out).all(), "non-finite logits"
    return ((out.double() - ref).norm() / ref.norm()).item()


def _errors(K, cfg, batch, dtype, split, seed, last_bp=None):
    """Two calls of one KernelNet on fresh random images: the relative error of each (the
    second call must see the scratch, counters, head max and logits reset by the first).
    last_bp: row tile of the last layer (smaller than its map: the head's global-max mode 1)."""
    layers, head = K.random_net(seed=seed, **cfg)
    tiles = _big_tiles(K, layers, head, batch, split)
    if last_bp:
        tiles[-1]["BP"] = last_bp
    net = K.KernelNet(layers, head, batch=batch, tiles=tiles)
    g = torch.Generator().manual_seed(seed + 100)
    errs = []
    for _ in range(2):
        x = torch.randint(0, 256, (batch, 32, 32, 3), generator=g, dtype=torch.uint8).to(dtype)
        out = net(x).clone()
        assert out.shape == (batch, 10) and out.dtype == torch.float32
        errs.append(_rel_err(out, K.reference_forward(layers, head, x)))
    return dict(errs=errs, kernels=net.kernel_count(), splits=[t["SPLIT"] for t in net.tiles()],
                head_mode=net._head_mode(-1))


def _tta_errors(K, cfg, batch, dtype, modes, seed):
    """Fused-view KernelNet (views made by the first kernel, weighted mean in the head) vs
    TTANet over the float64 reference (torch views, per-view logits, weighted mean), two calls
    each; also the plain net's distance to the TTA reference (the check could fail)."""
    from inference import TTA_VIEWS, TTANet
    layers, head = K.random_net(seed=seed, **cfg)

    class Ref(torch.nn.Module):  # NCHW pixels -> reference logits, as TTANet expects
        def forward(self, x):
            return K.reference_forward(layers, head, x.permute(0, 2, 3, 1))

    plain = K.KernelNet(layers, head, batch=batch, tiles=_big_tiles(K, layers, head, batch, 2))
    g = torch.Generator().manual_seed(seed + 100)
    r = dict(plain_kernels=plain.kernel_count())
    for mode in modes:
        nv = len(TTA_VIEWS[mode])
        tiles = _big_tiles(K, layers, head, batch * nv, 2)
        net = K.KernelNet(layers, head, batch=batch, tiles=tiles, views=TTA_VIEWS[mode])
        ref_net = TTANet(Ref(), mode, device="cpu")
        errs = []
        for _ in range(2):
            x = torch.randint(0, 256, (batch, 32, 32, 3), generator=g, dtype=torch.uint8).to(dtype)
            out = net(x).clone()
            assert out.shape == (batch, 10) and out.dtype == torch.float32
            ref = ref_net(x.permute(0, 3, 1, 2)).double()
            errs.append(_rel_err(out, ref))
        r[mode] = dict(errs=errs, kernels=net.kernel_count(), splits=[t["SPLIT"] for t in net.tiles()],
                       plain_vs_tta=_rel_err(plain(x).clone(), ref))
    return r


def _small_fastnet(seed):
    """A random v2-style FastNet (whitening stem 2x2 -> 24, gelu, pool_bn) with random BN stats."""
    from utils import FastNet
    torch.manual_seed(seed)
    model = FastNet(stem="whiten", stem_width=24, stem_kernel=2, widths=(32, 16), depths=(1, 1), act="gelu",
                    order="pool_bn", bn_frozen=True)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.2)
            m.running_var.uniform_(0.5, 2.0)
            m.bias.data.normal_(0, 0.2)
    return model.eval()


def _inference_flip():
    """inference.folded_net with kernels and tta flip: one KernelPath making the views itself
    (no TTANet around it), equal to TTANet over the fp32 torch fold; load_weights (what
    swap_weights calls) then runs another net's weights through the same path."""
    import kernels as K
    from config import load_config
    from inference import InferenceModel, TTANet
    heur = K.heuristic_tiles  # whole-map row tiles, split-K 2: few programs for the interpreter

    def big(m, batch, n_sm=132, target=None):
        t = dict(heur(m, batch, n_sm, target), BP=64 if m["S"] == 4 else 256)
        return dict(t, SPLIT=max(1, min(2, K._k_steps(m, t) // 2)))
    K.heuristic_tiles = big
    cfg = load_config()
    a = dict(fold_bn=True, fuse=False, device=torch.device("cpu"), dtype=torch.float16, mem=torch.channels_last,
             tta="flip", kernels=True)
    ref_a = dict(a, kernels=False, dtype=torch.float32, mem=torch.contiguous_format)
    m1, m2 = _small_fastnet(1), _small_fastnet(2)
    net = InferenceModel.folded_net(cfg, m1, a)
    old = InferenceModel.folded_net(cfg, m1, dict(a, tta_fused=False))
    r = dict(wrapped=isinstance(net, TTANet), fused=net.tta_fused, nb=net.kn.nb, kernels=net.kn.kernel_count(),
             old_wrapped=isinstance(old, TTANet), old_batch=old.net.kn.batch)
    from inference import weight_bytes  # the size column of the kernel path's rows (it was 0 MB)
    layers, head = m1.eval().folded_spec(cfg.data.mean, cfg.data.std)
    r["bytes"], r["bytes_old"] = weight_bytes(net), weight_bytes(old)
    r["n_weights"] = sum(L["weight"].numel() + L["bias"].numel() for L in layers) + head["weight"].numel()
    x = torch.randint(0, 256, (1, 3, 32, 32), dtype=torch.uint8).to(torch.float16)
    x = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        r["err"] = _rel_err(net(x).clone(), InferenceModel.folded_net(cfg, m1, ref_a)(x.float()).double())
        r["old_err"] = _rel_err(old(x).clone(), InferenceModel.folded_net(cfg, m1, ref_a)(x.float()).double())
        net.kn.load_weights(*m2.folded_spec(cfg.data.mean, cfg.data.std))
        r["swapped_err"] = _rel_err(net(x).clone(), InferenceModel.folded_net(cfg, m2, ref_a)(x.float()).double())
        # the variant keys kernel_fuse_stem / kernel_fuse_pairs reach KernelNet; the row's note counts the kernels
        from inference import kernel_notes
        fewer = InferenceModel.folded_net(cfg, m1, dict(a, kernel_fuse_stem=True, kernel_fuse_pairs=True))
        fewer.kn.phases = "split"  # the interpreter runs programs in turn: no grid barrier (see _fewer_kernels)
        r["fewer_err"] = _rel_err(fewer(x).clone(), InferenceModel.folded_net(cfg, m1, ref_a)(x.float()).double())
        r["fewer_kernels"], r["fewer_note"], r["note"] = fewer.kn.kernel_count(), kernel_notes(fewer.kn), kernel_notes(net.kn)
    return r


def _fewer_kernels(K, cfg, seed):
    """fuse_stem / fuse_pairs (goal: fewer kernels) vs TTANet over the float64 reference, with
    and without flip views.  The interpreter runs a grid's programs one after another, so a
    grid barrier with more than one program would wait forever: a pair runs either as its two
    phases launched one after the other (many programs: the work split) or as 1 program (the
    barrier itself); a GPU runs both at once (tests/test_gpu.py)."""
    from inference import TTA_VIEWS, TTANet
    layers, head = K.random_net(seed=seed, **cfg)

    class Ref(torch.nn.Module):
        def forward(self, x):
            return K.reference_forward(layers, head, x.permute(0, 2, 3, 1))
    g = torch.Generator().manual_seed(seed + 100)
    r = dict(plain_kernels=len(layers))
    for mode in ("none", "flip"):
        ref_net = TTANet(Ref(), mode, device="cpu")
        for fs, fp, phases in [(True, False, None), (True, True, "split"), (False, True, "one")]:
            kw = dict(views=TTA_VIEWS[mode], fuse_stem=fs, fuse_pairs=fp)
            net = K.KernelNet(layers, head, batch=1, tiles=_big_tiles(K, layers, head, len(TTA_VIEWS[mode]), 2, **kw),
                              **kw)
            net.phases = phases
            errs = []
            for _ in range(2):  # the second call sees the resets of the first
                x = torch.randint(0, 256, (1, 32, 32, 3), generator=g, dtype=torch.uint8)
                errs.append(_rel_err(net(x).clone(), ref_net(x.permute(0, 3, 1, 2)).double()))
            r[f"{mode} stem={fs} pairs={fp} {phases}"] = dict(errs=errs, kernels=net.kernel_count(),
                                                              timeouts=net.barrier_timeouts())
    # load_weights with a fused stem: another net's weights, stem included
    layers2, head2 = K.random_net(seed=seed + 1, **cfg)
    net = K.KernelNet(layers, head, batch=1, tiles=_big_tiles(K, layers, head, 1, 2, fuse_stem=True), fuse_stem=True)
    net.load_weights(layers2, head2)
    x = torch.randint(0, 256, (1, 32, 32, 3), generator=g, dtype=torch.uint8)
    r["swapped_err"] = _rel_err(net(x).clone(), K.reference_forward(layers2, head2, x))
    return r


def _tile_cache():
    """KernelNet(tile_cache=) takes a layer's tiles from the cache file where its key is there
    (this 'GPU' and maps per call), the heuristic elsewhere; a malformed file is refused."""
    import tempfile
    import kernels as K
    layers, head = K.random_net(stem_width=16, stem_kernel=3, widths=(32, 32), depths=(1, 1))
    plain = K.KernelNet(layers, head, batch=1)
    path = os.path.join(tempfile.mkdtemp(), "tiles.json")
    s0, sp = plain.specs[0], plain.specs[1]
    want = dict(sp["tiles"], BP=64, BN=16, SPLIT=1)  # few programs: the interpreter is slow
    K.write_tile_cache(path, {K.tile_key(s0["meta"], 1, plain.gpu): dict(s0["tiles"], BP=256)}, {"by": "test"})
    K.write_tile_cache(path, {K.tile_key(sp["meta"], 1, plain.gpu): want}, {"by": "test"})  # merged in
    net = K.KernelNet(layers, head, batch=1, tile_cache=path)
    other_nb = K.KernelNet(layers, head, batch=2, tile_cache=path)  # 2 maps a call: another key
    with open(path, "w") as f:
        f.write("[1, 2]")
    try:
        K.KernelNet(layers, head, batch=1, tile_cache=path)
        refused = ""
    except ValueError as e:
        refused = str(e)
    x = torch.randint(0, 256, (1, 32, 32, 3), dtype=torch.uint8)
    return dict(sources=net.tile_sources(), plain=plain.tile_sources(), nb2=other_nb.tile_sources(),
                got=net.tiles()[1], want=want, refused=refused,
                err=_rel_err(net(x).clone(), K.reference_forward(layers, head, x)))


def _case(name):
    """The interpreter cases (run in a subprocess by _run_case)."""
    import kernels as K
    if name == "fewer_whiten":  # whitening stem 2x2 -> 24 (KSP 16, CSP 32), gelu, 5 layers
        cfg = dict(stem_width=24, stem_kernel=2, widths=(32, 16), depths=(2, 2), act="gelu")
        return _fewer_kernels(K, cfg, seed=11)
    if name == "fewer_k3":  # 3x3 stem -> 16 (KSP 32), relu, 4 layers (pairs (L1, L2), (L3, L4))
        cfg = dict(stem_width=16, stem_kernel=3, widths=(32, 16), depths=(2, 1), act="relu")
        return _fewer_kernels(K, cfg, seed=12)
    if name == "inference_flip":
        return _inference_flip()
    if name == "tile_cache":
        return _tile_cache()
    if name == "tta_whiten":  # whitening-stem shape: 2x2 valid stem 3->24 (31x31, odd), gelu, N=1
        cfg = dict(stem_width=24, stem_kernel=2, widths=(32, 16), depths=(2, 1), act="gelu")
        return _tta_errors(K, cfg, batch=1, dtype=torch.uint8, modes=("flip",), seed=7)
    if name == "tta_k3_batch2":  # 3x3 stem (30x30), relu, 2 images x 2 / 6 views, fp16 pixels
        cfg = dict(stem_width=16, stem_kernel=3, widths=(32, 32), depths=(1, 1), act="relu")
        return _tta_errors(K, cfg, batch=2, dtype=torch.float16, modes=("flip", "flip_translate"), seed=8)
    if name == "relu_k3":  # stem 3->16 (gather path), 16->32 pooled (blocked, BK=16), split-K
        cfg = dict(stem_width=16, stem_kernel=3, widths=(32, 32), depths=(1, 1), act="relu")
        r = _errors(K, cfg, batch=1, dtype=torch.uint8, split=2, seed=1)
        # and the check can fail: a net of perturbed weights vs the true reference
        layers, head = K.random_net(seed=3, **cfg)
        bad = [dict(L) for L in layers]
        bad[1]["weight"] = bad[1]["weight"] * 1.2
        net = K.KernelNet(bad, head, batch=1, tiles=_big_tiles(K, bad, head, 1, 1))
        x = torch.randint(0, 256, (1, 32, 32, 3), dtype=torch.uint8)
        r["wrong_weights_err"] = _rel_err(net(x).clone(), K.reference_forward(layers, head, x))
        return r
    if name == "gelu_k2":  # 31x31 odd maps (floor pools 31->15->7), width 24 (gather path), N=3
        cfg = dict(stem_width=24, stem_kernel=2, widths=(32, 16), depths=(1, 1), act="gelu")
        return _errors(K, cfg, batch=3, dtype=torch.float16, split=2, seed=2, last_bp=16)  # 49 pooled px: 4 tiles
    raise ValueError(name)


def test_relu_k3_stem_batch1_uint8_splitk():
    r = _run_case("relu_k3")
    assert max(r["errs"]) < TOL, r
    assert r["kernels"] == 3 and max(r["splits"]) > 1, r
    assert r["head_mode"] == 2, r  # one row tile holds the last map: each tile adds its share of the logits


def test_gelu_k2_stem_batch3_fp16_odd_width():
    r = _run_case("gelu_k2")
    assert max(r["errs"]) < TOL, r
    assert r["head_mode"] == 1, r  # 4 row tiles: global max, then the last tile's logits


@pytest.mark.parametrize("case,modes", [("tta_whiten", ["flip"]), ("tta_k3_batch2", ["flip", "flip_translate"])])
def test_fused_tta_equals_ttanet_over_reference(case, modes):
    # same tolerance as the plain net (fp16 activations); the views add no rounding of their own
    r = _run_case(case)
    for mode in modes:
        assert max(r[mode]["errs"]) < TOL, (mode, r)
        assert r[mode]["kernels"] == r["plain_kernels"], (mode, r)  # the views cost no kernel
        assert r[mode]["plain_vs_tta"] > TOL, (mode, r)  # the views matter: this check can fail


def test_inference_kernel_path_fuses_flip_once():
    r = _run_case("inference_flip")
    assert not r["wrapped"] and r["fused"] and r["nb"] == 2, r  # no TTANet: the kernels make the views
    assert r["old_wrapped"] and r["old_batch"] == 2, r  # tta_fused=False: the TTANet path, kept for benches
    assert max(r["err"], r["old_err"], r["swapped_err"], r["fewer_err"]) < TOL, r
    assert r["fewer_kernels"] < r["kernels"], r
    assert "stem fused; layers paired; " in r["fewer_note"] and "paired" not in r["note"], r
    assert r["note"].endswith(f"; {r['kernels']} kernels") and r["fewer_note"].endswith(f"; {r['fewer_kernels']} kernels"), r
    # fp16 weights, fp32 biases (the head padded): at least 2 bytes a weight, never 0
    assert r["bytes"] == r["bytes_old"] and 2 * r["n_weights"] <= r["bytes"] < 5 * r["n_weights"], r


@pytest.mark.parametrize("case,kernels", [("fewer_whiten", {(True, False): 4, (True, True): 2, (False, True): 3}),
                                          ("fewer_k3", {(True, False): 3, (True, True): 2, (False, True): 2})])
def test_fuse_stem_and_pairs_equal_reference(case, kernels):
    r = _run_case(case)
    assert r["swapped_err"] < TOL, r
    for key, v in r.items():
        if key.startswith(("none", "flip")):
            assert max(v["errs"]) < TOL and v["timeouts"] == 0, (key, r)
            fs, fp = "stem=True" in key, "pairs=True" in key
            assert v["kernels"] == kernels[(fs, fp)], (key, r)


def test_wrong_weights_are_caught():
    r = _run_case("relu_k3")
    assert r["wrong_weights_err"] > TOL, r


def test_reference_pool_before_act_equals_act_then_pool_for_relu(K):
    # the contract: pool before bias+act; for ReLU that equals the trained order act-then-pool
    import torch.nn.functional as F
    layers, head = K.random_net(seed=4, stem_width=8, widths=(16,), depths=(1,))
    x = torch.randint(0, 256, (2, 32, 32, 3), dtype=torch.uint8)
    h = x.double().permute(0, 3, 1, 2)
    for L in layers:
        h = F.relu(F.conv2d(h, L["weight"].double(), L["bias"].double(), padding=L["padding"]))
        h = F.max_pool2d(h, 2) if L["pool"] else h
    ref = torch.amax(h, dim=(2, 3)) @ head["weight"].double().t() + head["bias"].double()
    assert torch.allclose(K.reference_forward(layers, head, x), ref, rtol=1e-10, atol=1e-10)


def test_unavailable_raises_one_line(K, monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    ok, why = K.available()
    assert not ok and "\n" not in why
    layers, head = K.random_net(seed=5, stem_width=8, widths=(16,), depths=(1,))
    with pytest.raises(RuntimeError, match="KernelNet unavailable"):
        K.KernelNet(layers, head)


def test_tile_cache_entries_are_used_where_their_key_matches():
    r = _run_case("tile_cache")
    assert r["plain"] == ["heuristic"] * 3 and r["nb2"] == ["heuristic"] * 3, r
    assert r["sources"] == ["cache", "cache", "heuristic"] and r["got"] == r["want"], r  # both writes kept
    assert "not a tile cache" in r["refused"], r
    assert r["err"] < TOL, r  # the cached tiles (no split-K, 16 columns) compute the same net


def test_bad_input_rejected(K):
    layers, head = K.random_net(seed=6, stem_width=8, widths=(16,), depths=(1,))
    net = K.KernelNet.__new__(K.KernelNet)  # the input check runs before any kernel
    torch.nn.Module.__init__(net)
    net.batch = 1
    with pytest.raises(ValueError):
        net.forward(torch.zeros(2, 32, 32, 3, dtype=torch.uint8))


@pytest.mark.skip(reason="PDL (griddepcontrol) and CUDA graphs need a real sm90 GPU; the interpreter "
                         "has neither: tools/kernel_bench.py checks pdl=True against the reference there")
def test_pdl():
    pass


if __name__ == "__main__":  # python tests/test_kernels_cpu.py CASE (TRITON_INTERPRET=1 set)
    print(json.dumps(_case(sys.argv[1])))
