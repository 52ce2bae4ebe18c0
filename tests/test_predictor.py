"""inference.Predictor, the object users call, on the CPU: the end-to-end call and its input
checks, batches, the answer-word wait (poll, timeout, resync) and a serving kernel's call (a
timeout, a relaunch after its expiry), with the GPU parts faked."""
import os

import numpy as np
import pytest
import torch

import utils
from config import load_config
from conftest import run_script
from host_io import check_image
from inference import Predictor


@pytest.fixture(scope="module")
def clf(tmp_path_factory):
    from conftest import tiny_config
    cfg_path = tiny_config(str(tmp_path_factory.mktemp("pred")))
    r = run_script("train.py", "--model", "fastnet", "--final", "--config", cfg_path)
    assert r.returncode == 0, r.stderr
    return Predictor.load("F", cfg=load_config(cfg_path), device="cpu")


def test_call_and_predict_agree_with_the_logits(clf):
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    ids = clf.predict(imgs)
    assert ids.dtype == np.int64 and ids.shape == (6,)
    with torch.no_grad():
        want = [int(clf.logits(clf.prepare(torch.from_numpy(i)[None].permute(0, 3, 1, 2))).argmax()) for i in imgs]
    assert [clf(i) for i in imgs] == want == ids.tolist()
    assert all(isinstance(clf(i), int) for i in imgs[:2])


@pytest.mark.parametrize("bad, words", [
    ([[0] * 3] * 32, "numpy uint8 array"),
    (np.zeros((32, 32, 3), dtype=np.float32), "uint8"),
    (np.zeros((3, 32, 32), dtype=np.uint8), "shape (32, 32, 3)"),
    (np.zeros((1, 32, 32, 3), dtype=np.uint8), "shape (32, 32, 3)"),
    (np.zeros((32, 64, 3), dtype=np.uint8)[:, ::2], "C-contiguous"),
])
def test_bad_input_is_one_line_and_changes_nothing(clf, bad, words):
    before = clf.calls
    with pytest.raises(utils.KitError) as e:
        clf(bad)
    assert words in str(e.value) and "\n" not in str(e.value)
    assert clf.calls == before


def test_a_stack_must_be_a_stack():
    with pytest.raises(utils.KitError, match=r"\(N, 32, 32, 3\)"):
        check_image(np.zeros((32, 32, 3), dtype=np.uint8), stack=True)
    assert check_image(np.zeros((2, 32, 32, 3), dtype=np.uint8), stack=True).shape == (2, 32, 32, 3)


def test_load_by_checkpoint_path_runs_it_through_fs_path(clf):
    other = Predictor.load(clf.ckpt_path, cfg=clf._cfg, device="cpu")
    img = np.full((32, 32, 3), 100, dtype=np.uint8)
    assert other.variant == "F" and other(img) == clf(img)


class _FakeGPU:
    """The parts of a CUDA Predictor that _wait touches: the pinned answer word (a numpy array
    here), the device call counter, and torch.cuda.synchronize."""

    def __init__(self, monkeypatch, word, seq, wait="poll"):
        self.p = Predictor.__new__(Predictor)
        self.p.variant, self.p.e2e_wait, self.p.timeout_s, self.p.calls = "F", wait, 0.01, 0
        self.p.e2e_launch, self.p._pending = "call", False  # what _resync reads besides
        self.p._word_np = np.array([word, 0, 0, 0], dtype=np.int32)
        self.p._seq = torch.tensor([seq], dtype=torch.int32)
        self.syncs = []
        monkeypatch.setattr(torch.cuda, "synchronize", lambda: self.syncs.append(1))


@pytest.mark.parametrize("wait", ["poll", "sync"])
def test_wait_returns_the_class_of_this_call(monkeypatch, wait):
    g = _FakeGPU(monkeypatch, word=(1 << 4) | 7, seq=1, wait=wait)
    assert g.p._wait(1) == 7 and g.p.calls == 1
    assert len(g.syncs) == (0 if wait == "poll" else 1)  # polling needs no synchronise when the word is there


def test_a_stale_word_times_out_raises_and_the_next_call_resyncs(monkeypatch):
    g = _FakeGPU(monkeypatch, word=(4 << 4) | 3, seq=4)  # the GPU answered call 4; we wait for call 5
    with pytest.raises(utils.KitError, match="no answer to call 5") as e:
        g.p._wait(5)
    assert "\n" not in str(e.value) and g.syncs  # bounded poll, then a synchronise, then the error
    assert g.p.calls == 4  # resynced to the GPU's own count: the next call waits for call 5 again
    g.p._word_np[0] = (5 << 4) | 2  # the next replay ran to its end
    assert g.p._wait(g.p.calls + 1) == 2 and g.p.calls == 5


def test_call_numbers_wrap_like_the_kernels_answer_word(monkeypatch):
    from inference import SEQ_MASK
    import kernels
    assert SEQ_MASK == kernels.SEQ_MASK
    n = SEQ_MASK + 3  # past the 27 bits the word keeps
    g = _FakeGPU(monkeypatch, word=((n & SEQ_MASK) << 4) | 9, seq=n)
    assert g.p._wait(n) == 9


class _FakeStream:
    """The serving kernel's stream: what the stop word (flag word 1) held at each synchronise."""

    def __init__(self, flag):
        self.flag, self.syncs = flag, []

    def synchronize(self):
        self.syncs.append(int(self.flag[1]))


def _fake_server(monkeypatch, timeout_s, on_start=lambda word: None):
    """A _FakeGPU running a serving kernel: its stream, flag words and image buffer faked;
    _start_server relaunches it, then on_start(answer words) plays what the kernel does."""
    g = _FakeGPU(monkeypatch, word=0, seq=0)
    p = g.p
    p.timeout_s, p.e2e_launch, p.e2e_input, p._pending, p.expired_calls = timeout_s, "serve", "mapped", True, 0
    p._flag_np, p._h_in_np = np.zeros(4, dtype=np.int32), np.zeros((32, 32, 3), np.uint8)
    p._stream, g.starts = _FakeStream(p._flag_np), []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda: g.syncs.append(int(p._flag_np[1])))  # the stop word too

    def start():
        g.starts.append(1)
        p._word_np[1], p._pending = -1, True
        on_start(p._word_np)

    p._start_server = start
    return g


def test_a_serving_call_never_answered_raises_after_one_timeout(monkeypatch):
    import time
    g = _fake_server(monkeypatch, timeout_s=0.25)  # the kernel runs but never answers call 1
    t0 = time.perf_counter()
    with pytest.raises(utils.KitError, match="no answer to call 1 within 0.25 s"):
        g.p._call_serve(np.zeros((32, 32, 3), np.uint8))
    assert 0.2 < time.perf_counter() - t0 < 0.45  # one bounded poll, not two
    assert g.syncs and 1 in g.syncs + g.p._stream.syncs  # the kernel told to stop while a synchronise waited
    assert g.p._flag_np[1] == 0  # and the stop word cleared after it
    assert not g.p._pending and g.p.calls == 0 and g.p.expired_calls == 0 and not g.starts


def test_a_serving_kernel_that_ended_is_launched_again_for_the_call(monkeypatch):
    g = _fake_server(monkeypatch, timeout_s=5.0, on_start=lambda word: word.__setitem__(0, (1 << 4) | 6))
    g.p._word_np[1] = 1  # it ended waiting for call 1 (no call for e2e_ahead_ms)
    assert g.p._call_serve(np.zeros((32, 32, 3), np.uint8)) == 6 and g.p.calls == 1
    assert g.starts == [1] and g.p.expired_calls == 1 and g.p._stream.syncs == [0] and not g.syncs


def test_a_serving_kernel_that_ends_twice_without_the_call_raises(monkeypatch):
    g = _fake_server(monkeypatch, timeout_s=0.05, on_start=lambda word: word.__setitem__(1, 1))
    g.p._word_np[1] = 1
    with pytest.raises(utils.KitError, match="no answer to call 1"):
        g.p._call_serve(np.zeros((32, 32, 3), np.uint8))
    assert g.starts == [1] and g.p.expired_calls == 2 and g.syncs and not g.p._pending and g.p.calls == 0


def test_poll_answer_sees_a_word_written_while_it_spins_and_gives_up_after_its_timeout():
    # the one polling loop of Predictor._wait and KernelServer._wait
    import threading
    import time
    from host_io import poll_answer
    word = np.zeros(4, dtype=np.int32)
    t = threading.Timer(0.02, lambda: word.__setitem__(0, (3 << 4) | 1))
    t.start()
    t0 = time.perf_counter()
    assert poll_answer(word, 3, timeout_s=5.0)  # the "GPU" answers call 3 after 20 ms
    t.join()
    assert time.perf_counter() - t0 < 4.0
    t0 = time.perf_counter()
    assert not poll_answer(word, 4, timeout_s=0.05)  # call 4 never comes
    assert 0.04 < time.perf_counter() - t0 < 2.0
    word[2] = 7  # the gate's ready stamp: the bare number, in word 2
    assert poll_answer(word, 7, timeout_s=0.05, at=2, shift=0) and not poll_answer(word, 7, timeout_s=0.05)


class _FakeKernels:
    """A CUDA Predictor of our kernels (launched ahead, per call or serving) with its GPU faked in
    the host's words: a graph answers its call once the flag holds that call's number (a per-call
    graph: at its launch), with the class sum(image) % 10 of the pinned image; `expire` names calls
    whose gate expires (word 1, and the answer of an old image, class 0); `late`: the answer comes
    from a thread 30 ms after the launch instead."""

    def __init__(self, monkeypatch, launch="ahead", expire=(), late=False, answers=True):
        p = self.p = Predictor.__new__(Predictor)
        p.variant, p.kernels, p.e2e_input, p.e2e_wait, p.e2e_launch = "F", True, "mapped", "poll", launch
        p.timeout_s, p.calls, p.expired_calls, p._pending, p._cuda = 2.0, 0, 0, launch == "serve", True
        p.cuda_graph = True
        p._h_in_np, p._word_np = np.zeros((32, 32, 3), np.uint8), np.array([0, -1, -1, 0], np.int32)
        p._flag_np, p._seq = np.zeros(4, np.int32), torch.zeros(1, dtype=torch.int32)
        p._stream = _FakeStream(p._flag_np)
        self.expire, self.late, self.answers, self.launches, self.timers = set(expire), late, answers, 0, []
        monkeypatch.setattr(torch.cuda, "synchronize", lambda: [t.join() for t in self.timers])
        fake = self

        class Graph:
            def replay(self):
                fake.launch(per_call=True)
        p._launch_ahead, p._e2e_graph = self.launch, Graph()
        p._start_server = lambda: setattr(p, "_pending", True)
        p.drain = lambda: None  # at its end (__del__): no GPU to drain
        p._fast = p._fast_call()

    def launch(self, per_call=False):
        """A launch ahead answers the call whose flag is written (the graph before it ran it)."""
        p, self.launches = self.p, self.launches + 1
        p._pending = True
        n = p.calls + 1 if per_call else int(p._flag_np[0])
        if n == 0 or n <= int(p._word_np[0]) >> 4 or not self.answers:
            return
        expired = n in self.expire
        self.expire.discard(n)
        cls = 0 if expired else int(p._h_in_np.astype(np.int64).sum()) % 10

        def answer():
            if expired:
                p._word_np[1] = n
            p._word_np[0] = (n << 4) | cls
            p._seq[0] = n
        if self.late:
            import threading
            self.timers.append(threading.Timer(0.03, answer))
            self.timers[-1].start()
        else:
            answer()


def _images(k, seed=0):
    imgs = np.random.default_rng(seed).integers(0, 256, (k, 32, 32, 3), dtype=np.uint8)
    return imgs, [int(i.astype(np.int64).sum()) % 10 for i in imgs]


@pytest.mark.parametrize("launch", ["ahead", "call"])
def test_the_fast_call_answers_as_the_general_call(monkeypatch, launch):
    imgs, want = _images(12)
    fast, general = _FakeKernels(monkeypatch, launch), _FakeKernels(monkeypatch, launch)
    general.p._fast = None
    assert fast.p._fast is not None
    assert [fast.p(i) for i in imgs] == [general.p(i) for i in imgs] == want
    assert fast.p.calls == general.p.calls == 12 and fast.launches == general.launches
    assert (fast.p._h_in_np == imgs[-1]).all()
    if launch == "ahead":
        assert int(fast.p._flag_np[0]) == 12 and fast.launches == 13  # one launch more: the first call's own


@pytest.mark.parametrize("bad, words", [
    ([[0] * 3] * 32, "numpy uint8 array"),
    (np.zeros((32, 32, 3), dtype=np.int8), "uint8"),
    (np.zeros((3, 32, 32), dtype=np.uint8), "shape (32, 32, 3)"),
    (np.zeros((32, 64, 3), dtype=np.uint8)[:, ::2], "C-contiguous"),
    (np.zeros((32, 32, 3), dtype=np.uint8, order="F"), "C-contiguous"),
])
def test_the_fast_call_refuses_bad_input_with_the_same_line_and_touches_nothing(monkeypatch, bad, words):
    g = _FakeKernels(monkeypatch)
    imgs, want = _images(2)
    assert g.p(imgs[0]) == want[0]
    flag, word, img = g.p._flag_np.copy(), g.p._word_np.copy(), g.p._h_in_np.copy()
    with pytest.raises(utils.KitError) as e:
        g.p(bad)
    assert words in str(e.value) and "\n" not in str(e.value)
    assert g.p.calls == 1 and (g.p._flag_np == flag).all() and (g.p._word_np == word).all()
    assert (g.p._h_in_np == img).all()
    assert g.p(imgs[1]) == want[1]


def test_a_valid_array_of_a_subclass_or_a_read_only_view_is_answered(monkeypatch):
    class Frame(np.ndarray):
        pass
    g = _FakeKernels(monkeypatch)
    imgs, want = _images(3)
    ro = imgs[2].copy()
    ro.flags.writeable = False
    assert [g.p(imgs[0].view(Frame)), g.p(imgs[1]), g.p(ro)] == want and g.p.calls == 3


def test_the_fast_call_takes_an_expired_gate_to_the_graph_behind_it(monkeypatch):
    g = _FakeKernels(monkeypatch, expire={2})
    imgs, want = _images(3)
    assert g.p(imgs[0]) == want[0]
    assert g.p(imgs[1]) == want[1]  # call 2's gate expired (it answered class 0): call 3 answers this image
    assert g.p.expired_calls == 1 and g.p.calls == 3 and int(g.p._flag_np[0]) == 3
    assert g.p(imgs[2]) == want[2] and g.p.calls == 4


@pytest.mark.parametrize("launch", ["ahead", "call", "serve"])
def test_a_late_answer_is_waited_for_and_a_missing_one_raises(monkeypatch, launch):
    g = _FakeKernels(monkeypatch, launch, late=True)
    imgs, want = _images(2)
    if launch == "serve":  # the serving kernel answers once it sees the flag: here, at its start
        g.p._pending = False
        g.p._start_server = lambda: (setattr(g.p, "_pending", True), g.p._flag_np.__setitem__(0, g.p.calls + 1),
                                     g.launch())
    assert g.p(imgs[0]) == want[0] and g.p.calls == 1  # 30 ms: past the fast loop's polls, the bounded wait
    g.answers, g.p.timeout_s = False, 0.05
    with pytest.raises(utils.KitError, match="no answer to call 2") as e:
        g.p(imgs[1])
    assert "\n" not in str(e.value) and g.p.calls == 1


def test_the_fast_call_relaunches_a_serving_kernel_that_ended(monkeypatch):
    g = _FakeKernels(monkeypatch, "serve")
    imgs, want = _images(1)
    starts = []

    def start():
        starts.append(1)
        g.p._pending = True
        g.launch()  # the new kernel sees the flag already written
    g.p._start_server = start
    g.p._word_np[1] = 1  # the kernel ended waiting for call 1
    assert g.p(imgs[0]) == want[0] and starts == [1] and g.p.expired_calls == 1 and g.p.calls == 1


def test_the_fast_call_does_not_keep_its_predictor_alive():
    # tools/call_overhead.py's predictor: host buffers only, no cycle of its own
    import gc
    import sys
    import weakref
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools"))
    from call_overhead import host_only, time_calls
    p = host_only("ahead")
    imgs = _images(4)[0]
    assert p._fast is not None and (time_calls(p, imgs, use_fast=True) > 0).all() and p.calls == 4
    assert (p._h_in_np == imgs[-1]).all() and int(p._flag_np[0]) == 4
    gc.disable()  # freed by its reference count alone, as before the fast call: its __del__ drains at once
    try:
        ref = weakref.ref(p)
        del p
        assert ref() is None
    finally:
        gc.enable()


def test_a_rebuilt_gate_keeps_the_flag_words_the_fast_call_writes(monkeypatch):
    # tools/e2e_trace.py captures the graph launched ahead again (inside _gated)
    import inference
    g = _FakeKernels(monkeypatch)
    imgs, want = _images(2)
    assert g.p(imgs[0]) == want[0]
    monkeypatch.setattr(torch.cuda, "Stream", lambda device: None)
    g.p.device, flag, fast = "cpu", g.p._flag_np, g.p._fast
    monkeypatch.setattr(inference, "_AHEAD", set())
    with g.p._gated():
        pass
    assert g.p._flag_np is flag and g.p._fast is fast
    assert g.p(imgs[1]) == want[1] and int(flag[0]) == 2
