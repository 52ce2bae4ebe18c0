"""Where the host's time of one end-to-end call goes, for variants whose call launches a CUDA graph
(GPU only): the Predictor as bench.py times it, with a stamp on the host clock around its launch.

    python tools/host_phases.py [--variants F,F_stem,F_call] [--rounds 10] [--calls 1000] [--out FILE]

Per call, for a variant launched ahead (e2e_launch: ahead): before (from the call's start to the
next call's launch: the input check, the image copy into the pinned buffer, the flag word), launch
(the launch of the next call's graph, behind the running one), after (from the launch's return to
the answer); for a variant launching its own graph: before (check and copy), launch (its graph),
after (the wait).  `answered` is the share of calls whose answer word already held their answer
when the launch returned: where it is high, the launch, not the GPU, ends the call.

--alternate: variants launched ahead also run with two CUDA graphs of the same kernels launched
in turn, so a launch never queues the graph that is running; rounds of one and of two graphs are
interleaved, and the e2e p50 of each is printed.  In every round both modes answer the same images,
and their answers must be the same.
"""
import gc
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import timing  # noqa: E402
import utils  # noqa: E402
import variant_tool  # noqa: E402
from config import add_config_args  # noqa: E402
from inference import Predictor  # noqa: E402
from kernels import SEQ_MASK  # noqa: E402


class Stamps:
    """The host clock (ns) around a predictor's launch in its next call, and whether the answer
    was in when the launch returned.  Wraps the predictor's own launch (instance attributes);
    graphs: None, or two graphs of a call launched ahead to launch in turn (set per round)."""

    def __init__(self, clf):
        self.clf, self.graphs, self.k = clf, None, 0
        self.l0 = self.l1 = 0
        self.answered = False
        if clf.e2e_launch == "ahead":
            real = clf._launch_ahead

            def launch():
                self.l0 = time.perf_counter_ns()
                if self.graphs:  # two graphs in turn: never relaunch the one that is running
                    clf._ahead_graph = self.graphs[self.k % 2]
                    self.k += 1
                real()
                self.stamp_end()
            clf._launch_ahead = launch
        else:
            real = clf._e2e_graph
            stamps = self

            class Timed:
                def replay(self):
                    stamps.l0 = time.perf_counter_ns()
                    real.replay()
                    stamps.stamp_end()
            clf._e2e_graph = Timed()

    def stamp_end(self):
        self.l1 = time.perf_counter_ns()
        self.answered = (int(self.clf._word_np[0]) >> 4) == ((self.clf.calls + 1) & SEQ_MASK)


def second_graph(clf):
    """Another CUDA graph of the kernels clf launches ahead (the same buffers: the two run in
    turn on one stream)."""
    clf.drain()
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        clf.gated_net(clf.ahead_ms)
    torch.cuda.synchronize()
    return g


def timed_round(clf, st, imgs, offset, calls):
    """calls end-to-end calls (settle() between, as bench.py): per call the e2e, before, launch
    and after µs, whether answered at the launch's end, and the answers."""
    out = np.empty((calls, 5))
    answers = np.empty(calls, dtype=np.int64)
    clock = time.perf_counter_ns
    gc_was_on = gc.isenabled()
    gc.disable()  # as timing.time_e2e: a collection inside a timed call would be noise
    try:
        for i in range(calls):
            img = imgs[(offset + i) % len(imgs)]
            clf.settle()
            t0 = clock()
            answers[i] = clf(img)
            t1 = clock()
            out[i] = ((t1 - t0) / 1e3, (st.l0 - t0) / 1e3, (st.l1 - st.l0) / 1e3, (t1 - st.l1) / 1e3, st.answered)
    finally:
        if gc_was_on:
            gc.enable()
    return out, answers


def main():
    ap = utils.ArgParser(__doc__)
    ap.add_argument("--variants", default="F,F_stem,F_call", help="CUDA-graph variants, comma-separated")
    ap.add_argument("--rounds", type=int, default=10, help="timed rounds per variant (and mode)")
    ap.add_argument("--calls", type=int, default=1000, help="calls per round")
    ap.add_argument("--alternate", action="store_true", help="also two graphs in turn (variants launched ahead)")
    ap.add_argument("--out", help="also write the medians as JSON here")
    add_config_args(ap)
    a = ap.parse_args()
    if a.rounds < 1 or a.calls < 10:
        raise utils.KitError("give --rounds >= 1 and --calls >= 10")

    def launched(c):  # our kernels in a CUDA graph, launched per call or ahead (a serving kernel has no launch)
        return c.kernels and c.cuda_graph and c.e2e_launch in ("call", "ahead")
    cfg, variants, device, env, imgs = variant_tool.start(a, launched, "a variant launching our kernels' graph",
                                                          "host_phases.py times CUDA-graph launches")
    res = {"env": env, "variants": {}}
    for v in variants:
        clf = Predictor(cfg, v, device)
        st = Stamps(clf)
        modes = {"one graph": None}
        if a.alternate and clf.e2e_launch == "ahead":
            modes["two graphs"] = (clf._ahead_graph, second_graph(clf))
        timed_round(clf, st, imgs, 0, 50)  # warm-up
        per = {m: [] for m in modes}
        for r in range(a.rounds):  # the modes interleaved, each round on the same images in every mode
            answers = []
            for m, graphs in modes.items():
                st.graphs = graphs
                rows, ans = timed_round(clf, st, imgs, r * a.calls, a.calls)
                per[m].append(rows)
                answers.append(ans)
            if any(not np.array_equal(answers[0], x) for x in answers[1:]):
                raise utils.KitError(f"{v}: two graphs in turn gave other answers than one graph on the same images")
        res["variants"][v] = {}
        for m, rounds in per.items():
            allr = np.concatenate(rounds)
            e2e = timing.summarize_runs([x[:, 0] / 1e3 for x in rounds])["p50"] * 1e3
            med = {k: float(np.median(allr[:, i])) for i, k in enumerate(("e2e", "before", "launch", "after"))}
            med.update(e2e_p50=e2e, answered=float(allr[:, 4].mean()))
            res["variants"][v][m] = med
            print(f"{v} ({m}): e2e p50 {e2e:.2f} us (median of round medians); call medians: before "
                  f"{med['before']:.2f}, launch {med['launch']:.2f}, after {med['after']:.2f} us; answered when "
                  f"the launch returned: {100 * med['answered']:.1f} %")
        clf.drain()
        del clf
    variant_tool.write(a.out, res)


if __name__ == "__main__":
    utils.run_main(main)
