"""The host side of our Triton kernels (kernels.py): KernelNet runs a folded fastnet-class net
as one kernel per conv layer, each layer's tiles chosen at build (tile cache, build-time search
or heuristic; kernel_tiles.py has the shapes, the candidates and the tile cache that
tools/kernel_tune.py and tools/chain_tune.py write).

    kn = KernelNet(layers, head, batch=1, views=TTA_VIEWS["flip"], tile_cache="results/tiles.json")
    logits = kn(x_nhwc)                       # float32 (1, 10), the same buffer every call
    kn(x_pinned_host, answer=(seq, word))     # also the class id, into pinned host memory

reference_forward() is the float64 ground truth of the tests; random_net() makes test nets.
"""
import math
import os

import torch

import kernel_gate
import kernels
from kernel_tiles import (PDL_TRIGGERS, SPLIT_MEETS, _check_trigger, _k_steps, _layer_meta, _pow2, candidates,
                          chain_key, heuristic_tiles, read_tile_cache, row_tiles, scratch_shape, tile_key)
from kernel_tiles import WIDE_LAUNCH, _with_split, begin_tuning, write_tile_cache  # noqa: F401 (K.<name>: tools, tests)
from kernels import TRITON_ERROR
from utils import KitError  # noqa: F401 (K.KitError: the tests)

FLAG_WORDS = 48  # meet flag: the most of the other slices' 64-bit words the last slice reads a thread
_TILE_CACHE = {}  # (tile key, pdl, autotune) -> tiles chosen at build in this process


def _interpreting():
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def available(device="cuda"):
    """(ok, reason): can KernelNet run here?  The interpreter (TRITON_INTERPRET=1) counts as
    available on the CPU, for the tests; otherwise CUDA and an sm80+ GPU are needed."""
    if TRITON_ERROR:
        return False, TRITON_ERROR
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
    if kernels.gdc_wait is None:
        return False, "this Triton has no triton.language.extra.cuda.gdc_wait"
    return True, "sm90+ and triton.language.extra.cuda.gdc_*"


# ============================================================================= reference and test nets
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


# ============================================================================= KernelNet
def _pack_weight(L):
    """Conv weight [Cout, Cin, k, k] -> the kernels' [(ky, kx, ci), Cout] float32 matrix."""
    return L["weight"].detach().float().permute(2, 3, 1, 0).reshape(-1, L["weight"].shape[0])


class KernelNet(torch.nn.Module):
    """The folded net as one Triton kernel per conv layer (head fused into the last one).

    KernelNet(layers, head, batch=1, device='cuda', autotune=False, pdl=False, pdl_trigger='early',
              views=None, tiles=None, tile_cache=None)
    forward(x, answer=None): x N x 32 x 32 x 3 (uint8 or fp16, NHWC, contiguous, N == batch,
    on the GPU or pinned host memory) -> float32 N x 10 logits (the same buffer every call).
    answer=(seq, word): batch 1 only; the head also writes (call number << 4) | class id into
    `word` (an int32 tensor in pinned host memory), the call number counted in `seq` (an int32
    device tensor).  Allocates nothing per call: CUDA-graph capturable.

    views: test-time augmentation in the kernels, [((flip, dy, dx), weight), ...] as
    tta.TTA_VIEWS: every layer runs batch * len(views) maps, the first layer reads each
    view straight from the image (mirrored / reflect-shifted loads), the head returns the
    weighted sum of the views' logits.  Same kernel count as without views, no torch op.
    Tiles: `tiles` (one dict per layer) if given, else the cache file's entry for this whole
    net (chain_key: tools/chain_tune.py), else its entry for this GPU and layer shape, else the
    build-time search (autotune), else the heuristic.
    pdl: programmatic dependent launch; pdl_trigger: each kernel lets the next one launch right
    after its own wait for the previous one (early) or after its K loop (late); a layer's tiles
    may name their own ("trigger").
    split_meet: where the K slices of a split-K layer (after the first) meet: count (the last
    slice to arrive at a tile, by an arrival count, reads the sum back and runs the epilogue) |
    next (the slices add into fp32 sums and the kernel ends; the next layer runs the epilogue
    in its loads, and after the last layer a head kernel of one program: one kernel more) |
    flag (the tile's last slice polls the others' partial tiles, every value stored beside the
    call's epoch in one 64-bit word: no fence, count or read-back).  A layer's tiles may name
    their own ("MEET").
    """

    def __init__(self, layers, head, batch=1, device="cuda", autotune=False, pdl=False, tiles=None, views=None,
                 tile_cache=None, pdl_trigger="early", split_meet="count"):
        super().__init__()
        ok, why = available(device)
        if not ok:
            raise RuntimeError(f"KernelNet unavailable: {why}")
        if pdl and not pdl_available()[0]:
            raise RuntimeError(f"KernelNet pdl=True: {pdl_available()[1]}")
        self.device = torch.device("cpu" if _interpreting() else device)
        if pdl_trigger not in PDL_TRIGGERS:
            raise ValueError(f"KernelNet pdl_trigger must be one of {', '.join(PDL_TRIGGERS)}, not {pdl_trigger!r}")
        if split_meet not in SPLIT_MEETS:
            raise ValueError(f"KernelNet split_meet must be one of {', '.join(SPLIT_MEETS)}, not {split_meet!r}")
        self.batch, self.pdl, self.pdl_trigger, self.split_meet = int(batch), bool(pdl), pdl_trigger, split_meet
        self._build_views(views)
        self.n_sm = (torch.cuda.get_device_properties(self.device).multi_processor_count
                     if self.device.type == "cuda" else 132)
        self.oversized = 0  # candidate tiles search_tiles left out: more shared memory than the SM has
        self.specs = self._build_specs(layers)
        self._build_head(head)
        self.gpu = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else "interpreter"
        if tiles:  # as set_tiles later: one dict per layer, each trigger checked, the scratch sized
            self.set_tiles(tiles)
        else:
            cache = read_tile_cache(tile_cache)
            for sp in self.specs:
                sp["tiles"], sp["tile_source"] = self._choose_tiles(sp, autotune, cache)
                self._alloc_scratch(sp)
            self._place_sums()

    # -- build --------------------------------------------------------------------------------
    def _build_views(self, views):
        """TTA views -> (flip, dy, dx) int32 rows and fp32 weights the kernels read; nb = maps
        per layer.  Shifts are one pixel at most (the reflect index maps -1 and H only)."""
        views = views or [((False, 0, 0), 1.0)]
        if any(abs(dy) > 1 or abs(dx) > 1 for (_, dy, dx), _ in views):
            raise ValueError(f"views {views}: shifts of one pixel at most")
        self.nv, self.nb = len(views), self.batch * len(views)
        self.views_in_kernel = views != [((False, 0, 0), 1.0)]
        self.view_t = torch.tensor([[int(f), dy, dx] for (f, dy, dx), _ in views], dtype=torch.int32,
                                   device=self.device).flatten()
        self.view_w = torch.tensor([float(w) for _, w in views], dtype=torch.float32, device=self.device)

    def _build_specs(self, layers):
        specs, h, w, c = [], 32, 32, 3
        for L in layers:
            m = _layer_meta(L, h, w, c)
            specs.append(dict(meta=m, w=_pack_weight(L).to(self.device, torch.float16).contiguous(),
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
        self._no_answer = torch.zeros(2, dtype=torch.int32, device=dev)  # pointers for ANSWER=False
        self.gate_go = torch.full((1,), -1, dtype=torch.int32, device=dev)  # the stem gate's word (GATE)
        self.staged = torch.zeros(self.batch, 32, 32, 3, dtype=torch.uint8, device=dev)  # the image (STAGE)
        self.trace = None  # an int64 [1024, 32] device buffer: launches stamp it (TRACE, tools/e2e_trace.py)
        self.sums, self.sums_n = torch.zeros(1, device=dev), 0  # the deferring layers' sums (_place_sums)
        self.epoch = torch.zeros(1, dtype=torch.int32, device=dev)  # the call's epoch of meet flag

    @torch.no_grad()
    def load_weights(self, layers, head):
        """Copy another net of the same shapes into the packed weights, in place (a captured CUDA
        graph then runs the new weights): how bench.py evaluates every seed through this path."""
        if len(layers) != len(self.specs):
            raise ValueError(f"{len(layers)} layers, this KernelNet has {len(self.specs)}")
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

    def weight_bytes(self):
        """Bytes of the weights as run (fp16 conv weights, fp32 biases and the padded head)."""
        ts = [t for sp in self.specs for t in (sp["w"], sp["b"])] + [self.hw, self.hb]
        return sum(t.numel() * t.element_size() for t in ts)

    def _alloc_scratch(self, sp):
        m, t = sp["meta"], sp["tiles"]
        if t.get("JOIN") and (self.specs.index(sp) == 0 and self.views_in_kernel):
            raise ValueError(f"tiles {t}: JOIN tiles cannot read the views of the image (the first layer)")
        maps, mt = row_tiles(m, t, self.nb)
        nt = -(-m["COUT"] // t["BN"])
        sp["grid"] = (maps * mt, nt, t["SPLIT"])
        sp["m_tiles"] = mt
        sp["part"] = torch.zeros(scratch_shape(m, t, self.nb, mt, t["SPLIT"]), device=self.device)
        sp["cnt"] = torch.zeros(maps * mt * nt, dtype=torch.int32, device=self.device)

    def meet(self, i):
        """Where layer i's K slices meet: count | next | flag ('count' without split-K, and for the
        first layer, whose programs zero the sums and count the epoch up for the later ones).  The
        net's flag gives way to count where the last slice would hold more than FLAG_WORDS of the
        others' words a thread (its registers spill: a pooled layer's 64-row tiles, say); a layer's
        own MEET is taken as it is."""
        i = i % len(self.specs)
        t, m = self.specs[i]["tiles"], self.specs[i]["meta"]
        if i == 0 or t["SPLIT"] < 2:
            return "count"
        if "MEET" in t:
            return t["MEET"]
        words = (t["SPLIT"] - 1) * t["BP"] * m["S"] * t["BN"] / (32 * t["num_warps"])
        return "count" if self.split_meet == "flag" and words > FLAG_WORDS else self.split_meet

    def defers(self, i):
        """Does layer i leave its fp32 sums for the next kernel (meet next)?"""
        return self.meet(i) == "next"

    def _sums_stride(self, i):
        """Floats per map in layer i's sums (its scratch's rows: per map, or all maps' in turn: JOIN)."""
        sp = self.specs[i]
        m, t = sp["meta"], sp["tiles"]
        rows = m["HO"] * m["WO"] if t.get("JOIN") else sp["m_tiles"] * t["BP"]
        return rows * m["S"] * m["COUT"]

    def _place_sums(self):
        """The sums of the layers that defer their epilogue, in one zeroed arena (the first layer's
        programs zero all of it each call: ZCH); their scratch become views of it."""
        idx = [i for i in range(len(self.specs)) if self.defers(i)]
        for i in idx:
            if i + 1 < len(self.specs) and self.specs[i + 1]["tiles"]["GENERIC"]:
                raise ValueError(f"split_meet next: layer {i + 1} reads layer {i}'s sums through the blocked loads; "
                                 "its tiles need GENERIC false")
        offs, n = [], 0
        for i in idx:
            offs.append(n)
            n += -(-self.specs[i]["part"].numel() // 32) * 32  # 128-byte aligned
        self.sums = torch.zeros(max(n, 1), device=self.device)
        self.sums_n = n
        for i, sp in enumerate(self.specs):  # meet flag: SPLIT - 1 partial tiles of int64 words per tile
            m, t = sp["meta"], sp["tiles"]
            words = math.prod(sp["grid"][:2]) * (t["SPLIT"] - 1) * t["BP"] * m["S"] * t["BN"]
            sp["slots"] = torch.zeros(words if self.meet(i) == "flag" else 1, dtype=torch.int64, device=self.device)
        for i, o in zip(idx, offs):
            part = self.specs[i]["part"]
            self.specs[i]["part"] = self.sums[o:o + part.numel()].view(part.shape)

    # -- tiles --------------------------------------------------------------------------------
    def chain_key(self, i):
        """Layer i's key among the tile cache's whole-net entries (chain_key)."""
        pdl = self.pdl_trigger if self.pdl else "off"
        return chain_key([sp["meta"] for sp in self.specs], self.nb, self.gpu, pdl, i)

    def chain_entries(self):
        """{chain key: tiles} of every layer as it runs now: what tools/chain_tune.py saves."""
        return {self.chain_key(i): dict(sp["tiles"]) for i, sp in enumerate(self.specs)}

    def set_tiles(self, tiles, source="given"):
        """Run with other tiles (one dict per layer, as tiles() returns them): the scratch is
        sized again; a captured CUDA graph keeps the old ones (capture it again)."""
        if len(tiles) != len(self.specs):
            raise ValueError(f"{len(tiles)} tile dicts, this KernelNet has {len(self.specs)} layers")
        for sp, t in zip(self.specs, tiles):
            _check_trigger(t)
            sp["tiles"], sp["tile_source"] = dict(t), source
            self._alloc_scratch(sp)
        self._place_sums()

    def _choose_tiles(self, sp, autotune, cache):
        """(tiles, source): the tile cache's entry for this net ('chain'), else for this GPU and
        layer shape ('cache'), else the build-time search if autotune ('autotune'), else the
        heuristic ('heuristic')."""
        key = self.chain_key(self.specs.index(sp))
        if key in cache:
            _check_trigger(cache[key])
            return dict(cache[key]), "chain"
        key = tile_key(sp["meta"], self.nb, self.gpu)
        if key in cache:
            return dict(cache[key]), "cache"
        tune = bool(autotune) and self.device.type == "cuda"  # the interpreter cannot time
        mem_key = (key, self.pdl, autotune)
        if mem_key not in _TILE_CACHE:
            _TILE_CACHE[mem_key] = self.search_tiles(sp, autotune=autotune) if tune else \
                heuristic_tiles(sp["meta"], self.nb, self.n_sm)
        return dict(_TILE_CACHE[mem_key]), "autotune" if tune else "heuristic"

    def tuned_entries(self):
        """{tile_key: tiles} of this net's autotuned layers: what tools/kernel_tune.py saves."""
        return {tile_key(sp["meta"], self.nb, self.gpu): dict(sp["tiles"]) for sp in self.specs
                if sp["tile_source"] == "autotune"}

    def tile_sources(self):
        """Where each layer's tiles came from: chain | cache | autotune | heuristic | given."""
        return [sp["tile_source"] for sp in self.specs]

    def tiles(self):
        return [dict(sp["tiles"]) for sp in self.specs]

    def search_tiles(self, sp, timed=True, autotune=True):
        """Time each candidate tile alone (a CUDA graph of 20 launches, on a random input of
        the layer's shape) and keep the fastest (autotune="wide": the wider search).  The first
        layer reads its image from pinned host memory, as the end-to-end call does: there the
        number of programs reading the image, and how each reads it, costs more than its
        arithmetic (each read crosses PCIe).  The last layer of a batch-1 net runs its head with
        the answer word (in pinned host memory), as the call does: how its tiles meet before the
        answer is part of its time.
        timed=False: only compile every candidate (one launch each; tools/kernel_tune.py runs
        that in parallel processes)."""
        i = self.specs.index(sp)
        x = self.random_input(i)
        answer = None
        if i == len(self.specs) - 1 and self.batch == 1:  # the head as the call runs it: with its answer word
            pin = self.device.type == "cuda"
            answer = (torch.zeros(1, dtype=torch.int32, device=self.device),
                      torch.zeros(4, dtype=torch.int32, pin_memory=pin))
        best = None
        from triton.runtime.errors import OutOfResources
        for t in candidates(sp["meta"], self.nb, self.n_sm, wide=autotune == "wide"):
            sp["tiles"] = t
            self._alloc_scratch(sp)
            try:
                self._launch(i, x, answer, alone=True)  # compiles it; a tile needing more shared memory than
            except OutOfResources:  # the SM has (big BK x 4 stages) is no candidate, counted in self.oversized
                self.oversized += 1
                continue
            if not timed:
                continue
            us = time_launch(lambda: self._launch(i, x, answer, alone=True), reps=20, graphs=3)
            if best is None or us < best[0]:
                best = (us, dict(t))
        torch.cuda.synchronize()
        return best[1] if best else None

    def random_input(self, i):
        """A random input of layer i, as it is timed: for the first layer the uint8 image in
        pinned host memory, where the end-to-end call keeps it; else fp16 maps on the device."""
        m = self.specs[i]["meta"]
        if i == 0:  # e2e_input: mapped, the first kernel reads the image there
            x = torch.randint(0, 256, (self.batch, 32, 32, 3), dtype=torch.uint8)
            return x.pin_memory() if self.device.type == "cuda" else x
        return torch.rand(self.nb, m["H"], m["W"], m["CIN"], device=self.device).half()

    # -- run ----------------------------------------------------------------------------------
    def head_mode(self, i):
        """0: not the last layer; 3: the last layer is one tile (every map's whole output), which
        makes the logits itself; 2: its row tile holds a whole map (JOIN: every map), so each tile
        adds its share of the logits (the first kernel zeroes them, ZOUT: needs >= 2 layers);
        1: a global max over tiles, then the last tile computes the logits."""
        i = i % len(self.specs)
        if i != len(self.specs) - 1 or self.defers(i):  # 0 too when the head kernel runs the head
            return 0
        return self._count_head_mode(i)

    def _count_head_mode(self, i):
        sp = self.specs[i]
        if sp["grid"][0] * sp["grid"][1] == 1:
            return 3
        return 2 if sp["m_tiles"] == 1 and len(self.specs) > 1 else 1

    def _launch(self, i, x, answer=None, gate=None, stage=False, polls=1, alone=False):
        """Layer i as its own kernel, one work item per program; gate (layer 0 only): its
        programs first wait for the call (kernels.conv_layer_kernel, GATE), program 0 with
        `polls` reads of the flag in flight (1 or 4: POLLS); stage: and read the image from the
        device copy that program 0 makes of it (STAGE).  x: the image or layer i-1's output (its
        sums when it defers).  alone: the layer as split_meet count runs it, on fp16 input x (the
        tile search)."""
        sp, t, m = self.specs[i], self.specs[i]["tiles"], self.specs[i]["meta"]
        raw_out = not alone and self.defers(i)
        raw_in = not alone and i > 0 and self.defers(i - 1)
        prev = self.specs[i - 1] if raw_in else sp
        zn = self.sums_n if (i == 0 and not alone) else 0
        zch = _pow2(-(-zn // math.prod(sp["grid"]))) if zn else 0
        kw = dict(num_warps=t["num_warps"], num_stages=t["num_stages"])
        if self.pdl:
            kw["launch_pdl"] = True
        seq, word = answer if answer is not None else (self._no_answer, self._no_answer)
        flag, limit, gate_mode, staged = self._no_answer, 0, 0, 0
        if gate is not None and i == 0:
            limit, gate_mode = self._gate_limit(gate[1])
            flag, staged = gate[0], (_pow2(x.numel() // 4) if stage else 0)
        kernels.conv_layer_kernel[sp["grid"]](
            x, sp["w"], sp["b"], sp["y"], sp["part"], sp["cnt"], self.hmax, self.hw, self.hb, self.out, self.hcnt,
            self.view_t, self.view_w, seq, word, flag, self.gate_go, self.staged,
            self._no_answer if self.trace is None else self.trace, prev["b"], self.sums, self.epoch,
            sp.get("slots", self.sums), sp["m_tiles"], t["SPLIT"], sp["grid"][0] * sp["grid"][1], limit, zn,
            H=m["H"], W=m["W"], CIN=m["CIN"], COUT=m["COUT"], KH=m["KH"], PAD=m["PAD"], S=m["S"], WO=m["WO"],
            HWO=m["HO"] * m["WO"], ACT=m["ACT"], BP=t["BP"], BN=t["BN"], BK=t["BK"], KI=_k_steps(m, t),
            GENERIC=t["GENERIC"], HEAD=self._count_head_mode(i) if i == len(self.specs) - 1 and not raw_out else 0,
            NB=self.nb, CP=self.cp, NV=self.nv,
            VIEW=i == 0 and self.views_in_kernel, ZOUT=i == 0 and len(self.specs) > 1,
            PDL=PDL_TRIGGERS[t.get("trigger", self.pdl_trigger)] if self.pdl else 0,
            ANSWER=answer is not None and i == len(self.specs) - 1, GATE=gate_mode, STAGE=staged,
            POLLS=polls if gate_mode else 1, JOIN=bool(t.get("JOIN")), TRACE=0 if self.trace is None else i + 1,
            RAW_OUT=raw_out, RAW_IN=prev["meta"]["S"] if raw_in else 0, XMAP=self._sums_stride(i - 1) if raw_in else 0,
            PACT=prev["meta"]["ACT"], ZCH=zch, FLAG=t["SPLIT"] - 1 if not alone and self.meet(i) == "flag" else 0,
            BUMP=i == 0 and not alone and any(self.meet(j) == "flag" for j in range(len(self.specs))), **kw)

    def _launch_head(self, answer=None):
        """The head kernel after a last layer that defers (kernels.head_kernel, one program)."""
        sp, m = self.specs[-1], self.specs[-1]["meta"]
        seq, word = answer if answer is not None else (self._no_answer, self._no_answer)
        kernels.head_kernel[(1,)](
            sp["part"], sp["b"], self.hw, self.hb, self.out, self.view_w, seq, word,
            self._no_answer if self.trace is None else self.trace,
            HWO=m["HO"] * m["WO"], QP=_pow2(m["HO"] * m["WO"]), PS=m["S"], COUT=m["COUT"],
            XMAP=self._sums_stride(len(self.specs) - 1), NB=self.nb, NV=self.nv, CP=self.cp, PACT=m["ACT"],
            ANSWER=answer is not None, PDL=self.pdl, TRACE=0 if self.trace is None else len(self.specs) + 1,
            num_warps=4, **(dict(launch_pdl=True) if self.pdl else {}))

    def _gate_limit(self, limit_ms):
        """A gate's limit as its kernels count it, and their GATE mode: GPU clock nanoseconds (1), or
        under the interpreter, which has no clock, thousands of flag reads per ms (2)."""
        clock = self.device.type == "cuda"
        return int(limit_ms * (1e6 if clock else 1e3)), (1 if clock else 2)

    def forward(self, x, answer=None, gate=None, stage=False, polls=1):
        if x.shape != (self.batch, 32, 32, 3) or x.dtype not in (torch.uint8, torch.float16):
            raise ValueError(f"KernelNet input must be {self.batch}x32x32x3 uint8/fp16 NHWC, "
                             f"got {tuple(x.shape)} {x.dtype}")
        if not x.is_contiguous():
            raise ValueError("KernelNet input must be contiguous NHWC")
        if answer is not None and self.batch != 1:
            raise ValueError("KernelNet answer words need batch 1")
        if gate is not None and answer is None:
            raise ValueError("KernelNet gate needs answer words (the call counter and the stamps)")
        if stage and (gate is None or x.dtype != torch.uint8):
            raise ValueError("KernelNet stage needs a gate and a uint8 image (program 0 of the gate copies it)")
        if polls not in (1, 4) or (polls != 1 and gate is None):
            raise ValueError(f"KernelNet polls {polls}: 1, or 4 with a gate (the gate's reads of the flag in flight)")
        h = x
        for i, sp in enumerate(self.specs):
            self._launch(i, h, answer, gate, stage, polls)
            h = sp["part"] if self.defers(i) else sp["y"]
        if self.defers(-1):
            self._launch_head(answer)
        return self.logits

    def gate(self, flag, seq, word, limit_ms):
        """The first kernel of a graph launched ahead of its call (kernel_gate.gate_kernel): wait until
        the host's flag word holds the call's number, at most limit_ms; then the net's kernels
        (forward) run; with PDL the first of them launches at once and waits for the gate's end.
        Under the interpreter limit_ms counts thousands of flag reads instead.  forward(x, answer,
        gate=(flag, limit_ms)) waits in the first layer's programs instead (no kernel of its own),
        and with stage=True those programs read the image from a device copy made by program 0."""
        limit, mode = self._gate_limit(limit_ms)
        kernel_gate.gate_kernel[(1,)](flag, seq, word, limit, CLOCK=mode == 1, PDL=self.pdl)

    def kernel_count(self):
        """Kernels per forward: one per conv layer (the head, the views and the answer are inside),
        and the head kernel when the last layer defers its epilogue (split_meet next)."""
        return len(self.specs) + int(self.defers(-1))

    # -- timing -------------------------------------------------------------------------------
    def time_kernels(self, x, reps=50):
        """[(name, µs)] per kernel, each timed alone (a graph of `reps` launches of it, on the
        inputs left by a full forward): the per-layer table of tools/kernel_tune.py."""
        self.forward(x)
        rows = []
        for i in range(len(self.specs)):
            src = x if i == 0 else self.specs[i - 1]["part" if self.defers(i - 1) else "y"]
            rows.append((self.layer_name(i), time_launch(lambda: self._launch(i, src), reps=reps)))
        if self.defers(-1):
            rows.append(("head kernel", time_launch(self._launch_head, reps=reps)))
        return rows

    def layer_name(self, i):
        sp = self.specs[i]
        m, t = sp["meta"], sp["tiles"]
        return (f"L{i} {m['CIN']}->{m['COUT']} k{m['KH']} {m['H']}x{m['W']}"
                f"{' pool' if m['S'] == 4 else ''}{' +head' if self.head_mode(i) else ''}"
                f"{'' if self.meet(i) == 'count' else ' meet ' + self.meet(i)}"
                f" grid={sp['grid']} BP={t['BP']} BN={t['BN']} BK={t['BK']} w{t['num_warps']}s{t['num_stages']}")


def time_launch(fn, reps=20, graphs=5):
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
