"""Test-time augmentation (TTA): which views each mode averages (TTA_VIEWS), how one view of a
batch is made (make_view), and the torch wrapper that runs a net over a mode's views (TTANet).

A TTA mode = views (flip, dy, dx) and their weights; logits = sum_v weight_v * net(view_v(x)).
Translations shift by one pixel with reflect padding (the stem has no padding, so the folded
normalisation stays exact).  flip_translate follows airbench's multi-crop TTA idea: the two
untranslated views weigh half, the four one-pixel shifts the other half.  Our kernels take a
mode's TTA_VIEWS entry and read its views straight from the image (kernels.py, cluster_kernel.cu).
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from utils import KitError

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
