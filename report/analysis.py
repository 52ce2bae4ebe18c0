"""Section 8 of the PDF: what worked, what did not, why F, limits, next steps.  Prose, but every
number is one of facts.gather()'s; each bullet is a small function that returns None when its
inputs are missing, so nothing is guessed."""
import pandas as pd

import layout as L
from pages import get, inv_note


def us(ms):
    return f"{ms * 1000:.1f}"


# ============================================================================= what worked
def our_kernels(f):
    c, g, c85, k = f.n["f_cudnn"], f.n["f_cudnn_gpu"], f.n["f85_cudnn"], f.n.get("kern")
    if not c:
        return None
    s = (f"Our Triton kernels instead of cuDNN + torch.compile, same weights, one CUDA graph each: F {us(c['b'])} vs "
         f"{us(c['a'])} µs host p50 ({c['x']:.2f}x)" + (f", GPU time {g['x']:.2f}x" if g else "")
         + (f"; F85 {us(c85['b'])} vs {us(c85['a'])} µs ({c85['x']:.2f}x)" if c85 else "")
         + ("" if c["same"] else " (rows of different invocations)"))
    if k:
        s += (f". In the per-kernel table our path runs {k['n_ours']} kernels instead of {k['n_cudnn']}, "
              f"{k['sum_ours']:.1f} vs {k['sum_cudnn']:.1f} µs of kernel time: conv, bias, activation and pooling in "
              "one kernel per layer")
    return s + "."


def path_steps(f):
    steps = sorted(f.n["steps"], key=lambda s: -s[2]["x"])[:3]
    if not steps:
        return None
    return ("Along F's path (ablation" + inv_note(f, get(f, steps[0][1])) + "), the largest steps: "
            + "; ".join(f"{b} '{get(f, b).label}' {s['x']:.2f}x ({s['a'] * 1000:.0f} → {s['b'] * 1000:.0f} µs)"
                        for _, b, s in steps) + "."
            + (" Taking the host out of the loop (the CUDA graph) is the largest single step at batch 1."
               if steps[0][1] == "F_graph" else ""))


def compile_graphs(f):
    o2, o2d = get(f, "O2"), get(f, "O2d")
    if o2 is None or pd.isna(o2.sp):
        return None
    return (f"torch.compile with CUDA graphs (O2, reduce-overhead) on MobileNetV3: {L.sp_text(o2)} vs B1 at "
            f"{o2.acc:.2f} %" + (f"; in the default mode (O2d, no graphs) {L.sp_text(o2d)}"
                                 if o2d is not None and pd.notna(o2d.sp) else "") + inv_note(f, o2) + ".")


def tta(f):
    t = f.n["tta"]
    if not t:
        return None
    on = [v for v in f.n["pareto"] if f.front.loc[v].tta != "none"]
    return (f"Flip TTA inside the graph: {t['dacc_med']:+.2f} points for {us(t['dlat_med'])} µs (medians over {t['n']} "
            f"shapes); {len(on)} of the {int((f.front.tta != 'none').sum())} TTA points are on the Pareto front"
            + (f" ({', '.join(on)})" if on else "") + ".")


def distillation(f):
    d, d1 = f.n["d1_o1_acc"], get(f, "D1")
    if d is None:
        return None
    return (f"Distillation from ResNet-18: D1 {d1.acc:.2f} %, {d:+.2f} points over the same student trained alone, "
            f"same precision (O1){inv_note(f, d1)}; its latency is O1's.")


# ============================================================================= what did not
def verdict(r):
    """What a speedup interval says against 1."""
    return "faster" if r.sp_lo > 1 else "slower" if r.sp_hi < 1 else "not told apart from B1"


def eager_tweaks(f):
    rows = [(v, get(f, v)) for v in ("O1", "O3", "O2d") if get(f, v) is not None and pd.notna(get(f, v).sp)]
    if not rows:
        return None
    return ("Changes to B1 that leave the host launching every kernel: "
            + "; ".join(f"{v} ({r.label}) {L.sp_text(r)}, {verdict(r)}" for v, r in rows) + inv_note(f, get(f, "B1"))
            + ". Precision, layout and fusion do not help while the host is the bottleneck.")


def flops(f):
    bb, sz = f.n["b2_b1"], f.n["b2_b1_size"]
    if not (bb and sz):
        return None
    return (f"Light in FLOPs is not light at batch 1: ResNet-18 (B2) is {bb['x']:.1f}x faster than MobileNetV3-small "
            f"(B1) while {sz['x']:.1f}x larger{inv_note(f, get(f, 'B1'))}.")


def tuning(f):
    k = f.n.get("kern") or {}
    if not k.get("gain"):
        return None
    g0, g1 = (round(x, 1) + 0.0 for x in k["gain"])  # + 0.0: no "-0.0"
    return (f"Kernel tuning at the noise level: {k['best']} gained {g0:.1f} µs host p50 over {f.kernels['ours']} in "
            f"the first pass and {g1:.1f} µs when both graphs were timed again; the same graph timed twice in that "
            f"call moved by up to {k['max_spread']:.1f} µs.")


def polling(f):
    return [f"Polling pinned host memory instead of synchronising ({name}): {p:.1f} vs {base:.1f} µs host p50; the "
            "extra nodes in the graph cost more than the synchronise they replace."
            for name, p, base in (f.kernels or {}).get("poll", [])]


def threshold(f):
    if f.selection.get("F_reached_threshold", True):
        return None
    return f"No front point reached {f.cfg.front.f_min_acc:g} %: F is the most accurate point instead."


# ============================================================================= why F
def choice(f, role, key, thr):
    up, r, sel = f.n[key], get(f, role), f.selection[role]
    if r is None:
        return None
    s = f"{role} = {sel['variant']}: the fastest front point with a seed mean >= {thr:g} % ({sel['acc_mean']:.2f} %)"
    if up:
        s += (f"; the next such point, {up['v']} ({up['acc']:.2f} %), is {up['x']:.2f}x slower"
              + ("; their speedup intervals overlap, so this invocation does not tell the two apart in latency"
                 if up["overlap"] else "; their speedup intervals do not overlap"))
    return s + "."


def rule(f):
    r = f.n["rule"] or {}
    if r.get("same") is False:
        return (f"Applied to this report's front ({f.front_inv}), the rule picks F = {r['F']}, F85 = {r['F85']}: the "
                "shipped files follow an earlier front; run `python front.py` again.")
    return f"Applied to the front shown here ({f.front_inv}), the same rule picks the same two points." \
        if r.get("same") else None


def why_f(f):
    return [choice(f, "F", "f_up", f.cfg.front.f_min_acc), choice(f, "F85", "f85_up", f.cfg.front.f85_min_acc),
            rule(f)]


# ============================================================================= limits
def scope(f):
    return (f"One card ({', '.join(sorted(set(f.invs.gpu)))}), one software stack per invocation (torch "
            f"{', '.join(sorted(set(f.invs.torch)))}), batch 1 only; other batches rank the nets differently.")


def sources(f):
    out = []
    if f.mode == "fallback":
        out.append(f"The rows come from {len(f.invs)} invocations (the fallback stated on page 1); the ablation steps "
                   "and the baselines of an older invocation measure the nets of that time.")
    if not f.hash_check["ok"]:
        out.append(f"{f.hash_check['n_bad']} of {len(f.invs)} invocations carry another config hash than config.yaml's "
                   f"({f.hash_check['config']}): the configuration changed after they ran.")
    return out


def noise(f):
    cv, b1 = f.n["cv"], get(f, "B1")
    if cv["graph_max"] is None or cv["eager_min"] is None:
        return None
    return (f"Noise: CUDA-graph paths have a run-to-run CV of at most {cv['graph_max']:.1f} %, eager paths "
            f"{cv['eager_min']:.0f}-{cv['eager_max']:.0f} %"
            + (f"; B1's own interval is {b1.sp_lo:.2f}-{b1.sp_hi:.2f}, so every speedup inherits that width"
               if b1 is not None and pd.notna(b1.sp_lo) else "") + ".")


def shipped_files(f):
    out = []
    for role in ("F", "F85"):
        s, r = f.n["shipped"].get(role, {}), get(f, role)
        if s.get("after_front") and r is not None:
            out.append(f"The shipped {role} file ({s['created']}) was trained again (same shape, recipe, seed) after "
                       f"the front was benched: {r.acc:.2f} % through its timed path vs {f.selection[role]['acc']:.2f} % "
                       "for the benched seed; the front's numbers belong to the earlier file.")
        if "error" in s:
            out.append(f"The shipped {role} file could not be read: {s['error']}.")
    return out


def kernel_net(f):
    w = (f.kernels or {}).get("weights")
    return f"The per-kernel table's log says: '{w}'; it times that net, not necessarily F." if w else None


def seeds(f):
    fr = f.front
    if not len(fr):
        return None
    ns = sorted({int(x) for x in fr.n_seeds})
    return (f"{'-'.join(map(str, (ns[0], ns[-1]) if len(ns) > 1 else ns))} seeds per front point (std "
            f"{fr.acc_std.min():.2f}-{fr.acc_std.max():.2f} points): differences below that are not resolved.")


def limits(f):
    return [scope(f)] + sources(f) + [noise(f)] + shipped_files(f) + [kernel_net(f), seeds(f)]


# ============================================================================= next steps
def fuse_tail(f):
    k = f.n.get("kern")
    return (f"Fuse the last three layers and the head into one kernel: they take {k['tail3_ours']:.1f} of "
            f"{k['sum_ours']:.1f} µs in our per-kernel table, and one kernel instead of three removes two kernel "
            "boundaries.") if k else None


def host_share(f):
    gap, F = f.n["host_gap_us"].get("F"), get(f, "F")
    if not gap or F is None:
        return None
    share = gap[0] / (F.lat_p50_ms * 1000)
    return (f"F's host p50 is {us(F.lat_p50_ms)} µs, of which {gap[0]:.1f} µs ({share:.0%}) is launch and synchronise: "
            + ("the GPU work itself dominates, so fewer and fuller kernels pay more than a leaner launch."
               if share < 0.25 else "the launch is a large share; a persistent kernel fed through device memory "
               "would remove it."))


def beyond_f(f):
    fr, F = f.front, f.selection["F"]["variant"]
    if not len(fr) or F not in fr.index:
        return None
    top, p = fr.sort_values("acc_mean").iloc[-1], fr.loc[F]
    if top.name == F:
        return None
    return (f"Beyond F: the most accurate point measured, {top.name} ({top.acc_mean:.2f} %, p50 "
            f"{us(top.lat_p50_ms)} µs), costs {top.lat_p50_ms / p.lat_p50_ms:.2f}x F's front p50 for "
            f"{top.acc_mean - p.acc_mean:+.2f} points.")


def next_steps(f):
    out = [fuse_tail(f), host_share(f), beyond_f(f),
           "Lower precision (the DAWNBench record of section 7 runs INT8) is not measured here."]
    if f.mode == "fallback":
        out.append("Run `sh reproduce.sh bench` so that one invocation holds every row; this report then uses it "
                   "with no change.")
    return out


# ============================================================================= the section
def write(doc, f):
    doc.heading("8. Analysis")
    parts = (("What worked", lambda: [our_kernels(f), path_steps(f), compile_graphs(f), tta(f), distillation(f)]),
             ("What did not", lambda: [eager_tweaks(f), flops(f), tuning(f)] + polling(f) + [threshold(f)]),
             ("Why F", lambda: why_f(f)), ("Limits", lambda: limits(f)), ("Next steps", lambda: next_steps(f)))
    for title, items in parts:
        items = [x for x in items() if x]
        if items:
            doc.heading(title, 2)
            doc.bullets(items, size=8.7)
