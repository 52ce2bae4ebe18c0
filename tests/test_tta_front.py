"""On the CPU: TTA views and weights, the fastnet recipe's pieces, front selection and its
one-line errors."""

import pandas as pd
import pytest
import torch

import front
import train
import utils
from data import load_data
from models import FastNet, build_model
from config import ConfigError, load_config
from conftest import TINY_FASTNET
from tta import TTA_VIEWS, TTANet, make_view

V2 = dict(TINY_FASTNET, act="gelu", order="pool_bn", bn_frozen=True, stem="whiten", stem_kernel=2,
          head_bias=False, logit_scale=0.25, dirac=True)


@pytest.mark.parametrize("mode", ["none", "flip", "flip_translate"])
def test_tta_logits_are_the_weighted_mean_of_the_view_logits(mode):
    torch.manual_seed(0)
    net = FastNet(**V2).eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        got = TTANet(net, mode)(x)
        want = sum(w * net(make_view(x, *v)) for v, w in TTA_VIEWS[mode])
    assert abs(sum(w for _, w in TTA_VIEWS[mode]) - 1.0) < 1e-12
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_views_flip_and_shift_with_reflection():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    assert torch.equal(make_view(x, True, 0, 0), x.flip(3))
    shifted = make_view(x, False, 1, 1)  # out[i, j] = in[i + 1, j + 1], reflected at the border
    assert torch.equal(shifted[0, 0, :3, :3], x[0, 0, 1:, 1:]) and shifted[0, 0, 3, 3] == x[0, 0, 2, 2]


def test_unknown_tta_mode_is_one_clear_error():
    with pytest.raises(utils.KitError, match="unknown tta mode 'mirror'"):
        TTANet(FastNet(**V2), "mirror")
    with pytest.raises(ConfigError, match="tta"):
        load_config(None, ["variants.F.tta=mirror"])


def test_front_shape_that_cannot_be_built_is_one_clear_error(tiny):
    cfg = load_config(tiny, ["front.shapes.bad.widths=[8, 16]", "front.shapes.bad.depths=[1]"])
    with pytest.raises(utils.KitError, match="front shape 'bad' cannot be built"):
        train.train_front(cfg, torch.device("cpu"), ["bad"])
    with pytest.raises(utils.KitError, match="unknown front shape 'zz'"):
        train.train_front(cfg, torch.device("cpu"), ["zz"])


def test_missing_front_checkpoint_is_one_clear_error(tiny):
    cfg = load_config(tiny)
    with pytest.raises(utils.KitError, match="front_ta_s42.*train.py --front"):
        utils.resolve_checkpoint(cfg, cfg.variants.P_ta.checkpoint)
    with pytest.raises(utils.KitError, match="reproduce.sh final"):
        utils.resolve_checkpoint(cfg, "@f85")


def test_front_variants_follow_the_template_and_first_seed(tiny):
    cfg = load_config(tiny)
    v = cfg.variants.P_ta_flip
    assert v.tta == "flip" and v.shape == "ta" and v.checkpoint == "@front_ta_s42"
    assert v.cuda_graph == cfg.variants[cfg.front.template].cuda_graph


def test_selection_rule():
    # the end-to-end p50 decides among the points that reach a threshold, not the device-side p50
    rows = pd.DataFrame([dict(variant="P_a", acc_mean=86.0, e2e_p50_ms=0.02, lat_p50_ms=0.09),
                         dict(variant="P_b", acc_mean=94.1, e2e_p50_ms=0.08, lat_p50_ms=0.01),
                         dict(variant="P_c", acc_mean=94.5, e2e_p50_ms=0.09, lat_p50_ms=0.01),
                         dict(variant="P_d", acc_mean=84.0, e2e_p50_ms=0.01, lat_p50_ms=0.01)])
    f, f85, reached = front.choose(rows, 94.0, 85.0)
    assert (f["variant"], f85["variant"], reached) == ("P_b", "P_a", True)
    f, _, reached = front.choose(rows, 95.0, 85.0)  # none reaches: the most accurate, flagged
    assert f["variant"] == "P_c" and not reached
    assert f["e2e_best_run_p50_ms"] == 0.09  # the log line and the record name its speed measure too


def test_selection_rule_ranks_points_by_their_best_run():
    # bench interleaves the runs; a host disturbance only adds time.  P_t was disturbed in 3 of
    # its 4 runs (pooled p50 the higher) but is the faster point in its undisturbed run.
    rows = pd.DataFrame([dict(variant="P_t", acc_mean=85.7, e2e_p50_ms=0.0252,
                              e2e_run_p50s_ms="0.0256;0.0222;0.0301;0.0260"),
                         dict(variant="P_tf", acc_mean=86.8, e2e_p50_ms=0.0244,
                              e2e_run_p50s_ms="0.0273;0.0241;0.0265;0.0241"),
                         dict(variant="P_x", acc_mean=94.2, e2e_p50_ms=0.0400, e2e_run_p50s_ms=float("nan"))])
    f, f85, reached = front.choose(rows, 94.0, 85.0)
    assert (f["variant"], f85["variant"], reached) == ("P_x", "P_t", True)  # P_x: no runs recorded, pooled p50
    assert f85["e2e_best_run_p50_ms"] == 0.0222 and f["e2e_best_run_p50_ms"] == 0.0400
    assert list(front.by_speed(rows)["variant"]) == ["P_t", "P_tf", "P_x"]
    assert front.best_run_p50("0.03; 0.02;nan", 0.05) == 0.02 and front.best_run_p50(None, 0.05) == 0.05


def test_recipe_pieces_run_a_few_steps_on_the_cpu(tiny):
    over = ["models.fastnet.stem=whiten", "models.fastnet.stem_kernel=2", "models.fastnet.act=gelu",
            "models.fastnet.order=pool_bn", "models.fastnet.bn_frozen=true", "models.fastnet.dirac=true",
            "train.fastnet.epochs=2", "train.fastnet.batch_size=32", "train.fastnet.flip=alternate",
            "train.fastnet.lookahead=true", "train.fastnet.lookahead_every=1", "train.fastnet.bias_lr_scale=8",
            "train.fastnet.decay_biases=true", "train.fastnet.select=last", "train.fastnet.whiten_bias_epochs=1",
            "train.fastnet.train_on_val=true", "train.fastnet.lr_start=0.2"]
    cfg = load_config(tiny, over)
    data = train.merge_val(load_data(cfg, torch.device("cpu")))
    assert len(data["y_val"]) == 0 and len(data["y_train"]) == 96
    model = build_model("fastnet", cfg)
    before = model.features[0].conv.weight.clone()
    info = train.fit(model, data, cfg.train.fastnet, cfg, torch.device("cpu"),
                     final_eval=(data["x_test"], data["y_test"], "flip"))
    assert info["best_epoch"] == 2 and len(info["history"]) == 2
    assert 0 <= info["final_acc"] <= 100 and info["recipe_time_s"] > 0  # the timed final evaluation
    stem = model.features[0].conv
    assert not torch.equal(before, stem.weight) and not stem.weight.requires_grad  # whitened, frozen
    assert not stem.bias.requires_grad  # its bias stopped after whiten_bias_epochs
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_alternating_flips_show_each_image_both_ways():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(8, 1, 2, 2)
    idx = torch.arange(8)
    base = torch.rand(8, generator=gen) < 0.5
    a = train.flip_views(x, idx, base, 1, "alternate", gen)
    b = train.flip_views(x, idx, base, 2, "alternate", gen)
    for i in range(8):  # one epoch as is, the next flipped (or the other way round)
        assert {torch.equal(a[i], x[i]), torch.equal(b[i], x[i])} == {True, False}
