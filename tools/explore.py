"""GPU exploration for the final net (issue 3): batch-1 latency of fastnet shapes and of
single kernels, with random weights (latency does not depend on the values).

    python tools/explore.py --out explore.json

Prints a table; writes every number to --out.  Not part of the study's results: it guides
the choice of F's architecture, which is then trained and measured by train.py / bench.py.
"""
import argparse
import json
import os
import sys
import tempfile

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import utils  # noqa: E402
from inference import InferenceModel, capture_graph  # noqa: E402
from config import Config, load_config  # noqa: E402

CANDIDATES = {
    "c1": dict(stem_width=32, stem_kernel=3, widths=[64, 192, 256], depths=[2, 2, 2]),
    "c2": dict(stem_width=32, stem_kernel=3, widths=[64, 128, 256], depths=[1, 2, 1]),
    "c3": dict(stem_width=24, stem_kernel=3, widths=[64, 256, 256], depths=[2, 2, 2]),
    "c4": dict(stem_width=32, stem_kernel=3, widths=[96, 192, 384], depths=[1, 1, 1]),
    "c5": dict(stem_width=32, stem_kernel=3, widths=[64, 128, 256], depths=[1, 1, 1]),
    "c6": dict(stem_width=16, stem_kernel=3, widths=[64, 192, 256], depths=[2, 2, 2]),
    "c7": dict(stem_width=32, stem_kernel=3, widths=[128, 256, 512], depths=[2, 2, 2]),
    "c8": dict(stem_width=32, stem_kernel=2, widths=[64, 192, 256], depths=[2, 2, 2]),
    "c9": dict(stem_width=32, stem_kernel=3, widths=[64, 192, 256], depths=[2, 2, 2], act="gelu"),
    "c10": dict(stem_width=32, stem_kernel=3, widths=[64, 128, 256, 512], depths=[1, 1, 1, 1]),
}
PATHS = {  # variant fields on top of fp16
    "full": dict(memory_format="channels_last", fold_bn=True, fuse=True, cuda_graph=True),
    "nofuse": dict(memory_format="channels_last", fold_bn=True, fuse=False, cuda_graph=True),
    "nofold": dict(memory_format="channels_last", fold_bn=False, fuse=False, cuda_graph=True),
    "contig": dict(memory_format="contiguous", fold_bn=True, fuse=True, cuda_graph=True),
    "eager": dict(memory_format="channels_last", fold_bn=True, fuse=True, cuda_graph=False),
    "compile": dict(memory_format="channels_last", fold_bn=True, fuse=False, cuda_graph=True, compile="default"),
}


def p50(fn, device, iters=1000, warmup=100):
    return utils.latency_stats(utils.time_calls(fn, device, warmup, iters))["p50"]


def graph_of(fn, x):
    g, out = capture_graph(fn, x)
    return lambda: g.replay()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="explore.json")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--device", default="cuda")
    a = ap.parse_args()
    dev = torch.device(a.device)
    torch.backends.cudnn.benchmark = True
    res = {"env": utils.env_info(), "nets": {}, "kernels": {}}
    print(res["env"], flush=True)
    tmp = tempfile.mkdtemp()
    cfg = load_config()
    cfg.paths.results = os.path.join(tmp, "r.csv")
    # ---- whole nets
    for name, kw in CANDIDATES.items():
        torch.manual_seed(0)
        m = utils.FastNet(**kw)
        for mod in m.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.5, 0.5)
                mod.running_var.uniform_(0.5, 2.0)
        cfg["models"]["fastnet"] = Config(dict(dict(act="relu", head="pool_linear"), **kw))
        path = os.path.join(tmp, f"{name}.pth")
        utils.save_checkpoint(path, m, "fastnet", cfg)
        paths = PATHS if name == "c1" else {"full": PATHS["full"]} if kw.get("act", "relu") == "relu" \
            else {"nofuse": PATHS["nofuse"]}
        if a.quick:
            paths = {k: v for k, v in paths.items() if k != "compile"}
        for pname, fields in paths.items():
            vname = f"{name}_{pname}"
            v = dict(label=vname, model="fastnet", checkpoint=path, precision="fp16", memory_format="contiguous",
                     fold_bn=False, fuse=False, compile="none", cuda_graph=False, table=False)
            v.update(fields)
            cfg.variants[vname] = Config(v)
            try:
                im = InferenceModel(cfg, vname, dev)
                x = im.static_in
                t = p50(lambda: im(x), dev)
                xs = torch.randint(0, 256, (32, 32, 3), dtype=torch.uint8).numpy()
                te = p50(lambda: im.predict_host(xs), dev, iters=300, warmup=30)
                res["nets"][vname] = {"p50_ms": t, "e2e_p50_ms": te, "params": im.n_params, "build_s": im.build_s}
                print(f"{vname:<14s} p50 {t:.4f} ms  e2e {te:.4f} ms  params {im.n_params/1e6:.2f}M  "
                      f"build {im.build_s:.1f}s", flush=True)
            except Exception as e:  # exploration: record and go on
                res["nets"][vname] = {"error": f"{type(e).__name__}: {e}"}
                print(f"{vname:<14s} FAILED {type(e).__name__}: {str(e)[:300]}", flush=True)
    if dev.type != "cuda":
        return
    # ---- check the fused op against conv+relu
    x = torch.randn(1, 64, 15, 15, device=dev, dtype=torch.half).contiguous(memory_format=torch.channels_last)
    w = torch.randn(128, 64, 3, 3, device=dev, dtype=torch.half).contiguous(memory_format=torch.channels_last) * 0.05
    b = torch.randn(128, device=dev, dtype=torch.half)
    ref = F.relu(F.conv2d(x.float(), w.float(), b.float(), 1, 1))
    got = torch.cudnn_convolution_relu(x, w, b, (1, 1), (1, 1), (1, 1), 1).float()
    res["fused_rel_err"] = float((got - ref).norm() / ref.norm())
    print(f"cudnn_convolution_relu rel err vs fp32 {res['fused_rel_err']:.2e}", flush=True)
    # ---- single kernels in a graph: 1 copy vs 10 copies -> per-kernel time
    shapes = [(32, 64, 30), (64, 64, 15), (64, 128, 15), (64, 192, 15), (192, 192, 7), (128, 256, 7),
              (192, 256, 7), (256, 256, 7), (256, 256, 3), (256, 512, 3), (512, 512, 3), (3, 32, 32)]
    with torch.inference_mode():
        for cin, cout, hw in shapes:
            xin = torch.randn(1, cin, hw, hw, device=dev, dtype=torch.half).contiguous(memory_format=torch.channels_last)
            wt = (torch.randn(cout, cin, 3, 3, device=dev, dtype=torch.half) * 0.05).contiguous(
                memory_format=torch.channels_last)
            bs = torch.randn(cout, device=dev, dtype=torch.half)
            for kind in ("fused", "conv"):
                if kind == "fused":
                    def one(t):
                        return torch.cudnn_convolution_relu(t, wt, bs, (1, 1), (1, 1), (1, 1), 1)
                else:
                    def one(t):
                        return F.conv2d(t, wt, bs, 1, 1)

                def ten(t, one=one):
                    out = None
                    for _ in range(10):
                        out = one(t)
                    return out
                t1 = p50(graph_of(one, xin), dev)
                t10 = p50(graph_of(ten, xin), dev)
                key = f"{kind}_{cin}x{hw}x{hw}->{cout}"
                res["kernels"][key] = {"graph1_ms": t1, "graph10_ms": t10, "per_kernel_ms": (t10 - t1) / 9}
                print(f"{key:<26s} graph(1) {t1:.4f}  graph(10) {t10:.4f}  per kernel {(t10 - t1) / 9 * 1000:.1f} us",
                      flush=True)
        for name, op, shape in (("maxpool2_64x30", lambda t: F.max_pool2d(t, 2), (1, 64, 30, 30)),
                                ("maxpool2_256x7", lambda t: F.max_pool2d(t, 2), (1, 256, 7, 7)),
                                ("relu_256x7", F.relu, (1, 256, 7, 7)),
                                ("amax_256x3", lambda t: torch.amax(t, dim=(2, 3)), (1, 256, 3, 3))):
            xin = torch.randn(*shape, device=dev, dtype=torch.half).contiguous(memory_format=torch.channels_last)

            def ten(t, op=op):
                out = None
                for _ in range(10):
                    out = op(t)
                return out
            t1 = p50(graph_of(op, xin), dev)
            t10 = p50(graph_of(ten, xin), dev)
            res["kernels"][name] = {"graph1_ms": t1, "graph10_ms": t10, "per_kernel_ms": (t10 - t1) / 9}
            print(f"{name:<26s} graph(1) {t1:.4f}  graph(10) {t10:.4f}  per kernel {(t10 - t1) / 9 * 1000:.1f} us",
                  flush=True)
    with open(a.out, "w") as f:
        json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
