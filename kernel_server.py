"""The persistent kernel (serve_kernel) and its host side: KernelServer answers batch-1 calls
through one launch that stays on the GPU, so a call costs no kernel launch at all.

    srv = KernelServer(kn)         # kn: a batch-1 KernelNet (its layers, tiles and head)
    srv.start()                    # the kernel now waits for requests, spinning on the SMs
    cls = srv(img)                 # uint8 (32, 32, 3) numpy -> class id: write image, write request, poll
    srv.stop()                     # a negative request ends the kernel

A call: the host copies the image into a pinned buffer and then writes the request number
into a pinned word; program 0 of the kernel, polling that word over PCIe, copies the image to
the device in one read; the layers run as in the graph path (same work items, same tiles),
their programs meeting at a grid barrier between layers; the head writes (request << 4) |
class id into the pinned answer word, which the host polls.

While it runs, the kernel holds a program on every SM and spins: stop() it before the process
uses the GPU otherwise.  A device-wide synchronise (torch.cuda.synchronize) would wait for it
forever, and a CUDA-graph call of the same process made while it ran was seen to hang.
Under the Triton interpreter (the CPU tests) the kernel runs one program, one request per
launch: the same code path without the spinning.
"""
import math
import time

import numpy as np
import torch

import kernels
from host_io import check_image, poll_answer
from kernel_net import _interpreting, _k_steps, scratch_shape
from utils import KitError

triton, tl = kernels.triton, kernels.tl

# one layer's constants in serve_kernel, in this order
LAYER_FIELDS = ("H", "W", "CIN", "COUT", "KH", "PAD", "S", "WO", "HWO", "ACT", "BP", "BN", "BK", "KI", "GENERIC",
                "HEAD", "M_TILES", "N_TILES", "SPLIT", "XOFF", "WOFF", "BOFF", "YOFF", "POFF", "COFF", "VIEW", "ZOUT",
                "ANSWER", "JOIN")
ALIGN = 64  # elements: each layer's slice of an arena starts on a 128-byte line
IMG_BYTES, IMG_BLOCK = 32 * 32 * 3, 4096
STOP = -1
SEQ_MASK = kernels.SEQ_MASK


if triton is not None:
    # the jit functions below call these by name (so they are looked up in this module)
    from kernel_gate import _clock, _fence_acquire
    from kernels import _conv_item

    # ========================================================================= the persistent kernel
    # serve_kernel runs the whole net for every request of a host, in ONE launch that stays on
    # the GPU: no launch per call.  Its programs (all resident at once) take the work items of
    # each layer in turn (the graph path's items: same tiles, same code) and meet at a grid
    # barrier between layers.  Program 0 polls a request word in pinned host memory; the host
    # writes the image into a pinned buffer, then the request number; program 0 copies the
    # image to the device in one coalesced read and releases the others; the last layer's
    # head writes the answer word as in the graph path.  Plain (L1-cached) loads read what
    # other SMs wrote before a barrier: the barrier's acquire fence makes those stores visible
    # and drops stale L1 lines.  A negative request stops the kernel.

    @triton.jit
    def _grid_sync(bar_ptr, gen, NP, ASM: tl.constexpr):
        # bar_ptr: an int64 arrival count that only grows (zeroed before the launch); barrier
        # number gen is passed when it reaches (gen + 1) * NP: one release add per program,
        # then a spin on plain loads of the count and one acquire fence
        tl.debug_barrier()  # this program's stores issued before its arrival
        target = (gen + 1) * NP
        tl.atomic_add(bar_ptr, 1, sem="release", scope="gpu")
        v = tl.load(bar_ptr, volatile=True)
        while v < target:
            v = tl.load(bar_ptr, volatile=True)
        _fence_acquire(ASM)
        tl.debug_barrier()
        return gen + 1

    @triton.jit
    def _layer_phase(pid, NP, x_ptr, w_ptr, b_ptr, y_ptr, part_ptr, cnt_ptr, hmax_ptr, hw_ptr, hb_ptr, out_ptr,
                     hcnt_ptr, view_ptr, vw_ptr, seq_ptr, word_ptr, req, LAYERS: tl.constexpr, LI: tl.constexpr,
                     NB: tl.constexpr, CP: tl.constexpr, NV: tl.constexpr):
        # layer LI's constants (kernel_server.LAYER_FIELDS order; the whole tuple is passed: a
        # tuple argument's items would be passed as values): its work items go round the
        # programs, item = ((pid_m * N_TILES) + pid_n) * SPLIT + sid
        H: tl.constexpr = LAYERS[LI][0]
        W: tl.constexpr = LAYERS[LI][1]
        CIN: tl.constexpr = LAYERS[LI][2]
        COUT: tl.constexpr = LAYERS[LI][3]
        KH: tl.constexpr = LAYERS[LI][4]
        PAD: tl.constexpr = LAYERS[LI][5]
        S: tl.constexpr = LAYERS[LI][6]
        WO: tl.constexpr = LAYERS[LI][7]
        HWO: tl.constexpr = LAYERS[LI][8]
        ACT: tl.constexpr = LAYERS[LI][9]
        BP: tl.constexpr = LAYERS[LI][10]
        BN: tl.constexpr = LAYERS[LI][11]
        BK: tl.constexpr = LAYERS[LI][12]
        KI: tl.constexpr = LAYERS[LI][13]
        GENERIC: tl.constexpr = LAYERS[LI][14]
        HEAD: tl.constexpr = LAYERS[LI][15]
        M_TILES: tl.constexpr = LAYERS[LI][16]
        N_TILES: tl.constexpr = LAYERS[LI][17]
        SPLIT: tl.constexpr = LAYERS[LI][18]
        XOFF: tl.constexpr = LAYERS[LI][19]
        WOFF: tl.constexpr = LAYERS[LI][20]
        BOFF: tl.constexpr = LAYERS[LI][21]
        YOFF: tl.constexpr = LAYERS[LI][22]
        POFF: tl.constexpr = LAYERS[LI][23]
        COFF: tl.constexpr = LAYERS[LI][24]
        VIEW: tl.constexpr = LAYERS[LI][25]
        ZOUT: tl.constexpr = LAYERS[LI][26]
        ANSWER: tl.constexpr = LAYERS[LI][27]
        JOIN: tl.constexpr = LAYERS[LI][28]
        if JOIN:  # M_TILES counts every map's row tiles
            MAPS: tl.constexpr = 1
        else:
            MAPS: tl.constexpr = NB
        N_ITEMS: tl.constexpr = MAPS * M_TILES * N_TILES * SPLIT
        for item in range(pid, N_ITEMS, NP):
            sid = item % SPLIT
            rest = item // SPLIT
            pid_n = rest % N_TILES
            pid_m = rest // N_TILES
            _conv_item(pid_m, pid_n, sid, N_TILES, x_ptr + XOFF, w_ptr + WOFF, b_ptr + BOFF, y_ptr + YOFF,
                       part_ptr + POFF, cnt_ptr + COFF, hmax_ptr, hw_ptr, hb_ptr, out_ptr, hcnt_ptr, view_ptr,
                       vw_ptr, seq_ptr, word_ptr, req, M_TILES, SPLIT, MAPS * M_TILES * N_TILES,
                       H, W, CIN, COUT, KH, PAD, S, WO, HWO, ACT, BP, BN, BK, KI, GENERIC, HEAD, NB, CP, NV, VIEW, ZOUT,
                       False, ANSWER, JOIN, word_ptr, 0, b_ptr, False, 0, 0, 1, cnt_ptr, cnt_ptr, False)

    @triton.jit
    def serve_kernel(req_ptr, img_ptr, dimg_ptr, ctl_ptr, word_ptr, w_ptr, b_ptr, act_ptr, part_ptr, cnt_ptr,
                     hmax_ptr, hw_ptr, hb_ptr, out_ptr, hcnt_ptr, view_ptr, vw_ptr, trace_ptr, bar_ptr, last_req,
                     max_calls, LAYERS: tl.constexpr, NL: tl.constexpr, NB: tl.constexpr, CP: tl.constexpr,
                     NV: tl.constexpr, IMG: tl.constexpr, TRACE: tl.constexpr, ASM: tl.constexpr):
        """The persistent server: requests until a negative one (or max_calls of them: the
        tests' interpreter runs one program to completion before the next).  The layers'
        inputs are the device image (layer 0) or the previous layer's output in act_ptr.
        TRACE: program 0 stamps the GPU clock (ns) when it sees a request, after the image
        copy and after each barrier, into row (request % 256) of trace_ptr [256, 16] int64;
        the program that answers stamps column 15."""
        pid = tl.program_id(0)
        NP = tl.num_programs(0)
        gen = pid.to(tl.int64) * 0  # barriers passed in this launch
        last = last_req
        calls = 0
        run = max_calls > 0
        while run:
            t0 = pid.to(tl.int64) * 0
            t1 = t0
            if pid == 0:  # wait for the host, then bring its image in with one coalesced read
                r = tl.load(req_ptr, volatile=True)
                while r == last:
                    r = tl.load(req_ptr, volatile=True)
                if TRACE:
                    t0 = _clock()
                offs = tl.arange(0, IMG)
                px = tl.load(img_ptr + offs, mask=offs < 3072, cache_modifier=".cv")
                tl.store(dimg_ptr + offs, px, mask=offs < 3072)
                tl.store(ctl_ptr + 16, r)
                if TRACE:
                    t1 = _clock()
            gen = _grid_sync(bar_ptr, gen, NP, ASM)
            last = tl.load(ctl_ptr + 16, volatile=True)
            row = trace_ptr + (last & 255) * 16
            if TRACE:
                stamp = row + 15
            else:
                stamp = ctl_ptr + 48
            if TRACE and pid == 0:
                tl.store(row, t0)
                tl.store(row + 1, t1)
                tl.store(row + 2, _clock())
            if last >= 0:
                for li in tl.static_range(NL):
                    if li == 0:
                        src = dimg_ptr
                    else:
                        src = act_ptr
                    _layer_phase(pid, NP, src, w_ptr, b_ptr, act_ptr, part_ptr, cnt_ptr, hmax_ptr, hw_ptr, hb_ptr,
                                 out_ptr, hcnt_ptr, view_ptr, vw_ptr, stamp, word_ptr, last, LAYERS, li,
                                 NB, CP, NV)
                    if li < NL - 1:  # the answer is out when the last layer ends: no barrier after it
                        gen = _grid_sync(bar_ptr, gen, NP, ASM)
                        if TRACE and pid == 0:
                            tl.store(row + 3 + li, _clock())
            calls += 1
            run = (last >= 0) & (calls < max_calls)


def _slices(sizes):
    """Aligned offsets of consecutive slices, and the arena's length."""
    offs, n = [], 0
    for s in sizes:
        offs.append(n)
        n += -(-int(s) // ALIGN) * ALIGN
    return offs, max(n, ALIGN)


class KernelServer:
    """The persistent kernel of one batch-1 KernelNet (a copy of its weights: refresh() after
    KernelNet.load_weights).  programs: how many (all must be resident at once: at most two per
    SM, the most that was run; default one per SM; 1 under the interpreter).  fit_split: split-K
    refitted so that each layer's work items fill one round of the programs (else the tiles')."""

    def __init__(self, kn, programs=None, timeout_s=1.0, trace=False, fit_split=False):
        if any(kn.meet(i) != "count" for i in range(len(kn.specs))):
            raise ValueError("KernelServer meets each layer's K slices by arrival count: build the KernelNet with "
                             "split_meet='count'")
        if kn.batch != 1:
            raise ValueError("KernelServer answers batch-1 calls: build the KernelNet with batch=1")
        self.kn, self.timeout_s, self.trace, self.fit_split = kn, float(timeout_s), bool(trace), bool(fit_split)
        self.interp = _interpreting()
        dev = kn.device
        n = int(programs or kn.n_sm)
        if not 1 <= n <= 2 * kn.n_sm:
            raise ValueError(f"programs={n}: give 1..{2 * kn.n_sm} (all must be resident at once)")
        self.programs = 1 if self.interp else n
        specs = kn.specs
        self.splits = [self._split(sp) for sp in specs]
        w_off, nw = _slices(sp["w"].numel() for sp in specs)
        b_off, nbias = _slices(sp["b"].numel() for sp in specs)
        y_off, ny = _slices(sp["y"].numel() for sp in specs)
        p_off, npart = _slices(math.prod(scratch_shape(sp["meta"], sp["tiles"], kn.nb, sp["m_tiles"], k))
                               for sp, k in zip(specs, self.splits))
        c_off, ncnt = _slices(sp["cnt"].numel() for sp in specs)
        self.w = torch.zeros(nw, dtype=torch.float16, device=dev)
        self.b = torch.zeros(nbias, dtype=torch.float32, device=dev)
        self.act = torch.zeros(ny, dtype=torch.float16, device=dev)
        self.part = torch.zeros(npart, dtype=torch.float32, device=dev)
        self.cnt = torch.zeros(ncnt, dtype=torch.int32, device=dev)
        self._w_off, self._b_off = w_off, b_off
        self.refresh()
        self.hmax = torch.full_like(kn.hmax, float("-inf"))
        self.hcnt = torch.zeros_like(kn.hcnt)
        self.out = torch.zeros_like(kn.out)
        self.dimg = torch.zeros(IMG_BLOCK, dtype=torch.uint8, device=dev)
        self.trace_buf = torch.zeros(256, 16, dtype=torch.int64, device=dev)
        self.ctl = torch.zeros(64, dtype=torch.int32, device=dev)  # [16]: the request; [48]: a never-written stamp slot
        self.bar = torch.zeros(16, dtype=torch.int64, device=dev)  # the barrier's arrival count, zeroed per launch
        pin = not self.interp
        self.h_req = torch.zeros(16, dtype=torch.int32, pin_memory=pin)
        self.h_img = torch.zeros(IMG_BLOCK, dtype=torch.uint8, pin_memory=pin)
        self.h_word = torch.zeros(16, dtype=torch.int32, pin_memory=pin)
        self._req_np, self._img_np, self._word_np = self.h_req.numpy(), self.h_img.numpy(), self.h_word.numpy()
        self.layers = tuple(self._layer(i, sp, w_off[i], b_off[i], y_off, p_off[i], c_off[i])
                            for i, sp in enumerate(specs))
        self.req = 0  # the last request number written
        self.running = False
        self._stream = None if self.interp else torch.cuda.Stream(device=dev)  # a non-blocking stream
        self._done = None

    def _split(self, sp):
        """The layer's split-K: its tiles' (graph path), or with fit_split as many K slices as
        keep the layer's work items within one round of the programs."""
        if not self.fit_split:
            return sp["tiles"]["SPLIT"]
        base = sp["grid"][0] * sp["grid"][1]  # the layer's tiles (every map's)
        return int(max(1, min(self.programs // base, _k_steps(sp["meta"], sp["tiles"]) // 2)))

    def _layer(self, i, sp, woff, boff, y_off, poff, coff):
        kn, m, t = self.kn, sp["meta"], sp["tiles"]
        last = i == len(kn.specs) - 1
        v = dict(m, HWO=m["HO"] * m["WO"], BP=t["BP"], BN=t["BN"], BK=t["BK"], KI=_k_steps(m, t),
                 GENERIC=int(bool(t["GENERIC"])), HEAD=kn.head_mode(i), M_TILES=sp["m_tiles"],
                 N_TILES=sp["grid"][1], SPLIT=self.splits[i], XOFF=0 if i == 0 else y_off[i - 1], WOFF=woff,
                 BOFF=boff, YOFF=y_off[i], POFF=poff, COFF=coff, VIEW=int(i == 0 and kn.views_in_kernel),
                 ZOUT=int(i == 0 and len(kn.specs) > 1), ANSWER=int(last), JOIN=int(bool(t.get("JOIN"))))
        return tuple(int(v[k]) for k in LAYER_FIELDS)

    @torch.no_grad()
    def refresh(self):
        """Copy the KernelNet's packed weights and biases in (the server must be stopped)."""
        if getattr(self, "running", False):
            raise KitError("KernelServer.refresh: stop the server first")
        for sp, wo, bo in zip(self.kn.specs, self._w_off, self._b_off):
            self.w[wo:wo + sp["w"].numel()].copy_(sp["w"].flatten())
            self.b[bo:bo + sp["b"].numel()].copy_(sp["b"].flatten())

    # -- the kernel ----------------------------------------------------------------------------
    def _launch(self, max_calls, last_req):
        kn = self.kn
        serve_kernel[(self.programs,)](
            self.h_req, self.h_img, self.dimg, self.ctl, self.h_word, self.w, self.b, self.act, self.part, self.cnt,
            self.hmax, kn.hw, kn.hb, self.out, self.hcnt, kn.view_t, kn.view_w, self.trace_buf, self.bar, last_req,
            max_calls, LAYERS=self.layers, NL=len(self.layers), NB=kn.nb, CP=kn.cp, NV=kn.nv, IMG=IMG_BLOCK,
            TRACE=self.trace, ASM=not self.interp,
            num_warps=4, num_stages=3)

    def start(self):
        """Launch the kernel (compiled at the first start); it then waits for requests."""
        if self.running:
            return
        self._req_np[0] = self.req  # nothing new to answer yet
        if self.interp:  # one launch per request (__call__)
            self.running = True
            return
        with torch.cuda.stream(self._stream):
            self.bar.zero_()
            self._launch(2 ** 31 - 1, self.req)
            self._done = torch.cuda.Event()
            self._done.record(self._stream)
        self.running = True

    def stop(self):
        """A negative request ends the kernel; wait (at most timeout_s) until it has."""
        if not self.running:
            return
        self.running = False
        if self.interp:
            return
        self._req_np[0] = STOP
        t_end = time.perf_counter() + max(self.timeout_s, 1.0)
        while not self._done.query():
            if time.perf_counter() > t_end:
                raise KitError("the persistent kernel did not stop within "
                               f"{max(self.timeout_s, 1.0):g} s; the process must exit to free the GPU")
            time.sleep(0)

    def alive(self):
        """Is the kernel still running (False after stop, or if it ended by itself)?"""
        return self.running and (self.interp or not self._done.query())

    # -- calls ---------------------------------------------------------------------------------
    def __call__(self, img):
        """img: a uint8 (32, 32, 3) C-contiguous numpy array -> class id (checked as Predictor
        checks it: a bad input is one KitError line and changes nothing)."""
        check_image(img)
        if not self.running:
            raise KitError("KernelServer: start() it first")
        np.copyto(self._img_np[:IMG_BYTES], img.reshape(-1))
        n = self.req % 0x7FFFFFFF + 1  # 1 .. 2^31 - 1: a non-negative int32, never the last one
        self.req = n
        self._req_np[0] = n  # after the image: the kernel reads the image once it sees n
        if self.interp:
            self.bar.zero_()
            self._launch(1, n - 1)
        return self._wait(n)

    def _wait(self, n):
        want, word = n & SEQ_MASK, self._word_np
        if not poll_answer(word, want, self.timeout_s):
            if not self.alive():
                self.running = False
                raise KitError("the persistent kernel is not running (it ended or was never started); "
                               "start() it again")
            raise KitError(f"the persistent kernel gave no answer to request {n} within "
                           f"{self.timeout_s:g} s; the next call sends a new request")
        return int(word[0]) & 15
