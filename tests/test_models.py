"""models.py (builders, FastNet, folding), data.py (augment, split) and timing.py, on the CPU."""
import copy

import numpy as np
import pytest
import torch
import torch.nn as nn

import data
import models
import timing
import utils
from config import MODEL_NAMES, load_config
from conftest import TINY_FASTNET


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_every_builder_gives_10_logits_on_a_32x32_image(name):
    torch.manual_seed(0)
    m = models.build_model(name, load_config()).eval()
    with torch.no_grad():
        out = m(torch.randn(1, 3, 32, 32))
    assert out.shape == (1, 10) and torch.isfinite(out).all()


def test_unknown_model_lists_the_valid_names():
    with pytest.raises(utils.KitError) as e:
        models.build_model("vgg16")
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


@pytest.mark.parametrize("cudnn_relu", [False, True])
@pytest.mark.parametrize("kw", [TINY_FASTNET, dict(TINY_FASTNET, stem_kernel=2),
                                dict(TINY_FASTNET, act="gelu", order="pool_bn", bn_frozen=True),
                                dict(TINY_FASTNET, act="gelu", order="pool_bn", bn_frozen=True, stem="whiten",
                                     stem_kernel=2, head_bias=False, logit_scale=0.25, dirac=True)])
def test_fastnet_folding_matches_the_plain_model_in_fp32(kw, cudnn_relu):
    cfg = load_config()
    torch.manual_seed(0)
    m = _randomize_bn(models.FastNet(**kw), keep_weight=kw.get("bn_frozen", False))
    models.init_whitening(m, torch.randn(20, 3, 32, 32))
    x_u8 = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        ref = m(data.normalize(x_u8, cfg.data.mean, cfg.data.std))
        folded = m.fold_for_inference(cfg.data.mean, cfg.data.std, cudnn_relu=cudnn_relu).eval()
        got = folded(x_u8.float())  # raw pixels: the normalisation is inside the first conv
    assert torch.allclose(got, ref, rtol=1e-4, atol=1e-4), (got - ref).abs().max()
    assert not any(isinstance(x, nn.BatchNorm2d) for x in folded.modules())


def test_fastnet_refuses_shapes_that_cannot_fold_exactly():
    with pytest.raises(utils.KitError, match="act_pool"):
        models.FastNet(**dict(TINY_FASTNET, act="gelu"))  # gelu is not monotone: pool and act do not commute
    cfg = load_config()
    m = _randomize_bn(models.FastNet(**dict(TINY_FASTNET, order="pool_bn")))  # BN scales of both signs
    with pytest.raises(utils.KitError, match="bn_frozen"):
        m.fold_for_inference(cfg.data.mean, cfg.data.std)


def test_whitening_stem_whitens_its_patches():
    m = models.FastNet(**dict(TINY_FASTNET, stem="whiten", stem_kernel=2))
    x = torch.randn(64, 3, 32, 32) * torch.tensor([1.0, 2.0, 0.5]).view(1, 3, 1, 1)
    models.init_whitening(m, x)
    assert not m.features[0].conv.weight.requires_grad and m.features[0].conv.weight.shape == (24, 3, 2, 2)
    out = torch.nn.functional.conv2d(x, m.features[0].conv.weight[:12]).permute(1, 0, 2, 3).reshape(12, -1)
    cov = torch.cov(out)  # whitened: unit variance, no correlation (up to eps)
    assert torch.allclose(cov, torch.eye(12), atol=0.05), cov.diag()


def test_folding_does_not_touch_the_original_model():
    cfg = load_config()
    m = models.FastNet(**TINY_FASTNET).eval()
    before = copy.deepcopy(m.state_dict())
    m.fold_for_inference(cfg.data.mean, cfg.data.std).half()
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())


def test_generic_bn_folding_of_a_torchvision_net():
    torch.manual_seed(0)
    m = _randomize_bn(models.build_model("resnet18"))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref = m(x)
        got = models.fold_bn_generic(copy.deepcopy(m))(x)
    assert torch.allclose(got, ref, rtol=1e-3, atol=1e-3)


def test_augment_keeps_shape_and_is_seeded():
    x = torch.randn(8, 3, 32, 32)
    a = data.augment(x, 4, True, torch.Generator().manual_seed(3))
    b = data.augment(x, 4, True, torch.Generator().manual_seed(3))
    assert a.shape == x.shape and torch.equal(a, b) and not torch.equal(a, x)
    assert torch.equal(data.augment(x, 0, False, torch.Generator()), x)


def test_split_is_fixed_by_the_seed_and_disjoint():
    tr, va = data.split_indices(100, 20, seed=5)
    tr2, va2 = data.split_indices(100, 20, seed=5)
    assert torch.equal(va, va2) and len(va) == 20 and len(tr) == 80
    assert not set(tr.tolist()) & set(va.tolist())
    assert not torch.equal(data.split_indices(100, 20, seed=6)[1], va)
    with pytest.raises(utils.KitError, match="val_size"):
        data.split_indices(100, 100, seed=0)


def test_timer_and_stats():
    ms = timing.time_calls(lambda: sum(range(1000)), torch.device("cpu"), warmup=2, iters=20)
    assert ms.shape == (20,) and (ms > 0).all()
    s = timing.summarize_runs([ms, ms * 2])
    assert s["mean"] == pytest.approx(1.5 * ms.mean()) and s["cv_pct"] > 0
    st = timing.latency_stats([1.0, 2.0, 3.0, 4.0, 100.0])
    assert st["p50"] == 3.0 and st["p95"] > st["p50"] and st["mean"] == 22.0


def test_e2e_timer_rotates_images_and_times_only_the_call():
    seen, syncs = [], []
    imgs = np.arange(5 * 32 * 32 * 3, dtype=np.uint8).reshape(5, 32, 32, 3)

    def clf(img):
        seen.append(int(img[0, 0, 0]))
        return len(seen) % 10
    ms, answers, idx = timing.time_e2e(clf, imgs, 7, offset=3, sync=lambda: syncs.append(1))
    assert list(idx) == [3, 4, 0, 1, 2, 3, 4] and seen == [int(imgs[i, 0, 0, 0]) for i in idx]
    assert ms.shape == (7,) and (ms >= 0).all() and list(answers) == [1, 2, 3, 4, 5, 6, 7] and len(syncs) == 7


def test_mean_interval_is_a_student_t_interval():
    mean, std, lo, hi = timing.mean_interval([94.0, 94.2, 94.4, 94.6])
    assert mean == pytest.approx(94.3) and std == pytest.approx(np.std([94.0, 94.2, 94.4, 94.6], ddof=1))
    half = 3.182 * std / 2  # t(0.975, 3) * std / sqrt(4)
    assert lo == pytest.approx(mean - half) and hi == pytest.approx(mean + half)
    assert np.isnan(timing.mean_interval([94.0])[2])


def test_fastnet_size_is_bounded_before_any_allocation():
    from config import ConfigError
    kw = dict(TINY_FASTNET, widths=[4096, 4096, 4096], depths=[64, 64, 64])
    with pytest.raises(ConfigError, match="M parameters"):
        models.check_fastnet_kwargs(kw)
    m = models.FastNet(**TINY_FASTNET)
    assert models.fastnet_params(TINY_FASTNET) == sum(p.numel() for p in m.parameters())
    w = dict(TINY_FASTNET, stem="whiten", stem_kernel=2, head_bias=False)
    assert models.fastnet_params(w) == sum(p.numel() for p in models.FastNet(**w).parameters())
