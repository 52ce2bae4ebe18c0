"""The net an inference path runs (inference.Predictor builds it once): the model in eval mode,
BN and the input normalisation folded if asked, on the device in its dtype and memory format,
wrapped in its TTA views; or, with kernels: true, the folded spec run by our Triton kernels
(kernel_net.py) or by the one cluster kernel (cluster_net.py), the views made inside them."""
from __future__ import annotations

import torch
import torch.nn as nn

from config import resolve_path
from models import FastNet, fold_bn_generic
from tta import TTA_VIEWS, TTANet
from utils import KitError


class KernelPath(nn.Module):
    """The folded net run by our Triton kernels: NCHW channels_last FP16 raw pixels in (a free
    view as NHWC), float32 logits out (the same buffer every call).  The TTA views are made
    inside the kernels, so no TTANet wraps it."""

    def __init__(self, kn):
        super().__init__()
        self.kn = kn

    def forward(self, x):
        return self.kn(x.permute(0, 2, 3, 1))


def kernel_net(cfg, model, a):
    """KernelPath over the folded spec of one image, its TTA views inside the kernels: our Triton
    kernels (kernel_net.py) or the one cluster kernel (cluster_net.py, kernel_engine: cluster)."""
    if a["dtype"] != torch.float16 or a["mem"] != torch.channels_last:
        raise KitError("kernels: the variant needs precision fp16 and memory_format channels_last")
    layers, head = model.eval().folded_spec(cfg.data.mean, cfg.data.std)
    if a["kernel_engine"] == "cluster":  # a build failure is a RuntimeError there too: bench goes on without it
        import cluster_net
        return KernelPath(cluster_net.ClusterNet(layers, head, device=str(a["device"]), views=TTA_VIEWS[a["tta"]],
                                                 ranks=a["kernel_cluster_blocks"]))
    import kernel_net as KN  # Triton is needed only here
    ok, why = KN.available(str(a["device"]))
    if not ok:
        raise RuntimeError(f"Triton kernels unavailable: {why}")  # not a KitError: bench goes on without it
    tiles = resolve_path(cfg, cfg.paths.kernel_tiles) if a["kernel_tiles"] == "tuned" else None
    return KernelPath(KN.KernelNet(layers, head, batch=1, device=str(a["device"]), pdl=a["kernel_pdl"],
                                   pdl_trigger=a["kernel_pdl_trigger"], views=TTA_VIEWS[a["tta"]],
                                   tile_cache=tiles, split_meet=a["kernel_split_meet"]))


def kernel_notes(kn):
    """One note for the row: where each layer's tiles came from, PDL, the kernel count."""
    src = kn.tile_sources()
    counts = ", ".join(f"{src.count(s)} {s}" for s in dict.fromkeys(src))
    pdl = f"; pdl{' late' if kn.pdl_trigger == 'late' else ''}" if kn.pdl else ""
    meets = [kn.meet(i) for i in range(len(kn.specs))] if hasattr(kn, "meet") else []
    meet = "".join(f"; split-K met by {m} in {meets.count(m)} layers" for m in ("next", "flag") if m in meets)
    return f"kernel tiles: {counts}{pdl}{meet}; {kn.kernel_count()} kernels"


def folded_net(cfg, model, a):
    """The eval-mode net of a path: BN (and, for fastnet, the input normalisation) folded if
    asked, moved to the device, dtype and memory format, wrapped in the TTA views."""
    if a["kernels"]:
        return kernel_net(cfg, model, a)
    net = model.eval()
    if a["fold_bn"]:
        net = model.fold_for_inference(cfg.data.mean, cfg.data.std, cudnn_relu=a["cudnn_relu"]) \
            if isinstance(model, FastNet) else fold_bn_generic(model)
    net = net.to(device=a["device"], dtype=a["dtype"], memory_format=a["mem"]).eval()
    return net if a["tta"] == "none" else TTANet(net, a["tta"], device=a["device"]).eval()
