"""One GPU call for issue 10: check the Triton kernels of kernels.py and time them at batch 1.

    python tools/kernel_bench.py --out DIR        (on the H100; writes DIR/kernel_bench.log, .json)

1. correctness: KernelNet vs reference_forward (float64) on random nets of 3 shapes (N=1 and
   N=6, uint8 and fp16, relu and gelu, k=3 and k=2 stems), eager and replayed in a CUDA graph
   on fresh inputs; the real checkpoint folded here (BN + input normalisation) too.
2. timing, batch 1, the default net (checkpoints/final_model.pth folded, else random):
   (a) cuDNN path: cudnn_convolution_relu + max_pool2d + amax + linear, FP16 channels_last,
       one CUDA graph (no torch.compile); (b) KernelNet, heuristic tiles; (c) autotuned tiles;
   (d) autotuned + programmatic dependent launch.  Each: host p50/p95 of 2000 replays with a
   synchronize after each (200 warm-ups, GC off), CUDA-event GPU time of one replay, and
   pipelined time (100 replays back to back / 100); per-kernel µs from torch.profiler.
3. the answer's way back: synchronize vs the graph copying (seq << 8 | class id) into pinned
   host memory that the host polls until the sequence number arrives.

    python tools/kernel_bench.py --tta-table --out DIR   (tools/kernel_gpu.sh runs it)

TTA and kernel-count table: shapes AB94 (random weights) and w7 (checkpoints/final_model.pth
folded, else random), batch 1, as InferenceModel runs the kernel path (NCHW channels_last fp16
pixels in, one CUDA graph): tta none, flip through TTANet (torch views + batch-2 KernelNet, the
old path), flip fused into the kernels (views=), and the fewer-kernel options fuse_stem /
fuse_pairs (off by default; the last row also with PDL).  Every row is tried on its own: a failure
prints one line and the table goes on.
"""
import argparse
import gc
import json
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import kernels as K  # noqa: E402

LOG = []


def log(*a):
    s = " ".join(str(x) for x in a)
    print(s, flush=True)
    LOG.append(s)


# -- the real checkpoint, folded here (not through utils.py, which others are editing) --------
def fold_checkpoint(path, eps=1e-5):
    """final_model.pth (FastNet, conv->BN->ReLU->maxpool) -> the contract's layers and head."""
    ck = torch.load(path, map_location="cpu", weights_only=False)
    sd, cfg = ck["state_dict"], ck["config"]["data"]
    mean, std = torch.tensor(cfg["mean"], dtype=torch.float64), torch.tensor(cfg["std"], dtype=torch.float64)
    idx = sorted({int(k.split(".")[1]) for k in sd if k.endswith("conv.weight")})
    kw = ck["model_kwargs"]  # the first conv of each block is followed by the 2x2 max-pool
    pools = [0] + [p for d in kw["depths"] for p in [2] + [0] * (d - 1)]
    layers = []
    for j, i in enumerate(idx):
        p = f"features.{i}."
        w = sd[p + "conv.weight"].double()
        s = sd[p + "bn.weight"].double() / torch.sqrt(sd[p + "bn.running_var"].double() + eps)
        b = sd[p + "bn.bias"].double() - sd[p + "bn.running_mean"].double() * s
        w = w * s[:, None, None, None]
        if j == 0:  # x_norm = x / (255 std) - mean / std; the stem has no padding: exact
            b = b + (w * (-mean / std)[None, :, None, None]).sum(dim=(1, 2, 3))
            w = w / (255.0 * std)[None, :, None, None]
        layers.append(dict(weight=w.float(), bias=b.float(), padding=0 if j == 0 else 1, pool=pools[j], act="relu"))
    head = dict(weight=sd["fc.weight"].float(), bias=sd["fc.bias"].float())
    return layers, head, ck.get("test_acc")


# -- correctness ----------------------------------------------------------------------------
def rel_err(out, ref):
    return ((out.double() - ref).norm() / ref.norm()).item() if torch.isfinite(out).all() else float("inf")


def check_net(name, layers, head, batch, dtype, pdl=False, tiles=None):
    net = K.KernelNet(layers, head, batch=batch, pdl=pdl, tiles=tiles)
    errs = []
    for _ in range(2):  # eager, twice (the second sees the resets of the first)
        x = torch.randint(0, 256, (batch, 32, 32, 3), device="cuda", dtype=torch.uint8).to(dtype)
        errs.append(rel_err(net(x).clone(), K.reference_forward(layers, head, x)))
    xs = torch.zeros(batch, 32, 32, 3, device="cuda", dtype=dtype)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        out = net(xs)
    gerr = 0.0
    for _ in range(20):  # graph replays on fresh inputs
        x = torch.randint(0, 256, (batch, 32, 32, 3), device="cuda", dtype=torch.uint8).to(dtype)
        xs.copy_(x)
        out.fill_(float("nan"))  # poison: every logit must be rewritten
        g.replay()
        gerr = max(gerr, rel_err(out.clone(), K.reference_forward(layers, head, x)))
    ok = max(errs + [gerr]) < 1e-2
    log(f"check {name:44s} N={batch} {str(dtype)[6:]:8s} pdl={pdl!s:5s} kernels={net.kernel_count()} "
        f"eager_err={max(errs):.2e} graph_err={gerr:.2e} {'OK' if ok else 'FAIL'}")
    return ok


# -- timing ---------------------------------------------------------------------------------
def capture(fn, x):
    """fn(x) warmed up, then captured into one CUDA graph; returns (graph, output)."""
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(3):
            fn(x)
    torch.cuda.current_stream().wait_stream(s)
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        out = fn(x)
    return g, out


ITERS = 2000  # host-timed replays per path (--iters)


def time_graph(g, iters=None, warm=200):
    iters = iters or ITERS
    gc.disable()
    try:
        for _ in range(warm):
            g.replay()
            torch.cuda.synchronize()
        host = []
        for _ in range(iters):
            t0 = time.perf_counter_ns()
            g.replay()
            torch.cuda.synchronize()
            host.append((time.perf_counter_ns() - t0) / 1e3)
        gpu = []
        for _ in range(200):
            e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            e0.record()
            g.replay()
            e1.record()
            e1.synchronize()
            gpu.append(e0.elapsed_time(e1) * 1e3)
        e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        e0.record()
        for _ in range(100):
            g.replay()
        e1.record()
        e1.synchronize()
        pipe = e0.elapsed_time(e1) * 1e3 / 100
    finally:
        gc.enable()
    host.sort()
    gpu.sort()
    return dict(p50=host[len(host) // 2], p95=host[int(len(host) * 0.95)], gpu=gpu[len(gpu) // 2], pipe=pipe)


def profile_kernels(g, n_rep=20):
    """[(kernel name, mean µs)] of one replay, from torch.profiler's CUDA kernel records."""
    from torch.profiler import ProfilerActivity, profile
    g.replay()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(n_rep):
            g.replay()
        torch.cuda.synchronize()
    ev = [e for e in prof.events() if e.device_type.name == "CUDA"]
    ev.sort(key=lambda e: e.time_range.start)
    per = len(ev) // n_rep
    if per == 0 or len(ev) % n_rep:
        raise RuntimeError(f"profiler saw {len(ev)} kernels for {n_rep} replays")
    rows = []
    for j in range(per):
        us = [ev[r * per + j].time_range.elapsed_us() for r in range(n_rep)]
        rows.append((ev[j].name[:60], sum(us) / n_rep))
    return rows


def cudnn_path(layers, head):
    """The reference path: FP16 channels_last cuDNN conv+bias+ReLU, pool, amax, linear."""
    ws = [(L["weight"].cuda().half().to(memory_format=torch.channels_last), L["bias"].cuda().half(),
           L["padding"], L["pool"]) for L in layers]
    wfc, bfc = head["weight"].cuda().half(), head["bias"].cuda().half()

    def fn(x):
        h = x.permute(0, 3, 1, 2).half()  # NHWC uint8 -> NCHW view in channels_last, fp16
        for w, b, p, q in ws:
            h = torch.cudnn_convolution_relu(h, w, b, (1, 1), (p, p), (1, 1), 1)
            if q:
                h = F.max_pool2d(h, q)
        return F.linear(torch.amax(h, dim=(2, 3)), wfc, bfc).float()
    return fn


def bench_variant(name, fn, x, results, ref=None):
    g, out = capture(fn, x)
    g.replay()
    torch.cuda.synchronize()
    err = rel_err(out.clone(), ref) if ref is not None else float("nan")
    r = time_graph(g)
    r["err"] = err
    try:
        r["kernels"] = profile_kernels(g)
    except Exception as e:  # reported, not hidden: the table then lacks this path's rows
        log(f"profiler failed for {name}: {type(e).__name__}: {e}")
        r["kernels"] = []
    results[name] = r
    log(f"{name:28s} host p50 {r['p50']:6.1f} us  p95 {r['p95']:6.1f}  gpu {r['gpu']:6.1f}  "
        f"pipelined {r['pipe']:6.1f}  kernels {len(r['kernels'])}  err {err:.2e}")
    return g, out


# -- the answer's way back: poll pinned host memory -----------------------------------------
def poll_variant(net, x, iters=2000, warm=200):
    """The graph ends with (seq << 8 | argmax) copied into pinned host memory; the host waits
    for the new seq there instead of calling synchronize.  Honest: the host reads the class
    id only after the value carrying this call's sequence number has landed in host memory."""
    seq = torch.zeros(1, dtype=torch.int64, device="cuda")
    host = torch.zeros(1, dtype=torch.int64).pin_memory()
    hv = host.numpy()

    def fn(inp):
        lg = net(inp)
        seq.add_(1)
        host.copy_(seq * 256 + lg.argmax(dim=1)[:1], non_blocking=True)
        return lg
    g, out = capture(fn, x)
    torch.cuda.synchronize()
    gc.disable()
    try:
        ts = []
        for i in range(warm + iters):
            want = int(hv[0]) // 256 + 1
            t0 = time.perf_counter_ns()
            g.replay()
            while int(hv[0]) // 256 != want:
                if time.perf_counter_ns() - t0 > 1e9:
                    raise RuntimeError("pinned-host poll: the answer never arrived (1 s)")
            ts.append((time.perf_counter_ns() - t0) / 1e3)
    finally:
        gc.enable()
    torch.cuda.synchronize()
    cls_ok = int(hv[0]) % 256 == int(out.argmax(dim=1)[0])
    ts = sorted(ts[warm:])
    return dict(p50=ts[len(ts) // 2], p95=ts[int(len(ts) * 0.95)], class_ok=cls_ok)


# -- TTA and kernel-count table (--tta-table) ------------------------------------------------
def checkpoint_spec(path):
    """(layers, head) of a fastnet checkpoint through the kit's own fold (folded_spec), or None
    with the reason logged (no file, another layout): the caller then times random weights."""
    try:
        sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        import utils
        from config import load_config
        cfg = load_config()
        model, _ = utils.load_model(path, "fastnet", cfg=cfg)
        return model.eval().folded_spec(cfg.data.mean, cfg.data.std)
    except Exception as e:  # said, not hidden
        log(f"{path}: not usable ({type(e).__name__}: {str(e)[:160]}); random weights")
        return None


def tta_rows(layers, head, pdl_ok):
    """(name, builder) of every path of the table; a builder returns (module, KernelNet or None)."""
    from inference import TTA_VIEWS, KernelPath, TTANet
    flip = TTA_VIEWS["flip"]

    def kp(**kw):
        kn = K.KernelNet(layers, head, batch=kw.pop("batch", 1), **kw)
        return KernelPath(kn), kn

    def old_flip():
        path, kn = kp(batch=2)
        return TTANet(path, "flip", device="cuda").eval(), kn
    # inference.kernel_net's path has no PDL: the rows time it so; PDL only on the last row (each
    # row compiles its own kernels, ~1-2 s each: the table must fit kernel_gpu.sh's 180 s)
    rows = [("none", lambda: kp()),
            ("flip TTANet (old)", old_flip),
            ("flip fused", lambda: kp(views=flip))]
    rows += [("none +stem+pairs", lambda: kp(fuse_stem=True, fuse_pairs=True)),
             ("flip fused +stem", lambda: kp(views=flip, fuse_stem=True)),
             ("flip fused +pairs", lambda: kp(views=flip, fuse_pairs=True)),
             ("flip fused +stem+pairs", lambda: kp(views=flip, fuse_stem=True, fuse_pairs=True))]
    if pdl_ok:
        rows += [("flip fused +stem+pairs +PDL", lambda: kp(views=flip, fuse_stem=True, fuse_pairs=True, pdl=True))]
    return rows


def tta_table(args):
    """Time every path of tta_rows on AB94 and w7 shapes; one line per row as it is measured."""
    from inference import TTANet
    shapes = [("AB94", dict(widths=(64, 256, 256)), None), ("w7", dict(widths=(96, 384, 384)), args.ckpt)]
    pdl_ok = K.pdl_available()[0]
    table = []
    for shape, cfg, ckpt in shapes:
        spec = checkpoint_spec(ckpt) if ckpt else None
        layers, head = spec or K.random_net(stem_width=24, stem_kernel=2, depths=(2, 2, 2), act="gelu", seed=5,
                                            device="cuda", **cfg)
        layers = [dict(L, weight=L["weight"].cuda(), bias=L["bias"].cuda()) for L in layers]
        head = {k: v.cuda() for k, v in head.items()}
        weights = "checkpoint" if spec else "random"
        u8 = torch.randint(0, 256, (1, 3, 32, 32), device="cuda", dtype=torch.uint8)
        x = u8.half().contiguous(memory_format=torch.channels_last)  # InferenceModel.prepare's input

        class Ref(torch.nn.Module):
            def forward(self, xx):
                return K.reference_forward(layers, head, xx.permute(0, 2, 3, 1))
        refs = {m: TTANet(Ref(), m, device="cuda")(u8).double() for m in ("flip",)}
        refs["none"] = Ref()(u8)
        for name, build in tta_rows(layers, head, pdl_ok):
            label = f"{shape} ({weights}) {name}"
            try:
                t0 = time.time()
                net, kn = build()
                r = {}
                bench_variant(label, net, x, r, refs["flip" if "flip" in name else "none"])
                row = r[label]
                row.update(build_s=time.time() - t0, timeouts=kn.barrier_timeouts() if kn else 0,
                           our_kernels=kn.kernel_count() if kn else None)
                table.append((label, row))
                log(f"   build+time {row['build_s']:.1f}s, KernelNet.kernel_count {row['our_kernels']}, "
                    f"barrier timeouts {row['timeouts']}")
            except Exception as e:  # one line, then the next row
                log(f"FAILED {label}: {type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}")
    log("\n| path | host p50 us | host p95 us | GPU us (events) | pipelined us | kernels (profiler) | rel err |")
    log("|---|---|---|---|---|---|---|")
    for label, r in table:
        log(f"| {label} | {r['p50']:.1f} | {r['p95']:.1f} | {r['gpu']:.1f} | {r['pipe']:.1f} | "
            f"{len(r['kernels'])} | {r['err']:.1e} |")
    for label, r in table:
        if r.get("kernels"):
            log(f"per-kernel (profiler) {label}: " + ", ".join(f"{us:.2f}" for _, us in r["kernels"])
                + f"  sum {sum(us for _, us in r['kernels']):.1f} us")
    with open(os.path.join(args.out, "kernel_tta.json"), "w") as f:
        json.dump(dict(table), f, indent=1, default=str)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="results/kernels")
    ap.add_argument("--ckpt", default="checkpoints/final_model.pth")
    ap.add_argument("--no-autotune", action="store_true")
    ap.add_argument("--tta-table", action="store_true", help="only the TTA / kernel-count table (kernel_gpu.sh)")
    ap.add_argument("--iters", type=int, default=2000, help="host-timed replays per path")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    global ITERS
    ITERS = args.iters
    ok, why = K.available()
    log(f"torch {torch.__version__} triton {K.triton.__version__ if K.triton else None} | {why} | "
        f"pdl: {K.pdl_available()}")
    if not ok:
        raise SystemExit(f"kernel_bench: {why}")
    torch.manual_seed(0)
    if args.tta_table:
        tta_table(args)
        return
    all_ok = True
    # 1. correctness on 3 random shapes, then the real checkpoint
    shapes = [("default 32/k3 [64,192,256]x[2,2,2] relu", dict(), 1, torch.uint8),
              ("k2 24 [64,256,256]x[1,2,1] gelu", dict(stem_width=24, stem_kernel=2, widths=(64, 256, 256),
                                                        depths=(1, 2, 1), act="gelu"), 6, torch.float16),
              ("tiny 32/k3 [32,64,128]x[1,1,1] relu", dict(widths=(32, 64, 128), depths=(1, 1, 1)), 1,
               torch.float16)]
    for name, cfg, n, dt in shapes:
        layers, head = K.random_net(seed=len(name), **cfg)
        all_ok &= check_net(name, layers, head, n, dt)
    if K.pdl_available()[0]:
        layers, head = K.random_net(seed=7)
        try:
            all_ok &= check_net("default, PDL", layers, head, 1, torch.uint8, pdl=True)
        except Exception as e:  # reported; the timing part then says PDL failed too
            log(f"PDL check failed to run: {type(e).__name__}: {e}")
    folded = None
    if os.path.exists(args.ckpt):
        try:
            folded = fold_checkpoint(args.ckpt)
        except KeyError as e:  # said, not hidden: a checkpoint of another layout (not conv->BN->ReLU->pool)
            log(f"{args.ckpt}: not the FastNet v1 layout this folder knows (missing {e}); random weights")
    if folded:
        layers, head, acc = folded
        log(f"checkpoint {args.ckpt} folded: {len(layers)} convs, pools {[L['pool'] for L in layers]}, "
            f"test_acc {acc}")
        all_ok &= check_net("final_model.pth folded", layers, head, 1, torch.uint8)
    else:
        log(f"no {args.ckpt}: timing random weights of the default shape")
        layers, head = K.random_net(seed=11)
    # 2. timing at batch 1
    x = torch.randint(0, 256, (1, 32, 32, 3), device="cuda", dtype=torch.uint8)
    ref = K.reference_forward(layers, head, x)
    res = {}
    bench_variant("cudnn graph", cudnn_path(layers, head), x, res, ref)
    net_h = K.KernelNet(layers, head, batch=1)
    bench_variant("kernels heuristic", net_h, x, res, ref)
    log("heuristic tiles", net_h.tiles())
    nets = {"kernels heuristic": net_h}
    pdl = K.pdl_available()[0]
    if pdl:
        net_hp = K.KernelNet(layers, head, batch=1, pdl=True, tiles=net_h.tiles())
        bench_variant("kernels heuristic +PDL", net_hp, x, res, ref)
        nets["kernels heuristic +PDL"] = net_hp
    if not args.no_autotune:
        t0 = time.time()
        net_a = K.KernelNet(layers, head, batch=1, autotune=True, pdl=pdl)
        log(f"autotune (pdl={pdl}) {time.time() - t0:.1f}s tiles {net_a.tiles()}")
        name = "kernels autotuned" + (" +PDL" if pdl else "")
        bench_variant(name, net_a, x, res, ref)
        nets[name] = net_a
    # the same graphs again, in reverse order: the run-to-run spread of these numbers
    for name in list(nets)[::-1] + ["cudnn graph"]:
        fn = nets.get(name) or cudnn_path(layers, head)
        bench_variant(name + " (again)", fn, x, res, ref)
    for name, net in nets.items():
        log(f"per-kernel alone (graph of 50 launches each), {name}:")
        for kname, us in net.time_kernels(x):
            log(f"   {us:6.2f} us  {kname}")
    # 3. the answer's way back
    best = min(nets, key=lambda k: res[k]["p50"])
    pv = poll_variant(nets[best], x)
    log(f"{best} + pinned-host poll: host p50 {pv['p50']:.1f} us p95 {pv['p95']:.1f} class_ok {pv['class_ok']}")
    res["poll " + best] = pv
    # the short table last
    log("\n| path | host p50 us | host p95 us | GPU us (events) | pipelined us | kernels | rel err |")
    log("|---|---|---|---|---|---|---|")
    for name, r in res.items():
        if "gpu" in r:
            log(f"| {name} | {r['p50']:.1f} | {r['p95']:.1f} | {r['gpu']:.1f} | {r['pipe']:.1f} | "
                f"{len(r['kernels'])} | {r['err']:.1e} |")
        else:
            log(f"| {name} | {r['p50']:.1f} | {r['p95']:.1f} | | | | class ok {r['class_ok']} |")
    for name, r in res.items():
        if r.get("kernels"):
            log(f"per-kernel (profiler) {name}: " + ", ".join(f"{us:.2f}" for _, us in r["kernels"])
                + f"  sum {sum(us for _, us in r['kernels']):.1f} us")
    log(f"all correctness checks {'OK' if all_ok else 'FAILED'}")
    with open(os.path.join(args.out, "kernel_bench.json"), "w") as f:
        json.dump(res, f, indent=1, default=str)
    with open(os.path.join(args.out, "kernel_bench.log"), "w") as f:
        f.write("\n".join(LOG) + "\n")
    if not all_ok:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
