"""Triton kernels of the folded fastnet-class CNN at batch 1 (the device side; the host side is
kernel_net.py, the tiles and their cache kernel_tiles.py).

The contract (models.FastNet.folded_spec): a net is a list of folded conv layers
    y = act(maxpool_pool(conv(x, W, padding)) + b)
and a head logits = Wfc @ max_over_HW(x) + bfc.  The first layer reads the raw NHWC image
(uint8 or fp16 pixel values 0..255; the normalisation is folded into its weights).

Design.  One kernel per conv layer, an implicit GEMM over NHWC fp16 activations: rows =
output pixels (for a pooled layer the 4 pre-pool pixels of each pooled pixel sit in 4
consecutive rows, so the pool is a max over groups of 4 rows in the epilogue), columns =
output channels, K = (ky, kx, ci).  At batch 1 a layer has only a handful of (rows x
columns) tiles, far fewer than the GPU's SMs, so the K loop is split over SPLIT programs
(split-K); the partial sums meet in an fp32 scratch buffer through atomics, and the last
program to arrive at a tile (a per-tile arrival counter) reads the sum back, leaves zeros
behind for the next call, and runs the epilogue (pool, bias, activation, fp16 store).  Or
(KernelNet split_meet="next", RAW_OUT) the slices only add into the fp32 sums and the kernel
ends: the next kernel runs this layer's epilogue as it loads them (RAW_IN, _load_a_raw; after
the last layer, head_kernel), so no count, no read-back and no barrier stand between the K loop
and the kernel's end; the first layer's programs zero those sums for the call (ZCH).  Or
(split_meet="flag", FLAG) the tile's last K slice waits for the others' partial tiles, each value
stored beside the call's epoch in one 64-bit word (a flag in every word, as NCCL's LL protocol):
no fence, no count, no read-back round trip; it polls the words until all carry this call's
epoch, sums them with its own and runs the epilogue.  Measured on an H200 (F, in one process), both
are slower than the count: next by ~8 us (the consumer's per-load epilogue: a pooled layer's every
program activates every value it loads), flag by ~4.8 us (its layers' tails grew, 3.25 and 5.0 us
against 1.75 and 2.5 in the trace); they stay as the measured alternatives.
Memory order: the atomics that carry data (the partial sums, the head's maxima and logits)
are relaxed, so a thread's adds go out back to back; only the arrival counts are
acquire-release: the program's thread barrier before its count orders every thread's adds
before the count's release (the pattern of CUTLASS's split-K semaphore), and the last
arrival's acquire orders its read-back after them.  Triton's default order for an atomic,
acq_rel, would wrap each element's atomic in a GPU-wide memory barrier and an L1
invalidation (sm90 SASS), making a tile's adds and read-back a chain of dependent trips to
L2.  The last layer's epilogue also runs the head, so a forward is one kernel per conv
layer, allocates nothing and replays in one CUDA graph.

Getting the image in and the answer out costs no kernel either.  The first layer can read the
image straight from pinned host memory (CUDA unified addressing: a pinned tensor's pointer is
valid on the GPU), and with ANSWER the program that completes the logits also takes their
argmax and writes one 32-bit word, (call number << 4) | class id, into pinned host memory
with a write-through store; the host polls that word (inference.py).

Test-time augmentation costs no kernel: every layer runs one map per (image, view), the first
layer reads view v of its image with mirrored / reflect-shifted input indices (the stem has
no padding, so a view of the image gives exactly the view's feature maps), and the head
returns the weighted sum of the views' logits.

The persistent kernel (kernel_server.serve_kernel) runs these same work items (_conv_item) for call
after call in one launch.

A call's graph can be launched before its image is there (inference.py, e2e_launch: ahead): it
waits on a flag word in host memory that the host writes after the image, in a kernel of its own
(kernel_gate.gate_kernel) or in the first layer's programs (conv_layer_kernel, GATE; with STAGE the program
that polls the flag also copies the image into device memory for the others).

Optionally the kernels use programmatic dependent launch (PDL): each waits for its
predecessor with griddepcontrol.wait after loading its constant operands, so the next
kernel's launch overlaps the current one.  PDL = 1 lets the next kernel launch right after
that wait, PDL = 2 after the K loop (its programs then take the SMs nearer this kernel's end).
"""
try:  # Triton ships with torch on Linux; its absence is reported by kernel_net.available()
    import triton
    import triton.language as tl
    TRITON_ERROR = None
except ImportError as e:
    triton, tl = None, None
    TRITON_ERROR = f"triton not importable: {e}"

from kernel_gate import SEQ_MASK  # noqa: F401 (the answer word's call-number bits, kernels.SEQ_MASK)

ACTS = {"relu": 1, "gelu": 2}

if triton is not None:
    try:
        from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait
    except ImportError:  # old Triton: PDL stays off (kernel_net.pdl_available says why)
        gdc_wait = gdc_launch_dependents = None
    # the jit functions below call these by name (so they are looked up in this module)
    from kernel_gate import (SEQ_MASK_C, _call_number, _clock, _fence_acquire, _stage_image, _wait_for,
                             _wait_staggered)

    @triton.jit
    def _act(v, ACT: tl.constexpr):
        # 1 = ReLU, 2 = exact (erf) GELU, as in the reference
        if ACT == 1:
            v = tl.maximum(v, 0.0)
        else:
            v = 0.5 * v * (1.0 + tl.erf(v * 0.7071067811865476))
        return v

    @triton.jit
    def _row_coords(tile, BP: tl.constexpr, S: tl.constexpr, WO: tl.constexpr, HWO: tl.constexpr):
        # Row r of a tile is pre-pool pixel (r % S) of pooled pixel q = tile*BP + r // S; for a
        # pooled layer (S = 4) the 4 rows of q are (2oh+dy, 2ow+dx), so the pool is a max
        # over 4 consecutive rows.  Floor pooling: the odd last row/column is never visited.
        r = tl.arange(0, BP * S)
        q = tile * BP + r // S
        oh, ow = _pixel_coords(r, q, S, WO)
        return q < HWO, oh, ow

    @triton.jit
    def _pixel_coords(r, q, S: tl.constexpr, WO: tl.constexpr):
        # (oh, ow) of row r, pooled pixel q of one map (the pre-pool pixel r % 4 of it if S = 4)
        ohp = q // WO
        owp = q - ohp * WO
        if S == 4:
            s = r % 4
            oh = ohp * 2 + s // 2
            ow = owp * 2 + s % 2
        else:
            oh = ohp
            ow = owp
        return oh, ow

    @triton.jit
    def _row_coords_join(tile, BP: tl.constexpr, S: tl.constexpr, WO: tl.constexpr, HWO: tl.constexpr,
                         NB: tl.constexpr):
        # _row_coords over the rows of all NB maps in turn (JOIN): pooled pixel q of the tile is
        # pixel q % HWO of map q // HWO; also returns that map per row
        r = tl.arange(0, BP * S)
        q = tile * BP + r // S
        nr = q // HWO
        oh, ow = _pixel_coords(r, q - nr * HWO, S, WO)
        return q < NB * HWO, oh, ow, nr

    @triton.jit
    def _view_coords(ih, iw, fl, dy, dx, H: tl.constexpr, W: tl.constexpr):
        # TTA view (flip, dy, dx) of the image, read in place: view = shift(flip(x)) with a
        # one-pixel reflect shift, so view[i, j] = x[r(i + dy), W-1-r(j + dx)] (flip) where
        # r reflects -1 -> 1 and H -> H-2, as tta.make_view.  The caller masks on the
        # view coordinates (the layer's zero padding is outside the view, not the image).
        ih = ih + dy
        ih = tl.where(ih < 0, -ih, ih)
        ih = tl.where(ih >= H, 2 * H - 2 - ih, ih)
        iw = iw + dx
        iw = tl.where(iw < 0, -iw, iw)
        iw = tl.where(iw >= W, 2 * W - 2 - iw, iw)
        iw = tl.where(fl != 0, W - 1 - iw, iw)
        return ih, iw

    @triton.jit
    def _tap_coords(oh, ow, rok, it, H: tl.constexpr, W: tl.constexpr, CIN: tl.constexpr, KH: tl.constexpr,
                    PAD: tl.constexpr, BK: tl.constexpr):
        # K step `it` of the blocked loads: its tap, its first input channel c0, each row's input
        # pixel (ih, iw) and whether it lies inside the map
        CB: tl.constexpr = CIN // BK
        tap = it // CB
        c0 = (it - tap * CB) * BK
        ky = tap // KH
        kx = tap - ky * KH
        ih = oh + (ky - PAD)
        iw = ow + (kx - PAD)
        ok = rok & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
        return tap, c0, ih, iw, ok

    @triton.jit
    def _load_a_blocked(x_base, roff, oh, ow, rok, it, kk, H: tl.constexpr, W: tl.constexpr,
                        CIN: tl.constexpr, KH: tl.constexpr, PAD: tl.constexpr, BK: tl.constexpr,
                        VIEW: tl.constexpr, fl, dy, dx):
        # K step `it` covers one tap (ky, kx) and BK consecutive input channels: each row
        # reads BK contiguous fp16 of one NHWC pixel (coalesced); zero outside the image.
        # roff: each row's map offset (JOIN), else 0.
        tap, c0, ih, iw, ok = _tap_coords(oh, ow, rok, it, H, W, CIN, KH, PAD, BK)
        if VIEW:
            ih, iw = _view_coords(ih, iw, fl, dy, dx, H, W)
        a = tl.load(x_base + (roff + (ih * W + iw) * CIN + c0)[:, None] + kk[None, :], mask=ok[:, None], other=0)
        return a.to(tl.float16), tap * CIN + c0 + kk

    @triton.jit
    def _load_a_raw(x_base, roff, oh, ow, rok, it, kk, H: tl.constexpr, W: tl.constexpr, CIN: tl.constexpr,
                    KH: tl.constexpr, PAD: tl.constexpr, BK: tl.constexpr, PS: tl.constexpr, pb_ptr,
                    PACT: tl.constexpr):
        # _load_a_blocked on the previous layer's fp32 sums (RAW_IN: its K slices met there and it
        # ran no epilogue): this load runs that epilogue, the max over its PS pre-pool rows of each
        # pixel, its bias pb and activation PACT (_finish_sums), in fp32 and rounded to fp16 as its
        # stored output would have been; zero outside the image (the padding is of the activated map).
        tap, c0, ih, iw, ok = _tap_coords(oh, ow, rok, it, H, W, CIN, KH, PAD, BK)
        p = x_base + (roff + (ih * W + iw) * (PS * CIN) + c0)[:, None] + kk[None, :]
        v = _finish_sums(p, ok[:, None], CIN, PS, tl.load(pb_ptr + c0 + kk), PACT)
        return tl.where(ok[:, None], v, 0.0).to(tl.float16), tap * CIN + c0 + kk

    @triton.jit
    def _finish_sums(p, mask, step, PS: tl.constexpr, bias, PACT: tl.constexpr):
        # a deferring layer's epilogue on its fp32 sums at p (read at L2, .cg: another SM's adds made
        # them): the max over its PS pre-pool rows, `step` floats apart, then its bias and activation
        v = tl.load(p, mask=mask, other=0.0, cache_modifier=".cg")
        for s in tl.static_range(1, PS):
            v = tl.maximum(v, tl.load(p + s * step, mask=mask, other=0.0, cache_modifier=".cg"))
        return _act(v + bias[None, :], PACT)

    @triton.jit
    def _raw_maps(x_ptr, pb_ptr, m0, XMAP: tl.constexpr, HWO: tl.constexpr, QP: tl.constexpr,
                  PS: tl.constexpr, COUT: tl.constexpr, CP: tl.constexpr, PACT: tl.constexpr):
        # [QP, CP] activated outputs of map m0 of a layer that left its fp32 sums (RAW_OUT): its
        # epilogue (_finish_sums) on them, -inf on the rows and channels past the map
        q = tl.arange(0, QP)
        cc = tl.arange(0, CP)
        ok = (q < HWO)[:, None] & (cc < COUT)[None, :]
        p = x_ptr + m0 * XMAP + (q * (PS * COUT))[:, None] + cc[None, :]
        v = _finish_sums(p, ok, COUT, PS, tl.load(pb_ptr + cc, mask=cc < COUT, other=0.0), PACT)
        return tl.where(ok, v, float("-inf"))

    @triton.jit
    def _flagged_sum(words, tsz, ep, acc, NSLOT: tl.constexpr):
        # acc + the NSLOT partial tiles at words (tsz apart), and whether a word of them does not
        # carry this call's epoch ep yet (its slice has not stored it): every read is issued before
        # any sum waits for one, so the tiles arrive in one round trip
        tot = acc
        miss = tl.zeros(acc.shape, dtype=tl.int32)
        for s in tl.static_range(NSLOT):
            w = tl.load(words + s * tsz, volatile=True)
            miss |= ((w >> 32).to(tl.int32) != ep).to(tl.int32)
            tot += (w & 0xFFFFFFFF).to(tl.int32).to(tl.float32, bitcast=True)
        return tot, tl.max(miss)

    @triton.jit
    def _load_a_generic(x_base, oh, ow, rok, it, kk, H: tl.constexpr, W: tl.constexpr,
                        CIN: tl.constexpr, KH: tl.constexpr, PAD: tl.constexpr, BK: tl.constexpr,
                        VIEW: tl.constexpr, fl, dy, dx):
        # Any CIN (the 3-channel stem, widths not a multiple of 16): K flattened as
        # (ky, kx, ci), a gather per element.  Only the first layers take this path.
        KTOT: tl.constexpr = KH * KH * CIN
        k = it * BK + kk
        tap = k // CIN
        ci = k - tap * CIN
        ky = tap // KH
        kx = tap - ky * KH
        ih = oh[:, None] + (ky[None, :] - PAD)
        iw = ow[:, None] + (kx[None, :] - PAD)
        ok = rok[:, None] & (k < KTOT)[None, :] & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
        if VIEW:
            ih, iw = _view_coords(ih, iw, fl, dy, dx, H, W)
        a = tl.load(x_base + (ih * W + iw) * CIN + ci[None, :], mask=ok, other=0)
        return a.to(tl.float16), k

    @triton.jit
    def _answer(logits, cls, seq_ptr, word_ptr, req, seq0):
        # The class id of one image's 16 padded logits (the first of equal maxima, as
        # torch.argmax), and this call's number (the request number req of the persistent
        # kernel, else the device counter's next), as one word in pinned host memory: written
        # through L2 (.wt) so the polling host sees it at once.  The device counter was read
        # (seq0) before the K loop, so its round trip is not in this chain; only this program
        # writes it, and the next call's kernels read it after this kernel has ended.
        best = tl.argmax(tl.where(cls < 10, logits, float("-inf")), axis=0)
        if req < 0:
            n = seq0 + 1
            tl.store(seq_ptr, n)
        else:  # the persistent kernel: seq_ptr is its trace stamp's address (or 0: none)
            n = req
            if seq_ptr.dtype.element_ty == tl.int64:
                tl.store(seq_ptr, _clock())
        tl.store(word_ptr, ((n & SEQ_MASK_C) << 4) | best, cache_modifier=".wt")

    @triton.jit
    def _head_logits(hmax_ptr, hw_ptr, hb_ptr, out_ptr, hcnt_ptr, vw_ptr, seq_ptr, word_ptr, req, seq0,
                     NB: tl.constexpr, NV: tl.constexpr, COUT: tl.constexpr, CP: tl.constexpr, ANSWER: tl.constexpr):
        # Run by the last tile of the last layer: every channel max is in hmax now.  Read it
        # at L2 (a relaxed atomic max with -inf changes nothing), then leave -inf for the next
        # forward.
        # Rows i*NV .. i*NV+NV-1 are the TTA views of image i: its logits are the weighted
        # sum of theirs, sum_v w_v * (Wfc @ max_v + b), as tta.TTANet (NV = 1, w = 1: plain).
        cc = tl.arange(0, CP)
        cls = tl.arange(0, 16)
        wfc = tl.load(hw_ptr + cls[:, None] * CP + cc[None, :])  # fp32, zero-padded [16, CP]
        bfc = tl.load(hb_ptr + cls)
        for i in tl.static_range(NB // NV):
            acc = tl.zeros([16], dtype=tl.float32)
            for v in tl.static_range(NV):
                row = hmax_ptr + (i * NV + v) * COUT + cc
                ninf = tl.full([CP], float("-inf"), tl.float32)
                f = tl.atomic_max(row, ninf, mask=cc < COUT, sem="relaxed")
                tl.store(row, ninf, mask=cc < COUT)
                f = tl.where(cc < COUT, f, 0.0)
                acc += tl.load(vw_ptr + v) * (tl.sum(wfc * f[None, :], axis=1) + bfc)
            tl.store(out_ptr + i * 16 + cls, acc, mask=cls < 10)  # rows padded to 16
            if ANSWER:  # batch 1 only (the host checks)
                _answer(acc, cls, seq_ptr, word_ptr, req, seq0)
        tl.store(hcnt_ptr, 0)

    @triton.jit
    def head_kernel(x_ptr, pb_ptr, hw_ptr, hb_ptr, out_ptr, vw_ptr, seq_ptr, word_ptr, trace_ptr,
                    HWO: tl.constexpr, QP: tl.constexpr, PS: tl.constexpr, COUT: tl.constexpr,
                    XMAP: tl.constexpr, NB: tl.constexpr, NV: tl.constexpr, CP: tl.constexpr,
                    PACT: tl.constexpr, ANSWER: tl.constexpr, PDL: tl.constexpr, TRACE: tl.constexpr):
        """The head after a last layer that left its fp32 sums (split_meet="next"), one program:
        that layer's epilogue on every map (_raw_maps), the global max, the linear, the views'
        weighted sum, and with ANSWER the answer word.  Its weights are loaded before its PDL
        wait.  TRACE: this kernel's index + 1, stamps as conv_layer_kernel's (its "K loop": the logits made)."""
        cc = tl.arange(0, CP)
        cls = tl.arange(0, 16)
        wfc = tl.load(hw_ptr + cls[:, None] * CP + cc[None, :])  # fp32, zero-padded [16, CP]
        bfc = tl.load(hb_ptr + cls)
        if PDL:
            gdc_wait()
        if TRACE:
            row = trace_ptr + (_call_number(seq_ptr) & 1023) * 32
            tl.store(row + 15 + TRACE, _clock())
        else:
            row = trace_ptr
        seq0 = 0
        if ANSWER:
            seq0 = tl.load(seq_ptr).to(tl.int32)
        for i in tl.static_range(NB // NV):
            logit = tl.zeros([16], dtype=tl.float32)
            for vi in tl.static_range(NV):
                f = tl.max(_raw_maps(x_ptr, pb_ptr, i * NV + vi, XMAP, HWO, QP, PS, COUT, CP, PACT), axis=0)
                f = tl.where(cc < COUT, f, 0.0)
                logit += tl.load(vw_ptr + vi) * (tl.sum(wfc * f[None, :], axis=1) + bfc)
            if TRACE:
                tl.store(row + 23 + TRACE, _clock())
            tl.store(out_ptr + i * 16 + cls, logit, mask=cls < 10)
            if ANSWER:  # batch 1 only (the host checks)
                _answer(logit, cls, seq_ptr, word_ptr, -1, seq0)
        if TRACE:
            tl.store(row + 1 + TRACE, _clock())

    @triton.jit
    def _channel_max(v, rows, cmask):
        # the max over the rows `rows` of each channel of v, 0 for the channels past the last
        f = tl.max(tl.where(rows[:, None] & cmask[None, :], v, float("-inf")), axis=0)
        return tl.where(cmask, f, 0.0)

    @triton.jit
    def _epilogue(acc, bias, wfc, bfc, y_ptr, n, tile, pid_n, cols, cmask, hmax_ptr, hw_ptr, hb_ptr, out_ptr,
                  hcnt_ptr, vw_ptr, seq_ptr, word_ptr, req, seq0, n_fin, BP: tl.constexpr, S: tl.constexpr,
                  BN: tl.constexpr,
                  HWO: tl.constexpr, COUT: tl.constexpr, ACT: tl.constexpr, HEAD: tl.constexpr, NB: tl.constexpr,
                  NV: tl.constexpr, CP: tl.constexpr, ANSWER: tl.constexpr, JOIN: tl.constexpr):
        # pool (max of 4 consecutive rows) before bias and activation: exact for any act;
        # bias (and the head's weights) were loaded before the K loop: no round trip here.
        # JOIN: q counts the pooled pixels of all maps in turn (map q // HWO; n is 0)
        if S == 4:
            v = tl.max(tl.reshape(acc, (BP, 4, BN)), axis=1)
        else:
            v = acc
        v = _act(v + bias[None, :], ACT)
        q = tile * BP + tl.arange(0, BP)
        if JOIN:
            QN: tl.constexpr = NB * HWO
        else:
            QN: tl.constexpr = HWO
        cls = tl.arange(0, 16)
        if HEAD == 3:
            # the tile holds every map's whole output (one tile in all): the logits are made here,
            # with no sum across tiles and no arrival count before the answer
            for i in tl.static_range(NB // NV):
                logit = tl.zeros([16], dtype=tl.float32)
                for vi in tl.static_range(NV):
                    mi = i * NV + vi
                    f = _channel_max(v, (q >= mi * HWO) & (q < (mi + 1) * HWO), cmask)
                    logit += tl.load(vw_ptr + vi) * (tl.sum(wfc * f[None, :], axis=1) + bfc)
                tl.store(out_ptr + i * 16 + cls, logit, mask=cls < 10)
                if ANSWER:  # batch 1 only (the host checks)
                    _answer(logit, cls, seq_ptr, word_ptr, req, seq0)
        elif HEAD == 2:
            # the tile holds the whole map (one row tile; JOIN: every map, each map's share in
            # turn): its channel max is final, so its share of the logits, w_v * (Wfc[:, cols] @
            # max + [pid_n == 0] b), is added into the output (zeroed by the first layer's
            # kernel): no global max buffer
            if JOIN:
                for mi in tl.static_range(NB):
                    f = _channel_max(v, (q >= mi * HWO) & (q < (mi + 1) * HWO), cmask)
                    part = tl.sum(wfc * f[None, :], axis=1) + tl.where(pid_n == 0, bfc, 0.0)
                    tl.atomic_add(out_ptr + (mi // NV) * 16 + cls, tl.load(vw_ptr + mi % NV) * part, sem="relaxed")
            else:
                f = _channel_max(v, q < HWO, cmask)
                part = tl.sum(wfc * f[None, :], axis=1) + tl.where(pid_n == 0, bfc, 0.0)
                tl.atomic_add(out_ptr + (n // NV) * 16 + cls, tl.load(vw_ptr + n % NV) * part, sem="relaxed")
            if ANSWER:  # the last share to arrive reads the sum at L2 and answers
                tl.debug_barrier()  # all threads' adds issued before the arrival count
                done = tl.atomic_add(hcnt_ptr, 1)
                if done == n_fin - 1:
                    logits = tl.atomic_add(out_ptr + cls, tl.zeros([16], dtype=tl.float32), sem="relaxed")
                    _answer(logits, cls, seq_ptr, word_ptr, req, seq0)
                    tl.store(hcnt_ptr, 0)
        elif HEAD == 1:
            # global max: this tile's max per channel (JOIN: per map it holds rows of), then the
            # last tile does the linear
            if JOIN:
                for mi in tl.static_range(NB):
                    mine = (q >= mi * HWO) & (q < (mi + 1) * HWO)
                    has = (tile * BP < (mi + 1) * HWO) & ((tile + 1) * BP > mi * HWO)
                    vm = tl.where(mine[:, None], v, float("-inf"))
                    tl.atomic_max(hmax_ptr + mi * COUT + cols, tl.max(vm, axis=0), mask=cmask & has, sem="relaxed")
            else:
                vm = tl.where((q < HWO)[:, None], v, float("-inf"))
                tl.atomic_max(hmax_ptr + n * COUT + cols, tl.max(vm, axis=0), mask=cmask, sem="relaxed")
            tl.debug_barrier()  # all threads' atomics issued before the arrival count
            done = tl.atomic_add(hcnt_ptr, 1)
            if done == n_fin - 1:
                _head_logits(hmax_ptr, hw_ptr, hb_ptr, out_ptr, hcnt_ptr, vw_ptr, seq_ptr, word_ptr, req, seq0, NB, NV,
                             COUT, CP, ANSWER)
        else:
            offs = ((n * HWO + q) * COUT)[:, None] + cols[None, :]
            tl.store(y_ptr + offs, v.to(tl.float16), mask=(q < QN)[:, None] & cmask[None, :])

    @triton.jit
    def conv_layer_kernel(x_ptr, w_ptr, b_ptr, y_ptr, part_ptr, cnt_ptr,
                          hmax_ptr, hw_ptr, hb_ptr, out_ptr, hcnt_ptr, view_ptr, vw_ptr, seq_ptr, word_ptr,
                          flag_ptr, go_ptr, stage_ptr, trace_ptr, pb_ptr, zraw_ptr, epoch_ptr, slots_ptr, m_tiles, SPLIT,
                          n_fin, limit, zn,
                          H: tl.constexpr, W: tl.constexpr, CIN: tl.constexpr, COUT: tl.constexpr,
                          KH: tl.constexpr, PAD: tl.constexpr, S: tl.constexpr,
                          WO: tl.constexpr, HWO: tl.constexpr, ACT: tl.constexpr,
                          BP: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, KI: tl.constexpr,
                          GENERIC: tl.constexpr, HEAD: tl.constexpr, NB: tl.constexpr, CP: tl.constexpr,
                          NV: tl.constexpr, VIEW: tl.constexpr, ZOUT: tl.constexpr, PDL: tl.constexpr,
                          ANSWER: tl.constexpr, GATE: tl.constexpr, STAGE: tl.constexpr,
                          POLLS: tl.constexpr, JOIN: tl.constexpr, TRACE: tl.constexpr,
                          RAW_OUT: tl.constexpr, RAW_IN: tl.constexpr, XMAP: tl.constexpr, PACT: tl.constexpr,
                          ZCH: tl.constexpr, FLAG: tl.constexpr, BUMP: tl.constexpr):
        """One folded conv layer (+ fused 2x2 pool, bias, act; + head when HEAD), grid =
        (NB * m_tiles, n_tiles, SPLIT): one work item (_conv_item) per program.  GATE (the first
        layer of a graph launched ahead with e2e_gate: stem or stage; 1: limit in ns of the GPU
        clock, 2: in reads): the gate is in this kernel, so no gate kernel and no kernel boundary stand
        between the flag and the image reads.  Program 0 writes the ready stamp, waits for the
        host's flag, then writes the call's number into go_ptr (device memory); the other
        programs wait for that word.  (Every program polling the host's flag itself made each
        call ~0.5 ms on an H200: keep the polls of host memory to one program.)  The image
        loads come after the spin in program order and depend on its exit, and a kernel starts
        with no line of the image in L1: they read the image the host wrote before the flag (x86
        stores reach memory in program order).
        STAGE (e2e_gate: stage; with GATE and a uint8 image; a power of two >= the image's 32-bit
        words): program 0 also copies the image from host memory into stage_ptr (device memory)
        in one wide read before it releases the others, and every program reads the image there:
        one PCIe round trip for the whole image instead of every program's byte reads of its
        patches crossing PCIe.
        POLLS (with GATE): 4: program 0 keeps four staggered reads of the flag in flight
        (_wait_staggered); 1: one read after another.
        JOIN: the row tiles run over the rows of every map in turn (grid = (m_tiles, n_tiles,
        SPLIT), m_tiles counting all maps' rows), so a tile may hold rows of several maps: for the
        small late layers, where one map's rows fill a tile only in part.
        TRACE (tools/e2e_trace.py; this layer's index + 1): GPU-clock stamps (ns) into row
        (call number % 1024) of trace_ptr [1024, 16] int64: the flag seen (column 0) and the
        image staged (1) by a gate's program 0, and this layer's end (2 + index, the latest of its
        programs' ends), its programs past their PDL wait (16 + index, the latest) and past their K
        loop (24 + index, the latest).
        RAW_OUT, RAW_IN, XMAP, PACT: the meeting of split_meet="next" (_conv_item).  ZCH (the first
        layer, > 0 when a later layer leaves fp32 sums): each program zeroes ZCH of the zn floats
        at zraw_ptr, before any wait: those sums start at zero every call (later kernels of the
        call add into them; stream order puts the previous call's reads of them before this).
        FLAG: this layer's K slices meet by flagged words (_conv_item).  BUMP (the first layer of a
        net with such a layer): program 0 counts the call's epoch up (epoch_ptr), which the later
        layers read after their PDL wait."""
        if BUMP:
            if (tl.program_id(0) == 0) & (tl.program_id(1) == 0) & (tl.program_id(2) == 0):
                tl.store(epoch_ptr, tl.load(epoch_ptr) + 1)
        if ZCH > 0:
            pz = (tl.program_id(0) * tl.num_programs(1) + tl.program_id(1)) * tl.num_programs(2) + tl.program_id(2)
            zo = pz * ZCH + tl.arange(0, ZCH)
            tl.store(zraw_ptr + zo, tl.zeros([ZCH], dtype=tl.float32), mask=zo < zn)
        if GATE or TRACE:
            want = _call_number(seq_ptr)  # the call this launch serves (one read of the device counter)
        if TRACE:
            row = trace_ptr + (want & 1023) * 32
        else:
            row = trace_ptr
        if GATE:
            if (tl.program_id(0) == 0) & (tl.program_id(1) == 0) & (tl.program_id(2) == 0):
                tl.store(word_ptr + 2, want, cache_modifier=".wt")
                if POLLS == 4:
                    _wait_staggered(flag_ptr, want, word_ptr, limit, 250, GATE == 1)
                else:
                    _wait_for(flag_ptr, want, word_ptr, limit, GATE == 1)
                if TRACE:
                    tl.store(row, _clock())
                if STAGE:
                    _stage_image(x_ptr, stage_ptr, (NB // NV) * H * W * CIN // 4, STAGE)
                    if TRACE:
                        tl.store(row + 1, _clock())
                    tl.atomic_xchg(go_ptr, want, sem="release", scope="gpu")  # after every thread's copy
                else:
                    tl.store(go_ptr, want)
            else:
                _wait_for(go_ptr, want, word_ptr, limit, GATE == 1)
                if STAGE:  # program 0's copy is visible to this program's plain loads from here on
                    _fence_acquire(GATE == 1)
        if STAGE:
            x_src = stage_ptr
        else:
            x_src = x_ptr
        _conv_item(tl.program_id(0), tl.program_id(1), tl.program_id(2), tl.num_programs(1),
                   x_src, w_ptr, b_ptr, y_ptr, part_ptr, cnt_ptr, hmax_ptr, hw_ptr, hb_ptr, out_ptr, hcnt_ptr,
                   view_ptr, vw_ptr, seq_ptr, word_ptr, -1, m_tiles, SPLIT, n_fin, H, W, CIN, COUT, KH, PAD, S, WO,
                   HWO, ACT, BP, BN, BK, KI, GENERIC, HEAD, NB, CP, NV, VIEW, ZOUT, PDL, ANSWER, JOIN, row, TRACE,
                   pb_ptr, RAW_OUT, RAW_IN, XMAP, PACT, epoch_ptr, slots_ptr, FLAG)
        if TRACE:
            tl.atomic_max(row + 1 + TRACE, _clock(), sem="relaxed")

    @triton.jit
    def _conv_item(pid_m, pid_n, sid, n_tiles, x_ptr, w_ptr, b_ptr, y_ptr, part_ptr, cnt_ptr,
                   hmax_ptr, hw_ptr, hb_ptr, out_ptr, hcnt_ptr, view_ptr, vw_ptr, seq_ptr, word_ptr, req,
                   m_tiles, SPLIT, n_fin,
                   H: tl.constexpr, W: tl.constexpr, CIN: tl.constexpr, COUT: tl.constexpr,
                   KH: tl.constexpr, PAD: tl.constexpr, S: tl.constexpr,
                   WO: tl.constexpr, HWO: tl.constexpr, ACT: tl.constexpr,
                   BP: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, KI: tl.constexpr,
                   GENERIC: tl.constexpr, HEAD: tl.constexpr, NB: tl.constexpr, CP: tl.constexpr,
                   NV: tl.constexpr, VIEW: tl.constexpr, ZOUT: tl.constexpr, PDL: tl.constexpr,
                   ANSWER: tl.constexpr, JOIN: tl.constexpr, trow, TRACE: tl.constexpr, pb_ptr,
                   RAW_OUT: tl.constexpr, RAW_IN: tl.constexpr, XMAP: tl.constexpr, PACT: tl.constexpr,
                   epoch_ptr, slots_ptr, FLAG: tl.constexpr):
        """Work item (pid_m, pid_n, sid) of one layer: row tile pid_m = (map, tile), channel
        tile pid_n of n_tiles, K slice sid of SPLIT (KI K steps in all).  Map n = image n // NV,
        TTA view n % NV; the first layer (VIEW) makes the view itself from its image's loads.
        The constant operands of the epilogue (bias, the head's weights) are loaded first,
        before the PDL wait (weights do not depend on the previous layer).  ZOUT: this is the
        first layer of a net whose head adds into the output (HEAD == 2): zero it.  ANSWER:
        the head also writes the answer word (_answer).  JOIN: row tile pid_m of all maps' rows
        in turn (n is 0, each row's map from _row_coords_join; not with VIEW or GENERIC).  TRACE:
        stamps past the PDL wait and past the K loop into the trace row trow (conv_layer_kernel).
        RAW_OUT: the K slices only add into this layer's fp32 sums (part_ptr, zeroed by the first
        layer), no epilogue.  RAW_IN (the previous layer's S): x_ptr holds the previous layer's sums
        so (XMAP floats a map, their epilogue's bias pb_ptr and activation PACT run in the loads).
        FLAG (= SPLIT - 1, else 0): slices 0..SPLIT-2 store their partial tile into slots_ptr (SPLIT-1 int64 tiles per
        tile), each value's fp32 bits beside the call's epoch (read from epoch_ptr after the PDL
        wait); slice SPLIT-1 polls each of those tiles until every word holds this epoch (an
        aligned 64-bit store is seen whole or not at all), sums them with its own and runs the
        epilogue.  Nothing is reset: the next call's words carry the next epoch."""
        BM: tl.constexpr = BP * S
        if JOIN:
            n = 0
            tile = pid_m
            rok, oh, ow, nr = _row_coords_join(tile, BP, S, WO, HWO, NB)
            if RAW_IN:
                roff = nr * XMAP
            else:
                roff = nr * (H * W * CIN)
        else:
            n = pid_m // m_tiles
            tile = pid_m - n * m_tiles
            rok, oh, ow = _row_coords(tile, BP, S, WO, HWO)
            roff = 0
        cols = pid_n * BN + tl.arange(0, BN)
        cmask = cols < COUT
        kk = tl.arange(0, BK)
        if VIEW:  # the input holds NB // NV images; view (flip, dy, dx) from view_ptr
            x_base = x_ptr + (n // NV) * (H * W * CIN)
            vp = view_ptr + (n % NV) * 3
            fl, dy, dx = tl.load(vp), tl.load(vp + 1), tl.load(vp + 2)
        elif RAW_IN:
            x_base = x_ptr + n * XMAP
            fl, dy, dx = 0, 0, 0
        else:
            x_base = x_ptr + n * (H * W * CIN)
            fl, dy, dx = 0, 0, 0
        bias = tl.load(b_ptr + cols, mask=cmask, other=0.0)
        if HEAD >= 2:
            cls = tl.arange(0, 16)
            wfc = tl.load(hw_ptr + cls[:, None] * CP + cols[None, :], mask=cmask[None, :], other=0.0)
            bfc = tl.load(hb_ptr + cls)
        else:
            wfc, bfc = 0.0, 0.0
        if PDL:  # wait for the previous layer (1: and let the next one start launching now)
            gdc_wait()
            if PDL == 1:
                gdc_launch_dependents()
        if TRACE:
            tl.atomic_max(trow + 15 + TRACE, _clock(), sem="relaxed")
        ep = 0
        if FLAG:  # this call's epoch (the first layer counted it up): its latency hides under the K loop
            ep = tl.load(epoch_ptr)
        seq0 = 0
        if ANSWER:  # the device call counter (graph path), read now: off the answer's chain
            seq0 = tl.load(seq_ptr, mask=req < 0, other=0).to(tl.int32)
        if ZOUT:
            if (pid_m == 0) & (pid_n == 0) & (sid == 0):
                for i in tl.static_range(NB // NV):
                    tl.store(out_ptr + i * 16 + tl.arange(0, 16), tl.zeros([16], dtype=tl.float32))
        k_lo = sid * KI // SPLIT
        k_hi = (sid + 1) * KI // SPLIT
        acc = tl.zeros([BM, BN], dtype=tl.float32)
        for it in range(k_lo, k_hi):
            if GENERIC:
                a, krow = _load_a_generic(x_base, oh, ow, rok, it, kk, H, W, CIN, KH, PAD, BK, VIEW, fl, dy, dx)
                kmask = krow < KH * KH * CIN
            elif RAW_IN:
                a, krow = _load_a_raw(x_base, roff, oh, ow, rok, it, kk, H, W, CIN, KH, PAD, BK, RAW_IN, pb_ptr, PACT)
                kmask = krow >= 0
            else:
                a, krow = _load_a_blocked(x_base, roff, oh, ow, rok, it, kk, H, W, CIN, KH, PAD, BK, VIEW, fl, dy,
                                          dx)
                kmask = krow >= 0
            b = tl.load(w_ptr + krow[:, None] * COUT + cols[None, :], mask=kmask[:, None] & cmask[None, :],
                        other=0.0)
            acc = tl.dot(a, b, acc)
        if PDL == 2:  # the next layer may start launching: this one's K loop is done
            gdc_launch_dependents()
        if TRACE:
            tl.atomic_max(trow + 23 + TRACE, _clock(), sem="relaxed")
        if RAW_OUT:  # add this slice into the sums and end: the next kernel runs the epilogue
            rows = pid_m * BM + tl.arange(0, BM)
            if JOIN:
                pmask = rok[:, None] & cmask[None, :]
            else:
                pmask = cmask[None, :]
            tl.atomic_add(part_ptr + rows[:, None] * COUT + cols[None, :], acc, mask=pmask, sem="relaxed")
        elif SPLIT == 1:
            _epilogue(acc, bias, wfc, bfc, y_ptr, n, tile, pid_n, cols, cmask, hmax_ptr, hw_ptr, hb_ptr, out_ptr,
                      hcnt_ptr, vw_ptr, seq_ptr, word_ptr, req, seq0, n_fin, BP, S, BN, HWO, COUT, ACT, HEAD, NB, NV,
                      CP, ANSWER, JOIN)
        elif FLAG:
            tsz = BM * BN
            words = slots_ptr + (pid_m * n_tiles + pid_n) * (SPLIT - 1) * tsz + \
                (tl.arange(0, BM)[:, None] * BN + tl.arange(0, BN)[None, :])
            if sid < SPLIT - 1:
                bits = acc.to(tl.int32, bitcast=True).to(tl.int64) & 0xFFFFFFFF
                tl.store(words + sid * tsz, (ep.to(tl.int64) << 32) | bits)
            else:
                # the other slices run: they come before this one in the grid's order (sid is its
                # slowest index), and a PDL dependant launches only after every program's K loop
                tot, miss = acc, 1
                while miss != 0:  # until every slice's words are there (one pass when they are)
                    tot, miss = _flagged_sum(words, tsz, ep, acc, FLAG)
                _epilogue(tot, bias, wfc, bfc, y_ptr, n, tile, pid_n, cols, cmask, hmax_ptr, hw_ptr, hb_ptr,
                          out_ptr, hcnt_ptr, vw_ptr, seq_ptr, word_ptr, req, seq0, n_fin, BP, S, BN, HWO, COUT, ACT,
                          HEAD, NB, NV, CP, ANSWER, JOIN)
        else:
            # split-K: add this slice into the fp32 scratch; the last slice to arrive at the
            # tile takes the sum (and leaves zeros behind) and runs the epilogue
            rows = pid_m * BM + tl.arange(0, BM)
            pp = part_ptr + rows[:, None] * COUT + cols[None, :]
            if JOIN:  # the rows past the last map's end carry nothing: no atomics for them
                pmask = rok[:, None] & cmask[None, :]
            else:
                pmask = cmask[None, :]
            tl.atomic_add(pp, acc, mask=pmask, sem="relaxed")
            tl.debug_barrier()  # every thread's adds issued before the arrival count
            tid = pid_m * n_tiles + pid_n
            arrived = tl.atomic_add(cnt_ptr + tid, 1)
            if arrived == SPLIT - 1:
                # read the sum at L2 (a relaxed atomic add of 0: where the other slices' adds
                # landed), then leave zeros; nothing else touches this tile until the next forward
                zero = tl.zeros([BM, BN], dtype=tl.float32)
                tot = tl.atomic_add(pp, zero, mask=pmask, sem="relaxed")
                if JOIN:
                    tot = tl.where(pmask, tot, 0.0)
                tl.store(pp, zero, mask=pmask)
                tl.store(cnt_ptr + tid, 0)
                _epilogue(tot, bias, wfc, bfc, y_ptr, n, tile, pid_n, cols, cmask, hmax_ptr, hw_ptr, hb_ptr,
                          out_ptr, hcnt_ptr, vw_ptr, seq_ptr, word_ptr, req, seq0, n_fin, BP, S, BN, HWO, COUT, ACT,
                          HEAD, NB, NV, CP, ANSWER, JOIN)
