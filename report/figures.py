"""The report's figures (matplotlib, Agg): latency per table variant, accuracy against latency, host vs GPU."""
import os

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import facts  # noqa: E402
from inputs import front_rows, table_variants  # noqa: E402

OURS, BASE, FRONT, GOAL = "#1f5fa8", "#8a8a8a", "#e07b24", "#b22222"


def save(fig, folder, name):
    path = os.path.join(folder, name)
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)
    return path


def latency_bars(s, folder):
    """e2e p50 per table variant, whiskers to the e2e p95, the device-side p50 marked beside."""
    t = s.rows.loc[table_variants(s.cfg)]
    y = range(len(t))
    fig, ax = plt.subplots(figsize=(7.0, 3.6))
    colors = [OURS if r["model"] == "fastnet" else BASE for _, r in t.iterrows()]
    ax.barh(y, t["e2e_p50_ms"], color=colors, height=0.6, label="end to end, p50")
    ax.errorbar(t["e2e_p50_ms"], y, xerr=[[0] * len(t), t["e2e_p95_ms"] - t["e2e_p50_ms"]], fmt="none",
                ecolor="black", capsize=3, lw=0.8, label="to the e2e p95")
    ax.plot(t["lat_p50_ms"], [i + 0.38 for i in y], "v", color=GOAL, ms=5, label="device-side p50")
    for i, (p50, p95) in enumerate(zip(t["e2e_p50_ms"], t["e2e_p95_ms"])):
        ax.text(p95 * 1.12, i + 0.1, f"{p50:.4f}", fontsize=7)
    ax.set_yticks(list(y), t["variant"])
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlim(t["lat_p50_ms"].min() / 2, t["e2e_p95_ms"].max() * 5)
    ax.set_xlabel("batch-1 latency (ms, log scale)")
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(axis="x", which="both", alpha=0.25)
    return save(fig, folder, "latency.png")


def accuracy_latency(s, folder):
    """Table variants (test accuracy) and front points (validation seed mean) against e2e p50."""
    g, t, fr = s.cfg.goals, s.rows.loc[table_variants(s.cfg)], front_rows(s.rows)
    fig, ax = plt.subplots(figsize=(7.0, 4.2))
    ax.scatter(fr["e2e_p50_ms"], fr["acc_mean"], color=FRONT, s=18, marker="s",
               label="front points (validation, seed mean)")
    ax.scatter(t["e2e_p50_ms"], t["acc"], color=OURS, s=30, zorder=3, label="table variants (test)")
    for i, (_, r) in enumerate(t.sort_values("e2e_p50_ms").iterrows()):  # labels of close points alternate
        ax.annotate(r["variant"], (r["e2e_p50_ms"], r["acc"]), xytext=(4, 4 if i % 2 else -10),
                    textcoords="offset points", fontsize=7)
    for x in (g.f_e2e_ms, g.f85_e2e_ms):
        ax.axvline(x, color=GOAL, ls="--", lw=0.8)
    for y in (g.f_acc_low, g.f85_acc_low):
        ax.axhline(y, color=GOAL, ls=":", lw=0.8)
    ax.set_xscale("log")
    top, right = ax.get_ylim()[1], ax.get_xlim()[1]  # the goals' labels where no point is
    for x, what in ((g.f_e2e_ms, "F"), (g.f85_e2e_ms, "F85")):
        ax.text(x, top, f"{what} latency goal ", color=GOAL, fontsize=7, rotation=90, ha="right", va="top")
    for y, what in ((g.f_acc_low, "F"), (g.f85_acc_low, "F85")):
        ax.text(right, y, f"{what} accuracy goal ", color=GOAL, fontsize=7, ha="right", va="bottom")
    ax.set_xlabel("end-to-end p50 (ms, log scale)")
    ax.set_ylabel("accuracy (%)")
    ax.legend(fontsize=7, loc="center right")
    ax.grid(which="both", alpha=0.25)
    return save(fig, folder, "accuracy_latency.png")


def host_gpu(s, folder):
    """GPU time and the rest of the e2e p50 for the CUDA-graph variants with a GPU time (front points and
    serving paths apart: a serving path's GPU time is a per-call launch its e2e call does not pay)."""
    r = s.rows[(s.rows["cuda_graph"].str.lower() == "true") & s.rows["gpu_lat_p50_ms"].notna()
               & ~s.rows["variant"].str.startswith("P_") & ~s.rows["io"].map(facts.serving)]
    r = r.sort_values("e2e_p50_ms")
    fig, ax = plt.subplots(figsize=(7.0, 1.4 + 0.28 * len(r)))
    ax.barh(r["variant"], r["gpu_lat_p50_ms"], color=OURS, label="GPU (CUDA events, p50)")
    ax.barh(r["variant"], r["e2e_p50_ms"] - r["gpu_lat_p50_ms"], left=r["gpu_lat_p50_ms"], color=BASE,
            label="rest of the e2e p50 (launch, transfer, wait)")
    ax.plot(r["gpu_pipelined_ms"], r["variant"], "|", color="black", ms=10, label="pipelined replay")
    ax.invert_yaxis()
    ax.set_xlabel("ms")
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=3)  # below: bars fill the axes
    ax.grid(axis="x", alpha=0.25)
    return save(fig, folder, "host_gpu.png")


def make(s, folder):
    """Draw every figure into folder; returns {name: path}."""
    os.makedirs(folder, exist_ok=True)
    return {"latency": latency_bars(s, folder), "accuracy": accuracy_latency(s, folder),
            "host_gpu": host_gpu(s, folder)}
