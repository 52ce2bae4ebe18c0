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
import math

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
    import os
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
    def _epilogue(acc, b_ptr, y_ptr, n, tile, cols, cmask, hmax_ptr, hw_ptr, hb_ptr, out_ptr, hcnt_ptr,
                  vw_ptr, n_fin, BP: tl.constexpr, S: tl.constexpr, BN: tl.constexpr, HWO: tl.constexpr,
                  COUT: tl.constexpr, ACT: tl.constexpr, HEAD: tl.constexpr, NB: tl.constexpr,
                  NV: tl.constexpr, CP: tl.constexpr):
        # pool (max of 4 consecutive rows) before bias and activation: exact for any act
        if S == 4:
            v = tl.max(tl.reshape(acc, (BP, 4, BN)), axis=1)
        else:
            v = acc
        bias = tl.load(b_ptr + cols, mask=cmask, other=0.0)
        v = _act(v + bias[None, :], ACT)
        q = tile * BP + tl.arange(0, BP)
        if HEAD:
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
    def conv_layer_kernel(x_ptr, w_ptr, b_ptr, y_ptr, part_ptr, cnt_ptr,
                          hmax_ptr, hw_ptr, hb_ptr, out_ptr, hcnt_ptr, view_ptr, vw_ptr,
                          m_tiles, SPLIT, n_fin,
                          H: tl.constexpr, W: tl.constexpr, CIN: tl.constexpr, COUT: tl.constexpr,
                          KH: tl.constexpr, PAD: tl.constexpr, S: tl.constexpr,
                          WO: tl.constexpr, HWO: tl.constexpr, ACT: tl.constexpr,
                          BP: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, KI: tl.constexpr,
                          GENERIC: tl.constexpr, HEAD: tl.constexpr, NB: tl.constexpr, CP: tl.constexpr,
                          PDL: tl.constexpr, NV: tl.constexpr, VIEW: tl.constexpr):
        """One folded conv layer (+ fused 2x2 pool, bias, act; + head when HEAD).
        grid = (NB * m_tiles, n_tiles, SPLIT): axis 0 = (map, row tile), 1 = channel tile,
        2 = K slice (KI K steps in all, split evenly).  Map n = image n // NV, TTA view n % NV;
        the first layer (VIEW) makes the view itself from its image's loads."""
        if PDL:  # wait for the previous layer, and let the next one start launching
            gdc_wait()
            gdc_launch_dependents()
        pid_m = tl.program_id(0)
        pid_n = tl.program_id(1)
        sid = tl.program_id(2)
        n = pid_m // m_tiles
        tile = pid_m - n * m_tiles
        BM: tl.constexpr = BP * S
        rok, oh, ow = _row_coords(tile, BP, S, WO, HWO)
        cols = pid_n * BN + tl.arange(0, BN)
        cmask = cols < COUT
        kk = tl.arange(0, BK)
        if VIEW:  # the input holds NB // NV images; view (flip, dy, dx) from view_ptr
            x_base = x_ptr + (n // NV) * (H * W * CIN)
            vp = view_ptr + (n % NV) * 3
            fl, dy, dx = tl.load(vp), tl.load(vp + 1), tl.load(vp + 2)
        else:
            x_base = x_ptr + n * (H * W * CIN)
            fl, dy, dx = 0, 0, 0
        k_lo = sid * KI // SPLIT
        k_hi = (sid + 1) * KI // SPLIT
        acc = tl.zeros([BM, BN], dtype=tl.float32)
        for it in range(k_lo, k_hi):
            if GENERIC:
                a, krow = _load_a_generic(x_base, oh, ow, rok, it, kk, H, W, CIN, KH, PAD, BK, VIEW, fl, dy, dx)
                kmask = krow < KH * KH * CIN
            else:
                a, krow = _load_a_blocked(x_base, oh, ow, rok, it, kk, H, W, CIN, KH, PAD, BK, VIEW, fl, dy, dx)
                kmask = krow >= 0
            b = tl.load(w_ptr + krow[:, None] * COUT + cols[None, :], mask=kmask[:, None] & cmask[None, :],
                        other=0.0)
            acc = tl.dot(a, b, acc)
        if SPLIT == 1:
            _epilogue(acc, b_ptr, y_ptr, n, tile, cols, cmask, hmax_ptr, hw_ptr, hb_ptr, out_ptr, hcnt_ptr,
                      vw_ptr, n_fin, BP, S, BN, HWO, COUT, ACT, HEAD, NB, NV, CP)
        else:
            # split-K: add this slice into the fp32 scratch; the last slice to arrive at the
            # tile takes the sum (and leaves zeros behind) and runs the epilogue
            rows = pid_m * BM + tl.arange(0, BM)
            pp = part_ptr + rows[:, None] * COUT + cols[None, :]
            tl.atomic_add(pp, acc, mask=cmask[None, :])
            tl.debug_barrier()  # every thread's adds issued before the arrival count
            tid = pid_m * tl.num_programs(1) + pid_n
            arrived = tl.atomic_add(cnt_ptr + tid, 1)
            if arrived == SPLIT - 1:
                # read the sum at L2 (an atomic add of 0: where the other slices' adds landed),
                # then leave zeros; nothing else touches this tile until the next forward
                zero = tl.zeros([BM, BN], dtype=tl.float32)
                tot = tl.atomic_add(pp, zero, mask=cmask[None, :])
                tl.store(pp, zero, mask=cmask[None, :])
                tl.store(cnt_ptr + tid, 0)
                _epilogue(tot, b_ptr, y_ptr, n, tile, cols, cmask, hmax_ptr, hw_ptr, hb_ptr, out_ptr,
                          hcnt_ptr, vw_ptr, n_fin, BP, S, BN, HWO, COUT, ACT, HEAD, NB, NV, CP)


# --------------------------------------------------------------------------------------------
# host side
# --------------------------------------------------------------------------------------------
def _pow2(v):
    return 1 << max(0, int(v) - 1).bit_length()


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
                HO=ho, WO=wo, ACT=ACTS[L["act"]])


def _k_steps(m, t):
    """K-loop length of a layer for tile t."""
    if t["GENERIC"]:
        return -(-(m["KH"] ** 2 * m["CIN"]) // t["BK"])
    return m["KH"] ** 2 * (m["CIN"] // t["BK"])


def heuristic_tiles(m, batch, n_sm=132, target=None):
    """Tiles for one layer: 16-row tiles (4 pooled pixels x 4 for a pooled layer), 16-32
    channel columns, then split K until about `target` programs run (each keeps >= 2 K steps)."""
    generic = m["CIN"] % 16 != 0
    ktot = m["KH"] ** 2 * m["CIN"]
    if generic:
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


def _candidates(m, batch, n_sm):
    """A small build-time search space around the heuristic (shared shapes, split targets)."""
    h = heuristic_tiles(m, batch, n_sm)
    out = []
    for bp_mul in (1, 2):
        for bn in (16, 32, 64):
            if bn > max(16, _pow2(m["COUT"])):
                continue
            for tgt in (1, n_sm // 2, n_sm, 2 * n_sm):  # 1: no split-K (saves 2 L2 round trips)
                t = dict(h, BP=h["BP"] * bp_mul, BN=bn)
                t = _with_split(m, t, batch, tgt)
                if t not in out:
                    out.append(t)
    return out


class KernelNet(torch.nn.Module):
    """The folded net as one Triton kernel per conv layer (head fused into the last one).

    KernelNet(layers, head, batch=1, device='cuda', autotune=False, pdl=False, views=None)
    forward(x): x N x 32 x 32 x 3 (uint8 or fp16, NHWC, contiguous, N == batch) -> float32 N x 10
    logits (the same buffer every call).  Allocates nothing per call: CUDA-graph capturable.

    views: test-time augmentation fused into the kernels, [((flip, dy, dx), weight), ...] as
    inference.TTA_VIEWS: every layer runs batch * len(views) maps, the first layer reads each
    view straight from the image (mirrored / reflect-shifted loads), the head returns the
    weighted sum of the views' logits.  Same kernel count as without views, no torch op.
    """

    def __init__(self, layers, head, batch=1, device="cuda", autotune=False, pdl=False, tiles=None, views=None):
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
        self.specs = self._build_specs(layers)
        self._build_head(head)
        for i, sp in enumerate(self.specs):
            sp["tiles"] = dict(tiles[i]) if tiles else self._choose_tiles(sp, autotune)
            self._alloc_scratch(sp)

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
        for L in layers:
            m = _layer_meta(L, h, w, c)
            wt = L["weight"].detach().float().permute(2, 3, 1, 0).reshape(-1, m["COUT"])  # [(ky,kx,ci), Cout]
            specs.append(dict(meta=m, w=wt.to(self.device, torch.float16).contiguous(),
                              b=L["bias"].detach().to(self.device, torch.float32).contiguous(),
                              y=torch.empty(self.nb, m["HO"], m["WO"], m["COUT"], device=self.device,
                                            dtype=torch.float16)))
            h, w, c = m["HO"], m["WO"], m["COUT"]
        return specs

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
        if len(layers) != len(self.specs):
            raise ValueError(f"{len(layers)} layers, this KernelNet has {len(self.specs)}")
        for sp, L in zip(self.specs, layers):
            wt = L["weight"].detach().float().permute(2, 3, 1, 0).reshape(-1, L["weight"].shape[0])
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

    def _choose_tiles(self, sp, autotune):
        m = sp["meta"]
        key = (tuple(sorted(m.items())), self.nb, self.pdl, autotune)
        if key not in _TILE_CACHE:
            if autotune and self.device.type == "cuda":
                _TILE_CACHE[key] = self._autotune(sp)
            else:
                _TILE_CACHE[key] = heuristic_tiles(m, self.nb, self.n_sm)
        return dict(_TILE_CACHE[key])

    def _autotune(self, sp):
        """Time each candidate tile alone (a CUDA graph of 20 launches, on a random input of
        the layer's shape) and keep the fastest."""
        i = self.specs.index(sp)
        x = self._random_input_of(i)
        best = None
        for t in _candidates(sp["meta"], self.nb, self.n_sm):
            sp["tiles"] = t
            self._alloc_scratch(sp)
            us = self._time_launch(lambda: self._launch(i, x), reps=20, graphs=3)
            if best is None or us < best[0]:
                best = (us, dict(t))
        return best[1]

    def _random_input_of(self, i):
        m = self.specs[i]["meta"]
        if i == 0:
            return torch.randint(0, 256, (self.batch, 32, 32, 3), device=self.device, dtype=torch.uint8)
        return torch.rand(self.nb, m["H"], m["W"], m["CIN"], device=self.device).half()

    # -- run ----------------------------------------------------------------------------------
    def _launch(self, i, x):
        sp, last = self.specs[i], i == len(self.specs) - 1
        m, t = sp["meta"], sp["tiles"]
        n_fin = sp["grid"][0] * sp["grid"][1]
        kw = dict(num_warps=t["num_warps"], num_stages=t["num_stages"])
        if self.pdl:
            kw["launch_pdl"] = True
        conv_layer_kernel[sp["grid"]](
            x, sp["w"], sp["b"], sp["y"], sp["part"], sp["cnt"],
            self.hmax, self.hw, self.hb, self.out, self.hcnt, self.view_t, self.view_w,
            sp["m_tiles"], t["SPLIT"], n_fin,
            H=m["H"], W=m["W"], CIN=m["CIN"], COUT=m["COUT"], KH=m["KH"], PAD=m["PAD"], S=m["S"],
            WO=m["WO"], HWO=m["HO"] * m["WO"], ACT=m["ACT"], BP=t["BP"], BN=t["BN"], BK=t["BK"], KI=_k_steps(m, t),
            GENERIC=t["GENERIC"], HEAD=last, NB=self.nb, CP=self.cp, PDL=self.pdl, NV=self.nv,
            VIEW=(i == 0 and self.fused_views), **kw)

    def forward(self, x):
        if x.shape != (self.batch, 32, 32, 3) or x.dtype not in (torch.uint8, torch.float16):
            raise ValueError(f"KernelNet input must be {self.batch}x32x32x3 uint8/fp16 NHWC, "
                             f"got {tuple(x.shape)} {x.dtype}")
        if not x.is_contiguous():
            raise ValueError("KernelNet input must be contiguous NHWC")
        h = x
        for i in range(len(self.specs)):
            self._launch(i, h)
            h = self.specs[i]["y"]
        return self.logits

    def kernel_count(self):
        """Kernels per forward: one per conv layer (the head and the TTA views are fused in)."""
        return len(self.specs)

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
        for i, sp in enumerate(self.specs):
            m, t = sp["meta"], sp["tiles"]
            src = x if i == 0 else self.specs[i - 1]["y"]
            name = (f"L{i} {m['CIN']}->{m['COUT']} k{m['KH']} {m['H']}x{m['W']}"
                    f"{' pool' if m['S'] == 4 else ''}{' +head' if i == len(self.specs) - 1 else ''}"
                    f" grid={sp['grid']} BP={t['BP']} BN={t['BN']} BK={t['BK']}")
            rows.append((name, self._time_launch(lambda: self._launch(i, src), reps=reps)))
        return rows
