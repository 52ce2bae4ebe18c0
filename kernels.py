"""Triton kernels for the folded fastnet-class CNN at batch 1 (issue 10).

The contract (see the issue / inference.py): a net is a list of folded conv layers
    y = act(maxpool_pool(conv(x, W, padding)) + b)
and a head logits = Wfc @ max_over_HW(x) + bfc.  The first layer reads the raw NHWC image
(uint8 or fp16 pixel values 0..255; the normalisation is folded into its weights).

Design, in one paragraph.  One Triton kernel per conv layer, an implicit GEMM over NHWC fp16
activations: rows = output pixels (for a pooled layer, the 4 pre-pool pixels of each pooled
pixel sit in 4 consecutive rows, so the pool is a max over groups of 4 rows in the epilogue),
columns = output channels, K = (ky, kx, ci).  At batch 1 a layer has only a handful of
(rows x columns) tiles, far fewer than the 132 SMs of an H100, so the K loop is split over
SPLIT programs (split-K); the partial sums meet in an fp32 scratch buffer through atomics,
and the last program to arrive at a tile (a per-tile arrival counter) reads the sum back,
resetting the scratch and the counter to zero for the next call, and runs the epilogue
(pool, bias, activation, fp16 store).  The last layer's epilogue also does the head: a
per-tile channel max goes into a global max buffer by atomic max, and the last tile of the
whole layer computes the 10 logits and resets that buffer.  So a forward is exactly one
kernel per conv layer, allocates nothing, and replays in one CUDA graph.  Optionally the
kernels use programmatic dependent launch (PDL): each waits for its predecessor with
griddepcontrol.wait, so the next kernel's launch overlaps the current one.

Test-time augmentation (views=...) costs no kernel: every layer runs one map per (image, view),
the first layer reads view v of its image with mirrored / reflect-shifted input indices (the
stem has no padding, so a view of the image gives exactly the view's feature maps), and the
head returns the weighted sum of the views' logits.  No torch flip/cat/mean around it.
"""
import json
import math
import os

import torch

try:  # Triton ships with torch on Linux; its absence is reported by available()
    import triton
    import triton.language as tl
    _TRITON_ERR = None
except ImportError as e:  # not silent: available() returns this reason
    triton, tl = None, None
    _TRITON_ERR = f"triton not importable: {e}"

ACTS = {"relu": 1, "gelu": 2}
_TILE_CACHE = {}  # (layer shape, batch, pdl) -> tile dict chosen at build (autotune or heuristic)


def _interpreting():
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def available(device="cuda"):
    """(ok, reason): can KernelNet run here?  The interpreter (TRITON_INTERPRET=1) counts as
    available on the CPU, for the tests; otherwise CUDA and an sm80+ GPU are needed."""
    if _TRITON_ERR:
        return False, _TRITON_ERR
    if _interpreting():
        return True, "triton interpreter (TRITON_INTERPRET=1), CPU tensors"
    if not torch.cuda.is_available():
        return False, "no CUDA device: the Triton kernels need an sm80+ NVIDIA GPU"
    cap = torch.cuda.get_device_capability(device)
    if cap < (8, 0):
        return False, f"GPU {torch.cuda.get_device_name(device)} is sm{cap[0]}{cap[1]}; the kernels need sm80+"
    return True, f"{torch.cuda.get_device_name(device)} sm{cap[0]}{cap[1]}"


def pdl_available():
    """(ok, reason) for programmatic dependent launch: needs sm90+ and a Triton with gdc_*."""
    ok, why = available()
    if not ok or _interpreting():
        return False, "PDL needs a real sm90+ GPU (not the interpreter)"
    if torch.cuda.get_device_capability() < (9, 0):
        return False, "PDL needs sm90+"
    try:
        from triton.language.extra.cuda import gdc_wait  # noqa: F401
    except ImportError as e:
        return False, f"this Triton has no gdc_wait: {e}"
    return True, "sm90+ and triton.language.extra.cuda.gdc_*"


# --------------------------------------------------------------------------------------------
# reference
# --------------------------------------------------------------------------------------------
def reference_forward(layers, head, x, dtype=torch.float64):
    """Plain-torch forward of the folded net (conv2d, max_pool2d, act, global max, linear) in
    `dtype` on x's device: the ground truth of the tests.  x: N x 32 x 32 x 3 NHWC pixels."""
    import torch.nn.functional as F
    h = x.to(dtype).permute(0, 3, 1, 2)
    for L in layers:
        h = F.conv2d(h, L["weight"].to(h), padding=L["padding"])
        if L["pool"]:
            h = F.max_pool2d(h, L["pool"])
        h = h + L["bias"].to(h)[None, :, None, None]
        h = torch.relu(h) if L["act"] == "relu" else F.gelu(h)
    feat = torch.amax(h, dim=(2, 3))
    return feat @ head["weight"].to(h).t() + head["bias"].to(h)


def random_net(stem_width=32, stem_kernel=3, widths=(64, 192, 256), depths=(2, 2, 2), act="relu",
               seed=0, device="cpu"):
    """A random folded net of the contract's shape, weights scaled so activations stay O(1)
    (He-like, the stem scaled for 0..255 pixels): for tests and benchmarks."""
    g = torch.Generator().manual_seed(seed)

    def conv(cin, cout, k, pad, pool, scale=1.0):
        w = torch.randn(cout, cin, k, k, generator=g) * (scale * math.sqrt(2.0 / (cin * k * k)))
        b = torch.randn(cout, generator=g) * 0.1
        return dict(weight=w.to(device), bias=b.to(device), padding=pad, pool=pool, act=act)

    layers = [conv(3, stem_width, stem_kernel, 0, 0, scale=1 / 128.0)]
    layers[0]["bias"] = layers[0]["bias"] - 1.0  # pixels are 0..255, not centred: recentre
    c = stem_width
    for w, d in zip(widths, depths):
        layers.append(conv(c, w, 3, 1, 2))
        layers += [conv(w, w, 3, 1, 0) for _ in range(d - 1)]
        c = w
    head = dict(weight=(torch.randn(10, c, generator=g) / math.sqrt(c)).to(device),
                bias=(torch.randn(10, generator=g) * 0.1).to(device))
    return layers, head


# --------------------------------------------------------------------------------------------
# kernels
# --------------------------------------------------------------------------------------------
if triton is not None:
    try:
        from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait
    except ImportError:  # old Triton: PDL stays off (pdl_available says why)
        gdc_wait = gdc_launch_dependents = None

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
        ohp = q // WO
        owp = q - ohp * WO
        if S == 4:
            s = r % 4
            oh = ohp * 2 + s // 2
            ow = owp * 2 + s % 2
        else:
            oh = ohp
            ow = owp
        return q < HWO, oh, ow

    @triton.jit
    def _view_coords(ih, iw, fl, dy, dx, H: tl.constexpr, W: tl.constexpr):
        # TTA view (flip, dy, dx) of the image, read in place: view = shift(flip(x)) with a
        # one-pixel reflect shift, so view[i, j] = x[r(i + dy), W-1-r(j + dx)] (flip) where
        # r reflects -1 -> 1 and H -> H-2, as make_view in inference.py.  The caller masks on
        # the view coordinates (the layer's zero padding is outside the view, not the image).
        ih = ih + dy
        ih = tl.where(ih < 0, -ih, ih)
        ih = tl.where(ih >= H, 2 * H - 2 - ih, ih)
        iw = iw + dx
        iw = tl.where(iw < 0, -iw, iw)
        iw = tl.where(iw >= W, 2 * W - 2 - iw, iw)
        iw = tl.where(fl != 0, W - 1 - iw, iw)
        return ih, iw

    @triton.jit
    def _load_a_blocked(x_base, oh, ow, rok, it, kk, H: tl.constexpr, W: tl.constexpr,
                        CIN: tl.constexpr, KH: tl.constexpr, PAD: tl.constexpr, BK: tl.constexpr,
                        VIEW: tl.constexpr, fl, dy, dx):
        # K step `it` covers one tap (ky, kx) and BK consecutive input channels: each row
        # reads BK contiguous fp16 of one NHWC pixel (coalesced); zero outside the image.
        CB: tl.constexpr = CIN // BK
        tap = it // CB
        c0 = (it - tap * CB) * BK
        ky = tap // KH
        kx = tap - ky * KH
        ih = oh + (ky - PAD)
        iw = ow + (kx - PAD)
        ok = rok & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
        if VIEW:
            ih, iw = _view_coords(ih, iw, fl, dy, dx, H, W)
        a = tl.load(x_base + ((ih * W + iw) * CIN + c0)[:, None] + kk[None, :], mask=ok[:, None], other=0)
        return a.to(tl.float16), tap * CIN + c0 + kk

    @triton.jit
    def _load_a_generic(x_base, oh, ow, rok, it, kk, H: tl.constexpr, W: tl.constexpr,
                        CIN: tl.constexpr, KH: tl.constexpr, PAD: tl.constexpr, BK: tl.constexpr,
                        VIEW: tl.constexpr, fl, dy, dx):
        # Any CIN (the 3-channel stem, widths not a multiple of 16): K flattened as
        # (ky, kx, ci), a gather per element.  Only the few first layers take this path.
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
    def _head_logits(hmax_ptr, hw_ptr, hb_ptr, out_ptr, hcnt_ptr, vw_ptr, NB: tl.constexpr,
                     NV: tl.constexpr, COUT: tl.constexpr, CP: tl.constexpr):
        # Run by the last tile of the last layer: every channel max is in hmax now.  Read it
        # at L2 (atomic max with -inf changes nothing), then reset it for the next forward.
        # Rows i*NV .. i*NV+NV-1 are the TTA views of image i: its logits are the weighted
        # sum of theirs, sum_v w_v * (Wfc @ max_v + b), as TTANet (NV = 1, w = 1: plain).
        cc = tl.arange(0, CP)
        cls = tl.arange(0, 16)
        wfc = tl.load(hw_ptr + cls[:, None] * CP + cc[None, :])  # fp32, zero-padded [16, CP]
        bfc = tl.load(hb_ptr + cls)
        for i in tl.static_range(NB // NV):
            acc = tl.zeros([16], dtype=tl.float32)
            for v in tl.static_range(NV):
                row = hmax_ptr + (i * NV + v) * COUT + cc
                ninf = tl.full([CP], float("-inf"), tl.float32)
                f = tl.atomic_max(row, ninf, mask=cc < COUT)  # a read at L2
                tl.store(row, ninf, mask=cc < COUT)
                f = tl.where(cc < COUT, f, 0.0)
                acc += tl.load(vw_ptr + v) * (tl.sum(wfc * f[None, :], axis=1) + bfc)
            tl.store(out_ptr + i * 16 + cls, acc, mask=cls < 10)  # rows padded to 16
        tl.store(hcnt_ptr, 0)

    @triton.jit
    def _epilogue(acc, bias, wfc, bfc, y_ptr, n, tile, pid_n, cols, cmask, hmax_ptr, hw_ptr, hb_ptr, out_ptr,
                  hcnt_ptr, vw_ptr, n_fin, BP: tl.constexpr, S: tl.constexpr, BN: tl.constexpr, HWO: tl.constexpr,
                  COUT: tl.constexpr, ACT: tl.constexpr, HEAD: tl.constexpr, NB: tl.constexpr,
                  NV: tl.constexpr, CP: tl.constexpr):
        # pool (max of 4 consecutive rows) before bias and activation: exact for any act;
        # bias (and the head's weights) were loaded before the K loop: no round trip here
        if S == 4:
            v = tl.max(tl.reshape(acc, (BP, 4, BN)), axis=1)
        else:
            v = acc
        v = _act(v + bias[None, :], ACT)
        q = tile * BP + tl.arange(0, BP)
        if HEAD == 2:
            # the tile holds the whole map (one row tile): its channel max is final, so its
            # share of the logits, w_v * (Wfc[:, cols] @ max + [pid_n == 0] b), is added into
            # the output (zeroed by the first layer's kernel): no global max, no last tile
            vm = tl.where((q < HWO)[:, None] & cmask[None, :], v, float("-inf"))
            f = tl.where(cmask, tl.max(vm, axis=0), 0.0)
            part = tl.sum(wfc * f[None, :], axis=1) + tl.where(pid_n == 0, bfc, 0.0)
            cls = tl.arange(0, 16)
            tl.atomic_add(out_ptr + (n // NV) * 16 + cls, tl.load(vw_ptr + n % NV) * part)
        elif HEAD == 1:
            # global max: this tile's max per channel, then the last tile does the linear
            vm = tl.where((q < HWO)[:, None], v, float("-inf"))
            tl.atomic_max(hmax_ptr + n * COUT + cols, tl.max(vm, axis=0), mask=cmask)
            tl.debug_barrier()  # all threads' atomics issued before the arrival count
            done = tl.atomic_add(hcnt_ptr, 1)
            if done == n_fin - 1:
                _head_logits(hmax_ptr, hw_ptr, hb_ptr, out_ptr, hcnt_ptr, vw_ptr, NB, NV, COUT, CP)
        else:
            offs = ((n * HWO + q) * COUT)[:, None] + cols[None, :]
            tl.store(y_ptr + offs, v.to(tl.float16), mask=(q < HWO)[:, None] & cmask[None, :])

    @triton.jit
    def _stem_tap(x_base, ws_ptr, bs_ptr, ih, iw, rok, fl, dy, dx, H: tl.constexpr, W: tl.constexpr,
                  KS: tl.constexpr, KSP: tl.constexpr, CSP: tl.constexpr, SACT: tl.constexpr,
                  VIEW: tl.constexpr):
        # Fused stem (fuse_stem): the stem's output at stem-map pixels (ih, iw), all its CSP
        # (zero-padded) channels, computed from the image as a [rows, KSP] x [KSP, CSP] dot;
        # zero outside the stem map (the next layer's zero padding).  Rounded to fp16 as the
        # stem's stored output would be, so fused and unfused give the same numbers.
        valid = rok & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
        ks = tl.arange(0, KSP)
        a, k = _load_a_generic(x_base, ih, iw, valid, 0, ks, H + KS - 1, W + KS - 1, 3, KS, 0, KSP,
                               VIEW, fl, dy, dx)
        cs = tl.arange(0, CSP)
        wst = tl.load(ws_ptr + k[:, None] * CSP + cs[None, :])  # fp16 [KSP, CSP], zero-padded
        v = _act(tl.dot(a, wst) + tl.load(bs_ptr + cs)[None, :], SACT)
        return tl.where(valid[:, None], v, 0.0).to(tl.float16)

    @triton.jit
    def _conv_work(x_ptr, w_ptr, b_ptr, y_ptr, part_ptr, cnt_ptr, ws_ptr, bs_ptr,
                   hmax_ptr, hw_ptr, hb_ptr, out_ptr, hcnt_ptr, view_ptr, vw_ptr,
                   pid_m, pid_n, sid, n_tiles, m_tiles, SPLIT, n_fin,
                   H: tl.constexpr, W: tl.constexpr, CIN: tl.constexpr, COUT: tl.constexpr,
                   KH: tl.constexpr, PAD: tl.constexpr, S: tl.constexpr, WO: tl.constexpr, HWO: tl.constexpr,
                   ACT: tl.constexpr, BP: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, KI: tl.constexpr,
                   GENERIC: tl.constexpr, HEAD: tl.constexpr, NB: tl.constexpr, CP: tl.constexpr,
                   NV: tl.constexpr, VIEW: tl.constexpr, STEM: tl.constexpr, KS: tl.constexpr,
                   KSP: tl.constexpr, CSP: tl.constexpr, SACT: tl.constexpr, ZOUT: tl.constexpr,
                   PDL: tl.constexpr):
        """One work item of a folded conv layer (+ fused 2x2 pool, bias, act; + head when
        HEAD): row tile pid_m = (map, tile), channel tile pid_n, K slice sid of SPLIT (KI K
        steps in all).  Map n = image n // NV, TTA view n % NV; the first layer (VIEW) makes
        the view itself from its image's loads.  STEM: the input is the image and the stem
        is computed per tap (_stem_tap); K step = one tap of all CIN = stem channels.
        The constant operands of the epilogue (bias, the head's weights) are loaded first,
        before the PDL wait (weights do not depend on the previous layer).  ZOUT: this is the
        first layer of a net whose head adds into the output (HEAD == 2): zero it."""
        n = pid_m // m_tiles
        tile = pid_m - n * m_tiles
        BM: tl.constexpr = BP * S
        rok, oh, ow = _row_coords(tile, BP, S, WO, HWO)
        cols = pid_n * BN + tl.arange(0, BN)
        cmask = cols < COUT
        kk = tl.arange(0, BK)
        IMG: tl.constexpr = (H + KS - 1) * (W + KS - 1) * 3 if STEM else H * W * CIN  # one input map
        if VIEW:  # the input holds NB // NV images; view (flip, dy, dx) from view_ptr
            x_base = x_ptr + (n // NV) * IMG
            vp = view_ptr + (n % NV) * 3
            fl, dy, dx = tl.load(vp), tl.load(vp + 1), tl.load(vp + 2)
        else:
            x_base = x_ptr + n * IMG
            fl, dy, dx = 0, 0, 0
        bias = tl.load(b_ptr + cols, mask=cmask, other=0.0)
        if HEAD == 2:
            cls = tl.arange(0, 16)
            wfc = tl.load(hw_ptr + cls[:, None] * CP + cols[None, :], mask=cmask[None, :], other=0.0)
            bfc = tl.load(hb_ptr + cls)
        else:
            wfc, bfc = 0.0, 0.0
        if PDL:  # wait for the previous layer, and let the next one start launching
            gdc_wait()
            gdc_launch_dependents()
        if ZOUT:
            if (pid_m == 0) & (pid_n == 0) & (sid == 0):
                for i in tl.static_range(NB // NV):
                    tl.store(out_ptr + i * 16 + tl.arange(0, 16), tl.zeros([16], dtype=tl.float32))
        k_lo = sid * KI // SPLIT
        k_hi = (sid + 1) * KI // SPLIT
        acc = tl.zeros([BM, BN], dtype=tl.float32)
        for it in range(k_lo, k_hi):
            if STEM:
                ky = it // KH
                a = _stem_tap(x_base, ws_ptr, bs_ptr, oh + (ky - PAD), ow + (it - ky * KH - PAD), rok,
                              fl, dy, dx, H, W, KS, KSP, CSP, SACT, VIEW)
                krow = it * CIN + kk  # BK = CSP: the tap's CIN weight rows, padding masked
                kmask = kk < CIN
            elif GENERIC:
                a, krow = _load_a_generic(x_base, oh, ow, rok, it, kk, H, W, CIN, KH, PAD, BK, VIEW, fl, dy, dx)
                kmask = krow < KH * KH * CIN
            else:
                a, krow = _load_a_blocked(x_base, oh, ow, rok, it, kk, H, W, CIN, KH, PAD, BK, VIEW, fl, dy, dx)
                kmask = krow >= 0
            b = tl.load(w_ptr + krow[:, None] * COUT + cols[None, :], mask=kmask[:, None] & cmask[None, :],
                        other=0.0)
            acc = tl.dot(a, b, acc)
        if SPLIT == 1:
            _epilogue(acc, bias, wfc, bfc, y_ptr, n, tile, pid_n, cols, cmask, hmax_ptr, hw_ptr, hb_ptr, out_ptr,
                      hcnt_ptr, vw_ptr, n_fin, BP, S, BN, HWO, COUT, ACT, HEAD, NB, NV, CP)
        else:
            # split-K: add this slice into the fp32 scratch; the last slice to arrive at the
            # tile takes the sum (and leaves zeros behind) and runs the epilogue
            rows = pid_m * BM + tl.arange(0, BM)
            pp = part_ptr + rows[:, None] * COUT + cols[None, :]
            tl.atomic_add(pp, acc, mask=cmask[None, :])
            tl.debug_barrier()  # every thread's adds issued before the arrival count
            tid = pid_m * n_tiles + pid_n
            arrived = tl.atomic_add(cnt_ptr + tid, 1)
            if arrived == SPLIT - 1:
                # read the sum at L2 (an atomic add of 0: where the other slices' adds landed),
                # then leave zeros; nothing else touches this tile until the next forward
                zero = tl.zeros([BM, BN], dtype=tl.float32)
                tot = tl.atomic_add(pp, zero, mask=cmask[None, :])
                tl.store(pp, zero, mask=cmask[None, :])
                tl.store(cnt_ptr + tid, 0)
                _epilogue(tot, bias, wfc, bfc, y_ptr, n, tile, pid_n, cols, cmask, hmax_ptr, hw_ptr, hb_ptr,
                          out_ptr, hcnt_ptr, vw_ptr, n_fin, BP, S, BN, HWO, COUT, ACT, HEAD, NB, NV, CP)

    @triton.jit
    def conv_layer_kernel(x_ptr, w_ptr, b_ptr, y_ptr, part_ptr, cnt_ptr, ws_ptr, bs_ptr,
                          hmax_ptr, hw_ptr, hb_ptr, out_ptr, hcnt_ptr, view_ptr, vw_ptr,
                          m_tiles, SPLIT, n_fin,
                          H: tl.constexpr, W: tl.constexpr, CIN: tl.constexpr, COUT: tl.constexpr,
                          KH: tl.constexpr, PAD: tl.constexpr, S: tl.constexpr,
                          WO: tl.constexpr, HWO: tl.constexpr, ACT: tl.constexpr,
                          BP: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, KI: tl.constexpr,
                          GENERIC: tl.constexpr, HEAD: tl.constexpr, NB: tl.constexpr, CP: tl.constexpr,
                          NV: tl.constexpr, VIEW: tl.constexpr, STEM: tl.constexpr, KS: tl.constexpr,
                          KSP: tl.constexpr, CSP: tl.constexpr, SACT: tl.constexpr, ZOUT: tl.constexpr,
                          PDL: tl.constexpr):
        """One folded conv layer, grid = (NB * m_tiles, n_tiles, SPLIT): one work item
        (_conv_work) per program (which does the PDL wait, after its constant loads)."""
        _conv_work(x_ptr, w_ptr, b_ptr, y_ptr, part_ptr, cnt_ptr, ws_ptr, bs_ptr,
                   hmax_ptr, hw_ptr, hb_ptr, out_ptr, hcnt_ptr, view_ptr, vw_ptr,
                   tl.program_id(0), tl.program_id(1), tl.program_id(2), tl.num_programs(1), m_tiles, SPLIT, n_fin,
                   H, W, CIN, COUT, KH, PAD, S, WO, HWO, ACT, BP, BN, BK, KI, GENERIC, HEAD, NB, CP,
                   NV, VIEW, STEM, KS, KSP, CSP, SACT, ZOUT, PDL)

    @triton.jit
    def _grid_barrier(bar_ptr, nprog):
        # All programs of the grid meet here (fuse_pairs).  bar[0] counts arrivals forever
        # (int64, never reset, so no reset can race a late spinner): the tickets of one barrier
        # are nprog consecutive numbers, and a program waits until its group is complete.  Safe
        # only with every program resident at once: the host keeps nprog <= the SM count (one
        # program fits an SM) and nothing this kernel waits on needs an SM of ours.  The
        # acq_rel atomics order each program's stores before / its loads after the barrier
        # (the debug_barriers extend that to all threads of the program, as grid.sync does).
        # A wait of 2^22 polls (seconds) gives up and counts in bar[1] (KernelNet.barrier_timeouts):
        # a broken assumption then shows as an error, not as a hung GPU.
        tl.debug_barrier()
        t = tl.atomic_add(bar_ptr, 1)
        target = (t // nprog + 1) * nprog
        cur = t + 1
        spins = 0
        while (cur < target) & (spins < 4194304):
            cur = tl.atomic_add(bar_ptr, 0)
            spins += 1
        if cur < target:
            tl.atomic_add(bar_ptr + 1, 1)
        tl.debug_barrier()

    @triton.jit
    def _layer_items(x_ptr, w_ptr, b_ptr, y_ptr, part_ptr, cnt_ptr, ws_ptr, bs_ptr,
                     hmax_ptr, hw_ptr, hb_ptr, out_ptr, hcnt_ptr, view_ptr, vw_ptr,
                     n_tiles, m_tiles, SPLIT, n_fin, n_items, pid, nprog,
                     H: tl.constexpr, W: tl.constexpr, CIN: tl.constexpr, COUT: tl.constexpr,
                     KH: tl.constexpr, PAD: tl.constexpr, S: tl.constexpr, WO: tl.constexpr, HWO: tl.constexpr,
                     ACT: tl.constexpr, BP: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, KI: tl.constexpr,
                     GENERIC: tl.constexpr, HEAD: tl.constexpr, NB: tl.constexpr, CP: tl.constexpr,
                     NV: tl.constexpr, VIEW: tl.constexpr, STEM: tl.constexpr, KS: tl.constexpr,
                     KSP: tl.constexpr, CSP: tl.constexpr, SACT: tl.constexpr, ZOUT: tl.constexpr):
        # a persistent program's share of one layer (the pair kernel did the PDL wait): items pid, pid + nprog, ... of the
        # layer's (row tile, channel tile, K slice) grid, K slice fastest
        for w in range(pid, n_items, nprog):
            sid = w % SPLIT
            pid_n = (w // SPLIT) % n_tiles
            pid_m = w // (SPLIT * n_tiles)
            _conv_work(x_ptr, w_ptr, b_ptr, y_ptr, part_ptr, cnt_ptr, ws_ptr, bs_ptr,
                       hmax_ptr, hw_ptr, hb_ptr, out_ptr, hcnt_ptr, view_ptr, vw_ptr,
                       pid_m, pid_n, sid, n_tiles, m_tiles, SPLIT, n_fin,
                       H, W, CIN, COUT, KH, PAD, S, WO, HWO, ACT, BP, BN, BK, KI, GENERIC, HEAD, NB, CP,
                       NV, VIEW, STEM, KS, KSP, CSP, SACT, ZOUT, False)

    @triton.jit
    def conv_pair_kernel(
            a_x, a_w, a_b, a_y, a_part, a_cnt, a_ws, a_bs, a_n_tiles, a_m_tiles, a_SPLIT, a_n_fin, a_items,
            b_x, b_w, b_b, b_y, b_part, b_cnt, b_ws, b_bs, b_n_tiles, b_m_tiles, b_SPLIT, b_n_fin, b_items,
            hmax_ptr, hw_ptr, hb_ptr, out_ptr, hcnt_ptr, view_ptr, vw_ptr, bar_ptr, ph_lo, ph_hi,
            A_H: tl.constexpr, A_W: tl.constexpr, A_CIN: tl.constexpr, A_COUT: tl.constexpr, A_KH: tl.constexpr,
            A_PAD: tl.constexpr, A_S: tl.constexpr, A_WO: tl.constexpr, A_HWO: tl.constexpr, A_ACT: tl.constexpr,
            A_BP: tl.constexpr, A_BN: tl.constexpr, A_BK: tl.constexpr, A_KI: tl.constexpr, A_GENERIC: tl.constexpr,
            A_HEAD: tl.constexpr, A_VIEW: tl.constexpr, A_STEM: tl.constexpr, A_KS: tl.constexpr,
            A_KSP: tl.constexpr, A_CSP: tl.constexpr, A_SACT: tl.constexpr, A_ZOUT: tl.constexpr,
            B_H: tl.constexpr, B_W: tl.constexpr, B_CIN: tl.constexpr, B_COUT: tl.constexpr, B_KH: tl.constexpr,
            B_PAD: tl.constexpr, B_S: tl.constexpr, B_WO: tl.constexpr, B_HWO: tl.constexpr, B_ACT: tl.constexpr,
            B_BP: tl.constexpr, B_BN: tl.constexpr, B_BK: tl.constexpr, B_KI: tl.constexpr, B_GENERIC: tl.constexpr,
            B_HEAD: tl.constexpr, B_VIEW: tl.constexpr, B_STEM: tl.constexpr, B_KS: tl.constexpr,
            B_KSP: tl.constexpr, B_CSP: tl.constexpr, B_SACT: tl.constexpr, B_ZOUT: tl.constexpr,
            NB: tl.constexpr, CP: tl.constexpr, NV: tl.constexpr, PDL: tl.constexpr):
        """Two consecutive layers in one persistent kernel (fuse_pairs): every program works
        through its share of layer A, all meet at a grid barrier, then layer B.  Phases
        [ph_lo, ph_hi) of (A, B) run; the barrier only when both do (the CPU interpreter runs
        programs one after another, so its tests launch the phases separately or use 1 program)."""
        if PDL:
            gdc_wait()
            gdc_launch_dependents()
        pid = tl.program_id(0)
        nprog = tl.num_programs(0)
        if ph_lo == 0:
            _layer_items(a_x, a_w, a_b, a_y, a_part, a_cnt, a_ws, a_bs, hmax_ptr, hw_ptr, hb_ptr, out_ptr, hcnt_ptr,
                         view_ptr, vw_ptr, a_n_tiles, a_m_tiles, a_SPLIT, a_n_fin, a_items, pid, nprog,
                         A_H, A_W, A_CIN, A_COUT, A_KH, A_PAD, A_S, A_WO, A_HWO, A_ACT, A_BP, A_BN, A_BK, A_KI,
                         A_GENERIC, A_HEAD, NB, CP, NV, A_VIEW, A_STEM, A_KS, A_KSP, A_CSP, A_SACT, A_ZOUT)
            if ph_hi == 2:
                _grid_barrier(bar_ptr, nprog)
        if ph_hi == 2:
            _layer_items(b_x, b_w, b_b, b_y, b_part, b_cnt, b_ws, b_bs, hmax_ptr, hw_ptr, hb_ptr, out_ptr, hcnt_ptr,
                         view_ptr, vw_ptr, b_n_tiles, b_m_tiles, b_SPLIT, b_n_fin, b_items, pid, nprog,
                         B_H, B_W, B_CIN, B_COUT, B_KH, B_PAD, B_S, B_WO, B_HWO, B_ACT, B_BP, B_BN, B_BK, B_KI,
                         B_GENERIC, B_HEAD, NB, CP, NV, B_VIEW, B_STEM, B_KS, B_KSP, B_CSP, B_SACT, B_ZOUT)


# --------------------------------------------------------------------------------------------
# host side
# --------------------------------------------------------------------------------------------
def _pow2(v):
    return 1 << max(0, int(v) - 1).bit_length()


def _pack_weight(L):
    """Conv weight [Cout, Cin, k, k] -> the kernels' [(ky, kx, ci), Cout] float32 matrix."""
    return L["weight"].detach().float().permute(2, 3, 1, 0).reshape(-1, L["weight"].shape[0])


def _layer_meta(L, h, w, cin):
    """Shapes of one layer given its input map (h, w, cin); checks the contract."""
    cout, cin_w, kh, kw = L["weight"].shape
    if cin_w != cin or kh != kw:
        raise ValueError(f"layer weight {tuple(L['weight'].shape)} does not fit input channels {cin}")
    if L["pool"] not in (0, 2) or L["act"] not in ACTS:
        raise ValueError(f"layer pool {L['pool']} / act {L['act']!r}: pool must be 0 or 2, act relu|gelu")
    ho, wo = h + 2 * L["padding"] - kh + 1, w + 2 * L["padding"] - kw + 1
    if L["pool"]:
        ho, wo = ho // 2, wo // 2
    return dict(H=h, W=w, CIN=cin, COUT=cout, KH=kh, PAD=L["padding"], S=4 if L["pool"] else 1,
                HO=ho, WO=wo, ACT=ACTS[L["act"]], STEM=False, KS=0, KSP=16, CSP=16, SACT=1)


def _stem_meta(m, stem_m):
    """Layer meta m with the stem (meta stem_m) fused in: it reads the image and computes the
    stem per tap (_stem_tap), KSP / CSP = the stem's K and width padded to powers of 2 >= 16."""
    if stem_m["PAD"] or stem_m["S"] != 1:
        raise ValueError("fuse_stem: the stem must be an unpadded, unpooled conv")
    return dict(m, STEM=True, KS=stem_m["KH"], KSP=_pow2(max(16, stem_m["KH"] ** 2 * 3)),
                CSP=_pow2(max(16, stem_m["COUT"])), SACT=stem_m["ACT"])


def _k_steps(m, t):
    """K-loop length of a layer for tile t (a fused stem's layer: one K step per tap)."""
    if m["STEM"]:
        return m["KH"] ** 2
    if t["GENERIC"]:
        return -(-(m["KH"] ** 2 * m["CIN"]) // t["BK"])
    return m["KH"] ** 2 * (m["CIN"] // t["BK"])


def heuristic_tiles(m, batch, n_sm=132, target=None):
    """Tiles for one layer: 16-row tiles (4 pooled pixels x 4 for a pooled layer), 16-32
    channel columns, then split K until about `target` programs run (each keeps >= 2 K steps)."""
    generic = m["CIN"] % 16 != 0 and not m["STEM"]
    ktot = m["KH"] ** 2 * m["CIN"]
    if m["STEM"]:
        bk = m["CSP"]
    elif generic:
        bk = 32 if ktot <= 32 else 64
    else:
        bk = 64 if m["CIN"] % 64 == 0 else (32 if m["CIN"] % 32 == 0 else 16)
    t = dict(BP=4 if m["S"] == 4 else 16, BN=32 if m["COUT"] >= 64 else 16, BK=bk, GENERIC=generic,
             num_warps=4, num_stages=3)
    return _with_split(m, t, batch, target or n_sm)


def _with_split(m, t, batch, target):
    base = batch * -(-m["HO"] * m["WO"] // t["BP"]) * -(-m["COUT"] // t["BN"])
    t["SPLIT"] = int(max(1, min(target // base, _k_steps(m, t) // 2)))
    return t


WIDE_LAUNCH = [(4, 2), (4, 4), (8, 2), (8, 3), (8, 4)]  # (num_warps, num_stages) beside the default (4, 3)


def _candidates(m, batch, n_sm, wide=False):
    """The build-time search space around the heuristic: row tiles x1/x2 (and the whole map
    when it has <= 16 pixels), 16-64 channel columns, K steps of 1, 2 or 4 times the
    heuristic's (a longer step: fewer dependent trips round the K loop), and split-K aimed at
    1 (none: no L2 round trips), n_sm/2, n_sm or 2 n_sm programs.  SPLIT is a runtime
    argument, so the compiled kernels are only the (BP, BN, BK) triples: tools/kernel_tune.py
    compiles them in parallel processes first (KernelNet._autotune(timed=False)).
    wide: also 8 warps and 2 / 4 pipeline stages (WIDE_LAUNCH) for layers of >= 64 input
    channels (the long K loops), 6x the compiles."""
    h = heuristic_tiles(m, batch, n_sm)
    bks = [h["BK"]]
    if not (h["GENERIC"] or m["STEM"]):
        bks += [bk for bk in (2 * h["BK"], 4 * h["BK"]) if bk <= 256 and m["CIN"] % bk == 0]
    bps = [h["BP"], 2 * h["BP"]]
    if m["HO"] * m["WO"] <= 16 and _pow2(m["HO"] * m["WO"]) not in bps:
        bps.append(_pow2(m["HO"] * m["WO"]))  # the whole (small) map in one row tile: a last layer's head mode 2
    out = []
    for bp in bps:
        for bn in (16, 32, 64):
            if bn > max(16, _pow2(m["COUT"])):
                continue
            for bk in bks:
                for tgt in (1, n_sm // 2, n_sm, 2 * n_sm):
                    t = _with_split(m, dict(h, BP=bp, BN=bn, BK=bk), batch, tgt)
                    if t not in out:
                        out.append(t)
    if wide and m["CIN"] >= 64 and not h["GENERIC"]:
        out += [dict(t, num_warps=w, num_stages=st) for t in list(out) for w, st in WIDE_LAUNCH]
    return out


def tile_key(m, nb, gpu):
    """The tile cache's key of one layer: the GPU's name, the maps per call, the layer's shape."""
    return f"{gpu}|nb={nb}|" + ",".join(f"{k}={m[k]}" for k in sorted(m))


def read_tile_cache(path):
    """{key: tiles} from a tile cache file (tools/kernel_tune.py writes it); {} if absent."""
    if not path or not os.path.exists(path):
        return {}
    with open(path) as f:
        d = json.load(f)
    if not isinstance(d, dict) or not isinstance(d.get("tiles"), dict):
        raise ValueError(f"{path}: not a tile cache (expected {{'tiles': {{key: tiles}}}}); "
                         "delete it or rerun tools/kernel_tune.py")
    return d["tiles"]


def write_tile_cache(path, entries, meta):
    """Merge {key: tiles} into the cache file (atomic replace): the newest tuning of a key wins."""
    d = {"about": meta, "tiles": {**read_tile_cache(path), **entries}}
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(d, f, indent=1, sort_keys=True)
    os.replace(tmp, path)


class KernelNet(torch.nn.Module):
    """The folded net as one Triton kernel per conv layer (head fused into the last one).

    KernelNet(layers, head, batch=1, device='cuda', autotune=False, pdl=False, views=None)
    forward(x): x N x 32 x 32 x 3 (uint8 or fp16, NHWC, contiguous, N == batch) -> float32 N x 10
    logits (the same buffer every call).  Allocates nothing per call: CUDA-graph capturable.

    views: test-time augmentation fused into the kernels, [((flip, dy, dx), weight), ...] as
    inference.TTA_VIEWS: every layer runs batch * len(views) maps, the first layer reads each
    view straight from the image (mirrored / reflect-shifted loads), the head returns the
    weighted sum of the views' logits.  Same kernel count as without views, no torch op.

    Fewer kernels (both off by default until a GPU measurement shows they pay):
    fuse_stem: the stem (first layer, unpadded) is computed inside the second layer's kernel,
      per 3x3 tap of its row tile, instead of by a kernel of its own (tiles then cover layers[1:]).
    fuse_pairs: consecutive layers, paired from the last one back, each pair one persistent
      kernel with a grid barrier between its two layers (conv_pair_kernel).
    """

    def __init__(self, layers, head, batch=1, device="cuda", autotune=False, pdl=False, tiles=None, views=None,
                 fuse_stem=False, fuse_pairs=False, tile_cache=None):
        super().__init__()
        ok, why = available(device)
        if not ok:
            raise RuntimeError(f"KernelNet unavailable: {why}")
        if pdl and not pdl_available()[0]:
            raise RuntimeError(f"KernelNet pdl=True: {pdl_available()[1]}")
        self.device = torch.device("cpu" if _interpreting() else device)
        self.batch, self.pdl = int(batch), bool(pdl)
        self._build_views(views)
        self.n_sm = (torch.cuda.get_device_properties(self.device).multi_processor_count
                     if self.device.type == "cuda" else 132)
        self.fuse_stem, self.fuse_pairs = bool(fuse_stem), bool(fuse_pairs)
        self.oversized = 0  # candidate tiles _autotune left out: more shared memory than the SM has
        self.specs = self._build_specs(layers)
        self._build_head(head)
        self.gpu = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else "interpreter"
        cache = read_tile_cache(tile_cache)
        for i, sp in enumerate(self.specs):
            if tiles:
                sp["tiles"], sp["tile_source"] = dict(tiles[i]), "given"
            else:
                sp["tiles"], sp["tile_source"] = self._choose_tiles(sp, autotune, cache)
            self._alloc_scratch(sp)
        self._build_groups(fuse_pairs)

    # -- build --------------------------------------------------------------------------------
    def _build_views(self, views):
        """TTA views -> (flip, dy, dx) int32 rows and fp32 weights the kernels read; nb = maps
        per layer.  Shifts are one pixel at most (the reflect index maps -1 and H only)."""
        views = views or [((False, 0, 0), 1.0)]
        if any(abs(dy) > 1 or abs(dx) > 1 for (_, dy, dx), _ in views):
            raise ValueError(f"views {views}: shifts of one pixel at most")
        self.nv, self.nb = len(views), self.batch * len(views)
        self.fused_views = views != [((False, 0, 0), 1.0)]
        self.view_t = torch.tensor([[int(f), dy, dx] for (f, dy, dx), _ in views], dtype=torch.int32,
                                   device=self.device).flatten()
        self.view_w = torch.tensor([float(w) for _, w in views], dtype=torch.float32, device=self.device)

    def _build_specs(self, layers):
        specs, h, w, c = [], 32, 32, 3
        stem_m = None
        if self.fuse_stem:
            if len(layers) < 2:
                raise ValueError("fuse_stem needs a stem and at least one more layer")
            stem_m = _layer_meta(layers[0], h, w, c)
            h, w, c = stem_m["HO"], stem_m["WO"], stem_m["COUT"]
        for L in layers[1:] if self.fuse_stem else layers:
            m = _layer_meta(L, h, w, c)
            sp = dict(meta=m, w=_pack_weight(L).to(self.device, torch.float16).contiguous(),
                      b=L["bias"].detach().to(self.device, torch.float32).contiguous(),
                      y=torch.empty(self.nb, m["HO"], m["WO"], m["COUT"], device=self.device, dtype=torch.float16),
                      ws=torch.zeros(1, device=self.device, dtype=torch.float16),  # unused unless STEM
                      bs=torch.zeros(1, device=self.device))
            if stem_m is not None and not specs:
                sp["meta"] = m = _stem_meta(m, stem_m)
                sp["ws"] = torch.zeros(m["KSP"], m["CSP"], device=self.device, dtype=torch.float16)
                sp["bs"] = torch.zeros(m["CSP"], device=self.device)
                self._load_stem(sp, layers[0])
            specs.append(sp)
            h, w, c = m["HO"], m["WO"], m["COUT"]
        return specs

    @staticmethod
    def _load_stem(sp, L):
        """The stem's packed weights [(ky,kx,ci), Cs] and bias into the fused layer's padded buffers."""
        ws = _pack_weight(L)
        if ws.shape[0] > sp["ws"].shape[0] or ws.shape[1] > sp["ws"].shape[1]:
            raise ValueError(f"stem weight {tuple(L['weight'].shape)} does not fit {tuple(sp['ws'].shape)}")
        sp["ws"][:ws.shape[0], :ws.shape[1]].copy_(ws.to(sp["ws"]))
        sp["bs"][:ws.shape[1]].copy_(L["bias"].detach().to(sp["bs"]))

    def _build_groups(self, fuse_pairs):
        """Kernels of a forward: [spec index] each, or pairs of consecutive specs paired from the
        last back (fuse_pairs), each pair with its barrier counter and a grid of <= n_sm programs."""
        idx = list(range(len(self.specs)))
        self.groups = []
        while idx:
            self.groups.insert(0, idx[-2:] if fuse_pairs and len(idx) >= 2 else idx[-1:])
            idx = idx[:-len(self.groups[0])]
        for g in self.groups:
            for i in g if len(g) == 2 else ():
                self._fit_items(i)
        self.phases = None  # tests only: "split" launches a pair's layers as 2 kernels, "one" uses 1 program
        self.bars = [torch.zeros(2, dtype=torch.int64, device=self.device) for _ in self.groups]  # count, timeouts

    def _build_head(self, head):
        wfc = head["weight"].detach().float()
        ncls, c = wfc.shape
        if ncls > 16 or c != self.specs[-1]["meta"]["COUT"]:
            raise ValueError(f"head weight {tuple(wfc.shape)}: needs <= 16 classes and {c} = last width")
        self.ncls, self.cp = ncls, _pow2(max(c, 16))
        hw = torch.zeros(16, self.cp)
        hw[:ncls, :c] = wfc
        hb = torch.zeros(16)
        hb[:ncls] = head["bias"].detach().float()
        dev = self.device
        self.hw, self.hb = hw.to(dev), hb.to(dev)
        self.hmax = torch.full((self.nb, c), float("-inf"), device=dev)  # reset by the kernel
        self.hcnt = torch.zeros(1, dtype=torch.int32, device=dev)
        self.out = torch.zeros(self.batch, 16, device=dev)  # rows padded to 16, logits[:, :10]
        self.logits = self.out.view(self.batch, 16)[:, :ncls]

    @torch.no_grad()
    def load_weights(self, layers, head):
        """Copy another net of the same shapes into the packed weights, in place (a captured CUDA
        graph then runs the new weights): how bench.py evaluates every seed through this path."""
        if len(layers) != len(self.specs) + self.fuse_stem:
            raise ValueError(f"{len(layers)} layers, this KernelNet has {len(self.specs) + self.fuse_stem}")
        if self.fuse_stem:
            layers = list(layers)
            self._load_stem(self.specs[0], layers.pop(0))
        for sp, L in zip(self.specs, layers):
            wt = _pack_weight(L)
            if wt.shape != sp["w"].shape or L["bias"].shape != sp["b"].shape:
                raise ValueError(f"layer weights {tuple(L['weight'].shape)} do not fit {tuple(sp['w'].shape)}")
            sp["w"].copy_(wt.to(sp["w"]))
            sp["b"].copy_(L["bias"].detach().to(sp["b"]))
        wfc = head["weight"].detach().float()
        if wfc.shape[0] != self.ncls or wfc.shape[1] != self.specs[-1]["meta"]["COUT"]:
            raise ValueError(f"head weight {tuple(wfc.shape)} does not fit this KernelNet")
        self.hw[:self.ncls, :wfc.shape[1]].copy_(wfc)
        self.hb[:self.ncls].copy_(head["bias"].detach().float())

    def _alloc_scratch(self, sp):
        m, t = sp["meta"], sp["tiles"]
        mt = -(-m["HO"] * m["WO"] // t["BP"])
        nt = -(-m["COUT"] // t["BN"])
        sp["grid"] = (self.nb * mt, nt, t["SPLIT"])
        sp["m_tiles"] = mt
        rows = self.nb * mt * t["BP"] * m["S"] if t["SPLIT"] > 1 else 1
        sp["part"] = torch.zeros(rows, m["COUT"] if t["SPLIT"] > 1 else 1, device=self.device)
        sp["cnt"] = torch.zeros(self.nb * mt * nt, dtype=torch.int32, device=self.device)

    def _choose_tiles(self, sp, autotune, cache):
        """(tiles, source): the tile cache's entry for this GPU and layer shape ('cache'), else
        the build-time search if autotune ('autotune'), else the heuristic ('heuristic')."""
        m = sp["meta"]
        key = tile_key(m, self.nb, self.gpu)
        if key in cache:
            return dict(cache[key]), "cache"
        tune = bool(autotune) and self.device.type == "cuda"  # the interpreter cannot time
        mem_key = (key, self.pdl, autotune)
        if mem_key not in _TILE_CACHE:
            _TILE_CACHE[mem_key] = self._autotune(sp, autotune=autotune) if tune else heuristic_tiles(m, self.nb, self.n_sm)
        return dict(_TILE_CACHE[mem_key]), "autotune" if tune else "heuristic"

    def tuned_entries(self):
        """{tile_key: tiles} of this net's autotuned layers: what tools/kernel_tune.py saves."""
        return {tile_key(sp["meta"], self.nb, self.gpu): dict(sp["tiles"]) for sp in self.specs
                if sp["tile_source"] == "autotune"}

    def tile_sources(self):
        """Where each layer's tiles came from: cache | autotune | heuristic | given."""
        return [sp["tile_source"] for sp in self.specs]

    def _autotune(self, sp, timed=True, autotune=True):
        """Time each candidate tile alone (a CUDA graph of 20 launches, on a random input of
        the layer's shape) and keep the fastest (autotune="wide": the wider search).
        timed=False: only compile every candidate (one launch each; tools/kernel_tune.py runs
        that in parallel processes)."""
        i = self.specs.index(sp)
        x = self._random_input_of(i)
        best = None
        from triton.runtime.errors import OutOfResources
        for t in _candidates(sp["meta"], self.nb, self.n_sm, wide=autotune == "wide"):
            sp["tiles"] = t
            self._alloc_scratch(sp)
            try:
                self._launch(i, x)  # compiles it; a tile needing more shared memory than the SM has:
            except OutOfResources:  # (big BK x 4 stages) is no candidate, counted in self.oversized
                self.oversized += 1
                continue
            if not timed:
                continue
            us = self._time_launch(lambda: self._launch(i, x), reps=20, graphs=3)
            if best is None or us < best[0]:
                best = (us, dict(t))
        torch.cuda.synchronize()
        return best[1] if best else None

    def _random_input_of(self, i):
        m = self.specs[i]["meta"]
        if i == 0:
            return torch.randint(0, 256, (self.batch, 32, 32, 3), device=self.device, dtype=torch.uint8)
        return torch.rand(self.nb, m["H"], m["W"], m["CIN"], device=self.device).half()

    # -- run ----------------------------------------------------------------------------------
    def _fit_items(self, i):
        """A paired layer's work items, at most n_sm if taller row tiles allow: a persistent
        program runs its items one after another, so a second item would double its latency."""
        sp = self.specs[i]
        m, t = sp["meta"], dict(sp["tiles"])
        while math.prod(sp["grid"]) > self.n_sm and t["BP"] * m["S"] < 128:
            t["BP"] *= 2
            sp["tiles"] = t = _with_split(m, dict(t), self.nb, self.n_sm)
            self._alloc_scratch(sp)

    def _consts(self, i):
        """The constexprs of spec i's layer (conv_layer_kernel / _conv_work order)."""
        m, t = self.specs[i]["meta"], self.specs[i]["tiles"]
        return dict(H=m["H"], W=m["W"], CIN=m["CIN"], COUT=m["COUT"], KH=m["KH"], PAD=m["PAD"], S=m["S"],
                    WO=m["WO"], HWO=m["HO"] * m["WO"], ACT=m["ACT"], BP=t["BP"], BN=t["BN"], BK=t["BK"],
                    KI=_k_steps(m, t), GENERIC=t["GENERIC"], HEAD=self._head_mode(i),
                    ZOUT=i == 0 and len(self.specs) > 1,
                    VIEW=i == 0 and self.fused_views, STEM=m["STEM"], KS=m["KS"], KSP=m["KSP"], CSP=m["CSP"],
                    SACT=m["SACT"])

    def _head_mode(self, i):
        """0: not the last layer; 2: the last layer's row tile holds a whole map, so each tile
        adds its share of the logits (the first kernel zeroes them, ZOUT: needs >= 2 layers;
        harmless under mode 1, whose last tile stores them); 1: a global max over tiles, then
        the last tile computes the logits."""
        i = i % len(self.specs)
        if i != len(self.specs) - 1:
            return 0
        return 2 if self.specs[i]["m_tiles"] == 1 and len(self.specs) > 1 else 1

    def _shared(self):
        return (self.hmax, self.hw, self.hb, self.out, self.hcnt, self.view_t, self.view_w)

    def _launch(self, i, x):
        """Spec i as its own kernel, one work item per program."""
        sp, t = self.specs[i], self.specs[i]["tiles"]
        kw = dict(num_warps=t["num_warps"], num_stages=t["num_stages"])
        if self.pdl:
            kw["launch_pdl"] = True
        conv_layer_kernel[sp["grid"]](
            x, sp["w"], sp["b"], sp["y"], sp["part"], sp["cnt"], sp["ws"], sp["bs"], *self._shared(),
            sp["m_tiles"], t["SPLIT"], sp["grid"][0] * sp["grid"][1],
            NB=self.nb, CP=self.cp, NV=self.nv, PDL=self.pdl, **self._consts(i), **kw)

    def _pair_args(self, i, x):
        sp, g = self.specs[i], self.specs[i]["grid"]
        return (x, sp["w"], sp["b"], sp["y"], sp["part"], sp["cnt"], sp["ws"], sp["bs"], g[1], sp["m_tiles"], g[2],
                g[0] * g[1], g[0] * g[1] * g[2])

    def _launch_pair(self, k, x):
        """Group k = specs (i, i+1) as one persistent conv_pair_kernel: n_sm programs at most,
        so all are resident at once (the grid barrier's condition); each program's warps and
        stages are the larger of the two layers' (a program must fit both)."""
        i, j = self.groups[k]
        ta, tb = self.specs[i]["tiles"], self.specs[j]["tiles"]
        items = max(self._pair_args(i, x)[-1], self._pair_args(j, x)[-1])
        kw = dict(num_warps=max(ta["num_warps"], tb["num_warps"]), num_stages=max(ta["num_stages"], tb["num_stages"]))
        if self.pdl:
            kw["launch_pdl"] = True
        consts = {f"A_{n}": v for n, v in self._consts(i).items()}
        consts.update({f"B_{n}": v for n, v in self._consts(j).items()})
        phases = {None: [(0, 2)], "one": [(0, 2)], "split": [(0, 1), (1, 2)]}[self.phases]
        grid = (1,) if self.phases == "one" else (min(self.n_sm, items),)
        for lo, hi in phases:
            conv_pair_kernel[grid](*self._pair_args(i, x), *self._pair_args(j, self.specs[i]["y"]), *self._shared(),
                                   self.bars[k], lo, hi, NB=self.nb, CP=self.cp, NV=self.nv, PDL=self.pdl,
                                   **consts, **kw)

    def _launch_group(self, k, x):
        if len(self.groups[k]) == 1:
            self._launch(self.groups[k][0], x)
        else:
            self._launch_pair(k, x)

    def forward(self, x):
        if x.shape != (self.batch, 32, 32, 3) or x.dtype not in (torch.uint8, torch.float16):
            raise ValueError(f"KernelNet input must be {self.batch}x32x32x3 uint8/fp16 NHWC, "
                             f"got {tuple(x.shape)} {x.dtype}")
        if not x.is_contiguous():
            raise ValueError("KernelNet input must be contiguous NHWC")
        h = x
        for k, g in enumerate(self.groups):
            self._launch_group(k, h)
            h = self.specs[g[-1]]["y"]
        return self.logits

    def barrier_timeouts(self):
        """Grid-barrier waits that gave up (fuse_pairs): must be 0, else the pairs' results are wrong."""
        return int(sum(int(b[1]) for b in self.bars))

    def kernel_count(self):
        """Kernels per forward: one per conv layer (the head and the TTA views are fused in),
        less the stem with fuse_stem, one per pair with fuse_pairs."""
        return len(self.groups)

    def tiles(self):
        return [dict(sp["tiles"]) for sp in self.specs]

    # -- timing -------------------------------------------------------------------------------
    @staticmethod
    def _time_launch(fn, reps=20, graphs=5):
        """GPU µs per call of fn: a CUDA graph of `reps` back-to-back calls, replayed `graphs`
        times after one warm replay, timed with events; the median replay / reps."""
        fn()
        torch.cuda.synchronize()
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            for _ in range(reps):
                fn()
        g.replay()
        times = []
        for _ in range(graphs):
            e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            e0.record()
            g.replay()
            e1.record()
            e1.synchronize()
            times.append(e0.elapsed_time(e1) * 1000.0 / reps)
        return sorted(times)[len(times) // 2]

    def time_kernels(self, x, reps=50):
        """[(name, µs)] per kernel, each timed alone (a graph of `reps` launches of it, on the
        inputs left by a full forward): the per-layer table."""
        self.forward(x)
        rows = []
        for k, g in enumerate(self.groups):
            src = x if g[0] == 0 else self.specs[g[0] - 1]["y"]
            name = " + ".join(self._spec_name(i) for i in g)
            rows.append((name, self._time_launch(lambda: self._launch_group(k, src), reps=reps)))
        return rows

    def _spec_name(self, i):
        sp = self.specs[i]
        m, t = sp["meta"], sp["tiles"]
        return (f"L{i}{' stem+' if m['STEM'] else ' '}{m['CIN']}->{m['COUT']} k{m['KH']} {m['H']}x{m['W']}"
                f"{' pool' if m['S'] == 4 else ''}{' +head' if i == len(self.specs) - 1 else ''}"
                f" grid={sp['grid']} BP={t['BP']} BN={t['BN']} BK={t['BK']} w{t['num_warps']}s{t['num_stages']}")
