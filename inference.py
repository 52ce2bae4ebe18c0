"""The kit's inference paths and the object a user calls: Predictor.

    from inference import Predictor
    clf = Predictor.load("F")                  # a variant of config.yaml, or a checkpoint path / @tag
    cls = clf(img)                             # img: uint8 32x32x3 numpy array in host memory -> int
    ids = clf.predict(imgs)                    # a stack (N, 32, 32, 3) -> numpy int64 array

A variant = a checkpoint + an inference path: precision, memory format, BN folding, cuDNN's
conv+ReLU kernel, torch.compile, one CUDA graph, test-time augmentation (TTA), or our Triton
kernels (kernel_net.py).  bench.py and eval.py use this same object, so the accuracy reported
for a variant is the accuracy of what is timed, end to end.

End to end on a GPU, per call: the image is copied (numpy) into a pinned host buffer; then
  - our kernels (kernels: true): one CUDA-graph replay whose first kernel reads that buffer
    straight from host memory (e2e_input: mapped) or from a device copy made by a copy node
    in the graph (copy), and whose last kernel writes (call number << 4) | class id into a
    pinned host word; the host polls that word (e2e_wait: poll) or synchronises (sync); with
    e2e_launch: ahead each call also launches the next call's graph, which waits at a gate for
    that call's image (a kernel of its own, or with e2e_gate: stem the first layer's programs;
    stage: and one of them copies the image to the device for the others), so the launch is
    off the critical path; with serve (the cluster kernel) one launch answers call after call,
    each behind its gate: no launch per call at all;
  - other CUDA-graph paths: the graph holds the copy in, the net, the argmax, the answer word
    and the copy out; polled or synchronised likewise;
  - eager and torch.compile paths: one copy each way (pinned buffers), then a synchronise.
A poll waits at most timeout_s, then synchronises; if the answer still is not there the call
raises (one line) and the next call starts from the GPU's own call count.
"""
from __future__ import annotations

import atexit
import contextlib
import time
import weakref

import numpy as np
import torch

from config import load_config, validate_variant
from data import norm_consts, normalize
from host_io import check_image, poll_answer
from models import FastNet, load_model, param_bytes
from path_net import folded_net, kernel_notes
from tta import TTA_VIEWS
from utils import KitError, load_checkpoint, resolve_checkpoint, resolve_device

SEQ_MASK = (1 << 27) - 1  # the call number an answer word keeps (kernels.SEQ_MASK)


_AHEAD = weakref.WeakSet()  # predictors that launch ahead: drained at exit, before modules are torn down


@atexit.register
def _drain_at_exit():
    for clf in list(_AHEAD):
        clf.drain()


def capture_graph(fn, *args, warmup=3):
    """Capture fn(*args) in a CUDA graph after a few warm-up calls on a side stream."""
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(warmup):
            fn(*args)
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        out = fn(*args)
    torch.cuda.synchronize()
    return g, out


# ============================================================================= Predictor
class Predictor:
    """One variant's inference path, built once; clf(img) -> class id, end to end.

      clf = Predictor.load("F")                  # or Predictor(cfg, "F", device)
      clf(img)                                   # uint8 (32, 32, 3) numpy -> int
      clf.predict(imgs)                          # (N, 32, 32, 3) -> int64 array
      clf.run_static()                           # device-side call on the static device input
                                                 # (what the graph-only / GPU columns time)
    """

    @classmethod
    def load(cls, what="F", cfg=None, device="auto", timeout_s=1.0):
        """A variant of the config (default config.yaml), or a checkpoint path / @tag run
        through variant F's path (fastnet) or plain FP32 (other models)."""
        cfg = cfg or load_config()
        if what in cfg.variants:
            return cls(cfg, what, resolve_device(device), timeout_s=timeout_s)
        model = load_checkpoint(resolve_checkpoint(cfg, what))["model"]
        return cls(cfg, "F" if model == "fastnet" else plain_variant(cfg), resolve_device(device), checkpoint=what,
                   timeout_s=timeout_s)

    def __init__(self, cfg, variant, device, checkpoint=None, expected_model=None, timeout_s=1.0):
        if variant not in cfg.variants:
            raise KitError(f"unknown variant '{variant}' (valid: {', '.join(cfg.variants)})")
        v = cfg.variants[variant]
        self.variant, self.device, self.notes, self.timeout_s = variant, device, [], float(timeout_s)
        self.label = v.label
        self.ckpt_path = resolve_checkpoint(cfg, checkpoint or v.checkpoint)
        model, ck = load_model(self.ckpt_path, expected_model or v.get("model") or None, cfg=cfg)
        self.model_name = ck["model"]
        self.ck_meta = {k: ck.get(k) for k in ("shape", "tta", "train_time_s", "recipe_time_s", "compile_s", "test_acc",
                                               "seed", "role", "tag")}
        self.ck_meta["shape"] = self.ck_meta["shape"] or ck.get("front")  # files before v3 called it 'front'
        self._check_variant(v, model)
        cuda = device.type == "cuda"
        # On the CPU the kit measures nothing the study reports: the same weights and folding
        # in FP32 eager (no FP16, no CUDA graph, no torch.compile and its C++ build), said so.
        self.precision = v.precision if cuda else "fp32"
        self.compile = v.compile if cuda else "none"
        self.cuda_graph, self.kernels = v.cuda_graph and cuda, v.kernels and cuda
        if not cuda and (v.precision != "fp32" or v.cuda_graph or v.compile != "none"):
            self.notes.append("cpu fallback: fp32 eager (no CUDA graph, no torch.compile)")
        if not cuda and v.kernels:
            self.notes.append("cpu fallback: torch ops instead of the Triton kernels")
        self.tta = ck.get("tta", "none") if v.tta == "ckpt" else v.tta
        if self.tta not in TTA_VIEWS:
            raise KitError(f"{self.ckpt_path}: unknown tta mode '{self.tta}' (valid: {', '.join(TTA_VIEWS)})")
        self.dtype = torch.float16 if self.precision == "fp16" else torch.float32
        self.memory_format = v.memory_format
        self.mem = torch.channels_last if v.memory_format == "channels_last" else torch.contiguous_format
        self.fold_bn, self.cudnn_relu = v.fold_bn, v.cudnn_relu
        self.fold_norm = v.fold_bn and isinstance(model, FastNet)
        self.e2e_input = v.e2e_input if self.kernels else "copy"
        self.e2e_wait = v.e2e_wait if self.cuda_graph else "sync"
        self.e2e_launch = v.e2e_launch if self.kernels else "call"
        self.ahead_ms = float(v.e2e_ahead_ms)
        self.e2e_gate = v.e2e_gate
        self.e2e_polls = v.e2e_polls
        self.expired_calls = 0  # calls launched ahead whose gate expired before their image came
        self._cfg = cfg
        self._fold_args = dict(fold_bn=v.fold_bn, cudnn_relu=v.cudnn_relu, device=device, dtype=self.dtype,
                               mem=self.mem, tta=self.tta, kernels=self.kernels, kernel_tiles=v.kernel_tiles,
                               kernel_pdl=v.kernel_pdl, kernel_pdl_trigger=v.kernel_pdl_trigger,
                               kernel_split_meet=v.kernel_split_meet,
                               kernel_engine=v.kernel_engine, kernel_cluster_blocks=v.kernel_cluster_blocks)
        self.net = folded_net(cfg, model, self._fold_args)
        self.kn = self.net.kn if self.kernels else None
        if self.kn is not None:
            self.notes.append(kernel_notes(self.kn))
        self.size_mb = (self.kn.weight_bytes() if self.kn is not None else param_bytes(self.net)) / 1e6
        self.n_params = sum(p.numel() for p in model.parameters())
        self.mean, self.std = norm_consts(cfg.data.mean, cfg.data.std, device)
        self.fn = torch.compile(self.net, mode=self.compile, dynamic=False) if self.compile != "none" else self.net
        self.batch1_only = self.cuda_graph or self.compile != "none"
        t0 = time.time()
        self._build_calls(cuda)
        self.build_s = time.time() - t0
        if cuda:
            self.notes.append(f"e2e: input {self.e2e_input}, wait {self.e2e_wait}, launch {self.e2e_launch}")

    @staticmethod
    def _check_variant(v, model):
        if v.cudnn_relu and not v.fold_bn:
            raise KitError(f"variant {v.label!r}: cudnn_relu needs fold_bn (the fused kernel takes folded weights)")
        if v.cuda_graph and v.compile in ("reduce-overhead", "max-autotune"):
            raise KitError(f"variant {v.label!r}: compile mode '{v.compile}' makes its own CUDA graphs; "
                           "set cuda_graph: false or use max-autotune-no-cudagraphs")
        if v.kernels and not (v.fold_bn and isinstance(model, FastNet) and v.cuda_graph):
            raise KitError(f"variant {v.label!r}: kernels need a fastnet checkpoint, fold_bn: true and "
                           "cuda_graph: true")
        if v.e2e_input == "tagged" and v.e2e_launch != "serve":
            raise KitError(f"variant {v.label!r}: e2e_input 'tagged' needs e2e_launch: serve (the serving kernel's "
                           "gate reads it); use e2e_input: mapped")
        if v.e2e_input == "mapped" and not v.kernels:
            raise KitError(f"variant {v.label!r}: e2e_input 'mapped' needs kernels: true (torch ops cannot read "
                           "host memory); use e2e_input: copy")
        if v.kernel_pdl_trigger != "early" and not (v.kernels and v.kernel_pdl):
            raise KitError(f"variant {v.label!r}: kernel_pdl_trigger '{v.kernel_pdl_trigger}' needs kernels: true "
                           "and kernel_pdl: true; remove it or set both")
        if v.kernel_split_meet != "count" and not (v.kernels and v.kernel_engine == "triton"):
            raise KitError(f"variant {v.label!r}: kernel_split_meet '{v.kernel_split_meet}' needs kernels: true and "
                           "kernel_engine: triton (one kernel per layer); remove it or set both")
        if v.kernel_engine == "cluster" and not (v.kernels and not v.kernel_pdl):
            raise KitError(f"variant {v.label!r}: kernel_engine 'cluster' needs kernels: true and kernel_pdl: false "
                           "(the whole net is one kernel); or use kernel_engine: triton")
        if v.kernel_cluster_blocks != 16 and v.kernel_engine != "cluster":
            raise KitError(f"variant {v.label!r}: kernel_cluster_blocks {v.kernel_cluster_blocks} needs "
                           "kernel_engine: cluster; remove it or set both")
        if v.e2e_launch != "call" and not (v.kernels and v.e2e_input in ("mapped", "tagged") and v.e2e_wait == "poll"):
            raise KitError(f"variant {v.label!r}: e2e_launch '{v.e2e_launch}' needs kernels: true, e2e_input: mapped "
                           "and e2e_wait: poll (its first kernel waits on host memory); use e2e_launch: call")
        if v.e2e_gate != "kernel" and not (v.e2e_launch == "ahead" and v.kernel_engine == "triton"):
            raise KitError(f"variant {v.label!r}: e2e_gate '{v.e2e_gate}' needs e2e_launch: ahead and kernel_engine: "
                           "triton (a cluster kernel is its own gate); remove it or set both")
        if v.e2e_polls != 1 and v.e2e_gate not in ("stem", "stage"):
            raise KitError(f"variant {v.label!r}: e2e_polls {v.e2e_polls} needs e2e_gate: stem or stage (the first "
                           "layer's program that polls the flag); remove it or set both")
        if v.e2e_launch == "serve" and v.kernel_engine != "cluster":
            raise KitError(f"variant {v.label!r}: e2e_launch 'serve' needs kernel_engine: cluster (one kernel that "
                           "stays and answers every call); use e2e_launch: ahead")

    # -- build -----------------------------------------------------------------------------------
    def _build_calls(self, cuda):
        """Warm up / compile / capture: the device-side call on static_in and the end-to-end call."""
        dev = self.device
        self._graph, self._fast, self._cuda = None, None, cuda
        self._pending = False  # ahead: the next call's graph is launched and waits; serve: the kernel runs
        self.calls = 0  # answers received; the GPU counts its own in self._seq
        with torch.inference_mode():
            self.static_in = self.prepare(torch.randint(0, 256, (1, 3, 32, 32), dtype=torch.uint8, device=dev))
            if self.compile != "none" and not self.cuda_graph:
                for _ in range(3):  # compile (and record cudagraphs) now, not inside a timed run
                    self.fn(self.static_in)
            if self.cuda_graph:
                self._graph, self.static_out = capture_graph(self.fn, self.static_in)
            if not cuda:
                return
            self.h_in = torch.zeros((1, 32, 32, 3), dtype=torch.uint8).pin_memory()
            self.h_word = torch.zeros(4, dtype=torch.int32).pin_memory()  # 16 bytes: word 0 is the answer
            # a gate's flag words: 0, the call number (written last); 1, a serving kernel's stop word
            self.h_flag = torch.zeros(4, dtype=torch.int32).pin_memory()
            self._h_in_np, self._word_np, self._flag_np = self.h_in.numpy()[0], self.h_word.numpy(), self.h_flag.numpy()
            self._seq = torch.zeros(1, dtype=torch.int32, device=dev)
            self._d_word = torch.zeros(4, dtype=torch.int32, device=dev)
            self.d_in = torch.zeros((1, 32, 32, 3), dtype=torch.uint8, device=dev)
            if self.cuda_graph:
                self._e2e_graph, _ = capture_graph(self._e2e_graph_body)
            if self.e2e_launch == "ahead":
                self._build_ahead()
            if self.e2e_launch == "serve":
                self._build_serve()
            self._resync()  # the warm-up runs of the capture counted calls on the GPU
            self._fast = self._fast_call()

    @contextlib.contextmanager
    def _gated(self):
        """Around the build of a kernel that waits at a gate (on the flag words, h_flag): its own
        stream (nothing else queues behind the gate); once built, answer words 1-2 reset and a
        drain at exit.  A rebuild (tools/e2e_trace.py) keeps the flag words, which the fast call
        writes."""
        self._stream = torch.cuda.Stream(self.device)
        yield
        self._word_np[1:3] = -1  # word 1: the last call whose gate expired; 2: whose gate started (none)
        _AHEAD.add(self)

    def _build_ahead(self):
        """The graph launched ahead of its call: gated_net's kernels, captured once."""
        with self._gated():
            torch.cuda.synchronize()
            self.gated_net(0.0)  # compiles the gated kernels (they expire at once; _resync takes the count)
            torch.cuda.synchronize()
            self._ahead_graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self._ahead_graph):
                self.gated_net(self.ahead_ms)
            torch.cuda.synchronize()

    def gated_net(self, limit_ms):
        """The kernels of one call launched ahead: the gate, waiting at most limit_ms for the host's
        flag word (a kernel of its own, or with e2e_gate: stem / stage in the first layer's kernel),
        then the net reading the image from host memory (stage: from the device copy the gate's
        polling program makes) and writing the answer word."""
        answer = (self._seq, self.h_word)
        if self.e2e_gate in ("stem", "stage"):
            self.kn(self.h_in, answer=answer, gate=(self.h_flag, limit_ms), stage=self.e2e_gate == "stage",
                    polls=self.e2e_polls)
            return
        self.kn.gate(self.h_flag, self._seq, self.h_word, limit_ms)
        self.kn(self.h_in, answer=answer)

    def _build_serve(self):
        """The serving kernel's host words (tagged: the image buffer too) and stream."""
        with self._gated():
            if self.e2e_input == "tagged":  # the image with its call number in every chunk (no call yet: -1)
                from cluster_net import TAGGED_SHAPE
                self.h_tag = torch.full(TAGGED_SHAPE, -1, dtype=torch.int32).pin_memory()
                self._tag_np = self.h_tag.numpy()

    def _start_server(self):
        """Launch the serving kernel (not timed by bench.py: settle() starts it); it waits for
        the next call's number in flag word 0."""
        self._flag_np[1] = 0
        self._word_np[1] = -1  # no kernel runs now: no expiry left to read
        self._stream.wait_stream(torch.cuda.current_stream(self.device))  # the weights' copies, if any
        with torch.cuda.stream(self._stream):
            self.kn.serve(self.h_flag, self.ahead_ms)
            self.kn(self.h_tag if self.e2e_input == "tagged" else self.h_in, answer=(self._seq, self.h_word))
        self._pending = True

    def _stop_server(self):
        """Set the stop word and wait for the serving kernel to end (drain)."""
        self._flag_np[1] = 1
        self._stream.synchronize()  # it ends at its gate, within one call's time
        self._flag_np[1] = 0
        self._pending = False

    def _e2e_graph_body(self):
        """What the end-to-end graph holds (captured once): image in, net, answer word out."""
        if self.kn is not None and self.e2e_input in ("mapped", "tagged"):  # the first kernel reads host memory
            self.kn(self.h_in, answer=(self._seq, self.h_word))
            return
        self.d_in.copy_(self.h_in, non_blocking=True)
        if self.kn is not None:
            self.kn(self.d_in, answer=(self._seq, self._d_word))
        else:
            cls = torch.argmax(self.fn(self.prepare(self.d_in.permute(0, 3, 1, 2))), dim=1).to(torch.int32)
            self._seq.add_(1)
            self._d_word[:1].copy_(((self._seq & SEQ_MASK) << 4) | cls)
        self.h_word[:1].copy_(self._d_word[:1], non_blocking=True)

    # -- calls -----------------------------------------------------------------------------------
    def prepare(self, x_u8):
        """uint8 NCHW (possibly a channels_last view) -> this path's input (dtype, layout,
        normalised unless the normalisation is folded into the first layer)."""
        x = x_u8.to(self.dtype) if self.fold_norm else normalize(x_u8, self.mean, self.std, self.dtype)
        return x.contiguous(memory_format=self.mem)

    def logits(self, x):
        """Logits of a prepared device batch; CUDA-graph paths take batch 1 and replay their
        graph (x is copied into the graph's input unless it is static_in itself)."""
        self.drain()  # the same kernels' buffers
        with torch.inference_mode():
            if self._graph is None:
                return self.fn(x)
            if x is not self.static_in:
                self.static_in.copy_(x)
            self._graph.replay()
            return self.static_out

    def run_static(self):
        """The device-side call on the static device input (no copy in or out)."""
        return self.logits(self.static_in)

    def __call__(self, img):
        """End to end: one uint8 (32, 32, 3) numpy image in host memory -> class id (int)."""
        fast = self._fast
        if fast is not None:
            return fast(img)
        return self._call(img)

    def _call(self, img):
        """The general call: every path, every input (a bad one raises check_image's line)."""
        check_image(img)
        if not self._cuda:
            with torch.inference_mode():
                x = self.prepare(torch.from_numpy(img)[None].permute(0, 3, 1, 2))
                return int(torch.argmax(self.fn(x), dim=1))
        if self.e2e_launch == "serve":
            return self._call_serve(img)
        self._h_in_np[...] = img
        if self.e2e_launch == "ahead":
            return self._call_ahead()
        if self.cuda_graph:
            self._e2e_graph.replay()
            return self._wait(self.calls + 1)
        with torch.inference_mode():  # eager / torch.compile: one copy each way, then a synchronise
            self.d_in.copy_(self.h_in, non_blocking=True)
            cls = torch.argmax(self.fn(self.prepare(self.d_in.permute(0, 3, 1, 2))), dim=1).to(torch.int32)
            self.h_word[:1].copy_(cls, non_blocking=True)
            torch.cuda.current_stream().synchronize()
        self.calls += 1
        return int(self._word_np[0])

    def _fast_call(self):
        """The call of a polled path of our kernels (a graph per call, launched ahead, or a serving
        kernel, on the mapped image) as one closure whose buffers are locals; None for other paths.
        It does what _call does without the attribute lookups, method calls and numpy scalar reads
        that made up most of that call's host time: the input checked by identity and tuple
        comparisons, the flag and answer words written and read through memoryviews.  Anything out
        of the ordinary goes the general way: an input that is not exactly a C-contiguous uint8
        ndarray of (32, 32, 3) (_call: its one-line error, or the call of a valid subclass), no graph
        launched ahead or no serving kernel running, an answer not in after 16,384 polls (then the
        bounded wait), an expired gate, a serving kernel that ended (_finish)."""
        if not (self.kernels and self.e2e_input == "mapped" and self.e2e_wait == "poll"):
            return None
        ndarray, u8, shape, strides = np.ndarray, np.dtype(np.uint8), (32, 32, 3), (96, 3, 1)
        h_in, word, flag = self._h_in_np, memoryview(self._word_np), memoryview(self._flag_np)
        ahead, serve = self.e2e_launch == "ahead", self.e2e_launch == "serve"
        me = weakref.ref(self)  # not self: the closure must not keep its predictor alive (__del__ drains)

        def call(img):
            p = me()
            if type(img) is not ndarray or img.dtype is not u8 or img.shape != shape or img.strides != strides:
                return p._call(img)
            h_in[...] = img
            n = p.calls + 1
            want = n & SEQ_MASK
            if ahead:
                if not p._pending:
                    return p._call_ahead()
                flag[0] = want
                p._launch_ahead()  # the next call's graph, behind this one (off the critical path)
            elif serve:
                if not p._pending:
                    return p._serve(n)
                flag[0] = want
            else:
                p._e2e_graph.replay()
            spins = 0
            while (word[0] >> 4) != want:
                spins += 1
                if spins & 63 == 0 and (spins >= 16384 or (serve and word[1] == want)):
                    return p._finish(n)
            w = word[0]
            if ahead and word[1] == want:
                return p._finish(n)
            p.calls = n
            return w & 15
        return call

    def _finish(self, n):
        """Call n of the fast call, its flag written (and its graph launched) but no answer of its
        own in yet: the general way from there (the bounded wait, an expiry, a relaunch)."""
        if self.e2e_launch == "serve":
            return self._serve(n, flagged=True)
        cls = self._wait(n)
        if self.e2e_launch == "ahead" and int(self._word_np[1]) == n & SEQ_MASK:
            self.expired_calls += 1
            return self._call_ahead(tries=1)
        return cls

    def _call_ahead(self, tries=2):
        """This call's graph is launched and waits for its flag: write it (the image is in), launch
        the next call's graph behind this one (while the GPU works), wait for the answer.  If the
        gate had expired, that answer is of an old image: the graph behind it takes this one."""
        for _ in range(tries):
            n = self.calls + 1
            if not self._pending:  # the first call, or after drain() or a failed call
                self._launch_ahead()
            self._flag_np[0] = n & SEQ_MASK
            self._launch_ahead()
            cls = self._wait(n)
            if int(self._word_np[1]) != n & SEQ_MASK:
                return cls
            self.expired_calls += 1
        raise KitError(f"{self.variant}: the graph launched for call {n} expired although its image was there; "
                       "the next call starts afresh")

    def _call_serve(self, img):
        """The serving kernel waits for this call: write the image (tagged: with the call's
        number), then _serve."""
        n = self.calls + 1
        if self.e2e_input == "tagged":
            self.kn.tag_image(self._tag_np, img, n & SEQ_MASK)
        else:
            self._h_in_np[...] = img
        return self._serve(n)

    def _serve(self, n, flagged=False):
        """Write call n's number (unless flagged: written already), poll the answer.  If the kernel
        had ended (no call for e2e_ahead_ms) it says so in word 1: launch it again, it then takes
        this call."""
        want = n & SEQ_MASK
        for _ in range(2):
            if not flagged:
                if not self._pending:
                    self._start_server()
                self._flag_np[0] = want
            flagged = False
            cls = self._wait(n, gone_at=1)  # one bounded wait: the answer, one clear error, or None
            if cls is not None:
                return cls
            self._pending = False  # it ended waiting for this call
            self._stream.synchronize()
            self.expired_calls += 1
        return self._wait(n)  # it ended twice without this call: the bounded wait, then the answer or the error

    def _launch_ahead(self):
        with torch.cuda.stream(self._stream):
            self._ahead_graph.replay()
        self._pending = True

    def drain(self):
        """e2e_launch: ahead: let the graph launched for the next call run now (on the last image,
        its answer unused) and wait for it; serve: stop the serving kernel and wait for it; so
        that this predictor leaves nothing on the GPU.  Do it before work that needs every SM (the
        persistent kernel) or a device-wide synchronise, which would otherwise wait out the gate's
        limit (e2e_ahead_ms).  The next call launches afresh.  run_static(), logits() and
        swap_weights() drain first themselves."""
        if self._pending and self.e2e_launch == "serve":
            self._stop_server()
        if self._pending:
            n = self.calls + 1
            self._flag_np[0] = n & SEQ_MASK
            self._wait(n)
            self._pending = False

    def settle(self):
        """Wait until this predictor is ready for the next call (bench.py, between timed calls): a
        device synchronise (the GPU idle), or with a graph launched ahead (or a serving kernel,
        launched here if none runs) until its gate has started, waiting for the image (its ready
        stamp, answer word 2; a synchronise would wait for the gate to expire)."""
        if not self._cuda:
            return
        if not self._pending and self.e2e_launch == "serve":
            self._start_server()
        if not self._pending:
            torch.cuda.synchronize()
            return
        n = self.calls + 1
        if not poll_answer(self._word_np, n & SEQ_MASK, self.timeout_s, at=2, shift=0):
            self._resync()
            raise KitError(f"{self.variant}: the graph launched for call {n} did not start "
                           f"within {self.timeout_s:g} s; the next call starts afresh")

    def __del__(self):
        # a graph still waiting would run on freed buffers once its gate expired
        if getattr(self, "_pending", False):
            self.drain()

    def _wait(self, n, gone_at=None):
        """The class id of call n from the answer word: polled (at most timeout_s, then a
        synchronise) or after a synchronise.  gone_at: the word in which a serving kernel names
        the call it ended without (poll_answer); None, at once, if that is call n."""
        want, word = n & SEQ_MASK, self._word_np
        if self.e2e_wait == "poll" and poll_answer(word, want, self.timeout_s, gone_at=gone_at) is None:
            return None  # no synchronise: the caller launches the kernel again for this call
        if self.e2e_wait == "sync" or (int(word[0]) >> 4) != want:  # sync: always; poll: the bounded wait ran out
            torch.cuda.synchronize()
        w = int(word[0])
        if (w >> 4) != want:
            self._resync()
            raise KitError(f"{self.variant}: the GPU gave no answer to call {n} within {self.timeout_s:g} s "
                           f"(answer word holds call {w >> 4}); the next call starts afresh")
        self.calls = n
        return w & 15

    def _resync(self):
        """After a missing answer: take the GPU's own call count, so the next call waits for the
        right word (the device counter moves only when a graph ran to its end).  A graph launched
        ahead has ended too then (its gate expired); a serving kernel is stopped first."""
        if self._pending and self.e2e_launch == "serve":
            self._stop_server()  # else the synchronise would wait out e2e_ahead_ms
        torch.cuda.synchronize()
        self._pending = False
        if self.e2e_launch == "serve" and self.e2e_input == "tagged":
            self._tag_np[:, 3] = -1  # a failed call's number must not pass for the next call's
        self.calls = int(self._seq.item())

    def predict(self, imgs, batch_size=500):
        """Class ids of a stack (N, 32, 32, 3) uint8: batches through eager paths, one end-to-end
        call per image through batch-1 paths (CUDA graph, torch.compile)."""
        check_image(imgs, stack=True)
        if self.batch1_only:
            return np.fromiter((self(img) for img in imgs), dtype=np.int64, count=len(imgs))
        out = np.empty(len(imgs), dtype=np.int64)
        with torch.inference_mode():
            for i in range(0, len(imgs), batch_size):
                x = torch.from_numpy(imgs[i:i + batch_size]).to(self.device).permute(0, 3, 1, 2)
                out[i:i + batch_size] = torch.argmax(self.fn(self.prepare(x)), dim=1).cpu().numpy()
        return out

    def info(self):
        """The results.csv columns that describe this inference path."""
        return {"variant": self.variant, "label": self.label, "model": self.model_name,
                "precision": self.precision, "memory_format": self.memory_format, "fold_bn": self.fold_bn,
                "cudnn_relu": self.cudnn_relu, "compile": self.compile, "cuda_graph": self.cuda_graph,
                "checkpoint": self.ckpt_path, "size_mb": self.size_mb, "n_params": self.n_params,
                "tta": self.tta, "kernels": self.kernels,
                "io": (f"{self.e2e_input}+{self.e2e_wait}" + (f"+{self.e2e_launch}" if self.e2e_launch != "call" else ""))
                if self.device.type == "cuda" else ""}

    @torch.no_grad()
    def swap_weights(self, ckpt_path):
        """Copy another checkpoint of the same architecture into this path's weights, in place:
        the compiled code and both CUDA graphs read the same memory, so the next calls run the
        new weights through exactly the timed path (bench.py uses it for every seed's accuracy)."""
        model = load_model(ckpt_path, self.model_name, cfg=self._cfg)[0]
        self.drain()
        if self.kn is not None:  # KernelNet keeps repacked weights of its own: it copies them in itself
            try:
                self.kn.load_weights(*model.eval().folded_spec(self._cfg.data.mean, self._cfg.data.std))
            except ValueError as e:
                raise KitError(f"{ckpt_path}: not the same architecture as {self.ckpt_path} ({e})") from None
            return
        other = folded_net(self._cfg, model, self._fold_args)
        mine = list(self.net.parameters()) + list(self.net.buffers())
        theirs = list(other.parameters()) + list(other.buffers())
        if not mine or len(mine) != len(theirs) or any(a.shape != b.shape for a, b in zip(mine, theirs)):
            raise KitError(f"{ckpt_path}: not the same architecture as {self.ckpt_path}")
        for a, b in zip(mine, theirs):
            a.copy_(b)

    def set_kernel_tiles(self, tiles):
        """Run our kernels with other tiles (one dict per layer, as self.kn.tiles() gives them)
        and capture both CUDA graphs again: tools/chain_tune.py times every candidate through
        this same end-to-end call.  Answers stay the same up to fp16 rounding."""
        if self.kn is None:
            raise KitError(f"{self.variant}: not a path of our kernels (no tiles to set)")
        self.drain()
        torch.cuda.synchronize()
        self.kn.set_tiles(tiles)
        self.notes = [kernel_notes(self.kn) if n.startswith("kernel tiles:") else n for n in self.notes]
        self._build_calls(self.device.type == "cuda")


def plain_variant(cfg):
    """Add (once) and name the plain FP32 eager variant: every path key at its default."""
    if "plain" not in cfg.variants:
        cfg.variants["plain"] = type(cfg)(validate_variant({"label": "plain FP32", "checkpoint": "@final",
                                                            "table": False}, "variants.plain"))
    return "plain"
