"""The cluster kernel's plan (cluster_net.py generates the kernel from it): the cut of every
conv layer over the cluster's blocks and where everything lies in each block's shared memory.

Cut.  Every conv layer's output (maps x pooled rows x channels) is cut into blocks of (one
map, a band of pooled rows, a block of channels); the last layer's blocks hold whole maps (its
channel maxima are then local) and cut channels only.  Among the cuts that fit the cluster,
plan() takes the one with the least GEMM work per block (rows padded to 16 x channels), then
the narrower band (less staging).  Everything a block does is known when the kernel is
generated: the tables of which rank holds what are compile-time.

Shared memory.  A net whose weights and buffers fit as they are keeps every layer's weights
resident and gives every buffer its own bytes.  Else (F's airbench94 widths) wide layers take
16 channels a block over whole maps, the last layers' weights are streamed into each block per
call, and the buffers (image rows, stagings, GEMM outputs, streamed weights) share bytes where
their lifetimes are apart, with cluster barriers where that frees enough: _lifetimes,
_allocate, _fit_choice.
"""
import functools

import kernel_net as KN  # the layers' shapes, as the Triton engine has them

WARPS = 8  # a block's warps (ck::WARPS)
NCH = 3  # independent accumulator chains per warp in a layer's K loop
SMEM_MAX = 227 * 1024  # an H100/H200 block's shared memory with the opt-in attribute
IMG = 32
TRACE = 32  # a block's phase stamps per clock (ck::TRACE): 4 a layer, the last slot for the answer


def _ceil(a, b):
    return -(-a // b) * b


def _meta(L, h, w, cin):
    """kernel_net's shapes of one layer (its contract checks too), with POOL = 1 for a pooled one."""
    m = KN._layer_meta(L, h, w, cin)
    m["POOL"] = int(m["S"] == 4)
    return m


def _block(m, rank):
    """The block of layer m that `rank` computes (as ck::Block): maps [n0, n0 + NMB), pooled
    rows [p0, p1), channels [c0, c0 + NBLK); None when the rank idles in this layer."""
    bm, bn = divmod(rank, m["CN"])
    if bm >= m["NBM"]:
        return None
    band = bm % m["R"]
    n0 = bm // m["R"] if m["NMB"] == 1 else 0
    return dict(n0=n0, p0=band * m["HO"] // m["R"], p1=(band + 1) * m["HO"] // m["R"], c0=bn * m["NBLK"])


def _w_bytes(m):
    """Bytes of one block's weight slice of layer m ([NBLK][WSTR] fp16), resident or streamed."""
    return m["NBLK"] * m["WSTR"] * 2


def _layer_cut(m, nb, ranks, last, fit):
    """(R, CN, whole): pooled-row bands per map, channel blocks, and whether a block holds whole
    maps (all of them: the last layer always, for its channel maxima).  The least work per block
    first (rows padded to 16 x channels); then the narrower band, or with fit (a net whose
    weights do not all fit in shared memory) the smaller weight slice, and whole maps allowed
    for every layer (the only cut whose blocks each hold 16 channels of a wide layer)."""
    best = None
    for cn in range(1, m["COUT"] // 16 + 1):
        if m["COUT"] % (16 * cn):
            continue
        cuts = [(1, True)] if last else [(r, False) for r in range(1, m["HO"] + 1)] + ([(1, True)] if fit else [])
        for r, whole in cuts:
            nbm = 1 if whole else nb * r
            if nbm * cn > ranks:
                continue
            band = -(-m["HO"] // r)
            maxm = _ceil((nb if whole else 1) * band * m["WO"] * m["S"], 16)
            work = maxm * (m["COUT"] // cn)
            key = (work, m["COUT"] // cn, band) if fit else (work, band, cn)
            if best is None or key < best[0]:
                best = (key, r, cn, whole)
    if best is None:
        raise ValueError(f"no cut of layer {m} over {ranks} blocks (widths must be multiples of 16)")
    return best[1:]


def _convs(layers, n_views, ranks, fit):
    """Every conv layer's shapes and cut (see _layer_cut) as the kernel's L<i> constants."""
    stem = _meta(layers[0], IMG, IMG, 3)
    convs, (h, w, c) = [], (stem["HO"], stem["WO"], stem["COUT"])
    for i, L in enumerate(layers[1:]):
        m = _meta(L, h, w, c)
        if m["CIN"] % 8 or m["COUT"] % 16:
            raise ValueError(f"layer {i + 1}: widths {m['CIN']} -> {m['COUT']} need multiples of 8 and 16")
        # layer 1's weights stay resident and its band sets the stem's work: its cut is never fit's
        m["R"], m["CN"], whole = _layer_cut(m, n_views, ranks, i == len(layers) - 2, fit and i > 0)
        m["NMB"] = n_views if whole else 1
        m["NBM"] = 1 if whole else n_views * m["R"]
        m["NBLK"] = m["COUT"] // m["CN"]
        band = -(-m["HO"] // m["R"])
        m["SROWS"] = band * (2 if m["POOL"] else 1) + m["KH"] - 1
        # ldmatrix reads 8 rows of 16 bytes at once: a pixel stride of an odd number of 16-byte
        # chunks, and staged rows of (4 mod 8) pixels, put the 8 pixels of a row group (two 2x2
        # pooling quads, or 8 neighbours) in 8 different bank groups
        m["SW"] = _ceil(m["W"] + 2 * m["PAD"] + 4, 8) - 4
        m["CSTR"] = m["CIN"] if (m["CIN"] // 8) % 2 else m["CIN"] + 8
        m["K"] = m["KH"] * m["KH"] * m["CIN"]
        m["KP"] = _ceil(m["K"], 16)
        m["WSTR"] = m["KP"] + 8
        m["MAXM"] = _ceil(m["NMB"] * band * m["WO"] * m["S"], 16)
        m["CSTRC"] = m["NBLK"] + 4
        units = (m["MAXM"] // 16) * (m["NBLK"] // 16)
        m["KSPL"] = max(1, min(m["KP"] // 16, WARPS // units))
        m["NCH"] = min(NCH, -(-(m["KP"] // 16) // m["KSPL"]))
        convs.append(m)
        h, w, c = m["HO"], m["WO"], m["COUT"]
    return stem, convs


# A call in each block's own order, as positions: the call's start 0 (the previous call is over
# in every block: a cluster barrier ends each served call), the stem 20, then for layer i its
# GEMM at 30i, an early load of streamed weights right after it (30i + 5), the cluster barrier
# after layer i's GEMM if it has one (30i + 10), its push (30i + 20) and a late load (30i + 25).
def _load_at(streamed, late, i):
    """Where streamed layer i's weights are loaded: early, as soon as the bytes are free (after
    the previous streamed layer's GEMM, or at the previous call's end: 0), or late, after the
    push of layer i - 1 (fewer bytes in use at once, more of the load on the way)."""
    if i in late:
        return 30 * (i - 1) + 25
    prev = [j for j in streamed if j < i]
    return 30 * prev[-1] + 5 if prev else 0


def _lifetimes(n, barriers, streamed, late):
    """{object: (first, last) position in which its bytes are in use} for the image rows (IMG),
    each layer's staging (S<i>: written by the previous layer's blocks from the last barrier
    before that push on, since a block that got its own inputs may run ahead of the others),
    GEMM output (C<i>) and streamed weights (W<i>: from its load to its GEMM)."""
    life = {"IMG": (0, 20), "S1": (20, 30)}
    for i in range(2, n + 1):
        b = max([k for k in barriers if k <= i - 1], default=None)
        life[f"S{i}"] = (0 if b is None else 30 * b + 10, 30 * i)
    for i in range(1, n + 1):
        life[f"C{i}"] = (30 * i, 30 * i + 20)
    for i in streamed:
        life[f"W{i}"] = (_load_at(streamed, late, i), 30 * i)
    return life


def _allocate(objs, life, base, share):
    """First fit, in the order given: each object at the lowest aligned offset from base where it
    shares no byte with an object placed before it whose lifetime overlaps its own (share=False:
    only the GEMM outputs share, one buffer for all layers).  objs: [(name, bytes, align)]."""
    def clash(a, b):
        if not share:
            return not (a[0] == "C" and b[0] == "C")
        (a0, a1), (b0, b1) = life[a], life[b]
        return a0 <= b1 and b0 <= a1
    at = {}
    for name, size, align in objs:
        for off in sorted({base} | {o + s for o, s in at.values()}):
            off = _ceil(off, align)
            if all(off + size <= o or o + s <= off for other, (o, s) in at.items() if clash(name, other)):
                break
        at[name] = (off, size)
    return at


def _layout(stem, convs, ranks, barriers=(), streamed=(), late=()):
    """Where everything lies: the blob (each block's weights in global memory, per layer its
    segment of parts), and shared memory: the resident parts at their blob offsets, then the
    arena (image rows, stagings, GEMM outputs, streamed weights: shared wherever lifetimes allow,
    see _lifetimes), then the head's buffers, the mbarriers and the control words."""
    n, share = len(convs), bool(barriers or streamed)
    sk, sc = stem["KH"], stem["COUT"]
    off, segs = 0, []
    for i, m in enumerate(convs):  # resident parts first: they are copied into place once
        parts = {}
        if i == 0:
            parts["SW"] = (off, sk * sk * 3 * sc * 4)  # fp32 [(ky, kx, ci)][co] (fp16 values)
            off = _ceil(off + parts["SW"][1], 16)
            parts["SB"] = (off, sc * 4)
            off = _ceil(off + parts["SB"][1], 16)
        if i + 1 not in streamed:
            parts["W"] = (off, _w_bytes(m))
            off = _ceil(off + parts["W"][1], 16)
        parts["B"] = (off, m["NBLK"] * 4)
        off = _ceil(off + parts["B"][1], 16)
        if i == n - 1:
            parts["FC"] = (off, 16 * m["NBLK"] * 4)
            off = _ceil(off + parts["FC"][1], 16)
            parts["VW"] = (off, 32 * 4)
            off = _ceil(off + parts["VW"][1], 16)
        segs.append(parts)
    resident = off
    for i in streamed:  # then the streamed weights, loaded per call into the arena
        segs[i - 1]["W"] = (off, _w_bytes(convs[i - 1]))
        off = _ceil(off + segs[i - 1]["W"][1], 16)
    blob = off
    work = {"ZERO": resident}
    l1 = convs[0]
    objs = [("IMG", (l1["SROWS"] + sk - 1) * IMG * 3 * 2, 16)]
    objs += [(f"S{i + 1}", m["NMB"] * m["SROWS"] * m["SW"] * m["CSTR"] * 2, 128) for i, m in enumerate(convs)]
    objs += [(f"C{i + 1}", m["KSPL"] * m["MAXM"] * m["CSTRC"] * 4, 128) for i, m in enumerate(convs)]
    objs += [(f"W{i}", segs[i - 1]["W"][1], 128) for i in streamed]
    life = _lifetimes(n, barriers, streamed, late)
    arena = _allocate(objs, life, resident + 16, share)
    for name, (o, _) in arena.items():
        work[name] = o
    end = max(o + s for o, s in arena.values())
    head = convs[-1]
    work["MX"] = _ceil(end, 16)
    work["HV"] = _ceil(work["MX"] + head["NMB"] * head["NBLK"] * 4, 16)
    work["SLOTS"] = _ceil(work["HV"] + head["NMB"] * head["NBLK"] * head["HO"] * head["WO"] * 4, 16)
    work["BARS"] = _ceil(work["SLOTS"] + ranks * 16 * 4, 16)  # mbarriers: image rows, each layer's staging, logits
    work["CTRL"] = work["BARS"] + 8 * (n + 1)  # block 0's gate (2 words), the last call (serve)
    smem = work["CTRL"] + 16
    # a staging whose bytes other objects use too gets its zero padding written each call, at
    # the start of its lifetime; the others once, before the first call
    shared = {a for a, (o, s) in arena.items() for b, (o2, s2) in arena.items()
              if a != b and o < o2 + s2 and o2 < o + s}
    zero_each_call = [i for i in range(2, n + 1) if f"S{i}" in shared]
    return dict(segs=segs, blob=blob, resident=resident, work=work, smem=smem, life=life,
                barriers=tuple(barriers), streamed=tuple(streamed), late=tuple(late),
                zero_each_call=zero_each_call)


# Rough costs of a layout, µs: a cluster barrier (every block waits for the slowest), and the
# part of a streamed layer's weights read from L2 (~100 KB/µs into one SM) not hidden behind
# other work: most of a late load, some of an early one
BARRIER_US, STREAM_KB_PER_US, EXPOSED = 0.5, 100.0, {False: 0.3, True: 1.0}


@functools.lru_cache(maxsize=16)
def _fit_choice(shapes, ranks):
    """The cheapest (barriers, streamed, late) whose layout fits shared memory, or None: cluster
    barriers after any of layers 1..n-1; streamed weights for the last layers (the widest),
    each loaded early or late; layer 1's weights always resident (the stem needs them at once).
    shapes: the stem's and the layers' constants, hashable (the search takes ~1 s)."""
    stem, convs = dict(shapes[0]), [dict(m) for m in shapes[1:]]
    n = len(convs)
    options = []
    for bmask in range(1 << (n - 1)):
        barriers = tuple(k + 1 for k in range(n - 1) if bmask >> k & 1)
        for first in range(n + 1, 1, -1):  # streamed: layers first..n
            streamed = tuple(range(first, n + 1))
            for lmask in range(1 << len(streamed)):
                late = tuple(i for k, i in enumerate(streamed) if lmask >> k & 1)
                us = BARRIER_US * len(barriers) + sum(
                    EXPOSED[i in late] * _w_bytes(convs[i - 1]) / 1024 / STREAM_KB_PER_US
                    for i in streamed)
                options.append((us, barriers, streamed, late))
    for _, barriers, streamed, late in sorted(options):
        if _layout(stem, convs, ranks, barriers, streamed, late)["smem"] <= SMEM_MAX:
            return barriers, streamed, late
    return None


def plan(layers, n_views, ranks=16, ncls=10):
    """Shapes, cuts and the shared-memory layout of the net; the stem (layers[0], 2x2 or any
    valid conv of the image) runs inside layer 1's blocks.  A net whose weights and buffers fit
    shared memory as they are gets every layer's weights resident and every buffer its own
    bytes; else (airbench94's widths: 3.9 MB of weights, 245 KB a block) the cut with the
    smaller weight slices, and the cheapest set of cluster barriers (buffers reused across
    them) and streamed layers (weights loaded per call, into bytes freed on the way) that fits."""
    if not 1 <= ncls <= 16:
        raise ValueError(f"{ncls} classes: the cluster kernel's head takes 1 to 16")
    if len(layers) < 2 or int(layers[0]["padding"]) != 0 or int(layers[0]["pool"]) != 0:
        raise ValueError("the cluster kernel needs a stem (a valid conv, no pool) and at least one conv layer")
    stem, convs = _convs(layers, n_views, ranks, fit=False)
    if stem["COUT"] % 8:
        raise ValueError(f"stem width {stem['COUT']}: needs a multiple of 8")
    if convs[0]["KH"] != 3 or convs[0]["PAD"] != 1:
        raise ValueError("the cluster kernel's layer 1 must be a 3x3 conv with padding 1 (its stem halo)")
    if 4 * len(convs) + 1 >= TRACE:
        raise ValueError(f"{len(convs)} conv layers: the cluster kernel takes at most {(TRACE - 2) // 4}")
    lay = _layout(stem, convs, ranks)
    if lay["smem"] > SMEM_MAX:
        stem, convs = _convs(layers, n_views, ranks, fit=True)
        shapes = tuple(tuple(sorted(m.items())) for m in [stem, *convs])
        choice = _fit_choice(shapes, ranks)
        if choice is None:
            n = len(convs)
            need = _layout(stem, convs, ranks, range(1, n), range(2, n + 1), range(2, n + 1))["smem"]
            raise ValueError(f"the cluster kernel needs {need} bytes of shared memory per block (> {SMEM_MAX}) "
                             "even with a cluster barrier after every layer and every layer's weights streamed")
        lay = _layout(stem, convs, ranks, *choice)
    l1 = convs[0]
    for m in convs:  # each rank's block of each layer: {map (-1: all), first staged row, active, bytes in}
        band = []
        for r in range(ranks):
            b = _block(m, r)
            if b is None:
                band.append([0, 0, 0, 0])
                continue
            ih0 = (2 * b["p0"] if m["POOL"] else b["p0"]) - m["PAD"]
            rows = min(m["H"], ih0 + m["SROWS"]) - max(0, ih0)
            band.append([-1 if m["NMB"] > 1 else b["n0"], ih0, 1, m["NMB"] * rows * m["W"] * m["CIN"] * 2])
        m["BAND"] = band
    img = []  # the image rows each rank's stem needs: {r0, r1, bytes}
    sk = stem["KH"]
    for r in range(ranks):
        act, ih0 = l1["BAND"][r][2], l1["BAND"][r][1]
        r0, r1 = max(0, ih0), min(IMG, ih0 + l1["SROWS"] + sk - 1)
        img.append([r0, r1, (r1 - r0) * IMG * 3 * 2] if act else [0, 0, 0])
    head = convs[-1]
    head_bytes = sum(16 * 4 for b in head["BAND"] if b[2])
    return dict(ranks=ranks, nv=n_views, stem=stem, convs=convs, img=img, head_bytes=head_bytes, ncls=ncls, **lay)
