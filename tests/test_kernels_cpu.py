"""Our Triton kernels (kernels.py, kernel_net.py) under Triton's CPU interpreter
(TRITON_INTERPRET=1) against reference_forward.

Tolerance: activations are stored in fp16 between layers (accumulation is fp32), so the
logits carry ~1e-3 relative error; we allow 1e-2 (||out - ref|| / ||ref||, ref in float64).
The interpreter is slow (every tl op is numpy on the host), so the nets are tiny and the
tiles large (few programs), yet split-K, the pool in the epilogue and the head all run.
One case compiles the kernels for sm90 (no GPU needed) and checks the memory order of their
atomics in the PTX.  Not run here, with the reason: programmatic dependent launch
(griddepcontrol is a GPU instruction the interpreter lacks), pinned host memory, CUDA graphs
and timing: tests/test_gpu.py checks those on a GPU.  The persistent kernel (kernel_server.py)
runs one program here, one request per launch: the same code path without the spinning.
"""
import functools
import json
import os
import pathlib
import subprocess
import sys

import pytest
import torch

try:  # the interpreter cases' jit stand-in (_no_copy) needs triton.language among its globals
    import triton.language as tl
except ImportError:
    tl = None

ROOT = pathlib.Path(__file__).resolve().parents[1]
TOL = 1e-2


# The interpreter cases in the order the tests below ask for them.  While one runs, the next one
# runs beside it: the interpreter is the slowest part of the suite, and CI has two cores.
CASE_ORDER = ("relu_k3", "gelu_k2", "tta_whiten", "tta_k3_batch2", "inference_flip", "answers_mode2",
              "answers_mode1", "answers_flip", "persistent_flip", "persistent_fit_mode1", "gate", "tile_cache",
              "multitap", "join")
_STARTED = {}  # case -> its subprocess


def _start_case(case):
    if case not in _STARTED:
        env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=str(ROOT))
        _STARTED[case] = subprocess.Popen([sys.executable, __file__, case], env=env, stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE, text=True)
    return _STARTED[case]


@functools.lru_cache(maxsize=None)
def _run_case(case):
    """Run one interpreter case in a fresh Python: triton.jit reads TRITON_INTERPRET when a
    module is imported, Triton's own library (tl.max, tl.sum...) included, and another test may
    already have imported Triton in compiled mode in this process.  Returns the case's dict.
    The next case of CASE_ORDER that has not started starts beside it."""
    pytest.importorskip("triton")
    proc = _start_case(case)
    later = CASE_ORDER[CASE_ORDER.index(case) + 1:] if case in CASE_ORDER else ()
    nxt = next((c for c in later if c not in _STARTED), None)
    if nxt is not None:
        _start_case(nxt)
    try:
        out, err = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"case {case} ran over 300 s:\n{err[-3000:]}")
    assert proc.returncode == 0, f"case {case} failed:\n{out[-3000:]}\n{err[-3000:]}"
    return json.loads(out.strip().splitlines()[-1])


@pytest.fixture(scope="module", autouse=True)
def _no_case_left_running():
    """A case started ahead that no selected test asked for is stopped with the module."""
    yield
    for proc in _STARTED.values():
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


@pytest.fixture(scope="module")
def K():
    """kernel_net.py as imported normally, for the host-side tests that launch no kernel."""
    import kernel_net
    return kernel_net


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
                head_mode=net.head_mode(-1))


class _Reference(torch.nn.Module):
    """NCHW pixels -> the float64 reference logits of a folded net (reference_forward), as TTANet
    expects its net."""

    def __init__(self, K, layers, head):
        super().__init__()
        self.K, self.layers, self.head = K, layers, head

    def forward(self, x):
        return self.K.reference_forward(self.layers, self.head, x.permute(0, 2, 3, 1))


def _tta_reference(K, layers, head, mode):
    """TTANet (torch views, per-view logits, weighted mean) over the float64 reference."""
    from tta import TTANet
    return TTANet(_Reference(K, layers, head), mode, device="cpu")


def _tta_errors(K, cfg, batch, dtype, modes, seed):
    """KernelNet with TTA views in its kernels (made by the first kernel, weighted mean in the head) vs
    TTANet over the float64 reference (torch views, per-view logits, weighted mean), two calls
    each; also the plain net's distance to the TTA reference (the check could fail)."""
    from tta import TTA_VIEWS
    layers, head = K.random_net(seed=seed, **cfg)
    plain = K.KernelNet(layers, head, batch=batch, tiles=_big_tiles(K, layers, head, batch, 2))
    g = torch.Generator().manual_seed(seed + 100)
    r = dict(plain_kernels=plain.kernel_count())
    for mode in modes:
        nv = len(TTA_VIEWS[mode])
        tiles = _big_tiles(K, layers, head, batch * nv, 2)
        net = K.KernelNet(layers, head, batch=batch, tiles=tiles, views=TTA_VIEWS[mode])
        ref_net = _tta_reference(K, layers, head, mode)
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
    """A random FastNet of config.yaml's style (whitening stem 2x2 -> 24, gelu, pool_bn) with random
    BN statistics."""
    from models import FastNet
    torch.manual_seed(seed)
    model = FastNet(stem="whiten", stem_width=24, stem_kernel=2, widths=(32, 16), depths=(1, 1), act="gelu",
                    order="pool_bn", bn_frozen=True)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.2)
            m.running_var.uniform_(0.5, 2.0)
            m.bias.data.normal_(0, 0.2)
    return model.eval()


def _answers(K, cfg, seed, last_bp=None, views=None):
    """Batch 1 with answer words: after each call, word = (call number << 4) | argmax of the
    logits, the call counted on the device; three calls on different images, the head's bias
    pushed towards another class each time (random nets tend to answer one class)."""
    layers, head = K.random_net(seed=seed, **cfg)
    tiles = _big_tiles(K, layers, head, len(views) if views else 1, 2, views=views)
    if last_bp:
        tiles[-1]["BP"] = last_bp
    net = K.KernelNet(layers, head, batch=1, tiles=tiles, views=views)
    seq, word = torch.zeros(1, dtype=torch.int32), torch.full((4,), -1, dtype=torch.int32)
    g = torch.Generator().manual_seed(seed + 7)
    got, want = [], []
    for i in range(3):
        x = torch.randint(0, 256, (1, 32, 32, 3), generator=g, dtype=torch.uint8)
        net.hb[:10] = torch.as_tensor(head["bias"]).float() + 50.0 * (torch.arange(10) == 3 * i + 1)
        logits = net(x, answer=(seq, word)).clone()
        got.append(int(word[0]))
        want.append(int(logits[0].argmax()))
    return dict(got=got, want=want, seq=int(seq[0]), head_mode=net.head_mode(-1), untouched=word[1:].tolist())


def _join():
    """JOIN tiles (rows of both flip maps in turn) on a flip net's late layers, against TTANet
    over the float64 reference: the last layer as one tile (head mode 3: its logits made in it),
    one row tile of both maps (mode 2), several (mode 1), and two middle layers joined; with and
    without split-K; two calls each, and the answer word of a third."""
    import kernel_net as K
    from tta import TTA_VIEWS
    layers, head = K.random_net(seed=3, stem_width=8, widths=(16, 32), depths=(1, 2), act="gelu")
    views = TTA_VIEWS["flip"]
    x = torch.randint(0, 256, (1, 32, 32, 3), generator=torch.Generator().manual_seed(5), dtype=torch.uint8)
    ref = _tta_reference(K, layers, head, "flip")(x.permute(0, 3, 1, 2)).double()
    start = _big_tiles(K, layers, head, 2, 1, views=views)
    cases = dict(plain={}, head3=dict(last=dict(BP=128, BN=32, SPLIT=2)), head3_nosplit=dict(last=dict(BP=128, BN=32)),
                 head2=dict(last=dict(BP=128, BN=16, SPLIT=2)), head1=dict(last=dict(BP=16, BN=16, SPLIT=2)),
                 middle=dict(mid=dict(BP=16, BN=16, SPLIT=2)), middle_nosplit=dict(mid=dict(BP=32, BN=16)))
    out = {}
    for name, c in cases.items():
        tiles = [dict(t) for t in start]
        if "last" in c:
            tiles[-1].update(c["last"], JOIN=True)
        if "mid" in c:
            for i in (2, 3):
                tiles[i].update(c["mid"], JOIN=True)
        net = K.KernelNet(layers, head, batch=1, views=views, tiles=tiles)
        errs = [_rel_err(net(x).clone(), ref) for _ in range(2)]
        seq, word = torch.zeros(1, dtype=torch.int32), torch.full((4,), -1, dtype=torch.int32)
        logits = net(x, answer=(seq, word)).clone()
        out[name] = dict(errs=errs, head=net.head_mode(-1), grids=[list(sp["grid"]) for sp in net.specs],
                         word=int(word[0]), want=(1 << 4) | int(logits[0].argmax()))
    return out


def _split_meet():
    """split_meet next on a flip net (views in the kernels): every split-K layer after the first
    leaves its fp32 sums and the next kernel runs its epilogue in its loads (a pooled producer:
    the max over its 4 rows), the last layer's by the head kernel (the last layer plain or
    pooled); with JOIN tiles on the late layers (their sums all maps' rows in turn), and with a
    layer between that does not split.  Against TTANet over the float64 reference on two
    images in turn (the first layer zeroes the sums each call), and the answer word of a third;
    and the same with the zeroing left out (the check can fail)."""
    import kernel_net as K
    from tta import TTA_VIEWS
    views = TTA_VIEWS["flip"]
    g = torch.Generator().manual_seed(11)
    xs = [torch.randint(0, 256, (1, 32, 32, 3), generator=g, dtype=torch.uint8) for _ in range(2)]
    out = {}
    for shape, cfg in (("plain_last", dict(widths=(16, 32), depths=(1, 2))), ("pooled_last", dict(widths=(16, 32),
                                                                                                   depths=(1, 1)))):
        layers, head = K.random_net(seed=9, stem_width=8, act="gelu", **cfg)
        refs = [_tta_reference(K, layers, head, "flip")(x.permute(0, 3, 1, 2)).double() for x in xs]
        start = _big_tiles(K, layers, head, 2, 2, views=views)
        start[1]["SPLIT"] = 2  # its 2 K steps: split too (a pooled producer read by the blocked loads)
        join = [dict(t) for t in start]
        for t in join[2:]:
            t.update(BP=16, BN=16, SPLIT=2, JOIN=True)
        mixed = [dict(t) for t in start]
        mixed[-2]["SPLIT"] = 1  # the layer before the last does not split: the last reads its fp16 output
        flagmix = [dict(t) for t in start]
        flagmix[-1]["MEET"] = "count"  # a layer's tiles name their own meeting
        for case, tiles, meet in (("split", start, "next"), ("join", join, "next"), ("mixed", mixed, "next"),
                                  ("flag", start, "flag"), ("flag_join", join, "flag"), ("flag_mixed", flagmix, "flag")):
            net = K.KernelNet(layers, head, batch=1, views=views, tiles=tiles, split_meet=meet)
            errs = [_rel_err(net(x).clone(), ref) for x, ref in zip(xs, refs)]
            seq, word = torch.zeros(1, dtype=torch.int32), torch.full((4,), -1, dtype=torch.int32)
            logits = net(xs[0], answer=(seq, word)).clone()
            flagged = [sp["slots"] for i, sp in enumerate(net.specs) if net.meet(i) == "flag"]
            out[f"{shape}_{case}"] = dict(errs=errs, kernels=net.kernel_count(), layers=len(net.specs),
                                          defers=[net.defers(i) for i in range(len(net.specs))],
                                          meets=[net.meet(i) for i in range(len(net.specs))],
                                          head=net.head_mode(-1), word=int(word[0]),
                                          want=(1 << 4) | int(logits[0].argmax()), epoch=int(net.epoch[0]),
                                          words_epochs=sorted({int(v) for s in flagged for v in (s >> 32).tolist()}))
        net = K.KernelNet(layers, head, batch=1, views=views, tiles=start, split_meet="next")
        net.sums_n = 0  # the first layer zeroes nothing: each call adds onto the sums of the one before
        out[f"{shape}_unzeroed"] = [_rel_err(net(x).clone(), ref) for x, ref in zip(xs, refs)]
    return out


def _no_copy():
    """A stand-in for kernels._stage_image that copies nothing (a jit function at module level:
    Triton reads its source and its globals)."""
    import triton

    @triton.jit
    def no_copy(src_ptr, dst_ptr, WORDS: tl.constexpr, WP: tl.constexpr):
        pass
    return no_copy


def _gate(K):
    """kernel_gate.gate_kernel (KernelNet.gate) under the interpreter, where its limit counts flag
    reads: the flag already holds the call's number (device counter + 1): it passes and writes
    nothing but its ready stamp (the call's number in word 2); a flag of another call: it expires
    and also writes the call's number into word 1; the counter at SEQ_MASK: the number wraps to 0."""
    import kernels
    layers, head = K.random_net(seed=41, stem_width=8, widths=(16,), depths=(1,))
    net = K.KernelNet(layers, head, batch=1)
    out = {}
    for name, seq, flag in (("ready", 4, 5), ("other", 4, 3), ("wrapped", kernels.SEQ_MASK, 0)):
        s, f, w = (torch.tensor([seq, 0, 0, 0], dtype=torch.int32), torch.tensor([flag, 0, 0, 0], dtype=torch.int32),
                   torch.full((4,), -1, dtype=torch.int32))
        net.gate(f, s, w, 0.005)  # 5 reads
        out[name] = w.tolist()
    # the same wait inside the first layer's programs (forward(..., gate=)): the net then runs
    # and answers, on the image it was given, whether its gate passed or expired
    x = torch.randint(0, 256, (1, 32, 32, 3), generator=torch.Generator().manual_seed(43), dtype=torch.uint8)
    plain = net(x).clone()
    for name, flag, stage, polls in (("stem_ready", 5, False, 1), ("stem_other", 3, False, 1),
                                     ("stage_ready", 5, True, 1), ("stage_other", 3, True, 1),
                                     ("polls_ready", 5, True, 4), ("polls_other", 3, True, 4)):
        s, f, w = (torch.tensor([4, 0, 0, 0], dtype=torch.int32), torch.tensor([flag, 0, 0, 0], dtype=torch.int32),
                   torch.full((4,), -1, dtype=torch.int32))
        net.gate_go.fill_(-1)
        net.staged.zero_()
        logits = net(x, answer=(s, w), gate=(f, 0.005), stage=stage, polls=polls).clone()
        out[name] = dict(word=w.tolist(), seq=int(s[0]), cls=int(plain[0].argmax()), go=int(net.gate_go[0]),
                         staged=bool(torch.equal(net.staged, x)),
                         same=bool(torch.equal(logits, plain)), programs=int(net.specs[0]["grid"][0] *
                                                                              net.specs[0]["grid"][1] *
                                                                              net.specs[0]["grid"][2]))
    # with stage the programs read the device copy, not the host image: with program 0's copy
    # left out and another image y in the device buffer, the net answers for y
    no_copy = _no_copy()
    y = torch.randint(0, 256, (1, 32, 32, 3), generator=torch.Generator().manual_seed(44), dtype=torch.uint8)
    copy, kernels._stage_image = kernels._stage_image, no_copy
    try:
        net.staged.copy_(y)
        s, f, w = (torch.tensor([4, 0, 0, 0], dtype=torch.int32), torch.tensor([5, 0, 0, 0], dtype=torch.int32),
                   torch.full((4,), -1, dtype=torch.int32))
        read = net(x, answer=(s, w), gate=(f, 0.005), stage=True).clone()
    finally:
        kernels._stage_image = copy
    out["stage_reads"] = dict(device_copy=bool(torch.equal(read, net(y).clone())),
                              host=bool(torch.equal(read, plain)))
    return out


def _inference_flip():
    """path_net.folded_net with kernels and tta flip: one KernelPath making the views itself
    (no TTANet around it), equal to TTANet over the fp32 torch fold; load_weights (what
    swap_weights calls) then runs another net's weights through the same path."""
    import kernel_net as K
    from config import load_config
    from path_net import folded_net, kernel_notes
    from tta import TTANet
    heur = K.heuristic_tiles  # whole-map row tiles, split-K 2: few programs for the interpreter

    def big(m, batch, n_sm=132, target=None):
        t = dict(heur(m, batch, n_sm, target), BP=64 if m["S"] == 4 else 256)
        return dict(t, SPLIT=max(1, min(2, K._k_steps(m, t) // 2)))
    K.heuristic_tiles = big
    cfg = load_config()
    a = dict(fold_bn=True, cudnn_relu=False, device=torch.device("cpu"), dtype=torch.float16,
             mem=torch.channels_last, tta="flip", kernels=True, kernel_tiles="heuristic", kernel_pdl=False,
             kernel_pdl_trigger="early", kernel_split_meet="count", kernel_engine="triton", kernel_cluster_blocks=16)
    ref_a = dict(a, kernels=False, dtype=torch.float32, mem=torch.contiguous_format)
    m1, m2 = _small_fastnet(1), _small_fastnet(2)
    net = folded_net(cfg, m1, a)
    r = dict(wrapped=isinstance(net, TTANet), in_kernel=net.kn.views_in_kernel, nb=net.kn.nb,
             kernels=net.kn.kernel_count(), bytes=net.kn.weight_bytes(), note=kernel_notes(net.kn))
    layers, head = m1.eval().folded_spec(cfg.data.mean, cfg.data.std)
    r["n_weights"] = sum(L["weight"].numel() + L["bias"].numel() for L in layers) + head["weight"].numel()
    x = torch.randint(0, 256, (1, 3, 32, 32), dtype=torch.uint8).to(torch.float16)
    x = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        r["err"] = _rel_err(net(x).clone(), folded_net(cfg, m1, ref_a)(x.float()).double())
        net.kn.load_weights(*m2.folded_spec(cfg.data.mean, cfg.data.std))
        r["swapped_err"] = _rel_err(net(x).clone(), folded_net(cfg, m2, ref_a)(x.float()).double())
    return r


def _tile_cache():
    """KernelNet(tile_cache=) takes a layer's tiles from the cache file where its key is there
    (this 'GPU' and maps per call), the heuristic elsewhere; a malformed file is refused."""
    import tempfile
    import kernel_net as K
    layers, head = K.random_net(stem_width=16, stem_kernel=3, widths=(32, 32), depths=(1, 1))
    plain = K.KernelNet(layers, head, batch=1)
    path = os.path.join(tempfile.mkdtemp(), "tiles.json")
    s0, sp = plain.specs[0], plain.specs[1]
    want = dict(sp["tiles"], BP=64, BN=16, SPLIT=1)  # few programs: the interpreter is slow
    K.write_tile_cache(path, {K.tile_key(s0["meta"], 1, plain.gpu): dict(s0["tiles"], BP=256)}, {"by": "test"})
    K.write_tile_cache(path, {K.tile_key(sp["meta"], 1, plain.gpu): want}, {"by": "test"})  # merged in
    net = K.KernelNet(layers, head, batch=1, tile_cache=path)
    other_nb = K.KernelNet(layers, head, batch=2, tile_cache=path)  # 2 maps a call: another key
    # a whole-net entry (tools/chain_tune.py) of layer 1 wins over its per-layer one; it names a
    # trigger (PDL is off under the interpreter: no effect); a PDL net or another net has other keys
    chained = dict(want, BP=16, trigger="late")
    K.write_tile_cache(path, {net.chain_key(1): chained}, {"by": "test"})
    chain_net = K.KernelNet(layers, head, batch=1, tile_cache=path)
    deeper = K.random_net(stem_width=16, stem_kernel=3, widths=(32, 32), depths=(1, 2))
    chain_other = K.KernelNet(*deeper, batch=1, tile_cache=path)
    chain = dict(sources=chain_net.tile_sources(), got=chain_net.tiles()[1], want=chained,
                 key=net.chain_key(1), other_sources=chain_other.tile_sources())
    x1 = torch.randint(0, 256, (1, 32, 32, 3), dtype=torch.uint8)
    chain["err"] = _rel_err(chain_net(x1).clone(), K.reference_forward(layers, head, x1))
    chain_net.set_tiles(net.tiles())
    chain["set_sources"], chain["set_err"] = chain_net.tile_sources(), \
        _rel_err(chain_net(x1).clone(), K.reference_forward(layers, head, x1))
    for bad in ([dict(want, trigger="soon")] * 3, net.tiles()[:2]):
        try:
            chain_net.set_tiles(bad)
            chain.setdefault("set_refused", []).append("")
        except ValueError as e:
            chain.setdefault("set_refused", []).append(str(e))
        try:  # the same tiles given at build: the same check, before any launch
            K.KernelNet(layers, head, batch=1, tiles=bad)
            chain.setdefault("build_refused", []).append("")
        except ValueError as e:
            chain.setdefault("build_refused", []).append(str(e))
    refused = []
    for body in ("[1, 2]", "", '{"tiles": {"a"'):  # not a cache, empty, truncated: one line each
        with open(path, "w") as f:
            f.write(body)
        try:
            K.KernelNet(layers, head, batch=1, tile_cache=path)
            refused.append("")
        except K.KitError as e:
            refused.append(str(e))
    x = torch.randint(0, 256, (1, 32, 32, 3), dtype=torch.uint8)
    return dict(sources=net.tile_sources(), plain=plain.tile_sources(), nb2=other_nb.tile_sources(),
                got=net.tiles()[1], want=want, refused=refused, chain=chain,
                err=_rel_err(net(x).clone(), K.reference_forward(layers, head, x)),
                inputs=[[list(net.random_input(i).shape), str(net.random_input(i).dtype)] for i in (0, 1)])


def _persistent(K, views, fit_split, last_bp=None):
    """kernel_server.KernelServer (one program, one request per launch under the interpreter) vs
    the same KernelNet's graph-path logits: three requests on different images, the head's bias
    pushed towards another class each time; and its one-line refusals."""
    import numpy as np
    from kernel_server import KernelServer
    from utils import KitError
    cfg = dict(stem_width=16, stem_kernel=3, widths=(32, 32), depths=(1, 1), act="relu")
    layers, head = K.random_net(seed=31, **cfg)
    tiles = _big_tiles(K, layers, head, len(views) if views else 1, 2, views=views)
    if last_bp:
        tiles[-1]["BP"] = last_bp
    net = K.KernelNet(layers, head, batch=1, tiles=tiles, views=views)
    srv = KernelServer(net, fit_split=fit_split)
    rng = np.random.default_rng(5)
    img = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    refused = []
    for bad in (lambda: srv(img), lambda: srv(img.astype(np.float32)), lambda: KernelServer(net, programs=10 ** 6),
                lambda: KernelServer(K.KernelNet(layers, head, batch=2, tiles=tiles))):
        try:
            bad()
            refused.append("")
        except (KitError, ValueError) as e:
            refused.append(str(e))
    srv.start()
    got, want, diff = [], [], []
    for i in range(3):
        img = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
        net.hb[:10] = torch.as_tensor(head["bias"]).float() + 50.0 * (torch.arange(10) == 3 * i + 1)
        got.append(srv(img))
        logits = net(torch.from_numpy(img)[None]).clone()
        want.append(int(logits[0].argmax()))
        diff.append(float((srv.out[0, :10] - logits[0]).abs().max()))
    srv.stop()
    return dict(got=got, want=want, diff=diff, splits=srv.splits, tiles=[t["SPLIT"] for t in net.tiles()],
                head_mode=net.head_mode(-1), refused=refused, req=srv.req)


def _ptx_atomic_orders():
    """Compiled mode, no GPU needed: conv_layer_kernel for sm90 (Triton's own ptxas), a split-K
    layer and a last layer with the head and the answer word; each one's PTX atomics counted
    by memory order."""
    import re
    import triton
    from triton.backends.compiler import GPUTarget
    import kernels
    ptr = dict(x_ptr="*fp16", w_ptr="*fp16", b_ptr="*fp32", y_ptr="*fp16", part_ptr="*fp32", cnt_ptr="*i32",
               hmax_ptr="*fp32", hw_ptr="*fp32", hb_ptr="*fp32", out_ptr="*fp32", hcnt_ptr="*i32", view_ptr="*i32",
               vw_ptr="*fp32", seq_ptr="*i32", word_ptr="*i32", flag_ptr="*i32", go_ptr="*i32", stage_ptr="*u8",
               trace_ptr="*i64", pb_ptr="*fp32", zraw_ptr="*fp32", epoch_ptr="*i32", slots_ptr="*i64", m_tiles="i32",
               SPLIT="i32", n_fin="i32", limit="i32", zn="i32")
    base = dict(H=7, W=7, CIN=64, COUT=64, KH=3, PAD=1, S=1, WO=7, HWO=49, ACT=2, BP=16, BN=32, BK=64, KI=9,
                GENERIC=False, HEAD=0, NB=1, CP=64, NV=1, VIEW=False, ZOUT=False, PDL=False, ANSWER=False,
                GATE=0, STAGE=0, POLLS=1, JOIN=False, TRACE=0, RAW_OUT=False, RAW_IN=0, XMAP=0, PACT=2, ZCH=0,
                FLAG=0, BUMP=False)
    out = {}
    for name, extra in (("split_k", {}), ("head", dict(H=3, W=3, WO=3, HWO=9, HEAD=2, ANSWER=True)),
                        ("gated", dict(GATE=1)), ("staged", dict(GATE=1, STAGE=1024)),
                        ("polled", dict(GATE=1, STAGE=1024, POLLS=4)),
                        ("traced", dict(GATE=1, STAGE=1024, TRACE=1)),
                        ("sums", dict(RAW_OUT=True, RAW_IN=4, XMAP=4096)), ("zeroing", dict(ZCH=64)),
                        ("flagged", dict(FLAG=3)), ("bump", dict(BUMP=True))):
        src = triton.compiler.ASTSource(fn=kernels.conv_layer_kernel, signature=ptr, constexprs=dict(base, **extra))
        ptx = triton.compile(src, target=GPUTarget("cuda", 90, 32), options=dict(num_warps=4)).asm["ptx"]
        out[name] = {}
        for sem in re.findall(r"\b(?:atom|red)\.global\.gpu\.(\w+)\.", ptx):
            out[name][sem] = out[name].get(sem, 0) + 1
        out[name]["int_relaxed"] = len(re.findall(r"\batom\.global\.gpu\.relaxed\.add\.[su]32", ptx))
        out[name]["volatile_loads"] = len(re.findall(r"\bld\.volatile\.global", ptx))
    return out


def _case(name):
    """The interpreter cases (run in a subprocess by _run_case)."""
    import kernel_net as K
    from tta import TTA_VIEWS
    if name == "answers_mode2":  # one row tile holds the last map: every tile adds its share, the last answers
        cfg = dict(stem_width=16, stem_kernel=3, widths=(32, 32), depths=(1, 1), act="relu")
        return _answers(K, cfg, seed=21)
    if name == "answers_mode1":  # 4 row tiles on the last map: global max, the last tile answers
        cfg = dict(stem_width=24, stem_kernel=2, widths=(32, 16), depths=(1, 1), act="gelu")
        return _answers(K, cfg, seed=22, last_bp=16)
    if name == "answers_flip":  # two views: the answer is the argmax of their weighted sum
        cfg = dict(stem_width=24, stem_kernel=2, widths=(32, 16), depths=(1, 1), act="gelu")
        return _answers(K, cfg, seed=23, views=TTA_VIEWS["flip"])
    if name == "persistent_flip":  # two views, split-K 2, head mode 2 (one row tile on the last map)
        return _persistent(K, TTA_VIEWS["flip"], fit_split=False)
    if name == "persistent_fit_mode1":  # split-K refitted to one program, head mode 1 (4 row tiles)
        return _persistent(K, None, fit_split=True, last_bp=4)
    if name == "gate":
        return _gate(K)
    if name == "join":
        return _join()
    if name == "split_meet":
        return _split_meet()
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
    if name == "multitap":  # 16->32 and 32->32 with K steps of 2 and 4 taps (flattened-K loads), split-K
        cfg = dict(stem_width=16, stem_kernel=3, widths=(32, 32), depths=(1, 1), act="relu")
        layers, head = K.random_net(seed=4, **cfg)
        tiles = _big_tiles(K, layers, head, 1, 1)
        for i, taps, split in ((1, 2, 2), (2, 4, 1)):
            tiles[i].update(GENERIC=True, BK=taps * layers[i]["weight"].shape[1], SPLIT=split)
        net = K.KernelNet(layers, head, batch=1, tiles=tiles)
        x = torch.randint(0, 256, (1, 32, 32, 3), dtype=torch.uint8)
        steps = [K._k_steps(sp["meta"], sp["tiles"]) for sp in net.specs]
        return dict(err=_rel_err(net(x).clone(), K.reference_forward(layers, head, x)), steps=steps)
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
def test_views_in_kernel_equal_ttanet_over_reference(case, modes):
    # same tolerance as the plain net (fp16 activations); the views add no rounding of their own
    r = _run_case(case)
    for mode in modes:
        assert max(r[mode]["errs"]) < TOL, (mode, r)
        assert r[mode]["kernels"] == r["plain_kernels"], (mode, r)  # the views cost no kernel
        assert r[mode]["plain_vs_tta"] > TOL, (mode, r)  # the views matter: this check can fail


def test_inference_kernel_path_makes_the_flip_views_in_its_kernels():
    r = _run_case("inference_flip")
    assert not r["wrapped"] and r["in_kernel"] and r["nb"] == 2, r  # no TTANet: the kernels make the views
    assert max(r["err"], r["swapped_err"]) < TOL, r
    assert r["note"] == f"kernel tiles: {r['kernels']} heuristic; {r['kernels']} kernels", r
    # fp16 weights, fp32 biases (the head padded): at least 2 bytes a weight, never 0
    assert 2 * r["n_weights"] <= r["bytes"] < 5 * r["n_weights"], r


@pytest.mark.parametrize("case,mode", [("answers_mode2", 2), ("answers_mode1", 1), ("answers_flip", 2)])
def test_answer_word_holds_the_call_number_and_the_class(case, mode):
    r = _run_case(case)
    assert r["head_mode"] == mode, r
    assert r["want"] == [1, 4, 7], r  # the logits follow the head's bias
    assert r["got"] == [(n + 1) << 4 | c for n, c in enumerate(r["want"])], r  # this call's number, its argmax
    assert r["seq"] == 3 and r["untouched"] == [-1, -1, -1], r  # one word written, nothing beside it


@pytest.mark.parametrize("case", ["persistent_flip", "persistent_fit_mode1"])
def test_persistent_kernel_answers_as_the_kernel_net(case):
    r = _run_case(case)
    assert r["got"] == r["want"] and len(set(r["want"])) > 1, r
    # the same work items give the same sums; refitted split-K sums in another order (logits ~50)
    assert max(r["diff"]) < (1e-5 if r["splits"] == r["tiles"] else 1e-3), r
    assert r["req"] == 3
    if case == "persistent_flip":
        assert r["splits"] == r["tiles"] and max(r["splits"]) == 2 and r["head_mode"] == 2
    else:
        assert r["splits"] == [1] * len(r["splits"]) and r["head_mode"] == 1
    assert "start() it first" in r["refused"][0]
    assert "expected uint8" in r["refused"][1]
    assert "programs=1000000: give 1.." in r["refused"][2]
    assert "batch=1" in r["refused"][3]


def test_gate_waits_for_its_call_and_marks_an_expired_one():
    """gate_kernel, and the same wait in the first layer's programs (e2e_gate: stem, and stage:
    with the image copied to the device by program 0)."""
    r = _run_case("gate")
    assert r["ready"] == [-1, -1, 5, -1], r  # passed: only the ready stamp written
    assert r["other"] == [-1, 5, 5, -1], r  # expired: its call's number in word 1, the answer word untouched
    assert r["wrapped"] == [-1, -1, 0, -1], r
    # e2e_gate: stem: program 0 of the first layer waits for the flag and passes the call's number
    # to the others (more than one here) in the device word gate_go, whether it passed or expired
    ready, other = r["stem_ready"], r["stem_other"]
    assert ready["programs"] > 1 and ready["go"] == 5 and other["go"] == 5, r
    assert ready["word"] == [(5 << 4) | ready["cls"], -1, 5, -1] and ready["seq"] == 5 and ready["same"], r
    assert other["word"] == [(5 << 4) | other["cls"], 5, 5, -1] and other["same"], r
    assert not ready["staged"], r  # without stage the device copy is not made
    # e2e_gate: stage: program 0 also copies the image into device memory before it passes the
    # call's number on; every program reads it there, and the answers are the same
    for st in (r["stage_ready"], r["stage_other"]):
        assert st["staged"] and st["same"] and st["go"] == 5 and st["programs"] > 1, r
    assert r["stage_ready"]["word"] == ready["word"] and r["stage_other"]["word"] == other["word"], r
    assert r["stage_reads"] == dict(device_copy=True, host=False), r
    # program 0 with four staggered reads of the flag in flight (e2e_polls: 4): the same words
    assert r["polls_ready"] == r["stage_ready"] and r["polls_other"] == r["stage_other"], r


def test_join_tiles_compute_the_same_net_in_every_head_mode():
    r = _run_case("join")
    for name, c in r.items():
        assert max(c["errs"]) < TOL and c["word"] == c["want"], (name, c)
    assert r["plain"]["head"] == 2 and r["plain"]["grids"][-1] == [2, 2, 1], r  # one row tile a map
    assert r["head3"]["head"] == 3 and r["head3"]["grids"][-1] == [1, 1, 2], r  # one tile in all
    assert r["head3_nosplit"]["grids"][-1] == [1, 1, 1] and r["head3_nosplit"]["head"] == 3, r
    assert r["head2"]["head"] == 2 and r["head2"]["grids"][-1] == [1, 2, 2], r  # both maps, two column tiles
    assert r["head1"]["head"] == 1 and r["head1"]["grids"][-1] == [7, 2, 2], r  # 98 rows in tiles of 16
    assert r["middle"]["grids"][2:] == [[7, 2, 2], [7, 2, 2]], r  # 2 x 49 pooled / plain rows in tiles of 16


def test_join_tiles_are_candidates_of_the_late_layers_with_several_maps(K):
    layers, head = K.random_net(seed=6, stem_width=24, stem_kernel=2, widths=(64, 256, 256), depths=(1, 2, 2))
    last = K._layer_meta(layers[-1], 3, 3, 256)
    stem = K._layer_meta(layers[0], 32, 32, 3)
    assert not any(t.get("JOIN") for t in K.candidates(last, 1, 132))  # one map: nothing to join
    assert not any(t.get("JOIN") for t in K.candidates(stem, 2, 132))  # the views' reads stay per map
    joined = [t for t in K.candidates(last, 2, 132) if t.get("JOIN")]
    # both maps' 18 pixels in one tile of 32 rows, all 256 channels: one tile in all (head mode 3), 4 and 8 warps
    whole = [t for t in joined if t["BP"] == 32 and t["BN"] == 256]
    assert whole and {t["num_warps"] for t in whole} == {4, 8} and all(not t["GENERIC"] for t in joined), joined
    with pytest.raises(ValueError, match="JOIN tiles need GENERIC false"):
        K._check_trigger(dict(whole[0], GENERIC=True))


def test_split_k_sums_met_in_the_next_kernel_compute_the_same_net():
    r = _run_case("split_meet")
    for shape in ("plain_last", "pooled_last"):
        for case in ("split", "join", "mixed"):
            c = r[f"{shape}_{case}"]
            assert max(c["errs"]) < TOL and c["word"] == c["want"], (shape, case, c)
            # the last layer splits, so it defers too: its head is the head kernel (one kernel more)
            assert c["defers"][0] is False and c["defers"][-1] and c["head"] == 0, c
            assert c["kernels"] == c["layers"] + 1, c
        for case in ("flag", "flag_join", "flag_mixed"):  # flagged words: the same net, no kernel more
            c = r[f"{shape}_{case}"]
            assert max(c["errs"]) < TOL and c["word"] == c["want"], (shape, case, c)
            assert c["kernels"] == c["layers"] and c["head"] > 0 and c["meets"][0] == "count", c
            # three calls: the epoch counted up by each, and every word stored carries the last one
            assert c["epoch"] == 3 and c["words_epochs"] == [3], c
        assert r[f"{shape}_flag"]["meets"][1:] == ["flag"] * (len(r[f"{shape}_flag"]["meets"]) - 1), r
        assert r[f"{shape}_flag_mixed"]["meets"][-1] == "count", r
        assert r[f"{shape}_mixed"]["defers"][-2] is False and all(r[f"{shape}_split"]["defers"][1:]), r
        # without the first layer's zeroing the second call's sums hold the first's too
        assert r[f"{shape}_unzeroed"][0] < TOL < r[f"{shape}_unzeroed"][1], r


def test_only_arrival_counts_are_acquire_release_atomics():
    """The memory order of the kernels' atomics, in their sm90 PTX: acq_rel (which ptxas wraps
    in a GPU-wide memory barrier and an L1 invalidation) only for the arrival counts -- a
    split-K tile's, and the head's -- while the partial sums, their read-back, the head's logits
    and the call counter are relaxed, so a thread's adds go out back to back."""
    pytest.importorskip("triton")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = str(ROOT)
    r = subprocess.run([sys.executable, __file__, "ptx_atomics"], env=env, capture_output=True, text=True,
                       timeout=300)
    if r.returncode != 0 and "ptxas" in r.stderr.lower() and "not found" in r.stderr.lower():
        pytest.skip("Triton's ptxas is not installed: the PTX cannot be built here")
    assert r.returncode == 0, f"compile failed:\n{r.stderr[-3000:]}"
    got = json.loads(r.stdout.strip().splitlines()[-1])
    reads = {name: got[name].pop("volatile_loads") for name in got}  # volatile loads: the gates' polls
    assert got["split_k"].get("acq_rel") == 1 and got["split_k"].get("relaxed", 0) >= 2, got
    # the head's epilogue is inlined twice (after the K loop with and without split-K), each copy
    # with the head's arrival count, beside the split-K count: 3
    assert got["head"].get("acq_rel") == 3 and got["head"].get("relaxed", 0) >= 4, got
    # the call counter is read before the K loop and stored by the answering program: no
    # integer atomic (a round trip whose result the answer word waits for) beside the counts
    assert got["split_k"]["int_relaxed"] == 0 and got["head"]["int_relaxed"] == 0, got
    # the gate in the first layer's programs (e2e_gate: stem) adds no atomic; staging the image
    # (e2e_gate: stage) adds program 0's one release, after its copy
    assert got["gated"] == got["split_k"], got
    assert got["staged"] == dict(got["split_k"], release=1), got
    # four staggered reads of the flag (e2e_polls: 4): four first reads and four in the loop, for
    # one and one; no atomic more
    assert got["polled"] == got["staged"] and reads["polled"] == reads["staged"] + 6, (got, reads)
    assert reads["split_k"] == 0 and reads["gated"] == reads["staged"] > 0, reads
    # the trace (tools/e2e_trace.py, off in every path the kit times) adds three relaxed maxima a
    # program: past the PDL wait, past the K loop, at the end
    assert got["traced"] == dict(got["staged"], relaxed=got["staged"]["relaxed"] + 3), got
    # split_meet next: the slices' sums are relaxed adds and nothing else, no arrival count; the
    # first layer's zeroing of them is plain stores
    assert got["sums"].get("acq_rel", 0) == 0 and got["sums"].get("relaxed", 0) >= 1 and reads["sums"] == 0, got
    assert got["zeroing"] == got["split_k"], got
    # split_meet flag: the last slice polls the others' flagged words (volatile loads); no atomic
    # at all, so no fence; the first layer's count of the epoch is a plain load and store
    assert got["flagged"] == {"int_relaxed": 0} and reads["flagged"] > 0, (got, reads)
    assert got["bump"] == got["split_k"] and reads["bump"] == 0, got


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
    assert "not a tile cache" in r["refused"][0] and all("not a readable tile cache" in x for x in r["refused"][1:]), r
    assert all("\n" not in x and "kernel_tune.py" in x for x in r["refused"]), r
    assert r["err"] < TOL, r  # the cached tiles (no split-K, 16 columns) compute the same net
    # the tuner's timing inputs (tools/kernel_tune.py takes the first): the uint8 image, then fp16 maps
    assert r["inputs"] == [[[1, 32, 32, 3], "torch.uint8"], [[1, 30, 30, 16], "torch.float16"]], r


def test_whole_net_tile_entries_win_over_the_layer_ones_and_match_only_their_net():
    c = _run_case("tile_cache")["chain"]
    assert c["sources"] == ["cache", "chain", "heuristic"] and c["got"] == c["want"], c
    assert c["key"].startswith("interpreter|nb=1|pdl=off|net=") and c["key"].endswith("|L1"), c
    assert "chain" not in c["other_sources"], c  # one conv more: another net, other keys
    assert c["err"] < TOL and c["set_err"] < TOL, c
    assert c["set_sources"] == ["given"] * 3, c
    assert "trigger must be one of early, late" in c["set_refused"][0] and "2 tile dicts" in c["set_refused"][1], c
    assert c["build_refused"] == c["set_refused"], c  # KernelNet(tiles=...) checks them as set_tiles does


def test_the_image_reading_layer_has_longer_row_tiles_among_its_candidates(K):
    # its reads of the image cross PCIe: fewer programs reading it can win there
    layers, head = K.random_net(seed=6, stem_width=24, stem_kernel=2, widths=(32,), depths=(1,))
    stem = K._layer_meta(layers[0], 32, 32, 3)
    conv = K._layer_meta(layers[1], 31, 31, 24)
    for m, want in ((stem, {16, 32, 64}), (conv, {4, 8})):
        got = {t["BP"] for t in K.candidates(m, 1, 132)}
        assert got == want, (m, got)


def test_k_steps_of_several_taps_compute_the_same_net():
    r = _run_case("multitap")
    assert r["steps"][1:] == [5, 3], r  # 9 taps x 16 in steps of 32; 9 x 32 in steps of 128 (a masked tail)
    assert r["err"] < TOL, r


def test_layers_of_few_channels_have_multi_tap_steps_among_their_candidates(K):
    layers, head = K.random_net(seed=6, stem_width=16, stem_kernel=3, widths=(32, 64, 256), depths=(1, 1, 1))
    metas = [K._layer_meta(layers[i], h, h, c) for i, (h, c) in ((1, (30, 16)), (2, (15, 32)), (3, (7, 64)),
                                                                  (0, (32, 3)))]
    got = [sorted({t["BK"] for t in K.candidates(m, 1, 132) if t["GENERIC"]}) for m in metas]
    assert got == [[32, 64], [64, 128], [128, 256], [32]], got  # the stem: its own gather path only


def test_bad_input_rejected(K):
    layers, head = K.random_net(seed=6, stem_width=8, widths=(16,), depths=(1,))
    net = K.KernelNet.__new__(K.KernelNet)  # the input check runs before any kernel
    torch.nn.Module.__init__(net)
    net.batch = 1
    with pytest.raises(ValueError):
        net.forward(torch.zeros(2, 32, 32, 3, dtype=torch.uint8))


if __name__ == "__main__":  # python tests/test_kernels_cpu.py CASE (TRITON_INTERPRET=1 set, but for ptx_atomics)
    print(json.dumps(_ptx_atomic_orders() if sys.argv[1] == "ptx_atomics" else _case(sys.argv[1])))
