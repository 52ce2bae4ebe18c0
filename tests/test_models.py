"""utils.py models and inference paths, on the CPU."""
import copy

import numpy as np
import pytest
import torch
import torch.nn as nn

import utils
from config import MODEL_NAMES, load_config
from conftest import TINY_FASTNET


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_every_builder_gives_10_logits_on_a_32x32_image(name):
    torch.manual_seed(0)
    m = utils.build_model(name, load_config()).eval()
    with torch.no_grad():
        out = m(torch.randn(1, 3, 32, 32))
    assert out.shape == (1, 10) and torch.isfinite(out).all()


def test_unknown_model_lists_the_valid_names():
    with pytest.raises(utils.KitError) as e:
        utils.build_model("vgg16")
    assert "vgg16" in str(e.value) and all(n in str(e.value) for n in MODEL_NAMES)


def _randomize_bn(m, keep_weight=False):
    g = torch.Generator().manual_seed(1)
    for mod in m.modules():
        if isinstance(mod, nn.BatchNorm2d):
            mod.running_mean.copy_(torch.randn(mod.num_features, generator=g) * 0.3)
            mod.running_var.copy_(torch.rand(mod.num_features, generator=g) + 0.5)
            if not keep_weight:  # negative scales too (a frozen BN weight stays 1)
                mod.weight.data.copy_(torch.randn(mod.num_features, generator=g))
            mod.bias.data.copy_(torch.randn(mod.num_features, generator=g) * 0.1)
    return m.eval()


@pytest.mark.parametrize("fuse", [False, True])
@pytest.mark.parametrize("kw", [TINY_FASTNET, dict(TINY_FASTNET, stem_kernel=2),
                                dict(TINY_FASTNET, act="gelu", order="pool_bn", bn_frozen=True),
                                dict(TINY_FASTNET, act="gelu", order="pool_bn", bn_frozen=True, stem="whiten",
                                     stem_kernel=2, head_bias=False, logit_scale=0.25, dirac=True)])
def test_fastnet_folding_matches_the_plain_model_in_fp32(kw, fuse):
    cfg = load_config()
    torch.manual_seed(0)
    m = _randomize_bn(utils.FastNet(**kw), keep_weight=kw.get("bn_frozen", False))
    utils.init_whitening(m, torch.randn(20, 3, 32, 32))
    x_u8 = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        ref = m(utils.normalize(x_u8, cfg.data.mean, cfg.data.std))
        folded = m.fold_for_inference(cfg.data.mean, cfg.data.std, fuse=fuse).eval()
        got = folded(x_u8.float())  # raw pixels: the normalisation is inside the first conv
    assert torch.allclose(got, ref, rtol=1e-4, atol=1e-4), (got - ref).abs().max()
    assert not any(isinstance(x, nn.BatchNorm2d) for x in folded.modules())


def test_fastnet_refuses_shapes_that_cannot_fold_exactly():
    with pytest.raises(utils.KitError, match="act_pool"):
        utils.FastNet(**dict(TINY_FASTNET, act="gelu"))  # gelu is not monotone: pool and act do not commute
    cfg = load_config()
    m = _randomize_bn(utils.FastNet(**dict(TINY_FASTNET, order="pool_bn")))  # BN scales of both signs
    with pytest.raises(utils.KitError, match="bn_frozen"):
        m.fold_for_inference(cfg.data.mean, cfg.data.std)


def test_whitening_stem_whitens_its_patches():
    m = utils.FastNet(**dict(TINY_FASTNET, stem="whiten", stem_kernel=2))
    x = torch.randn(64, 3, 32, 32) * torch.tensor([1.0, 2.0, 0.5]).view(1, 3, 1, 1)
    utils.init_whitening(m, x)
    assert not m.features[0].conv.weight.requires_grad and m.features[0].conv.weight.shape == (24, 3, 2, 2)
    out = torch.nn.functional.conv2d(x, m.features[0].conv.weight[:12]).permute(1, 0, 2, 3).reshape(12, -1)
    cov = torch.cov(out)  # whitened: unit variance, no correlation (up to eps)
    assert torch.allclose(cov, torch.eye(12), atol=0.05), cov.diag()


def test_folding_does_not_touch_the_original_model():
    cfg = load_config()
    m = utils.FastNet(**TINY_FASTNET).eval()
    before = copy.deepcopy(m.state_dict())
    m.fold_for_inference(cfg.data.mean, cfg.data.std).half()
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())


def test_generic_bn_folding_of_a_torchvision_net():
    torch.manual_seed(0)
    m = _randomize_bn(utils.build_model("resnet18"))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref = m(x)
        got = utils.fold_bn_generic(copy.deepcopy(m))(x)
    assert torch.allclose(got, ref, rtol=1e-3, atol=1e-3)


def test_augment_keeps_shape_and_is_seeded():
    x = torch.randn(8, 3, 32, 32)
    a = utils.augment(x, 4, True, torch.Generator().manual_seed(3))
    b = utils.augment(x, 4, True, torch.Generator().manual_seed(3))
    assert a.shape == x.shape and torch.equal(a, b) and not torch.equal(a, x)
    assert torch.equal(utils.augment(x, 0, False, torch.Generator()), x)


def test_split_is_fixed_by_the_seed_and_disjoint():
    tr, va = utils.split_indices(100, 20, seed=5)
    tr2, va2 = utils.split_indices(100, 20, seed=5)
    assert torch.equal(va, va2) and len(va) == 20 and len(tr) == 80
    assert not set(tr.tolist()) & set(va.tolist())
    assert not torch.equal(utils.split_indices(100, 20, seed=6)[1], va)
    with pytest.raises(utils.KitError, match="val_size"):
        utils.split_indices(100, 100, seed=0)


def test_timer_and_stats():
    ms = utils.time_calls(lambda: sum(range(1000)), torch.device("cpu"), warmup=2, iters=20)
    assert ms.shape == (20,) and (ms > 0).all()
    s = utils.summarize_runs([ms, ms * 2])
    assert s["mean"] == pytest.approx(1.5 * ms.mean()) and s["cv_pct"] > 0
    st = utils.latency_stats([1.0, 2.0, 3.0, 4.0, 100.0])
    assert st["p50"] == 3.0 and st["p95"] > st["p50"] and st["mean"] == 22.0


def test_path_timings_interleave_runs_and_take_the_median_of_run_medians(monkeypatch):
    # the GPU tools' timing (utils.path_timings): the host runs interleaved across paths, then
    # per path the median of the run medians, p95 of all calls, and the CUDA-event / pipelined
    # timers (faked here: the CPU has no CUDA events)
    order, runs = [], iter([[1.0, 2.0, 9.0], [5.0, 5.0, 5.0], [3.0, 4.0, 4.0], [7.0, 7.0, 7.0]])

    def fake_calls(fn, device, warmup, iters):
        fn()
        return np.array(next(runs))

    class Path:
        def __init__(self, name):
            self.name, self.static_in = name, None

        def __call__(self, x):
            order.append(self.name)

    monkeypatch.setattr(utils, "time_calls", fake_calls)
    monkeypatch.setattr(utils, "time_gpu_events", lambda fn, n: np.array([0.5, 0.1, 0.3]))
    monkeypatch.setattr(utils, "time_pipelined", lambda fn, n: 0.05)
    t = utils.path_timings({"a": Path("a"), "b": Path("b")}, torch.device("cpu"), runs=2, iters=3)
    assert order == ["a", "b", "a", "b"]  # run 1 of every path, then run 2
    assert t["a"]["p50"] == 3.0 and t["b"]["p50"] == 6.0  # medians of (2, 4) and (5, 7)
    assert t["a"]["p95"] == pytest.approx(np.percentile([1, 2, 9, 3, 4, 4], 95))
    assert t["a"]["gpu"] == 0.3 and t["a"]["pipe"] == 0.05
