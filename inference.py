"""Every inference path of the kit: one variant = a checkpoint + precision + memory format
+ BN folding + fused kernels + torch.compile + CUDA graph.

InferenceModel is used by both bench.py and eval.py, so the accuracy reported for a variant
is that of exactly what is timed; evaluate_inference() runs the test set through it.
"""
from __future__ import annotations

import time

import torch

import torch.nn as nn
import torch.nn.functional as F

from config import resolve_path
from utils import (FastNet, KitError, fold_bn_generic, load_model, norm_consts, normalize, param_bytes, progress,
                   resolve_checkpoint, sync_fn)

# ============================================================================= test-time augmentation
# A TTA mode = views (flip, dy, dx) and their weights; logits = sum_v weight_v * net(view_v(x)).
# Translations shift by one pixel with reflect padding (the stem has no padding, so the folded
# normalisation stays exact).  flip_translate follows airbench's multi-crop TTA idea: the two
# untranslated views weigh half, the four one-pixel shifts the other half.
TTA_VIEWS = {
    "none": [((False, 0, 0), 1.0)],
    "flip": [((False, 0, 0), 0.5), ((True, 0, 0), 0.5)],
    "flip_translate": [((False, 0, 0), 0.25), ((True, 0, 0), 0.25),
                       ((False, -1, -1), 0.125), ((True, -1, -1), 0.125),
                       ((False, 1, 1), 0.125), ((True, 1, 1), 0.125)],
}


def make_view(x, flip, dy, dx):
    """One TTA view of a NCHW batch: horizontal flip, then a (dy, dx) shift with reflect padding."""
    if flip:
        x = x.flip(3)
    if dy or dx:
        h, w = x.shape[2], x.shape[3]
        x = F.pad(x, (1, 1, 1, 1), mode="reflect")[:, :, 1 + dy:1 + dy + h, 1 + dx:1 + dx + w]
    return x


# TTA modes the kernel path runs inside its kernels (views made by the first layer's loads,
# weighted mean in the fused head): no TTANet around it, no extra kernel.  The rest keep TTANet.
KERNEL_TTA = ("none", "flip", "flip_translate")


class KernelPath(nn.Module):
    """The folded net run by our Triton kernels (kernels.py): NCHW channels_last FP16 raw pixels
    in (a free view as NHWC), float32 logits out; the logits buffer is the same every call.
    tta_fused: the KernelNet makes the TTA views itself (folded_net must not wrap it in TTANet)."""

    def __init__(self, kn):
        super().__init__()
        self.kn = kn
        self.tta_fused = bool(getattr(kn, "fused_views", False))

    def forward(self, x):
        return self.kn(x.permute(0, 2, 3, 1))


def kernel_net(cfg, model, a):
    """KernelNet over folded_spec for one image; the TTA views are fused into its kernels
    (KERNEL_TTA), else it is sized for the views of one image and folded_net wraps them."""
    import kernels  # Triton is needed only here
    ok, why = kernels.available(str(a["device"]))
    if not ok:
        raise RuntimeError(f"Triton kernels unavailable: {why}")  # not a KitError: bench goes on without it
    if a["dtype"] != torch.float16 or a["mem"] != torch.channels_last:
        raise KitError("kernels: the variant needs precision fp16 and memory_format channels_last")
    layers, head = model.eval().folded_spec(cfg.data.mean, cfg.data.std)
    kw = dict(device=str(a["device"]), pdl=a.get("kernel_pdl", False), fuse_stem=a.get("kernel_fuse_stem", False),
              fuse_pairs=a.get("kernel_fuse_pairs", False),
              tile_cache=resolve_path(cfg, cfg.paths.kernel_tiles) if a.get("kernel_tiles") == "tuned" else None)
    if a["tta"] in KERNEL_TTA and a.get("tta_fused", True):
        return KernelPath(kernels.KernelNet(layers, head, batch=1, views=TTA_VIEWS[a["tta"]], **kw))
    n_views = len(TTA_VIEWS[a["tta"]])
    return KernelPath(kernels.KernelNet(layers, head, batch=n_views, **kw))


def kernel_notes(kn):
    """One note for the row: how many layers ran tiles from the cache / the heuristic, the launch and
    fewer-kernel options that are on (PDL, stem fused, layers paired), and the kernel count."""
    src = kn.tile_sources()
    counts = ", ".join(f"{src.count(s)} {s}" for s in dict.fromkeys(src))
    return (f"kernel tiles: {counts}{'; pdl' if kn.pdl else ''}{'; stem fused' if kn.fuse_stem else ''}"
            f"{'; layers paired' if kn.fuse_pairs else ''}; {kn.kernel_count()} kernels")


def kernel_net_of(net):
    """The KernelNet inside a path (KernelPath, or the TTANet around one), else None."""
    return getattr(net, "kn", None) or getattr(getattr(net, "net", None), "kn", None)


def weight_bytes(net):
    """Bytes of the weights as run: module parameters and buffers, or, for our kernel path (whose
    weights are plain tensors of the KernelNet, not parameters), its per-layer weights and biases
    and the head's.  (Counting parameters alone gave 0 MB for every kernel-path row.)"""
    kn = kernel_net_of(net)
    if kn is None:
        return param_bytes(net)
    ts = [t for sp in kn.specs for t in (sp["w"], sp["b"])] + [kn.hw, kn.hb]
    return sum(t.numel() * t.element_size() for t in ts)


class TTANet(nn.Module):
    """net over all views as ONE batch (V*N images), then the weighted mean of the logits:
    at batch 1 the GPU is mostly idle, so extra views cost little (all inside the same graph)."""

    def __init__(self, net, mode, device=None):
        super().__init__()
        if mode not in TTA_VIEWS:
            raise KitError(f"unknown tta mode '{mode}' (valid: {', '.join(TTA_VIEWS)})")
        self.net, self.views = net, [v for v, _ in TTA_VIEWS[mode]]
        dev = device if device is not None else next(net.parameters()).device
        # a buffer, not a tensor made in forward: a host-to-device copy cannot be graph-captured
        self.register_buffer("w", torch.tensor([w for _, w in TTA_VIEWS[mode]], device=dev).view(-1, 1, 1))

    def forward(self, x):
        n = x.shape[0]
        batch = torch.cat([make_view(x, *v) for v in self.views])
        if x.is_contiguous(memory_format=torch.channels_last):
            batch = batch.contiguous(memory_format=torch.channels_last)
        logits = self.net(batch).float().view(len(self.views), n, -1)
        return (logits * self.w).sum(0)


class InferenceModel:
    """One variant's inference path: checkpoint + precision + memory format + BN folding
    + fused kernels + torch.compile + CUDA graph.  Used by both bench.py and eval.py, so the
    accuracy reported for a variant is that of exactly what is timed.

      im = InferenceModel(cfg, "F", device)
      x = im.prepare(u8_nchw)    # the variant's input (dtype, layout, normalised or not)
      logits = im(x)             # batch 1 if im.batch1_only
      cls = im.predict_host(img) # end to end: uint8 HWC numpy on the host -> int
    """

    def __init__(self, cfg, variant, device, checkpoint=None, expected_model=None):
        if variant not in cfg.variants:
            raise KitError(f"unknown variant '{variant}' (valid: {', '.join(cfg.variants)})")
        v = cfg.variants[variant]
        self.variant, self.device, self.notes = variant, device, []
        self.label, self.fold_bn, self.fuse = v.label, v.fold_bn, v.fuse
        self.ckpt_path = resolve_checkpoint(cfg, checkpoint or v.checkpoint)
        model, ck = load_model(self.ckpt_path, expected_model or v.get("model") or None, cfg=cfg)
        self.model_name = ck["model"]
        self.ck_meta = {k: ck.get(k) for k in ("front", "tta", "train_time_s", "compile_s", "test_acc")}
        cuda = device.type == "cuda"
        self.precision = v.precision if cuda else "fp32"
        self.cuda_graph = v.cuda_graph and cuda
        # On the CPU the kit measures nothing the study reports: run the same weights and folding
        # in FP32 eager (no FP16, no CUDA graph, no torch.compile and its C++ build), and say so.
        self.compile = v.compile if cuda else "none"
        if not cuda and (v.precision != "fp32" or v.cuda_graph or v.compile != "none"):
            self.notes.append("cpu fallback: fp32 eager (no CUDA graph, no torch.compile)")
        if v.fuse and not v.fold_bn:
            raise KitError(f"variant {variant}: fuse needs fold_bn (the fused kernels take folded weights)")
        if v.cuda_graph and v.compile in ("reduce-overhead", "max-autotune"):
            raise KitError(f"variant {variant}: compile mode '{v.compile}' makes its own CUDA graphs; "
                           "set cuda_graph: false or use max-autotune-no-cudagraphs")
        self.tta = ck.get("tta", "none") if v.tta == "ckpt" else v.tta
        if self.tta not in TTA_VIEWS:
            raise KitError(f"{self.ckpt_path}: unknown tta mode '{self.tta}' (valid: {', '.join(TTA_VIEWS)})")
        self.dtype = torch.float16 if self.precision == "fp16" else torch.float32
        self.mem = torch.channels_last if v.memory_format == "channels_last" else torch.contiguous_format
        self.memory_format = v.memory_format
        self.fold_norm = v.fold_bn and isinstance(model, FastNet)
        self.kernels = bool(v.kernels) and cuda
        if v.kernels and not (v.fold_bn and isinstance(model, FastNet)):
            raise KitError(f"variant {variant}: kernels need a fastnet checkpoint and fold_bn: true")
        if not cuda and v.kernels:
            self.notes.append("cpu fallback: torch ops instead of the Triton kernels")
        self._cfg, self._fold_args = cfg, dict(fold_bn=v.fold_bn, fuse=v.fuse, device=device, dtype=self.dtype,
                                               mem=self.mem, tta=self.tta, kernels=self.kernels,
                                               kernel_tiles=v.kernel_tiles, kernel_pdl=v.kernel_pdl,
                                               kernel_fuse_stem=v.kernel_fuse_stem,
                                               kernel_fuse_pairs=v.kernel_fuse_pairs)
        self.net = net = InferenceModel.folded_net(cfg, model, self._fold_args)
        if kernel_net_of(net) is not None:
            self.notes.append(kernel_notes(kernel_net_of(net)))
        self.size_mb = weight_bytes(net) / 1e6
        self.n_params = sum(p.numel() for p in model.parameters())
        self.mean, self.std = norm_consts(cfg.data.mean, cfg.data.std, device)
        self.fn = torch.compile(net, mode=self.compile, dynamic=False) if self.compile != "none" else net
        self.batch1_only = self.cuda_graph or self.compile != "none"
        self._graph = self._e2e = None
        t0 = time.time()
        with torch.inference_mode():
            self.static_in = self.prepare(torch.randint(0, 256, (1, 3, 32, 32), dtype=torch.uint8, device=device))
            if self.compile != "none" and not self.cuda_graph:
                for _ in range(3):  # compile (and record cudagraphs) now, not inside a timed run
                    self.fn(self.static_in)
            if self.cuda_graph:
                self._graph, self.static_out = capture_graph(self.fn, self.static_in)
            if cuda:
                self.h_in = torch.zeros((1, 32, 32, 3), dtype=torch.uint8).pin_memory()
                self.d_in = torch.zeros((1, 32, 32, 3), dtype=torch.uint8, device=device)
                if self.cuda_graph:
                    self._e2e, self.e2e_out = capture_graph(self._e2e_body, self.d_in)
            sync_fn(device)()
        self.build_s = time.time() - t0

    @staticmethod
    def folded_net(cfg, model, a):
        """The eval-mode net of a path: BN (and, for fastnet, the input normalisation) folded if
        asked, moved to the device, dtype and memory format, wrapped in the TTA views."""
        if a.get("kernels"):
            net = kernel_net(cfg, model, a)
        else:
            net = model.eval()
            if a["fold_bn"]:
                net = model.fold_for_inference(cfg.data.mean, cfg.data.std, fuse=a["fuse"]) \
                    if isinstance(model, FastNet) else fold_bn_generic(model)
            net = net.to(device=a["device"], dtype=a["dtype"], memory_format=a["mem"]).eval()
        if a["tta"] == "none" or getattr(net, "tta_fused", False):  # fused: the kernels make the views
            return net
        return TTANet(net, a["tta"], device=a["device"]).eval()

    # --- preprocessing: uint8 NCHW (possibly a channels_last view) -> this variant's input
    def prepare(self, x_u8):
        x = x_u8.to(self.dtype) if self.fold_norm else normalize(x_u8, self.mean, self.std, self.dtype)
        return x.contiguous(memory_format=self.mem)

    def __call__(self, x):
        """Logits for x (already prepared).  CUDA-graph variants replay their graph; passing
        self.static_in itself skips the copy into the graph's input buffer."""
        with torch.inference_mode():
            if self._graph is None:
                return self.fn(x)
            if x is not self.static_in:
                self.static_in.copy_(x)
            self._graph.replay()
            return self.static_out

    def _e2e_body(self, d_in_nhwc):
        x = self.prepare(d_in_nhwc.permute(0, 3, 1, 2))
        return torch.argmax(self.fn(x), dim=1)

    def predict_host(self, img_hwc):
        """End to end: one uint8 HxWx3 numpy image on the host -> class id (int) on the host."""
        with torch.inference_mode():
            if self.device.type != "cuda":
                x = torch.from_numpy(img_hwc)[None].permute(0, 3, 1, 2)
                return int(torch.argmax(self.fn(self.prepare(x)), dim=1))
            self.h_in[0].numpy()[...] = img_hwc
            self.d_in.copy_(self.h_in, non_blocking=True)
            if self._e2e is not None:
                self._e2e.replay()
                return int(self.e2e_out)
            return int(self._e2e_body(self.d_in))

    def info(self):
        """The results.csv columns that describe this inference path."""
        return {"variant": self.variant, "label": self.label, "model": self.model_name,
                "precision": self.precision, "memory_format": self.memory_format, "fold_bn": self.fold_bn,
                "fuse": self.fuse, "compile": self.compile, "cuda_graph": self.cuda_graph,
                "checkpoint": self.ckpt_path, "size_mb": self.size_mb, "n_params": self.n_params,
                "tta": self.tta, "kernels": self.kernels}

    @torch.no_grad()
    def swap_weights(self, ckpt_path):
        """Copy another checkpoint of the same architecture into this path's weights, in place:
        the compiled code and the CUDA graph read the same memory, so the next calls run the
        new weights through exactly the timed path (bench.py uses it for every seed's accuracy)."""
        if self.kernels:  # KernelNet keeps repacked weights of its own: it copies them in itself
            model = load_model(ckpt_path, self.model_name, cfg=self._cfg)[0]
            kn = (self.net.net if isinstance(self.net, TTANet) else self.net).kn
            try:
                kn.load_weights(*model.eval().folded_spec(self._cfg.data.mean, self._cfg.data.std))
            except ValueError as e:
                raise KitError(f"{ckpt_path}: not the same architecture as {self.ckpt_path} ({e})") from None
            return
        other = InferenceModel.folded_net(self._cfg, load_model(ckpt_path, self.model_name, cfg=self._cfg)[0],
                                          self._fold_args)
        mine = list(self.net.parameters()) + list(self.net.buffers())
        theirs = list(other.parameters()) + list(other.buffers())
        if not mine or len(mine) != len(theirs) or any(a.shape != b.shape for a, b in zip(mine, theirs)):
            raise KitError(f"{ckpt_path}: not the same architecture as {self.ckpt_path}")
        for a, b in zip(mine, theirs):
            a.copy_(b)


def capture_graph(fn, static_in, warmup=3):
    """Capture fn(static_in) in a CUDA graph after a few warm-up calls on a side stream."""
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(warmup):
            fn(static_in)
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        out = fn(static_in)
    torch.cuda.synchronize()
    return g, out


def accuracy_fields(r):
    """The results.csv columns of an evaluate_inference() result."""
    return {"acc": r["acc"], "per_class_acc": ";".join(f"{p:.1f}" for p in r["per_class"]),
            "batch1_check": f"{r['batch1_mismatch']}/{r['batch1_checked']}" if r["batch1_checked"] else ""}


@torch.inference_mode()
def evaluate_inference(im, data, batch_size=500, batch1_check=500):
    """Accuracy of an InferenceModel on the test set through its own path.

    Batch-1-only paths (CUDA graph, torch.compile) run image by image, exactly as timed.
    Eager paths run in batches of batch_size (same dtype, layout, weights); their first
    batch1_check images are then run again one at a time and mismatches counted.
    Returns dict(acc, per_class, n, batch1_mismatch, batch1_checked).
    """
    x_u8, y = data["test_u8"], data["y_test"]
    n = len(y)
    preds = torch.empty(n, dtype=torch.long, device=y.device)
    if im.batch1_only:
        for i in progress(range(n), f"eval {im.variant}", "img"):
            x = im.prepare(x_u8[i:i + 1])
            preds[i:i + 1].copy_(torch.argmax(im(x), dim=1))
        checked = mismatch = 0
    else:
        for i in progress(range(0, n, batch_size), f"eval {im.variant}", "batch"):
            preds[i:i + batch_size] = torch.argmax(im(im.prepare(x_u8[i:i + batch_size])), dim=1)
        checked = min(batch1_check, n)
        p1 = torch.cat([torch.argmax(im(im.prepare(x_u8[i:i + 1])), dim=1) for i in range(checked)]) \
            if checked else preds[:0]
        mismatch = int((p1 != preds[:checked]).sum())
    correct = (preds == y)
    per_class = [100.0 * float(correct[y == c].float().mean()) if bool((y == c).any()) else float("nan")
                 for c in range(10)]
    return {"acc": 100.0 * float(correct.float().mean()), "per_class": per_class, "n": n,
            "batch1_mismatch": mismatch, "batch1_checked": checked}
