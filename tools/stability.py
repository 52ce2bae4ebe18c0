"""Why are eager batch-1 latencies noisy across runs?  (issue 4, stability)

    python tools/stability.py --out stability.json

Random weights (latency does not depend on them).  For MobileNetV3-small eager FP32 (B1's
path), ResNet-18 eager (B2's path) and the F path (fastnet, folded + fused + compiled +
CUDA graph): 3 runs x 1000 timed calls under
  default    as bench.py does it
  pinned     the process pinned to one CPU core (os.sched_setaffinity)
  pinned1t   pinned + torch.set_num_threads(1)
plus, for the eager nets, the host-side enqueue time (the call returns before the GPU
finishes; sync afterwards) and the number of GPU kernels one call launches (profiler).
"""
import argparse
import json
import os
import sys
import tempfile

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import utils  # noqa: E402
from inference import InferenceModel  # noqa: E402
from config import Config, load_config  # noqa: E402


def cpu_mhz():
    try:
        with open("/proc/cpuinfo") as f:
            v = [float(ln.split(":")[1]) for ln in f if ln.startswith("cpu MHz")]
        return float(np.mean(v)) if v else float("nan")
    except OSError:
        return float("nan")


def enqueue_ms(fn, iters=300):
    import time
    out = []
    for _ in range(iters):
        torch.cuda.synchronize()
        a = time.perf_counter_ns()
        fn()
        b = time.perf_counter_ns()
        torch.cuda.synchronize()
        out.append((b - a) / 1e6)
    return float(np.median(out))


def kernel_count(fn):
    from torch.profiler import ProfilerActivity, profile
    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as p:
        fn()
        torch.cuda.synchronize()
    return sum(1 for e in p.events() if e.device_type == torch.autograd.DeviceType.CUDA)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="stability.json")
    a = ap.parse_args()
    dev = torch.device("cuda")
    torch.backends.cudnn.benchmark = True
    cfg = load_config()
    tmp = tempfile.mkdtemp()
    cfg["paths"]["results"] = os.path.join(tmp, "r.csv")
    ck = {}
    for name in ("mobilenetv3", "resnet18", "fastnet"):
        torch.manual_seed(0)
        ck[name] = utils.save_checkpoint(os.path.join(tmp, f"{name}.pth"), utils.build_model(name, cfg), name, cfg)
    base = dict(label="", model="", precision="fp32", memory_format="contiguous", fold_bn=False, fuse=False,
                compile="none", cuda_graph=False, table=False)
    variants = {
        "B1_path": dict(base, checkpoint=ck["mobilenetv3"]),
        "O1_path": dict(base, checkpoint=ck["mobilenetv3"], precision="fp16"),
        "O3_path": dict(base, checkpoint=ck["mobilenetv3"], memory_format="channels_last"),
        "O1cl_path": dict(base, checkpoint=ck["mobilenetv3"], precision="fp16", memory_format="channels_last"),
        "B2_path": dict(base, checkpoint=ck["resnet18"]),
        "F_path": dict(base, checkpoint=ck["fastnet"], precision="fp16", memory_format="channels_last",
                       fold_bn=True, fuse=True, compile="default", cuda_graph=True),
    }
    for k, v in variants.items():
        cfg["variants"][k] = Config(v)
    ims = {k: InferenceModel(cfg, k, dev) for k in variants}
    res = {"env": utils.env_info(), "cpu_count": os.cpu_count(), "conditions": {}, "enqueue_ms": {},
           "kernels": {}}
    print(res["env"], flush=True)
    for k, im in ims.items():
        x = im.static_in
        try:
            res["kernels"][k] = kernel_count(lambda: im(x))
        except Exception as e:  # the profiler is optional here: report and go on
            print(f"{k}: kernel count failed: {type(e).__name__}: {e}", flush=True)
            res["kernels"][k] = -1
        if not im.cuda_graph:
            res["enqueue_ms"][k] = enqueue_ms(lambda: im(x))
        print(f"{k:<10s} kernels/call {res['kernels'][k]:4d}  enqueue p50 {res['enqueue_ms'].get(k, float('nan')):.3f} ms",
              flush=True)
    core = sorted(os.sched_getaffinity(0))[len(os.sched_getaffinity(0)) // 2]
    all_cores = os.sched_getaffinity(0)
    for cond in ("default", "pinned", "pinned1t"):
        if cond == "pinned":
            os.sched_setaffinity(0, {core})
        if cond == "pinned1t":
            torch.set_num_threads(1)
        for k in ("B1_path", "O1_path", "B2_path", "F_path"):
            im = ims[k]
            x = im.static_in
            mhz0 = cpu_mhz()
            runs = [utils.time_calls(lambda: im(x), dev, 200, 1000) for _ in range(3)]
            s = utils.summarize_runs(runs)
            s["cpu_mhz"] = [mhz0, cpu_mhz()]
            res["conditions"][f"{cond}/{k}"] = s
            print(f"{cond:<9s} {k:<8s} run means {', '.join(f'{m:.4f}' for m in s['run_means'])}  "
                  f"cv {s['cv_pct']:.2f}%  p50 {s['p50']:.4f}  p95 {s['p95']:.4f}  cpu MHz {mhz0:.0f}", flush=True)
    os.sched_setaffinity(0, all_cores)
    res["gpu_clocks_end"] = utils.nvidia_smi("clocks.sm,clocks.mem,temperature.gpu,power.draw")
    print(res["gpu_clocks_end"])
    with open(a.out, "w") as f:
        json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
