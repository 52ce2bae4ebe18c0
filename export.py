"""Export the final model (J5-19) to TorchScript and ONNX, and check both on real test images.

    python export.py                                    # checkpoints/final_model.pth -> .ts / .onnx
    python export.py --ckpt checkpoints/final_model.pth --out-dir checkpoints --n-check 1000

The exported graph is the deployable form of F's net: BatchNorm and the input normalisation
folded into the convolutions, F's test-time augmentation (the tta mode front.py stored in the
checkpoint, e.g. flip: the mean of the image's and its mirror's logits) inside, FP32, and a
uint8 input of shape (N, 32, 32, 3) -- the raw RGB image as decoders give it -- so no
preprocessing is needed before calling it:

    ts = torch.jit.load("checkpoints/final_model.ts")               # logits = ts(x_uint8_nhwc)
    ort.InferenceSession("checkpoints/final_model.onnx").run(None, {"image": x_uint8_nhwc})

Both files are reloaded and compared with the PyTorch model's logits (normalised input, no
folding) on the first --n-check test images: the largest absolute difference and the
top-1 agreement are printed; a difference above --tol or any disagreement fails (exit 1).
ONNX needs the onnx and onnxruntime packages (requirements.txt).
"""
import math
import os
import sys
import warnings

import torch
import torch.nn as nn

from config import add_config_args, load_config
from data import load_data
from tta import TTA_VIEWS, TTANet
from models import FastNet, load_model
import utils


class Deployable(nn.Module):
    """uint8 NHWC image batch -> logits, with F's folded FP32 net inside."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x.permute(0, 3, 1, 2).float())


def main():
    # torch.jit and the TorchScript-based ONNX exporter are deprecated upstream but still the
    # formats the plan asks for; their deprecation notices would bury the check's result.
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.jit")
    warnings.filterwarnings("ignore", category=DeprecationWarning, message=".*legacy TorchScript-based ONNX")
    ap = utils.ArgParser(__doc__)
    ap.add_argument("--ckpt", default="@final", help="checkpoint path or @tag (default: paths.final_model)")
    ap.add_argument("--out-dir", help="where to write <name>.ts and <name>.onnx (default: the checkpoint's folder)")
    ap.add_argument("--n-check", type=int, default=1000, help="test images used for the check (default: 1000)")
    ap.add_argument("--tol", type=float, default=1e-3, help="largest allowed |logit difference| (default: 1e-3)")
    ap.add_argument("--no-onnx", action="store_true", help="TorchScript only")
    add_config_args(ap)
    a = ap.parse_args()
    if a.n_check < 1:  # 0 crashed in max(), -5 sliced to 9,995 images without a word
        raise utils.KitError(f"--n-check {a.n_check}: give the number of test images to check, >= 1")
    if not (math.isfinite(a.tol) and a.tol >= 0):  # checked before anything is written
        raise utils.KitError(f"--tol {a.tol}: give the largest allowed |logit difference|, a number >= 0")
    if a.out_dir and os.path.exists(a.out_dir) and not os.path.isdir(a.out_dir):
        raise utils.KitError(f"--out-dir {a.out_dir} is a file, not a folder")
    cfg = load_config(a.config, a.overrides)
    path = utils.resolve_checkpoint(cfg, a.ckpt)
    model, ck = load_model(path, cfg=cfg)
    if not isinstance(model, FastNet):
        raise utils.KitError(f"{path} holds '{ck['model']}': export.py exports fastnet checkpoints (F)")
    out_dir = a.out_dir or os.path.dirname(path)
    stem = os.path.splitext(os.path.basename(path))[0]
    stems = [os.path.join(out_dir, stem + ext) for ext in (".ts",) + (() if a.no_onnx else (".onnx",))]
    for p in stems:  # an unwritable folder stops here, before the export work
        utils.check_writable(p, "give a writable folder with --out-dir DIR")
    tta = ck.get("tta") or "none"
    if tta not in TTA_VIEWS:
        raise utils.KitError(f"{path}: unknown tta mode '{tta}' (valid: {', '.join(TTA_VIEWS)})")
    cpu = torch.device("cpu")
    folded = model.fold_for_inference(cfg.data.mean, cfg.data.std).eval()
    dep = Deployable(folded if tta == "none" else TTANet(folded, tta, device=cpu)).eval()
    plain = model.eval() if tta == "none" else TTANet(model.eval(), tta, device=cpu).eval()

    data = load_data(cfg, torch.device("cpu"), need_train=False)
    n = min(a.n_check, len(data["y_test"]))
    x_u8 = data["test_u8"][:n].permute(0, 2, 3, 1).contiguous()  # NHWC uint8, as decoded
    with torch.no_grad():
        ref = plain(data["x_test"][:n])  # the unfolded model under the same TTA views
    example = x_u8[:1]

    ts_path = os.path.join(out_dir, stem + ".ts")
    with torch.no_grad():
        traced = torch.jit.trace(dep, example)
    tmp = ts_path + ".tmp"
    torch.jit.save(traced, tmp)
    os.replace(tmp, ts_path)
    with torch.no_grad():
        got = torch.jit.load(ts_path)(x_u8)
    checks = [("TorchScript", ts_path, got)]

    if not a.no_onnx:
        try:
            import onnxruntime as ort
        except ImportError:
            raise utils.KitError("ONNX export needs onnxruntime (pip install -r requirements.txt), "
                                 "or pass --no-onnx") from None
        onnx_path = os.path.join(out_dir, stem + ".onnx")
        tmp = onnx_path + ".tmp"
        kw = {"dynamo": False} if "dynamo" in torch.onnx.export.__code__.co_varnames else {}
        torch.onnx.export(dep, (example,), tmp, input_names=["image"], output_names=["logits"],
                          dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}}, opset_version=17, **kw)
        os.replace(tmp, onnx_path)
        sess = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
        got = torch.from_numpy(sess.run(None, {"image": x_u8.numpy()})[0])
        checks.append(("ONNX", onnx_path, got))

    ok = True
    for name, p, logits in checks:
        diff = float((logits - ref).abs().max())
        agree = float((logits.argmax(1) == ref.argmax(1)).float().mean()) * 100
        acc = float((logits.argmax(1) == data["y_test"][:n]).float().mean()) * 100
        good = diff <= a.tol and agree == 100.0
        ok &= good
        print(f"{name:<11s} {p}  ({os.path.getsize(p) / 1e6:.2f} MB, tta {tta}): max |logit diff| {diff:.2e}, "
              f"top-1 agreement {agree:.2f}%, accuracy {acc:.2f}% on the first {n} test images"
              + ("" if good else "  <- FAILED"))
    if not ok:
        print(f"error: an export differs from the PyTorch model by more than {a.tol}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    utils.run_main(main)
