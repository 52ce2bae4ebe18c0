"""The kit's networks: FastNet (our batch-1 family: whitening stem, few fat 3x3 convs, no
residuals), the torchvision baselines adapted to 32x32, and BatchNorm folding.

    from models import build_model, load_model
    net = build_model("fastnet", cfg)                 # fresh, random weights
    net, ck = load_model("checkpoints/final_model.pth")  # eval mode, FP32, CPU

FastNet.folded_spec() is the contract of the inference paths (inference.py) and of our Triton
kernels (kernel_net.py): BN, the input normalisation and the logit scale folded into plain
conv layers and a linear head.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from config import ConfigError, MODEL_NAMES, check_model_kwargs
from utils import KitError, load_checkpoint


def act_fn(name):
    """The activation of a fastnet layer: 'relu' or exact (erf) 'gelu'."""
    return F.relu if name == "relu" else F.gelu


class ConvBNAct(nn.Module):
    """conv (no bias) -> [max-pool 2] -> BatchNorm -> activation: the unit fastnet is made of.

    pool=2 puts the max-pool between conv and BN (airbench's order).  With the BN weight frozen
    at 1 (bn_frozen) BN's scale 1/sqrt(var+eps) is > 0, so folding it into the conv before the
    pool is exact for any activation: max(s*z) = s*max(z) for s > 0.
    """

    def __init__(self, cin, cout, k, padding, act, pool=0, bn_frozen=False, bn_momentum=0.1, bn_eps=1e-5):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, momentum=bn_momentum, eps=bn_eps)
        if bn_frozen:
            self.bn.weight.requires_grad_(False)
        self.act, self.pool = act, pool

    def forward(self, x):
        x = self.conv(x)
        if self.pool:
            x = F.max_pool2d(x, self.pool)
        return act_fn(self.act)(self.bn(x))


class WhitenStem(nn.Module):
    """k x k valid conv 3 -> 2*3*k*k with bias, then the activation.  Its weights are the +/-
    eigenvectors of the train set's k x k patch covariance, scaled to unit variance
    (init_whitening), and stay frozen; only the bias trains (idea: airbench, arXiv 2404.00498)."""

    def __init__(self, k, act):
        super().__init__()
        self.conv = nn.Conv2d(3, 2 * 3 * k * k, k, padding=0, bias=True)
        self.conv.weight.requires_grad_(False)
        self.act = act

    def forward(self, x):
        return act_fn(self.act)(self.conv(x))


class FastNet(nn.Module):
    """Our family of batch-1 nets: few, fat 3x3 convolutions, no residuals, no depthwise.

    stem:   k x k conv, no padding, on the image (so normalisation folds into it exactly):
            'conv' = ConvBNAct(3 -> stem_width), or 'whiten' = WhitenStem (6k^2 channels, frozen)
    blocks: for each width w and depth d: a conv to w with a 2x2 max-pool, then d-1 convs w -> w.
            order 'act_pool':  conv -> BN -> act -> pool  (relu only folds exactly)
            order 'pool_bn':   conv -> pool -> BN -> act  (exact for any act if bn_frozen)
    head:   global max pool -> linear (head_bias optional) -> * logit_scale
    At inference (fold_for_inference / folded_spec) BN, the input normalisation and the logit
    scale are folded into the weights.
    """

    def __init__(self, stem_width=32, stem_kernel=3, widths=(64, 192, 256), depths=(2, 2, 2), act="relu",
                 stem="conv", order="act_pool", bn_frozen=False, bn_momentum=0.1, bn_eps=1e-5,
                 head_bias=True, logit_scale=1.0, dirac=False, num_classes=10):
        super().__init__()
        if len(widths) != len(depths) or not widths or min(depths) < 1 or min(widths) < 1:
            raise KitError(f"fastnet: widths {list(widths)} and depths {list(depths)} must be non-empty, "
                           "of equal length, all >= 1")
        if order == "act_pool" and act != "relu":
            raise KitError("fastnet: order 'act_pool' folds exactly only with act 'relu'; use order 'pool_bn'")
        self.act, self.order, self.logit_scale = act, order, logit_scale
        bn = dict(bn_frozen=bn_frozen, bn_momentum=bn_momentum, bn_eps=bn_eps)
        if stem == "whiten":
            layers, c = [WhitenStem(stem_kernel, act)], 2 * 3 * stem_kernel ** 2
        else:
            layers, c = [ConvBNAct(3, stem_width, stem_kernel, 0, act, **bn)], stem_width
        for w, d in zip(widths, depths):
            if order == "act_pool":
                layers += [ConvBNAct(c, w, 3, 1, act, **bn), nn.MaxPool2d(2)]
            else:
                layers += [ConvBNAct(c, w, 3, 1, act, pool=2, **bn)]
            layers += [ConvBNAct(w, w, 3, 1, act, **bn) for _ in range(d - 1)]
            c = w
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(c, num_classes, bias=head_bias)
        if dirac:  # identity init of each block conv's first Cin filters: the net starts near a shallow one
            for m in self.features[1:]:
                if isinstance(m, ConvBNAct):
                    nn.init.dirac_(m.conv.weight.data[:m.conv.in_channels])

    def forward(self, x):
        return self.fc(torch.amax(self.features(x), dim=(2, 3))) * self.logit_scale

    @torch.no_grad()
    def folded_spec(self, mean, std):
        """The eval-mode net as plain layers (the contract of inference.py and kernel_net.py):

        layers: [dict(weight [Cout,Cin,k,k], bias [Cout], padding, pool 0|2, act)], float32
                each computes y = act(maxpool_pool(conv(x, weight, padding)) + bias)
        head:   dict(weight [10, C], bias [10]): logits = weight @ max_over_HW(x) + bias
        The first layer takes raw pixels 0..255: the normalisation is folded into it (exact,
        the stem has no padding).
        """
        a = 1.0 / (255.0 * torch.tensor(std, dtype=torch.float64))
        b = -torch.tensor(mean, dtype=torch.float64) / torch.tensor(std, dtype=torch.float64)
        layers = []
        for m in self.features:
            if isinstance(m, nn.MaxPool2d):  # act_pool order, relu: pool(relu(z)) = relu(pool(z))
                layers[-1]["pool"] = 2
                continue
            w, bias = fold_conv_bn(m.conv, getattr(m, "bn", None))
            if not layers:
                bias = bias + (w * b.view(1, 3, 1, 1)).sum(dim=(1, 2, 3))
                w = w * a.view(1, 3, 1, 1)
            pool = getattr(m, "pool", 0)
            if pool and isinstance(m, ConvBNAct) and self._bn_scale(m.bn).min() <= 0:
                raise KitError("fastnet: a BN scale <= 0 after a max-pool cannot be folded (use bn_frozen)")
            layers.append(dict(weight=w.float(), bias=bias.float(), padding=int(m.conv.padding[0]),
                               pool=pool, act=m.act))
        wfc = self.fc.weight.detach().double() * self.logit_scale
        bfc = (self.fc.bias.detach().double() if self.fc.bias is not None
               else torch.zeros(wfc.shape[0], dtype=torch.float64)) * self.logit_scale
        return layers, dict(weight=wfc.float(), bias=bfc.float())

    @staticmethod
    def _bn_scale(bn):
        return bn.weight.detach().double() / torch.sqrt(bn.running_var.double() + bn.eps)

    def fold_for_inference(self, mean, std, cudnn_relu=False):
        """An eval-mode net computing the same function, built from folded_spec: raw pixels 0..255 (any float
        dtype), NCHW; cudnn_relu=True runs conv+bias+ReLU as one cuDNN kernel where the net allows."""
        layers, head = self.folded_spec(mean, std)
        return nn.Sequential(*[FoldedConv(cudnn_relu=cudnn_relu, **s) for s in layers], GlobalMaxLinear(head))


@torch.no_grad()
def init_whitening(model, x, eps=5e-4):
    """Set a WhitenStem's weights from train-set patches: the eigenvectors of the k x k x 3
    patch covariance of normalised images x (N, 3, 32, 32; a few thousand suffice), each scaled
    by 1/sqrt(eigenvalue + eps), and their negatives (so the activation keeps both signs).
    Does nothing for a conv stem."""
    stem = model.features[0] if isinstance(model, FastNet) else None
    if not isinstance(stem, WhitenStem):
        return
    k = stem.conv.kernel_size[0]
    patches = x.double().unfold(2, k, 1).unfold(3, k, 1).permute(0, 2, 3, 1, 4, 5).reshape(-1, 3 * k * k)
    patches = patches - patches.mean(0)
    cov = patches.T @ patches / len(patches)
    evals, evecs = torch.linalg.eigh(cov)
    filt = (evecs.T / torch.sqrt(evals.clamp_min(0) + eps)[:, None]).reshape(-1, 3, k, k)
    stem.conv.weight.copy_(torch.cat([filt, -filt]).to(stem.conv.weight))


def fold_conv_bn(conv, bn):
    """Weights and bias (float64) of conv followed by eval-mode BN (or none), as one conv."""
    w = conv.weight.detach().double()
    bias = conv.bias.detach().double() if conv.bias is not None else torch.zeros(w.shape[0], dtype=torch.float64)
    if bn is None:
        return w, bias
    scale = FastNet._bn_scale(bn)
    return w * scale.view(-1, 1, 1, 1), (bias - bn.running_mean.double()) * scale + bn.bias.detach().double()


class FoldedConv(nn.Module):
    """act(maxpool(conv(x, W) + b)): one layer of folded_spec.  pool(z + b) = pool(z) + b, and for
    ReLU act-then-pool equals pool-then-act, so with cudnn_relu=True, ReLU and a CUDA input the
    conv, bias and ReLU run as one cuDNN kernel (torch.cudnn_convolution_relu), then the pool."""

    def __init__(self, weight, bias, padding, pool, act, cudnn_relu):
        super().__init__()
        self.weight = nn.Parameter(weight.float(), requires_grad=False)
        self.bias = nn.Parameter(bias.float(), requires_grad=False)
        self.padding, self.pool, self.act, self.cudnn_relu = (padding, padding), pool, act, cudnn_relu

    def forward(self, x):
        if self.cudnn_relu and self.act == "relu" and x.is_cuda:
            x = torch.cudnn_convolution_relu(x, self.weight, self.bias, (1, 1), self.padding, (1, 1), 1)
            return F.max_pool2d(x, self.pool) if self.pool else x
        x = F.conv2d(x, self.weight, self.bias, 1, self.padding)
        if self.pool:
            x = F.max_pool2d(x, self.pool)
        return act_fn(self.act)(x)


class GlobalMaxLinear(nn.Module):
    """Global max over H, W then the (folded) linear head."""

    def __init__(self, head):
        super().__init__()
        self.weight = nn.Parameter(head["weight"].float(), requires_grad=False)
        self.bias = nn.Parameter(head["bias"].float(), requires_grad=False)

    def forward(self, x):
        return F.linear(torch.amax(x, dim=(2, 3)), self.weight, self.bias)


def build_model(name, cfg=None):
    """A fresh, randomly initialised model; every one gives (N, 10) logits on 32x32 RGB."""
    if name == "fastnet":
        kw = dict(cfg.models.fastnet) if cfg is not None else {}
        return FastNet(**kw)
    import torchvision.models as tvm  # here: its import takes seconds, and FastNet does not need it
    if name == "mobilenetv3":
        m = tvm.mobilenet_v3_small(num_classes=10)
        m.features[0][0].stride = (1, 1)            # stem: no downsampling on 32x32 inputs
        m.features[1].block[0][0].stride = (1, 1)   # first depthwise block: likewise (final map 4x4)
        for bn in m.modules():  # torchvision's momentum 0.01 leaves eval-mode statistics stale in short runs
            if isinstance(bn, nn.BatchNorm2d):
                bn.momentum = 0.1
        return m
    if name == "shufflenet":
        m = tvm.shufflenet_v2_x1_0(num_classes=10)
        m.conv1[0].stride = (1, 1)
        m.maxpool = nn.Identity()                   # final map 4x4
        return m
    if name == "resnet18":
        m = tvm.resnet18(num_classes=10)
        m.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)  # CIFAR stem: 3x3, stride 1, no max-pool
        m.maxpool = nn.Identity()
        return m
    raise KitError(f"unknown model '{name}' (valid: {', '.join(MODEL_NAMES)})")


def fold_bn_generic(model):
    """Fold every Conv->BN pair of a torchvision model (torch.fx), for eval-mode inference."""
    from torch.fx.experimental.optimization import fuse
    try:
        return fuse(model.eval())
    except Exception as e:  # fx tracing failures come in many types; say which model and why
        raise KitError(f"cannot fold BatchNorm of {type(model).__name__}: {type(e).__name__}: {e}") from None


def param_bytes(module):
    return sum(t.numel() * t.element_size() for t in list(module.parameters()) + list(module.buffers()))


MAX_PARAMS = 64_000_000  # 256 MB of FP32 weights; the largest front shape has 4.4 M


def fastnet_params(kw):
    """Parameter count of FastNet(**kw), from its arguments alone (nothing is allocated)."""
    d = dict(stem_width=32, stem_kernel=3, widths=(64, 192, 256), depths=(2, 2, 2), stem="conv", head_bias=True)
    d.update(kw)
    k, c = d["stem_kernel"], (2 * 3 * d["stem_kernel"] ** 2 if d["stem"] == "whiten" else d["stem_width"])
    n = 3 * k * k * c + (c if d["stem"] == "whiten" else 2 * c)  # conv bias, or BN weight and bias
    for w, depth in zip(d["widths"], d["depths"]):
        n += 9 * c * w + (depth - 1) * 9 * w * w + 2 * w * depth
        c = w
    return n + 10 * c + (10 if d["head_bias"] else 0)


def check_fastnet_kwargs(kw):
    """fastnet arguments from a config or a checkpoint: a mapping, the schema's keys, types,
    bounds and choices, and at most MAX_PARAMS parameters (bounds alone allow a 4096-wide net
    of 64 layers: an out-of-memory kill, not an error).  Raises ConfigError."""
    if not isinstance(kw, dict):
        raise ConfigError(f"model_kwargs must be a mapping of fastnet arguments, not {type(kw).__name__}")
    check_model_kwargs("fastnet", kw)
    if isinstance(kw.get("widths"), list) and isinstance(kw.get("depths"), list):
        n = fastnet_params(kw)
        if n > MAX_PARAMS:
            raise ConfigError(f"widths {kw['widths']} x depths {kw['depths']} make {n / 1e6:.0f} M parameters "
                              f"(at most {MAX_PARAMS / 1e6:.0f} M)")


def load_model(path, expected_model=None, cfg=None):
    """(model on CPU in eval mode, checkpoint dict).  Wrong architecture, arguments out of
    bounds or non-finite weights -> KitError."""
    ck = load_checkpoint(path)
    name = ck["model"]
    if expected_model and name != expected_model:
        raise KitError(f"{path} holds a '{name}' model, not '{expected_model}'")
    if name == "fastnet":
        kw = ck.get("model_kwargs", {})
        try:  # against the models.fastnet schema: an extra key or widths of 200000 stop here, in one line
            check_fastnet_kwargs(kw)
        except ConfigError as e:
            raise KitError(f"{path}: bad model_kwargs: {e}") from None
        model = FastNet(**kw)
    else:
        model = build_model(name, cfg)
    try:
        result = model.load_state_dict(ck["state_dict"], strict=False)
    except RuntimeError as e:  # size mismatches
        detail = next((ln.strip() for ln in str(e).splitlines() if "size mismatch" in ln), str(e).splitlines()[0])
        raise KitError(f"{path}: weights do not fit a '{name}' model ({detail[:200]})") from None
    missing, unexpected = list(result.missing_keys), list(result.unexpected_keys)
    if not missing and not unexpected:
        bad = [k for k, t in ck["state_dict"].items()
               if torch.is_tensor(t) and t.is_floating_point() and not bool(torch.isfinite(t).all())]
        if bad:
            raise KitError(f"{path}: non-finite weights (NaN or inf) in {len(bad)} tensor(s), e.g. {bad[0]}: "
                           "the training diverged or the file is damaged; retrain it")
        return model.eval(), ck
    what = [f"{len(missing)} missing keys (e.g. {missing[0]})" if missing else "",
            f"{len(unexpected)} unexpected keys (e.g. {unexpected[0]})" if unexpected else ""]
    raise KitError(f"{path}: weights do not fit a '{name}' model: " + ", ".join(w for w in what if w))
