"""The report's figures (matplotlib only), drawn from facts.gather()'s frames; nothing computed here
beyond placing points."""
import os

import numpy as np
import pandas as pd

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FuncFormatter, NullFormatter  # noqa: E402

from facts import BASELINES, TABLE_IDS  # noqa: E402

MARKED = ("B1", "B2", "O2", "D1")  # baselines drawn beside the front


def save(fig, path):
    fig.tight_layout()
    fig.savefig(path, dpi=160)
    plt.close(fig)
    return path


def point_name(r):
    return r.front + ("" if r.tta == "none" else f"+{r.tta}")


def draw_front(ax, f):
    """Front points with seed error bars, the Pareto line, F/F85 ringed, AB94 in orange."""
    fr = f.front
    for tta, mk in (("none", "o"), ("flip", "s")):
        p = fr[fr.tta == tta]
        ab = p.front == "AB94"
        for sub, col in ((p[~ab], "#2c7fb8"), (p[ab], "#d95f0e")):
            ax.errorbar(sub.lat_p50_ms, sub.acc_mean, yerr=sub.acc_std, fmt=mk, ms=4, capsize=2, color=col, lw=0.8,
                        label=(f"front, TTA {tta}" if col == "#2c7fb8" else f"AB94 (airbench94 net), TTA {tta}"))
    pf = fr[fr.on_front].sort_values("lat_p50_ms")
    ax.step(pf.lat_p50_ms, pf.acc_mean, where="post", color="grey", lw=1, label="Pareto front")
    for role in ("F", "F85"):
        r = fr.loc[f.selection[role]["variant"]] if f.selection[role]["variant"] in fr.index else None
        if r is not None:
            ax.plot(r.lat_p50_ms, r.acc_mean, "o", ms=11, mfc="none", mec="#c0392b", mew=1.4)
            ax.annotate(role, (r.lat_p50_ms, r.acc_mean), xytext=(-14, 6), textcoords="offset points",
                        fontsize=8, color="#c0392b", weight="bold")


OFFSETS = ((4, -10, "left"), (4, 4, "left"), (-4, 4, "right"), (-4, -10, "right"))


def place_labels(ax, pts):
    """Label each point at the first of four corners where the text overlaps no earlier label and
    no other point's marker (measured in display space once the axes are laid out)."""
    fig = ax.figure
    fig.canvas.draw()
    marks = [ax.transData.transform((x, y)) for _, x, y in pts]
    placed = []
    for i, (name, x, y) in enumerate(pts):
        for dx, dy, ha in OFFSETS:
            a = ax.annotate(name, (x, y), xytext=(dx, dy), textcoords="offset points", fontsize=7, ha=ha)
            bb = a.get_window_extent(fig.canvas.get_renderer()).expanded(1.2, 1.1)  # a gap between labels
            hits = any(bb.overlaps(p) for p in placed) or any(
                bb.contains(*m) for j, m in enumerate(marks) if j != i)
            if not hits or (dx, dy, ha) == OFFSETS[-1]:
                placed.append(bb)
                break
            a.remove()


def draw_baselines(ax, f):
    """Filled: B1 of the front invocation (complete row).  Open: B1, B2, O2, D1 of the recovered cut
    bench at their checkpoints' FP32 accuracy: another invocation, so drawn apart from the front."""
    if "B1" in f.table.index:
        r = f.table.loc["B1"]
        ax.plot(r.lat_p50_ms, r.acc, "k^", ms=6)
        ax.annotate("B1", (r.lat_p50_ms, r.acc), xytext=(0, -11), ha="center", textcoords="offset points", fontsize=7)
    if f.rec is None or not len(f.rec):
        return
    for v in MARKED:
        if v in f.rec.index:
            r = f.rec.loc[v]
            ax.plot(r.p50_ms, r.acc, "^", ms=6, mfc="none", mec="#555555")
            # B1 and D1 sit close together: B1's label below, the others above
            ax.annotate(f"{v} (cut)", (r.p50_ms, r.acc), xytext=(0, -11 if v == "B1" else 5), ha="right" if v == "B1"
                        else "center", textcoords="offset points", fontsize=6.5, color="#555555")


def front_figure(f, path):
    """Left: the front among the baselines (log p50); right: the front alone, labelled."""
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(7.6, 4.6), gridspec_kw={"width_ratios": [1, 1.35]})
    draw_front(a1, f)
    draw_baselines(a1, f)
    draw_front(a2, f)
    for a in (a1, a2):
        a.set_xscale("log")
        a.axhline(f.cfg.front.f_min_acc, ls=":", color="green", lw=0.8)
        a.axhline(f.cfg.front.f85_min_acc, ls=":", color="red", lw=0.8)
        a.grid(which="both", alpha=0.25)
        a.set_xlabel("batch-1 host p50 (ms, log scale)")
        a.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))  # 0.04, not 4 x 10^-2
    lo, hi = a1.get_xlim()
    a1.set_xlim(lo, hi * 1.6)  # room for the rightmost baseline's label (log axis: a factor)
    a1.xaxis.set_minor_formatter(NullFormatter())  # three decades: major ticks only
    a2.xaxis.set_minor_formatter(FuncFormatter(lambda x, _: f"{x:g}"))  # less than one decade: label the minors
    a1.set_ylabel("test accuracy (%)")
    a1.set_title("front and baselines (triangles)", fontsize=9)
    a2.set_title(f"front only: invocation {f.front_inv}", fontsize=9)
    a2.legend(fontsize=6.5, loc="lower right")
    fig.tight_layout()  # labels are placed in the final layout's display space
    place_labels(a2, [(point_name(r), r.lat_p50_ms, r.acc_mean) for _, r in f.front.iterrows()])
    return save(fig, path)


def latency_figure(f, path):
    """The table variants' host p50 (log) in the recovered cut bench, with speedup vs its B1 and interval."""
    t = f.rec.loc[[v for v in TABLE_IDS if v in f.rec.index]].iloc[::-1]
    fig, ax = plt.subplots(figsize=(8, 3.6))
    ax.barh(range(len(t)), t.p50_ms, color=["#2c7fb8" if v in BASELINES else "#d95f0e" for v in t.index])
    ax.set_yticks(range(len(t)))
    ax.set_yticklabels(list(t.index), fontsize=8)
    ax.set_xscale("log")
    for i, (v, r) in enumerate(t.iterrows()):
        ax.text(r.p50_ms * 1.08, i, f"{r.p50_ms:.4f} ms  {r.speedup_p50:.1f}× [{r.ci_low:.1f}–{r.ci_high:.1f}]",
                va="center", fontsize=7)
    ax.set_xlim(t.p50_ms.min() / 1.5, t.p50_ms.max() * 30)
    ax.set_xlabel(f"batch-1 host p50 (ms, log scale), cut bench {f.recovered['used']}; speedup p50 vs its B1 [95 %]")
    ax.grid(axis="x", which="both", alpha=0.25)
    return save(fig, path)


def host_gpu_figure(f, path):
    """Every complete row (table + ablation): host p50 beside GPU p50 (CUDA events) and, for graph
    paths, pipelined time, log scale: how much of each call is launch and host."""
    t = pd.concat([f.table, f.ablation])
    t = t.iloc[::-1]
    y = np.arange(len(t))
    fig, ax = plt.subplots(figsize=(8, 0.24 * len(t) + 1.2))
    ax.barh(y + 0.2, t.lat_p50_ms, height=0.38, color="#2c7fb8", label="host p50 (clock between two syncs)")
    ax.barh(y - 0.2, t.gpu_lat_p50_ms, height=0.38, color="#d95f0e", label="GPU p50 (CUDA events)")
    ax.plot(t.gpu_pipelined_ms, y - 0.2, "k|", markersize=9, label="pipelined (graph replays back to back)")
    ax.set_yticks(y)
    ax.set_yticklabels(list(t.index), fontsize=7.5)
    ax.set_xscale("log")
    for i, (v, r) in enumerate(t.iterrows()):
        ax.text(max(r.lat_p50_ms, r.gpu_lat_p50_ms) * 1.1, i, f"{r.lat_p50_ms:.4f} ms  {r.sp:.1f}× "
                f"[{r.sp_lo:.1f}–{r.sp_hi:.1f}]", va="center", fontsize=6.5)
    ax.set_xlim(t.gpu_pipelined_ms.min() / 1.6, t.lat_p50_ms.max() * 40)
    ax.set_xlabel("batch-1 time per call (ms, log scale); labels: host p50, speedup p50 vs B1 [95 %]")
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(axis="x", which="both", alpha=0.25)
    return save(fig, path)


def make(f, fig_dir):
    os.makedirs(fig_dir, exist_ok=True)
    out = {}
    if f.mode == "single":
        out["host_gpu"] = host_gpu_figure(f, os.path.join(fig_dir, "host_gpu.png"))
    if f.rec is not None and len(f.rec):
        out["latency"] = latency_figure(f, os.path.join(fig_dir, "latency_bar.png"))
    if len(f.front):
        out["front"] = front_figure(f, os.path.join(fig_dir, "front.png"))
    return out
