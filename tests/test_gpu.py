"""On a CUDA GPU only (skipped elsewhere; CI has none): the end-to-end call of the shipped models
against their FP32 reference on all 10,000 test images, its correctness under use (no stale
answer, no shared buffer, a timed-out wait), every end-to-end I/O mode, the persistent kernel
against the graph path, the cluster kernel against the Triton path and FP32, the kit's timer
against torch.utils.benchmark, and our kernels against the float64 reference on random inputs.

Run: python -m pytest -q -rP tests/test_gpu.py   (-rP shows the agreement lines it prints)
"""
import os

import numpy as np
import pytest
import torch
import torch.utils.benchmark

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

from conftest import ROOT  # noqa: E402

ROUNDS = 3  # kit, Timer, kit, Timer, ...: a slow drift of the card hits both sides alike


@pytest.fixture(scope="module")
def gpu_cfg(tmp_path_factory):
    """The committed config, writing into a temp dir; B1 = a random-weight MobileNetV3 (its
    latency does not depend on the weights), F and F85 = the shipped models."""
    from config import load_config
    import models
    import utils
    tmp = tmp_path_factory.mktemp("gpu")
    for name in ("final_model.pth", "f85_model.pth"):
        if not os.path.isfile(os.path.join(ROOT, "checkpoints", name)):
            pytest.skip(f"no checkpoints/{name}")
    base = load_config()
    b1 = utils.save_checkpoint(str(tmp / "b1.pth"), models.build_model("mobilenetv3", base), "mobilenetv3", base)
    return load_config(None, [f"paths.results={tmp}/r.csv", f"paths.checkpoints={tmp}",
                              f"paths.manifest={tmp}/manifest.json", f"variants.B1.checkpoint={b1}"])


@pytest.fixture(scope="module")
def test_split(gpu_cfg):
    from data import host_split
    import utils
    try:
        return host_split(gpu_cfg, "test")
    except utils.KitError as e:
        pytest.skip(str(e))


def _predictor(cfg, variant, **kw):
    from inference import Predictor
    return Predictor(cfg, variant, torch.device("cuda"), **kw)


def _reference_ids(cfg, clf, imgs):
    """The same checkpoint unfolded, FP32 eager, under the same TTA views: class ids."""
    from data import normalize
    from path_net import folded_net
    from models import load_model
    model, _ = load_model(clf.ckpt_path, "fastnet", cfg=cfg)
    net = folded_net(cfg, model, dict(fold_bn=False, cudnn_relu=False, device=torch.device("cuda"),
                                      dtype=torch.float32, mem=torch.contiguous_format, tta=clf.tta, kernels=False,
                                      kernel_tiles="heuristic", kernel_pdl=False))
    out = []
    with torch.inference_mode():
        for i in range(0, len(imgs), 500):
            x = torch.from_numpy(imgs[i:i + 500]).cuda().permute(0, 3, 1, 2)
            out.append(net(normalize(x, cfg.data.mean, cfg.data.std)).argmax(1).cpu())
    return torch.cat(out).numpy()


@pytest.mark.parametrize("variant", ["F", "F85", "F85_triton", "F85_cluster_ahead", "F85_tagged", "F_cluster",
                                     "F_call", "F_stem", "F_next", "F_flag"])
def test_e2e_path_agrees_with_fp32_on_all_test_images(gpu_cfg, test_split, variant):
    """The timed end-to-end call (uint8 image in host memory -> class id) vs the same weights in
    FP32 eager: top-1 agreement >= 99.9 % on all 10,000 test images, accuracy within 0.05 point,
    and the kit's evaluation through the same object gives the same accuracy."""
    from accuracy import evaluate
    imgs, labels = test_split
    clf = _predictor(gpu_cfg, variant)
    assert clf.kernels and clf.e2e_input in ("mapped", "tagged") and clf.e2e_wait == "poll"
    ours = np.array([clf(img) for img in imgs])
    ref = _reference_ids(gpu_cfg, clf, imgs)
    agree = 100.0 * float((ours == ref).mean())
    acc_ours, acc_ref = (100.0 * float((p == labels).mean()) for p in (ours, ref))
    print(f"{variant} e2e vs FP32 on {len(imgs)} test images: top-1 agreement {agree:.2f} % "
          f"({int((ours != ref).sum())} differ), accuracy {acc_ours:.2f} % vs {acc_ref:.2f} %; {'; '.join(clf.notes)}")
    assert len(imgs) == 10000 and agree >= 99.9, f"top-1 agreement {agree:.2f} % on {len(imgs)} images"
    assert abs(acc_ours - acc_ref) <= 0.05, (acc_ours, acc_ref)
    assert abs(evaluate(clf, imgs, labels)["acc"] - acc_ours) <= 0.01


def _two_images_of_two_classes(clf, imgs):
    ids = [clf(img) for img in imgs[:200]]
    j = next(k for k in range(1, 200) if ids[k] != ids[0])
    return (imgs[0], ids[0]), (imgs[j], ids[j])


@pytest.mark.parametrize("variant", ["F", "F_ahead", "F_call", "F_stem", "F85", "F85_triton", "F85_ahead",
                                     "F85_cluster", "F85_cluster_ahead", "F85_cluster8", "F85_tagged", "F_cluster",
                                     "F_next", "F_flag"])
def test_alternating_two_images_never_returns_a_stale_answer(gpu_cfg, test_split, variant):
    clf = _predictor(gpu_cfg, variant)
    (a, ca), (b, cb) = _two_images_of_two_classes(clf, test_split[0])
    got = [clf(a if i % 2 == 0 else b) for i in range(10000)]
    stale = sum(g != (ca if i % 2 == 0 else cb) for i, g in enumerate(got))
    assert stale == 0, f"{stale} of 10000 answers were the other image's"


def _interleaved_as_alone(a, b, imgs, buffers):
    """Two predictors' calls interleaved (one's between two of the other's) answer as each alone,
    and none of their buffers (the end-to-end ones and `buffers(predictor)`) is shared."""
    alone = ([a(i) for i in imgs], [b(i) for i in imgs])
    mixed = ([], [])
    for i in imgs:
        mixed[0].append(a(i))
        mixed[1].append(b(i))
    assert mixed == alone
    ptrs = [t.data_ptr() for c in (a, b) for t in (c.h_in, c.h_word, c._seq, c.kn.out, *buffers(c))]
    assert len(set(ptrs)) == len(ptrs)


def test_two_predictors_share_no_buffer(gpu_cfg, test_split):
    f, f85 = _predictor(gpu_cfg, "F_stem"), _predictor(gpu_cfg, "F85_triton")  # one launching ahead, one not
    _interleaved_as_alone(f, f85, test_split[0][:300],
                          lambda c: (c.kn.hcnt, c.kn.staged) + ((c.h_flag, c.kn.gate_go) if c.e2e_launch == "ahead"
                                                                else ()))


@pytest.mark.parametrize("pair", [("F85_cluster_ahead", "F85_cluster8"), ("F85", "F85_tagged")])
def test_two_cluster_predictors_share_no_buffer(gpu_cfg, test_split, pair):
    a, b = _predictor(gpu_cfg, pair[0]), _predictor(gpu_cfg, pair[1])  # two serving kernels at once, too
    _interleaved_as_alone(a, b, test_split[0][:300],
                          lambda c: (c.kn.blob,) + ((c.h_flag,) if c.e2e_launch != "call" else ()))


@pytest.mark.parametrize("variant", ["F", "F_ahead", "F_call", "F_stem", "F85", "F85_cluster", "F85_cluster_ahead",
                                     "F85_tagged", "F_cluster", "F_flag"])
def test_a_timed_out_wait_raises_and_the_next_call_works(gpu_cfg, test_split, variant):
    import utils
    clf = _predictor(gpu_cfg, variant, timeout_s=0.05)
    img = test_split[0][0]
    want = clf(img)
    clf.drain()  # no graph launched ahead, no kernel serving: the next call launches its own
    if clf.e2e_launch == "serve":  # the GPU never runs this call: no serving kernel is launched
        name, stand_in = "_start_server", lambda: setattr(clf, "_pending", True)
    else:
        class NoReplay:  # the GPU never runs this call: the answer word keeps the previous call's number
            def replay(self):
                pass
        name, stand_in = ("_ahead_graph" if clf.e2e_launch == "ahead" else "_e2e_graph"), NoReplay()
    real = getattr(clf, name)
    setattr(clf, name, stand_in)
    with pytest.raises(utils.KitError, match="no answer to call"):
        clf(img)
    setattr(clf, name, real)
    assert [clf(img) for _ in range(5)] == [want] * 5


@pytest.mark.parametrize("variant", ["F85", "F85_cluster", "F85_cluster8", "F85_cluster_ahead", "F85_cluster_flip",
                                     "F85_tagged", "F_cluster"])
def test_cluster_kernel_answers_as_the_triton_path(gpu_cfg, test_split, variant):
    """The one-launch cluster kernel (16 or 8 blocks, launched per call, ahead or serving; with
    the flip view too; F's net, whose weights stream through the kernel) vs the Triton kernels
    on the same file and views: >= 99.9 % the same class ids on 2,000 test images (the two sum
    their K slices in other orders) and logits within fp16 rounding on a device input."""
    import copy
    imgs = test_split[0][:2000]
    cfg, ref = gpu_cfg, _triton_path(variant)
    if variant == "F85_cluster_flip":  # both under the flip view (two maps in every layer)
        cfg = copy.deepcopy(gpu_cfg)
        cfg.variants.F85_cluster["tta"] = cfg.variants.F85_triton["tta"] = "flip"
        variant = "F85_cluster"
    tri, cl = _predictor(cfg, ref), _predictor(cfg, variant)
    assert tri.tta == cl.tta and (cl.tta == "flip") == (cfg is not gpu_cfg or ref == "F_call")  # F's own views: flip
    assert cl.kn.kernel_count() == 1 and cl.kn.plan["ranks"] == (8 if variant.endswith("8") else 16)
    a, b = tri.predict(imgs), cl.predict(imgs)
    same = 100.0 * float((a == b).mean())
    print(f"{variant} (tta {cl.tta}) vs {ref.split('_')[0]}'s Triton kernels on {len(imgs)} test images: {same:.2f} % the same class ids; "
          f"{'; '.join(cl.notes)}")
    assert same >= 99.9
    x = torch.from_numpy(imgs[:1]).cuda().contiguous()
    cl.drain()
    la, lb = tri.kn(x).clone(), cl.kn(x).clone()
    torch.cuda.synchronize()
    assert torch.allclose(la, lb, atol=2e-2, rtol=1e-2), (la, lb)


def _triton_path(variant):
    """The Triton-kernel variant launched per call on the same checkpoint: F's, or F85's."""
    return "F_call" if variant == "F" or variant.startswith("F_") else "F85_triton"


def _calls_with_pauses(gpu_cfg, test_split, variant, n):
    """n calls of a variant launching ahead, every 4th after a pause longer than e2e_ahead_ms: each
    answers its own image (the Triton path's answer) and each pause cost one expired launch."""
    import time
    imgs = test_split[0][:n]
    ref = _predictor(gpu_cfg, _triton_path(variant))
    want = [ref(i) for i in imgs]
    clf = _predictor(gpu_cfg, variant)
    assert clf.e2e_launch in ("ahead", "serve")
    got = []
    for k, img in enumerate(imgs):
        if k % 4 == 3:
            time.sleep(3 * clf.ahead_ms / 1e3)
        got.append(clf(img))
    assert got == want
    assert clf.expired_calls == n // 4, clf.expired_calls
    return clf, imgs, want


def test_cluster_kernel_launched_ahead_expires_and_the_next_call_answers_its_own_image(gpu_cfg, test_split):
    """The cluster kernel is its own gate: the same expiry, and drain() leaves nothing waiting."""
    clf, imgs, want = _calls_with_pauses(gpu_cfg, test_split, "F85_cluster_ahead", 20)
    clf.drain()
    torch.cuda.synchronize()
    assert [clf(i) for i in imgs[:5]] == want[:5]


@pytest.mark.parametrize("variant", ["F85", "F85_tagged", "F_cluster"])
def test_the_serving_kernel_expires_stops_and_serves_again(gpu_cfg, test_split, variant):
    """e2e_launch: serve: after a pause longer than e2e_ahead_ms the kernel has ended (word 1 names
    the call it waited for) and the call launches it again; drain() stops it at once (a device
    synchronise then returns), run_static() works beside it, and the next calls answer right."""
    import gc
    import time
    gc.collect()  # no other test's serving kernel left waiting out its expiry
    clf, imgs, want = _calls_with_pauses(gpu_cfg, test_split, variant, 12)
    clf.drain()
    assert not clf._pending
    t0 = time.perf_counter()
    torch.cuda.synchronize()
    assert time.perf_counter() - t0 < clf.ahead_ms / 1e3  # nothing waits out the expiry
    clf.run_static()
    assert [clf(i) for i in imgs[:5]] == want[:5] and clf._pending
    clf.settle()  # the kernel waits for call 6 (its ready stamp)
    assert int(clf._word_np[2]) == clf.calls + 1 and clf(imgs[5]) == want[5]


@pytest.mark.parametrize("variant", ["F85_ahead", "F", "F_stem", "F_next", "F_flag"])
def test_a_graph_launched_ahead_expires_and_the_next_call_answers_its_own_image(gpu_cfg, test_split, variant):
    """e2e_launch: ahead: after a pause longer than e2e_ahead_ms the waiting graph has expired (it
    answered on the previous image); the next call still answers its own.  drain() leaves
    nothing waiting: a device synchronise, run_static() and the next calls work; a synchronise
    while a graph waits returns once it has expired, and the next call answers right."""
    clf, imgs, want = _calls_with_pauses(gpu_cfg, test_split, variant, 40)
    clf.drain()
    torch.cuda.synchronize()
    clf.run_static()
    assert [clf(i) for i in imgs[:5]] == want[:5]
    torch.cuda.synchronize()
    assert clf(imgs[5]) == want[5] and clf.expired_calls == len(imgs) // 4 + 1


@pytest.mark.parametrize("variant", ["F", "F85_triton"])
@pytest.mark.parametrize("fit_split", [False, True])
def test_persistent_kernel_answers_as_the_graph_path(gpu_cfg, test_split, variant, fit_split):
    """kernel_server: the graph path's answers on >= 99.9 % of 2,000 test images, no stale answer
    over 4,000 calls alternating two images, and it stops and starts again."""
    from kernel_server import KernelServer
    clf = _predictor(gpu_cfg, variant)
    imgs = test_split[0][:2000]
    want = clf.predict(imgs)
    (a, ca), (b, cb) = _two_images_of_two_classes(clf, test_split[0])  # the graph path: before the server runs
    clf.drain()  # the server runs the same kernels' buffers, on every SM
    srv = KernelServer(clf.kn, timeout_s=3.0, fit_split=fit_split)
    srv.start()
    try:
        got = np.array([srv(i) for i in imgs])
        stale = sum(srv(a if k % 2 == 0 else b) != (ca if k % 2 == 0 else cb) for k in range(4000))
        srv.stop()
        assert not srv.alive()
        srv.start()
        again = [srv(i) for i in imgs[:100]]
    finally:
        srv.stop()
    print(f"{variant} persistent (fit_split={fit_split}) vs graph: {(got == want).mean() * 100:.2f} % agree")
    # Split-K slices meet by fp32 atomic adds in arrival order (and fit_split changes the split),
    # so a near-tie may round either way: the e2e bound against FP32 (>= 99.9 %) applies here too.
    assert (got != want).sum() <= 2, f"{int((got != want).sum())} of 2000 answers differ from the graph path's"
    assert stale == 0
    assert sum(x != y for x, y in zip(again, got[:100])) <= 1, "after a restart: other answers than before it"


def test_persistent_kernel_timeout_raises_and_the_next_call_works(gpu_cfg, test_split):
    import utils
    from kernel_server import KernelServer
    clf = _predictor(gpu_cfg, "F85_triton")
    img = test_split[0][0]
    srv = KernelServer(clf.kn, timeout_s=3.0)
    srv.start()
    try:
        want = srv(img)
        srv.timeout_s = 0.05
        req = srv._req_np
        srv._req_np = np.zeros_like(req)  # this request never reaches the kernel: no answer comes
        with pytest.raises(utils.KitError, match="no answer to request"):
            srv(img)
        srv._req_np = req
        assert [srv(img) for _ in range(5)] == [want] * 5
    finally:
        srv.stop()
    with pytest.raises(utils.KitError, match="start"):
        srv(img)


def test_every_e2e_io_mode_gives_the_same_answers(gpu_cfg, test_split):
    imgs = test_split[0][:1000]
    answers = {}
    for v in ("F", "F_ahead", "F_call", "F_stem", "F_copy", "F_sync", "F_copy_sync"):
        clf = _predictor(gpu_cfg, v)
        answers[v] = [clf(i) for i in imgs]
        del clf
    base = answers.pop("F")
    for v, a in answers.items():
        assert a == base, v
    cudnn = _predictor(gpu_cfg, "F_graph")  # a torch-op CUDA graph with copy nodes and the answer word
    same = np.mean([cudnn(i) == b for i, b in zip(imgs, base)])
    assert same >= 0.995, same  # FP16 cuDNN vs our FP16 kernels: a near-tie may flip


@pytest.mark.parametrize("variant", ["F", "F85_triton"])
def test_other_tiles_and_per_layer_triggers_give_the_same_answers(gpu_cfg, test_split, variant):
    """Predictor.set_kernel_tiles (what tools/chain_tune.py times): the heuristic tiles with the
    PDL trigger alternating layer by layer, then back to the start tiles; the end-to-end call
    answers as before (>= 99.9 % of 2,000 test images: only fp16 near-ties may flip), and never
    with the other image's answer."""
    import kernel_net as K
    imgs = test_split[0][:2000]
    clf = _predictor(gpu_cfg, variant)
    start = clf.kn.tiles()
    base = clf.predict(imgs)
    other = [dict(K.heuristic_tiles(sp["meta"], clf.kn.nb, clf.kn.n_sm), trigger=("early", "late")[i % 2])
             for i, sp in enumerate(clf.kn.specs)]
    assert other != start
    clf.set_kernel_tiles(other)
    assert clf.kn.tile_sources() == ["given"] * len(start) and clf.kn.tiles() == other
    got = clf.predict(imgs)
    clf.set_kernel_tiles(start)
    back = clf.predict(imgs)
    print(f"{variant} heuristic tiles, alternating triggers vs start tiles: "
          f"{(got == base).mean() * 100:.2f} % agree; back to the start: {(back == base).mean() * 100:.2f} %")
    assert (got == base).mean() >= 0.999 and (back == base).mean() >= 0.999
    clf.set_kernel_tiles(other)
    (a, ca), (b, cb) = _two_images_of_two_classes(clf, imgs)
    assert [clf(a if i % 2 == 0 else b) for i in range(2000)] == [ca if i % 2 == 0 else cb for i in range(2000)]


def test_join_tiles_on_the_late_layers_give_the_same_answers(gpu_cfg, test_split):
    """F with JOIN tiles (rows of both flip maps in turn) on its three late layers, the last one a
    single tile that makes the logits itself (head mode 3): the end-to-end call answers as with
    F's own tiles (>= 99.9 % of 2,000 test images) and never with the other image's answer."""
    imgs = test_split[0][:2000]
    clf = _predictor(gpu_cfg, "F")
    start = clf.kn.tiles()
    base = clf.predict(imgs)
    joined = [dict(t) for t in start]
    late = (dict(BP=16, BN=64, BK=128, SPLIT=4), dict(BP=32, BN=32, BK=128, SPLIT=4),
            dict(BP=32, BN=256, BK=64, SPLIT=8, num_warps=8))
    for t, j in zip(joined[-3:], late):
        t.update(j, JOIN=True, GENERIC=False)
    clf.set_kernel_tiles(joined)
    assert clf.kn.head_mode(-1) == 3 and clf.kn.specs[-1]["grid"] == (1, 1, 8)
    got = clf.predict(imgs)
    print(f"F with JOIN tiles on its late layers vs its own tiles: {(got == base).mean() * 100:.2f} % agree")
    assert (got == base).mean() >= 0.999
    (a, ca), (b, cb) = _two_images_of_two_classes(clf, imgs)
    assert [clf(a if i % 2 == 0 else b) for i in range(2000)] == [ca if i % 2 == 0 else cb for i in range(2000)]


# -- the kit's timer --------------------------------------------------------------------------------
def _kit_ms(clf):
    import timing
    return float(np.median(timing.time_calls(clf.run_static, torch.device("cuda"), 50, 300)))


def _timer_ms(clf):
    timer = torch.utils.benchmark.Timer(stmt="clf.run_static(); torch.cuda.synchronize()",
                                        globals={"clf": clf, "torch": torch})
    return timer.blocked_autorange(min_run_time=0.5).median * 1e3


@pytest.mark.parametrize("variant", ["F", "B1"])
def test_kit_timer_agrees_with_torch_benchmark_timer(gpu_cfg, variant):
    torch.backends.cudnn.benchmark = True
    clf = _predictor(gpu_cfg, variant)
    kit, ref = [], []
    for _ in range(ROUNDS):
        kit.append(_kit_ms(clf))
        ref.append(_timer_ms(clf))
    # the best round of each: a disturbance of the host only adds time, and one process moves by
    # ~10 % between rounds (the medians of three rounds each failed this bound while the rounds
    # overlapped: F kit [0.0392, 0.0392, 0.0352] vs [0.0387, 0.0352, 0.0354] ms)
    k, r = min(kit), min(ref)
    assert abs(k - r) / r <= 0.10, f"{variant}: kit {kit} ms vs torch.utils.benchmark {ref} ms"


# -- our kernels against the float64 reference ------------------------------------------------------
def _ttanet_reference(K, layers, head, mode):
    """TTANet (torch views, weighted mean) over the float64 reference of the folded net."""
    from tta import TTANet

    class Ref(torch.nn.Module):
        def forward(self, x):
            return K.reference_forward(layers, head, x.permute(0, 2, 3, 1))
    return TTANet(Ref(), mode, device="cuda")


@pytest.mark.parametrize("mode", ["none", "flip", "flip_translate"])
@pytest.mark.parametrize("pdl", [False, True])
def test_kernels_in_a_graph_vs_reference(mode, pdl):
    """AB94's shape (whitening stem 2x2 -> 24, gelu, 64/256/256 x 2), random weights, views in the
    kernels: replayed in a CUDA graph on fresh inputs read from pinned host memory, the logits
    poisoned before each replay (every one must be rewritten) and the answer word checked."""
    import kernel_net as K
    from tta import TTA_VIEWS
    if pdl and not K.pdl_available()[0]:
        pytest.skip(K.pdl_available()[1])
    layers, head = K.random_net(stem_width=24, stem_kernel=2, widths=(64, 256, 256), depths=(2, 2, 2),
                                act="gelu", seed=3, device="cuda")
    net = K.KernelNet(layers, head, batch=1, pdl=pdl, views=TTA_VIEWS[mode])
    ref = _ttanet_reference(K, layers, head, mode)
    h_in = torch.zeros((1, 32, 32, 3), dtype=torch.uint8).pin_memory()
    word = torch.zeros(4, dtype=torch.int32).pin_memory()
    seq = torch.zeros(1, dtype=torch.int32, device="cuda")
    net(h_in, answer=(seq, word))  # compile (outside the capture), then count from zero
    torch.cuda.synchronize()
    seq.zero_()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        out = net(h_in, answer=(seq, word))
    for r in range(20):
        x = torch.randint(0, 256, (1, 32, 32, 3), dtype=torch.uint8)
        h_in.copy_(x)
        want = ref(x.cuda().permute(0, 3, 1, 2))
        out.fill_(float("nan"))
        g.replay()
        torch.cuda.synchronize()
        err = ((out.double() - want).norm() / want.norm()).item()
        assert err < 1e-2, (r, err)
        assert int(word[0]) == ((r + 1) << 4 | int(out[0].argmax())), (r, int(word[0]))
    assert net.kernel_count() == len(layers)  # the views, the head and the answer cost no kernel
