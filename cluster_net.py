"""The folded fastnet as ONE kernel of one thread-block cluster (the host side of
cluster_kernel.cu): the cut of every layer over the cluster's blocks, the per-block weight
blobs, the generated kernel, its build with nvcc and its launch through the CUDA driver
(ctypes: torch has no cubin loader).  Same contract as kernel_net.KernelNet
(models.FastNet.folded_spec, batch 1, the answer word, gate() for a launch ahead, serve() for a
kernel that stays; TTA: none or flip, the mirrored view as a second map), so inference.Predictor
runs either (variant key kernel_engine).

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
import ctypes
import functools
import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import torch

import kernel_net as KN  # the layers' shapes and the head's padding, as the Triton engine has them


KERNEL_SRC = Path(__file__).with_name("cluster_kernel.cu")
THREADS, WARPS = 256, 8
NCH = 3  # independent accumulator chains per warp in a layer's K loop
SMEM_MAX = 227 * 1024  # an H100/H200 block's shared memory with the opt-in attribute
IMG = 32
TRACE = 32  # a block's phase stamps per clock (ck::TRACE): 4 a layer, the last slot for the answer
TAGGED_SHAPE = (IMG * IMG * 3 // 12, 4)  # a tagged image: (256, 4) int32, one chunk per thread of block 0
assert TAGGED_SHAPE[0] == THREADS


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


def _table(name, rows):
    """A per-rank table as a constexpr function of selects: folded to a constant where the rank
    and field are (the unrolled loops over ranks), a short select chain where they are not (a
    local array would be rebuilt on the stack at every call)."""
    def pick(var, vals):
        expr = str(vals[-1])
        for k in range(len(vals) - 2, -1, -1):
            expr = f"({var} == {k} ? {vals[k]} : {expr})"
        return expr
    fields = [pick("r", [row[f] for row in rows]) for f in range(len(rows[0]))]
    return f"__device__ static constexpr int {name}(int r, int f) {{ return {pick('f', fields)}; }}"


def source(p):
    """The kernel for plan p: its constants, then cluster_kernel.cu, then the layer sequence."""
    out = ["// generated by cluster_net.source(); the device code is cluster_kernel.cu", "#include <stdint.h>",
           f"#define NET_IMG_W {IMG}", f"#define NET_RANKS {p['ranks']}",
           f"#define NET_NCLS {p['ncls']}", f"#define NET_STEM_ACT {p['stem']['ACT']}"]
    keys = ("NB H W CIN COUT KH PAD POOL HO WO ACT R CN NMB NBM NBLK S SROWS SW CSTR K KP WSTR MAXM CSTRC "
            "KSPL NCH").split()
    for i, m in enumerate(p["convs"]):
        vals = dict(m, NB=p["nv"])
        out.append(f"struct L{i + 1} {{ " + " ".join(f"static constexpr int {k} = {vals[k]};" for k in keys) +
                   " " + _table("band", m["BAND"]) + " };")
    out.append("struct IMG { " + _table("band", p["img"]) + " };")
    out.append(KERNEL_SRC.read_text())
    w, segs, convs = p["work"], p["segs"], p["convs"]
    n, st = len(convs), p["stem"]
    # each of a block's mbarriers and the bytes it expects a call (set at the start, re-armed per call)
    expects = [("bars", "IMG::band(rank, 2)"), *[(f"bars + {i}", f"L{i + 1}::band(rank, 3)") for i in range(1, n)],
               (f"bars + {n}", f"rank == 0 ? {p['head_bytes']} : 0")]
    gate = ["  if (rank == 0) {  // the gate (launched ahead or serving), then the image's loads (tagged: in one)",
            "    if (p.tagged) go = ck::gate_tagged(p, seq, ctrl, px);",
            "    else { go = ck::gate(p, seq, ctrl); px = ck::read_image<IMG>(p); }",
            "  }"]
    body = [
        f'extern "C" __global__ void __cluster_dims__({p["ranks"]}, 1, 1) __launch_bounds__(ck::THREADS, 1)',
        "cluster_net_kernel(ck::Params p) {",
        "  extern __shared__ __align__(128) uint8_t sm[];",
        "  const uint32_t rank = ck::cluster_rank();",
        "  ck::stamp(p, rank, 0);",
        "  int seq = 0;  // the device call counter (block 0's thread 0)",
        "  if (rank == 0 && threadIdx.x == 0) seq = *p.seq;  // off the answer's chain",
        "  const long long watchdog = p.gate_ns + 1000000000LL;  // no wait of a correct kernel lasts longer",
        f"  const uint8_t* blob = p.blob + (size_t)rank * {p['blob']};",
    ]
    def copy(dst, src, nbytes):  # all threads: nbytes from blob offset src to shared offset dst, one group
        return [f"  for (int i = threadIdx.x; i < {_ceil(nbytes, 16) // 16}; i += ck::THREADS)",
                f"    ck::cp16(sm + {dst} + 16 * i, blob + {src} + 16 * i);", "  ck::cp_commit();"]

    def load(i):  # streamed layer i's weights into the arena
        return copy(w[f"W{i}"], segs[i - 1]["W"][0], segs[i - 1]["W"][1])

    streamed, late = p["streamed"], p["late"]
    load_at = {i: _load_at(streamed, late, i) for i in streamed}
    prefetch = []  # one cp.async group per layer (its resident parts): layer 1 waits for its own only
    for i, parts in enumerate(segs):
        lo = min(o for o, _ in parts.values() if o < p["resident"])
        hi = max(o + s for o, s in parts.values() if o < p["resident"])
        prefetch += copy(lo, lo, hi - lo)
    prefetch += [ln for i in streamed if load_at[i] == 0 for ln in load(i)]  # as at a served call's end

    def pending(i):  # load groups newer than what layer i needs: the later layers' loads issued before its GEMM
        return sum(1 for j in streamed if j > i and load_at[j] < 30 * i)

    def zero_padding(i):  # layer i's staging: the cells no producer writes
        return f"  {{ ck::Block<L{i}> bz(rank); if (bz.active) ck::zero_padding<L{i}>(bz, stage{i}); }}"

    def zero(at):  # the stagings whose lifetime starts at position `at` and whose bytes are shared
        return [zero_padding(i) for i in p["zero_each_call"] if p["life"][f"S{i}"][0] == at]

    body += [
        f"  if (threadIdx.x == 0) *reinterpret_cast<uint4*>(sm + {w['ZERO']}) = make_uint4(0, 0, 0, 0);",
        f"  const __half* zero16 = reinterpret_cast<const __half*>(sm + {w['ZERO']});",
        *[f"  __half* stage{i + 1} = reinterpret_cast<__half*>(sm + {w[f'S{i + 1}']});" for i in range(n)],
        "  ck::Block<L1> b1(rank);",
        f"  uint64_t* bars = reinterpret_cast<uint64_t*>(sm + {w['BARS']});  // image rows, layer k's staging, logits",
        f"  int* ctrl = reinterpret_cast<int*>(sm + {w['CTRL']});  // [0, 1] block 0's gate, [2] the last call (serve)",
        "  if (threadIdx.x == 0) {",
        *[f"    ck::mbar_init({bar}, {bytes_});" for bar, bytes_ in expects],
        '    asm volatile("fence.mbarrier_init.release.cluster;\\n" ::: "memory");',
        "  }",
        "  __syncthreads();",
        *[zero_padding(i) for i in range(2, n + 1) if i not in p["zero_each_call"]],
        "  ck::cluster_arrive();  // every block's mbarriers are set before anyone stores into them",
        "  uint4 px = make_uint4(0, 0, 0, 0);",
        "  int go = 1;  // block 0: the call came (a serving kernel answers only then)",
        *gate,
        "  // the weights' prefetch (once: a serving kernel keeps them); block 0 issues its image",
        "  // reads first (the image is on the critical path, the weights are needed only after it)",
        *prefetch,
        "  ck::cluster_wait();",
        f"  __half* img = reinterpret_cast<__half*>(sm + {w['IMG']});",
        "  const int r0 = IMG::band(rank, 0);",
        "  for (uint32_t ph = 0;; ph ^= 1) {  // one call a round, on barrier phase ph",
        "  ck::stamp(p, rank, 5);",
        *zero(0),
        "  if (rank == 0) {",
        "    if (p.tagged) ck::send_tagged<IMG>(px, img, bars);",
        "    else ck::send_image<IMG>(p, px, img, bars);",
        "  }",
        "  ck::mbar_wait(bars, ph, watchdog);  // this block's image rows are in",
        "  ck::stamp(p, rank, 9);",
        f"  ck::cp_wait<{n - 1 + pending(1)}>();",
        "  __syncthreads();",
        "  ck::stamp(p, rank, 1);",
        f"  if (b1.active) ck::stem_into_stage<L1, {st['KH']}>(b1, img, r0,"
        f" reinterpret_cast<const float*>(sm + {segs[0]['SW'][0]}),"
        f" reinterpret_cast<const float*>(sm + {segs[0]['SB'][0]}), stage1, b1.n0 == 1 && NET_FLIP);",
        "  __syncthreads();",
        "  ck::stamp(p, rank, 2);",
    ]
    for i, m in enumerate(convs):
        L, s = f"L{i + 1}", segs[i]
        wp = f"reinterpret_cast<const __half*>(sm + {w[f'W{i + 1}'] if i + 1 in streamed else s['W'][0]})"
        csm = f"reinterpret_cast<float*>(sm + {w[f'C{i + 1}']})"
        bp = f"reinterpret_cast<const float*>(sm + {s['B'][0]})"
        if i > 0:
            body += [f"  ck::Block<{L}> b{i + 1}(rank);",
                     f"  ck::mbar_wait(bars + {i}, ph, watchdog);  // its input rows are in",
                     f"  ck::cp_wait<{pending(i + 1)}>();",
                     "  __syncthreads();",
                     f"  ck::stamp(p, rank, {4 * i + 2});"]
        body += [f"  if (b{i + 1}.active) ck::gemm<{L}>(b{i + 1}, stage{i + 1}, {wp}, {csm}, zero16);",
                 "  __syncthreads();",
                 f"  ck::stamp(p, rank, {4 * i + 3});"]
        pos = 30 * (i + 1)
        body += [ln for j in streamed if load_at[j] == pos + 5 for ln in load(j)]
        if i + 1 in p["barriers"]:  # every block is past this GEMM: the bytes of earlier buffers are free
            body += ["  ck::cluster_arrive_release();", *zero(pos + 10), "  ck::cluster_wait();"]
        if i < n - 1:
            body += [f"  if (b{i + 1}.active)"
                     f" ck::push_out<{L}, L{i + 2}>(b{i + 1}, {csm}, {bp}, stage{i + 2}, bars + {i + 1});",
                     f"  ck::stamp(p, rank, {4 * i + 4});"]
            if any(load_at[j] == pos + 25 for j in streamed):  # into bytes the push just read
                body += ["  __syncthreads();", *load(i + 2)]
        else:
            fc = f"reinterpret_cast<const float*>(sm + {s['FC'][0]})"
            vw = f"reinterpret_cast<const float*>(sm + {s['VW'][0]})"
            body += [f"  float* slots = reinterpret_cast<float*>(sm + {w['SLOTS']});",
                     f"  if (b{i + 1}.active) ck::head_out<{L}>(b{i + 1}, {csm}, {bp}, {fc}, {vw},"
                     f" reinterpret_cast<float*>(sm + {w['MX']}),"
                     f" reinterpret_cast<float*>(sm + {w['HV']}), slots, rank, bars + {n});",
                     f"  ck::stamp(p, rank, {4 * i + 4});",
                     "  if (!p.serve && rank != 0) return;",
                     "  if (rank == 0) {",
                     f"    ck::mbar_wait(bars + {n}, ph, watchdog);  // every block's share of the logits is in",
                     f"    ck::stamp(p, rank, {4 * i + 5});",
                     "    if (threadIdx.x == 0) {",
                     f"      const float* hb = reinterpret_cast<const float*>(sm + {s['VW'][0]}) + 16;",
                     "      int best = 0;",
                     "      float bv = -INFINITY;",
                     "      for (int k = 0; k < NET_NCLS; ++k) {",
                     "        float v = hb[k];",
                     f"        for (int r = 0; r < {m['NBM'] * m['CN']}; ++r) v += slots[r * 16 + k];",
                     "        p.out[k] = v;",
                     "        if (v > bv) { bv = v; best = k; }  // the first of equal maxima, as torch.argmax",
                     "      }",
                     "      if (!p.serve || go) {  // a serving kernel's last round (expired, stopped) answers nothing",
                     "        seq += 1;",
                     "        *p.seq = seq;",
                     "        if (p.word) {",
                     "          const int word = ((seq & ck::SEQ_MASK) << 4) | best;",
                     '          asm volatile("st.global.wt.s32 [%0], %1;" :: "l"(p.word), "r"(word) : "memory");',
                     "        }",
                     "      }",
                     "    }",
                     "  }",
                     f"  ck::stamp(p, rank, {TRACE - 1});",
                     "  if (!p.serve) return;",
                     *(["  __syncthreads();", *load(streamed[0])] if streamed and load_at[streamed[0]] == 0 else []),
                     "  // serving, the round's end: every block arms its barriers for the next call, block 0",
                     "  // tells every block whether one follows, and the cluster barrier keeps the next",
                     "  // call's stores out of buffers still being read",
                     "  if (threadIdx.x == 0) {",
                     *[f"    ck::mbar_arm({bar}, {bytes_});" for bar, bytes_ in expects],
                     "  }",
                     "  if (rank == 0 && threadIdx.x < NET_RANKS) ck::st_cluster(ctrl + 2, threadIdx.x, !go);",
                     "  ck::cluster_sync();",
                     "  if (ctrl[2]) return;",
                     *gate,
                     "  }"]
    body.append("}")
    flip = 1 if p["nv"] == 2 else 0
    return "\n".join(out + [f"#ifndef NET_FLIP\n#define NET_FLIP {flip}\n#endif"] + body) + "\n"


def pack(p, layers, head, views):
    """[ranks, blob] uint8: every block's weights, biases (and the head's) in its shared-memory
    layout; fp16 conv weights as [n][k] with k = (ky, kx, ci), zero-padded."""
    ranks, convs, segs = p["ranks"], p["convs"], p["segs"]
    blob = np.zeros((ranks, p["blob"]), dtype=np.uint8)

    def put(r, where, arr):
        o, size = where
        b = np.ascontiguousarray(arr).view(np.uint8).ravel()
        assert b.size <= size, (b.size, size)
        blob[r, o:o + b.size] = b

    st = layers[0]["weight"].detach().half().float()  # [co, ci, ky, kx] as the fp16 kernels see it
    sw = st.permute(2, 3, 1, 0).reshape(-1, st.shape[0]).numpy().astype(np.float32)  # [(ky, kx, ci), co]
    sb = layers[0]["bias"].detach().float().numpy()
    wfc = head["weight"].detach().float().numpy()
    bfc = head["bias"].detach().float().numpy()
    vws = np.zeros(32, np.float32)
    vws[:len(views)] = [w for _, w in views]
    vws[16:16 + len(bfc)] = bfc * sum(w for _, w in views)  # [16:] sum_v w_v * b, read by block 0 only
    for i, (m, L) in enumerate(zip(convs, layers[1:])):
        wk = L["weight"].detach().half().permute(0, 2, 3, 1).reshape(m["COUT"], -1).numpy()  # [n, k]
        wpad = np.zeros((m["COUT"], m["WSTR"]), np.float16)
        wpad[:, :m["K"]] = wk
        bias = L["bias"].detach().float().numpy()
        for r in range(ranks):
            b = _block(m, r)
            if b is None:
                continue
            c0, c1 = b["c0"], b["c0"] + m["NBLK"]
            if i == 0:
                put(r, segs[0]["SW"], sw)
                put(r, segs[0]["SB"], sb)
            put(r, segs[i]["W"], wpad[c0:c1])
            put(r, segs[i]["B"], bias[c0:c1].astype(np.float32))
            if i == len(convs) - 1:
                fc = np.zeros((16, m["NBLK"]), np.float32)
                fc[:wfc.shape[0]] = wfc[:, c0:c1]
                put(r, segs[i]["FC"], fc)
                put(r, segs[i]["VW"], vws)
    return blob


def weight_bytes(layers, head):
    """Bytes of the net's weights counted as KernelNet.weight_bytes counts them (fp16 conv weights,
    fp32 biases, the head padded to [16, pow2(C)] fp32 plus its bias): the size column means the
    same for both engines.  (Each call, every block also reads its padded slice: ClusterNet.blob.)"""
    cp = KN._pow2(max(head["weight"].shape[1], 16))
    return sum(L["weight"].numel() * 2 + L["bias"].numel() * 4 for L in layers) + 16 * cp * 4 + 16 * 4


# ============================================================================= build and launch
def nvcc_path():
    for c in (os.environ.get("NVCC"), shutil.which("nvcc"), "/usr/local/cuda/bin/nvcc"):
        if c and Path(c).is_file():
            return c
    return None


def cache_dir():
    return Path(os.environ.get("KIT_CACHE", Path.home() / ".cache" / "cifar10-kit")) / "cluster"


def build(src, arch="sm_90a"):
    """The cubin of src (nvcc), cached under cache_dir() by the source's digest.  No compiler or a
    failed build is a RuntimeError, as Triton's absence is for KernelNet: bench.py goes on
    without the variant."""
    digest = hashlib.sha256((src + arch).encode()).hexdigest()[:20]
    out = cache_dir() / f"{digest}.cubin"
    if out.is_file():
        return out.read_bytes()
    nvcc = nvcc_path()
    if nvcc is None:
        raise RuntimeError("cluster kernel: nvcc not found (set NVCC=/path/to/nvcc or use kernel_engine: triton)")
    out.parent.mkdir(parents=True, exist_ok=True)
    cu = out.with_suffix(".cu")
    cu.write_text(src)
    tmp = out.with_suffix(f".{os.getpid()}.tmp")
    r = subprocess.run([nvcc, f"-arch={arch}", "-cubin", "-O3", "-std=c++17", "-o", str(tmp), str(cu)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"cluster kernel: nvcc failed ({cu}):\n{r.stderr.strip()[-2000:]}")
    os.replace(tmp, out)
    return out.read_bytes()


class _Params(ctypes.Structure):
    _fields_ = [("img", ctypes.c_uint64), ("blob", ctypes.c_uint64),
                ("out", ctypes.c_uint64), ("seq", ctypes.c_uint64), ("word", ctypes.c_uint64),
                ("trace", ctypes.c_uint64), ("flag", ctypes.c_uint64), ("gate_ns", ctypes.c_int64),
                ("img_half", ctypes.c_int32), ("serve", ctypes.c_int32),
                ("tagged", ctypes.c_int32), ("pad", ctypes.c_int32)]


_CU = None


def _driver():
    global _CU
    if _CU is None:
        cu = ctypes.CDLL("libcuda.so.1")
        for name in ("cuModuleLoadData", "cuModuleGetFunction", "cuFuncSetAttribute", "cuLaunchKernel",
                     "cuGetErrorString"):
            getattr(cu, name).restype = ctypes.c_int
        _CU = cu
    return _CU


def _check(rc, what):
    if rc != 0:
        s = ctypes.c_char_p()
        _driver().cuGetErrorString(rc, ctypes.byref(s))
        raise RuntimeError(f"cluster kernel: {what} failed: CUDA error {rc} ({(s.value or b'?').decode()})")


class ClusterNet:
    """KernelNet's interface over the one-launch cluster kernel (batch 1)."""

    def __init__(self, layers, head, device="cuda", views=None, ranks=16):
        self.device = torch.device(device)
        if self.device.type != "cuda":
            raise RuntimeError("ClusterNet needs a CUDA GPU")
        cap = torch.cuda.get_device_capability(self.device)
        if cap != (9, 0):
            raise RuntimeError(f"ClusterNet needs an sm_90 GPU (Hopper), this one is sm_{cap[0]}{cap[1]}")
        self.views = views or [((False, 0, 0), 1.0)]
        if [v for v, _ in self.views] not in ([(False, 0, 0)], [(False, 0, 0), (True, 0, 0)]):
            raise RuntimeError("ClusterNet: TTA views other than the image and its mirror are not supported "
                               "(tta none or flip; or use kernel_engine: triton)")  # map 1 is the mirrored one
        self.batch, self.pdl, self.pdl_trigger = 1, False, "early"
        self.plan = plan(layers, len(self.views), ranks, ncls=head["weight"].shape[0])
        self.src = source(self.plan)
        self.ncls = head["weight"].shape[0]
        self._weight_bytes = weight_bytes(layers, head)
        self.blob = torch.from_numpy(pack(self.plan, layers, head, self.views)).to(self.device)
        self.out = torch.zeros(1, 16, device=self.device)
        self.logits = self.out[:, :self.ncls]
        self._seq0 = torch.zeros(1, dtype=torch.int32, device=self.device)
        self._gate = None  # (flag, ns, serve): set by gate() or serve(), taken by the next forward
        self.trace = None  # an int64 [ranks, 2 * TRACE] tensor: each block stamps its phases (tools/cluster_trace.py)
        cubin = build(self.src)
        torch.cuda.synchronize(self.device)  # the primary context is current on this thread
        cu = _driver()
        self._mod, self._fn = ctypes.c_void_p(), ctypes.c_void_p()
        self._cubin = ctypes.create_string_buffer(cubin, len(cubin))
        _check(cu.cuModuleLoadData(ctypes.byref(self._mod), self._cubin), "cuModuleLoadData")
        _check(cu.cuModuleGetFunction(ctypes.byref(self._fn), self._mod, b"cluster_net_kernel"),
               "cuModuleGetFunction")
        _check(cu.cuFuncSetAttribute(self._fn, 8, ctypes.c_int(self.plan["smem"])), "max dynamic shared memory")
        if ranks > 8:
            _check(cu.cuFuncSetAttribute(self._fn, 14, ctypes.c_int(1)), "non-portable cluster size")

    def weight_bytes(self):
        return self._weight_bytes

    def tile_sources(self):
        return ["cluster"] * len(self.plan["convs"])

    def kernel_count(self):
        return 1

    def load_weights(self, layers, head):
        self.blob.copy_(torch.from_numpy(pack(self.plan, layers, head, self.views)))

    def _params(self, x, answer):
        gate, self._gate = self._gate, None
        tagged = tuple(x.shape) == TAGGED_SHAPE and x.dtype == torch.int32 and x.is_contiguous()
        if tagged and not gate:
            raise ValueError("ClusterNet: a tagged image is read by the gate: gate() or serve() first")
        if not tagged and (x.shape != (1, 32, 32, 3) or x.dtype not in (torch.uint8, torch.float16)
                           or not x.is_contiguous()):
            raise ValueError(f"ClusterNet input must be contiguous 1x32x32x3 uint8/fp16 NHWC or a tagged image "
                             f"{TAGGED_SHAPE} int32, got {tuple(x.shape)} {x.dtype}")
        seq, word = answer if answer is not None else (self._seq0, None)
        if gate and word is None:
            raise ValueError("ClusterNet: a gated forward needs the answer words")
        return _Params(x.data_ptr(), self.blob.data_ptr(), self.out.data_ptr(), seq.data_ptr(),
                       word.data_ptr() if word is not None else 0,
                       self.trace.data_ptr() if self.trace is not None else 0,
                       gate[0].data_ptr() if gate else 0, gate[1] if gate else 0, int(x.dtype == torch.float16),
                       int(bool(gate and gate[2])), int(tagged), 0)

    def gate(self, flag, seq, word, limit_ms):
        """KernelNet.gate's counterpart: the kernel is its own gate, so this launches nothing; it
        makes the next forward wait (block 0, before reading the image) until the host's flag word
        holds the call's number, at most limit_ms (seq, word: that forward's answer buffers)."""
        self._gate = (flag, int(limit_ms * 1e6), False)

    def serve(self, flag, limit_ms):
        """Make the next forward a serving kernel: it answers call after call (each behind the
        gate above, flag[0] its number), keeps its weights in shared memory, and ends when no
        call has come for limit_ms (word[1] then names the call it waited for) or when flag[1]
        is set.  While it runs it holds its SMs and a device-wide synchronise waits for it."""
        self._gate = (flag, int(limit_ms * 1e6), True)

    @staticmethod
    def tag_image(buf, img, n):
        """Write uint8 image img (32, 32, 3) as call n into a tagged buffer (TAGGED_SHAPE int32,
        numpy): 12 image bytes then the call number per 16-byte chunk, all bytes before any
        number, so a chunk that holds n holds call n's bytes (x86 stores are seen in order)."""
        buf.view(np.uint8).reshape(TAGGED_SHAPE[0], 16)[:, :12] = img.reshape(TAGGED_SHAPE[0], 12)
        buf[:, 3] = n

    def forward(self, x, answer=None):
        p = self._params(x, answer)
        args = (ctypes.c_void_p * 1)(ctypes.cast(ctypes.pointer(p), ctypes.c_void_p))
        stream = ctypes.c_void_p(torch.cuda.current_stream(self.device).cuda_stream)
        _check(_driver().cuLaunchKernel(self._fn, self.plan["ranks"], 1, 1, THREADS, 1, 1, self.plan["smem"],
                                        stream, args, None), "cuLaunchKernel")
        return self.logits

    __call__ = forward

