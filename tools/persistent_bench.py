"""The persistent kernel (kernel_server.py) against the graph path, end to end, in one process
(GPU only): is a launch-free call faster?

    python tools/persistent_bench.py --out results/persistent.json [--variants F,F85_triton] [--iters 3000]

For each variant (our kernels): its graph path as bench.py times it, the persistent kernel with
the variant's tiles, and the persistent kernel with split-K refitted to one round of work
items per layer (fit_split).  Three alternating blocks of `iters` calls each, the device idle
between calls (the persistent kernel waits spinning, the graph path after a synchronise), on
test images that change every call; the persistent paths' answers are checked against the
graph path's on all 10,000 test images and on 2,000 calls alternating two images.  A traced
run stamps the GPU clock at each phase of a call (image in, each layer's barrier, answer):
where the GPU time goes.  Writes the JSON the report reads and prints the table.
"""
import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import timing  # noqa: E402
import utils  # noqa: E402
from config import add_config_args, load_config  # noqa: E402
from data import host_split  # noqa: E402
from inference import Predictor  # noqa: E402
from kernel_server import KernelServer  # noqa: E402

MODES = {"persistent": dict(fit_split=False), "persistent_fit": dict(fit_split=True)}


def stats(ms):
    """p50, p95 and mean (µs) of calls timed in ms, all pooled (timing.latency_stats)."""
    st = timing.latency_stats(ms)
    return {k: 1e3 * st[k] for k in ("p50", "p95", "mean")}


def phases(srv, clf, imgs, n=600):
    """Median µs from 'request seen' to each stamped phase over n traced calls."""
    srv.start()
    for img in imgs[:n]:
        srv(img)
    srv.stop()
    t = srv.trace_buf.cpu().numpy().astype(np.float64)
    rows = t[(t[:, 0] > 0) & (t[:, 15] > 0)]
    rel = (rows - rows[:, :1]) / 1e3
    nl = len(clf.kn.specs)
    names = ["image in", "barrier 0"] + [f"L{i} + barrier" for i in range(nl - 1)]
    out = {name: float(np.median(rel[:, 1 + k])) for k, name in enumerate(names)}
    out[f"L{nl - 1} + head: answer"] = float(np.median(rel[:, 15]))
    return out


def compare(clf, imgs, labels, iters, programs):
    """Graph path vs the persistent modes for one Predictor."""
    ref = clf.predict(imgs)
    clf.drain()  # the servers run the same kernels' buffers, on every SM
    r = {"acc": {"graph": 100.0 * float((ref == labels).mean())}, "e2e": {}, "blocks": {}, "agree": {}, "stale": {}}
    servers = {m: KernelServer(clf.kn, programs=programs, timeout_s=3.0, **kw) for m, kw in MODES.items()}
    r["splits"] = {m: s.splits for m, s in servers.items()}
    for m, srv in servers.items():
        srv.start()
        ans = np.array([srv(img) for img in imgs])
        i0 = int(np.argmax(ref != ref[0]))  # an image with another answer than image 0
        alt = [srv(imgs[i0 if k % 2 else 0]) for k in range(2000)]
        srv.stop()
        r["acc"][m] = 100.0 * float((ans == labels).mean())
        r["agree"][m] = 100.0 * float((ans == ref).mean())
        r["stale"][m] = sum(int(a != ref[i0 if k % 2 else 0]) for k, a in enumerate(alt))
    timing.time_e2e(clf, imgs, 50, sync=clf.settle)
    runs = {m: [] for m in ["graph", *MODES]}
    wrong = {m: 0 for m in runs}
    for b in range(3):
        ms, ans, idx = timing.time_e2e(clf, imgs, iters, b * iters, sync=clf.settle)
        runs["graph"].append(ms)
        wrong["graph"] += int((ans != ref[idx]).sum())
        clf.drain()
        for m, srv in servers.items():
            srv.start()
            timing.time_e2e(srv, imgs, 50)
            ms, ans, idx = timing.time_e2e(srv, imgs, iters, b * iters)
            srv.stop()
            runs[m].append(ms)
            wrong[m] += int((ans != ref[idx]).sum())
    for m, blocks in runs.items():
        r["e2e"][m] = stats(np.concatenate(blocks))
        r["blocks"][m] = [stats(ms)["p50"] for ms in blocks]
    r["wrong_in_timing"] = wrong
    r["phases"] = {m: phases(KernelServer(clf.kn, programs=programs, trace=True, **kw), clf, imgs)
                   for m, kw in MODES.items()}
    return r


def main():
    ap = utils.ArgParser(__doc__)
    ap.add_argument("--out", required=True, help="the JSON file to write")
    ap.add_argument("--variants", default="F,F85_triton", help="variants run by our kernels, comma-separated")
    ap.add_argument("--iters", type=int, default=3000, help="calls per timed block (3 blocks per path)")
    ap.add_argument("--programs", type=int, default=0, help="programs of the persistent kernel (0: one per SM)")
    add_config_args(ap)
    a = ap.parse_args()
    if not torch.cuda.is_available():
        raise utils.KitError("persistent_bench.py runs the persistent kernel: run it on a machine with a CUDA GPU")
    if a.iters < 100:
        raise utils.KitError(f"--iters {a.iters}: give at least 100 calls per block")
    utils.check_writable(a.out, "give a writable --out file")
    cfg = load_config(a.config, a.overrides)
    device = torch.device("cuda")
    env = utils.env_info()
    imgs, labels = host_split(cfg, "test")
    res = {"env": env, "iters": a.iters, "variants": {}}
    print(f"{env['gpu']} (driver {env['driver']}), torch {env['torch']}, commit {env['git_commit']}")
    for v in [s for s in a.variants.split(",") if s]:
        clf = Predictor(cfg, v, device)
        if clf.kn is None:
            raise utils.KitError(f"variant {v} does not run our kernels (kernels: true): no persistent kernel")
        r = compare(clf, imgs, labels, a.iters, a.programs or None)
        r.update(label=clf.label, notes="; ".join(clf.notes), layers=[clf.kn.layer_name(i)
                                                                      for i in range(len(clf.kn.specs))])
        res["variants"][v] = r
        for m, e in r["e2e"].items():
            print(f"{v} {m:15s} e2e p50 {e['p50']:6.2f} us  p95 {e['p95']:6.2f}  mean {e['mean']:6.2f}  "
                  f"blocks {', '.join(f'{x:.2f}' for x in r['blocks'][m])}  acc {r['acc'][m]:.2f}"
                  + (f"  agree {r['agree'][m]:.2f} %  stale {r['stale'][m]}" if m in MODES else ""))
        for m, ph in r["phases"].items():
            print(f"{v} {m} GPU clock from request seen (us): " + ", ".join(f"{k} {t:.2f}" for k, t in ph.items()))
        del clf
    utils.atomic_write_bytes(a.out, (json.dumps(res, indent=1) + "\n").encode())
    print(f"wrote {a.out}")


if __name__ == "__main__":
    utils.run_main(main)
