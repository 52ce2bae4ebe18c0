"""Section 7 of the PDF: what worked, what did not, why F, limits, next steps.  Prose, but every
number is one of facts.gather()'s; each bullet is a small function that returns None when its
inputs are missing, so nothing is guessed."""
import layout as L
from facts import GOALS, OPTION_DELTAS, rec_row, row


def us(ms):
    return f"{ms * 1000:.1f}"


# ============================================================================= what worked
def recipe(f):
    F, ab = L.front_point(f, "F"), L.front_point(f, "AB94")
    if F is None or ab is None:
        return None
    flip = f.front.loc["P_AB94_flip"] if "P_AB94_flip" in f.front.index else None
    with_tta = (f"{F.acc_mean:.2f} ± {F.acc_std:.2f} % with {F.tta} TTA" if F.tta != "none" else
                f"{flip.acc_mean:.2f} ± {flip.acc_std:.2f} % with flip TTA" if flip is not None else None)
    return (f"The recipe: the airbench94 net trained by our fastnet recipe reaches "
            f"{ab.acc_mean:.2f} ± {ab.acc_std:.2f} % without TTA" + (f" and {with_tta}" if with_tta else "")
            + f" (seed means, through the timed path) in {F.train_s:.1f} s of training"
            + (": F itself, no TTA needed." if F.tta == "none" else "."))


def fused_tta(f):
    g = f.tta_kernels.get("gains")
    if not g:
        return None
    return ("TTA fused into our kernels (the first layer reads each view, the head averages): "
            + "; ".join(f"{x['shape']} {x['old']:.1f} → {x['fused']:.1f} µs host p50 "
                        f"({x['fused'] - x['old']:+.1f} µs) against the same views through the old TTANet path"
                        for x in g)
            + f" ({f.tta_kernels['path']}, one pass each).")


def our_kernels(f):
    c, c85, k, fk = f.n["f_cudnn"], f.n["f85_cudnn"], f.n.get("kern"), f.n.get("f_kernels")
    if not c:
        return None
    s = (f"Our Triton kernels instead of cuDNN + torch.compile, same weights, one CUDA graph each, in {f.timing_src}: "
         f"F {us(c['b'])} vs {us(c['a'])} µs host p50 ({c['x']:.2f}×)"
         + (f"; F85 {us(c85['b'])} vs {us(c85['a'])} µs ({c85['x']:.2f}×)" if c85 else ""))
    if fk:
        s += f". F's path is {fk['n']} kernels, {fk['sum']:.1f} µs of kernel time ({fk['src']})"
    if k:
        where = "on F's weights" if f.kernels.get("of_f") else "on another shape"
        s += (f"; {where} cuDNN's path runs {k['n_cudnn']} kernels for {k['sum_cudnn']:.1f} µs against "
              f"our {k['n_ours']} for {k['sum_ours']:.1f} µs: conv, bias, activation and pooling in one kernel "
              "per layer")
    t = f.gpu_tests
    if t.get("f_kern") and not t.get("failed"):
        s += (f". {t['f_kern']} (tests/test_gpu.py on the {t['gpu']}, commit {t['commit']}: {t['passed']}; "
              f"{t['log']}" + (f"; {t['note']}" if t.get("note") else "") + ")")
    return s + "."


def tuned_tiles(f):
    """Tiles tuned per layer shape (kernel_paths logs): host p50 heuristic -> tuned, per path."""
    opts = [x for x in f.n.get("opts") or [] if x["heur"] is not None]
    if not opts:
        return None
    e = [x for x in opts if x["call"] == opts[-1]["call"]]  # the newest log with heuristic rows
    s = ("Tiles tuned per layer shape at build time and cached (tools/kernel_tune.py, results/kernels/tiles.json; "
         "a wider search than the heuristic: longer K steps, no split-K, whole-map tiles for a last layer whose "
         "tile then adds its share of the logits itself): "
         + "; ".join(f"{x['base']} {x['heur']:.1f} → {x['tuned']:.1f} µs host p50" for x in e)
         + f" ({e[0]['log']}, one call, interleaved runs).")
    w = [x for x in f.n["opts"] if "wide" in x]
    if w:
        spread = repeat_spread(f)
        s += (" The still wider search (kernel_tune.py --wide: 8 warps, 2 to 4 pipeline stages) against those tiles: "
              + "; ".join(f"{x['base']} {x['wide']:+.1f} µs" for x in w) + f" ({w[-1]['log']})"
              + (f"; within the {spread:.1f} µs that F's path moved between calls, so the tile cache stays as it was."
                 if spread is not None and all(abs(x["wide"]) < spread for x in w) else "."))
    return s


def path_steps(f):
    steps = sorted(f.n["steps"], key=lambda s: -s[2]["x"])[:3]
    if not steps:
        return None
    return (f"Along F's path ({f.timing_src}, F's weights without TTA), the largest steps: "
            + "; ".join(f"{b} '{rec_row(f, b).label}' {s['x']:.2f}× ({s['a'] * 1000:.0f} → {s['b'] * 1000:.0f} µs)"
                        for _, b, s in steps) + "."
            + (" Taking the host out of the loop (the CUDA graph) is the largest single step at batch 1."
               if steps[0][1] == "F_graph" else ""))


def compile_graphs(f):
    o2, o2d = rec_row(f, "O2"), rec_row(f, "O2d")
    if o2 is None:
        return None
    return (f"torch.compile with CUDA graphs (O2, reduce-overhead) on MobileNetV3: "
            f"{L.sp_text(o2.speedup_p50, o2.ci_low, o2.ci_high)} vs B1 in {f.timing_src}"
            + (f"; in the default mode (O2d, no graphs) {L.sp_text(o2d.speedup_p50, o2d.ci_low, o2d.ci_high)}"
               if o2d is not None else "") + ".")


# ============================================================================= what did not
def verdict(r):
    """What a speedup interval says against 1."""
    return "faster" if r.ci_low > 1 else "slower" if r.ci_high < 1 else "not told apart from B1"


def eager_tweaks(f):
    rows = [(v, rec_row(f, v)) for v in ("O1", "O3") if rec_row(f, v) is not None]
    if not rows:
        return None
    return (f"Changes to B1 that leave the host launching every kernel ({f.timing_src}): "
            + "; ".join(f"{v} ({r.label}) {L.sp_text(r.speedup_p50, r.ci_low, r.ci_high)}, {verdict(r)}"
                        for v, r in rows) + ". Precision and layout do not help while the host is the bottleneck.")


def fewer_kernels(f):
    """fuse_stem / fuse_pairs as measured: which option was slower and which was not, per shape."""
    opts = f.tta_kernels.get("options") or []
    if not opts:
        return None
    slower = [o for o in opts if o["d_host"] > 0]
    faster = [o for o in opts if o["d_host"] <= 0]
    s = ("Fewer kernels (fuse_stem, fuse_pairs; kernel_gpu.log, one pass each): slower in host p50 in "
         f"{len(slower)} of {len(opts)} cases, e.g. "
         + "; ".join(f"{o['shape']} {o['base']} {o['opt']} {o['d_host']:+.1f} µs" for o in slower[:3]) + ".")
    if faster:
        spread = (f.n.get("kern") or {}).get("spread")
        s += (" Not slower: " + "; ".join(f"{o['shape']} {o['base']} {o['opt']} {o['d_host']:+.1f} µs host, "
                                           f"{o['d_pipe']:+.1f} µs pipelined" for o in faster)
              + " — one pass each" + (f" (the same kernel graph timed twice in {f.kernels['path']} moved by up to "
                                      f"{spread:.1f} µs)" if spread is not None else "")
              + ".")
    e = [x for x in f.n.get("opts", []) if any(o in x for o in OPTION_DELTAS)]
    if e:
        s += (" On F's and F85's paths with tuned tiles (tools/kernel_paths.py, host p50 against tuned tiles alone): "
              + "; ".join(f"{x['base']} ({x['call']})" + "".join(f" {o} {x[o]:+.1f} µs" for o in OPTION_DELTAS if o in x)
                          for x in e)
              + ". PDL, the fused stem and the paired layers stay off in F's path (config: kernel_pdl, "
                "kernel_fuse_stem, kernel_fuse_pairs).")
    return s


def goal(f):
    g = f.n["goal"]
    if not g:
        return None
    if g["pct"] <= 0:
        return None  # met: said in What worked
    return (f"The goal of {GOALS['lat_ms']['source']}, F at <= {g['goal']:.3f} ms, is missed: F's host p50 is "
            f"{g['p50']:.4f} ms, {g['pct']:.0f} % above it.")


def goal_met(f):
    g = f.n["goal"]
    if not g or g["pct"] > 0:
        return None
    return (f"The goal of {GOALS['lat_ms']['source']}, F at <= {g['goal']:.3f} ms host p50, is met: "
            f"{g['p50']:.4f} ms ({-g['pct']:.0f} % under) in {f.timing_src}, with accuracy through that same path.")


def cut_benches(f):
    rec = f.recovered
    if not rec.get("used"):
        return None
    other = [x for x in rec["invs"] if x != rec["used"]]
    return (f"{1 + len(other)} whole-table benches were cut before writing rows ({', '.join(other + [rec['used']])}): "
            "no invocation holds every row with accuracy through the path and GPU columns (see page 1).")


def halfwidth(f):
    return L.halfwidth_line(f)


def flops(f):
    bb, pr = f.n["b2_b1"], f.n["b2_b1_params"]
    if not bb:
        return None
    return (f"Light in FLOPs is not light at batch 1: ResNet-18 (B2) is {bb['x']:.1f}× faster than MobileNetV3-small "
            f"(B1) in {f.timing_src}" + (f" while {pr:.1f}× larger in parameters" if pr else "") + ".")


def distillation(f):
    d = f.n["d1_o1_acc"]
    if d is None:
        return None
    return (f"Distillation from ResNet-18 (D1): {d:+.2f} points of FP32 test accuracy over the same student trained "
            "alone: nothing measurable.")


# ============================================================================= why F
def choice(f, role, key, thr):
    up, r, sel = f.n[key], row(f, role), f.selection[role]
    if r is None:
        return None
    s = f"{role} = {sel['variant']}: the fastest front point with a seed mean >= {thr:g} % ({sel['acc_mean']:.2f} %)"
    if up:
        s += (f"; the next such point, {up['v']} ({up['acc']:.2f} %), has {up['x']:.2f}× its p50 here"
              + ("; their speedup intervals overlap (B1's eager noise), so the two are ordered by their p50s alone"
                 if up["overlap"] else "; their speedup intervals do not overlap"))
    return s + "."


def rule(f):
    r = f.n["rule"] or {}
    if r.get("same") is False:
        return L.rule_differs(f)
    return "The report re-applies front.py's rule to the same rows and gets the same two points." \
        if r.get("same") else None


def why_f(f):
    return [choice(f, "F", "f_up", f.cfg.front.f_min_acc), choice(f, "F85", "f85_up", f.cfg.front.f85_min_acc),
            rule(f)]


# ============================================================================= limits
def scope(f):
    return (f"One card ({', '.join(sorted(set(f.invs.gpu)))}), one software stack (torch "
            f"{', '.join(sorted(set(f.invs.torch)))}), batch 1 only; other batches rank the nets differently.")


def noise(f):
    sp = f.n["b1_spread"]
    if not sp:
        return None
    return ("Eager noise: B1's speedup interval half-width is " + ", ".join(f"±{h:.1f} % in {i}" for i, h in sp)
            + "; a B1 p50 that moves between invocations moves every speedup with it, so speedups are compared "
            "within one invocation only.")


def recovered_limits(f):
    rec = f.recovered
    if not rec.get("used"):
        return None
    return (f"The cut bench {rec['used']} has {rec['n_full']} of {rec['planned']} runs, host p50 only; its baselines "
            "carry the FP32 test accuracy of their checkpoints, not an accuracy through the timed path.")


def f_repeats(f):
    """F tuned timed more than once on one file: the logs made while F carried flip TTA (its
    earlier file), and the later logs (today's F)."""
    opts = [x for x in f.n.get("opts", []) if x["base"] == "F"]
    groups = [("F then AB94 + flip", [x for x in opts if x["f_then"]]), ("today's F", [x for x in opts if not x["f_then"]])]
    return [(why, [(x["call"], x["tuned"]) for x in g]) for why, g in groups if len(g) > 1]


def repeat_spread(f):
    """The largest move of F tuned between calls on one file (µs), None without repeats."""
    return max((max(t for _, t in r) - min(t for _, t in r) for _, r in f_repeats(f)), default=None)


def kernel_net(f):
    if f.kernels.get("of_f"):
        if not f.kernel_options:
            return None
        reps, spread = f_repeats(f), repeat_spread(f)
        return ("The per-kernel tables and the tile/launch options are one pass per path (one call)"
                + "".join(f"; the same path in {len(r)} calls ({why}): F tuned "
                          + " and ".join(f"{t:.1f} µs ({c})" for c, t in r) for why, r in reps)
                + (f": differences up to {spread:.1f} µs between calls are not read." if spread is not None
                   else ": differences of a few µs are not read."))
    t = f.tta_kernels
    if not t.get("rows"):
        return None
    weights = " with random weights" if t.get("random") else ""
    return (f"The per-kernel table of F's shape is one pass per path{weights}; the cuDNN per-kernel profile is of "
            "another shape, not F's.")


def seeds(f):
    fr = f.front
    if not len(fr):
        return None
    ns = sorted({int(x) for x in fr.n_seeds})
    return (f"{'-'.join(map(str, (ns[0], ns[-1]) if len(ns) > 1 else ns))} seeds per front point (std "
            f"{fr.acc_std.min():.2f}-{fr.acc_std.max():.2f} points): differences below that are not resolved.")


def on_test(f):
    return ("F and F85 are chosen by front.py's threshold rule on seed-mean TEST accuracy, as the study's goals are "
            "stated; the recipe and its schedule were chosen on the 5k validation split (config.yaml, train.fastnet). "
            f"F clears {f.cfg.front.f_min_acc:g} % by {f.selection['F']['acc_mean'] - f.cfg.front.f_min_acc:.2f} "
            "points, inside one seed's spread.")


def limits(f):
    return [scope(f), on_test(f), noise(f), recovered_limits(f), kernel_net(f), seeds(f)]


# ============================================================================= next steps
def rerun(f):
    if f.mode == "single":
        return None
    return ("Run `sh reproduce.sh bench` to its end on one machine so that one invocation holds every row with "
            "accuracy and GPU columns (issue 11); this report then "
            "uses it with no change.")


def pairs_with_tta(f):
    """fuse_pairs on the fused-TTA paths: its host p50 deltas, when every one of them is negative."""
    d = [o for o in f.tta_kernels.get("options", []) if o["opt"] == "+pairs" and "fused" in o["base"]]
    return d if d and all(o["d_host"] < 0 for o in d) else None


def fuse_tail(f):
    k, pairs = f.n.get("f_kernels"), pairs_with_tta(f)
    if not k:
        return None
    s = f"Fuse the last three layers and the head: they take {k['tail3']:.1f} of {k['sum']:.1f} µs of F's kernel time."
    mine = [x for x in f.n.get("opts", []) if x["base"] == "F" and not x["f_then"] and "+pairs" in x]
    if mine:  # fuse_pairs measured on today's F itself
        n = mine[-1]["kernels"]
        s += (" Pairing layers in persistent kernels with a grid barrier (fuse_pairs, "
              f"{n.get('+pairs')} kernels instead of {n.get('tuned')}) on F's own path: "
              + ", ".join(f"{x['+pairs']:+.1f} µs host p50 ({x['call']})" for x in mine))
        if all(x["+pairs"] > 0 for x in mine):
            s += ("; not faster: the barrier costs what the saved launches gain, so a cheaper synchronisation "
                  "(thread-block clusters over the small late layers) is the next thing to try.")
        else:
            s += "; to bench as an F variant in a full invocation."
        return s
    return s + (" fuse_pairs, lower in host p50 on every fused-TTA path it ran on ("
                + ", ".join(f"{o['d_host']:+.1f} µs" for o in pairs) + ", one pass), is the first to bench as "
                "an F variant in a full invocation." if pairs else "")


def host_share(f):
    gap, F = f.n["host_gap_us"].get("F"), row(f, "F")
    if not gap or F is None:
        return None
    share = gap[0] / (F.lat_p50_ms * 1000)
    return (f"F's host p50 is {us(F.lat_p50_ms)} µs, of which {gap[0]:.1f} µs ({share:.0%}) is launch and "
            "synchronise: "
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
            f"{us(top.lat_p50_ms)} µs), costs {top.lat_p50_ms / p.lat_p50_ms:.2f}× F's p50 for "
            f"{top.acc_mean - p.acc_mean:+.2f} points.")


def next_steps(f):
    return [rerun(f), fuse_tail(f), host_share(f), beyond_f(f),
            "Lower precision (the DAWNBench record among the anchors runs INT8) is not measured here."]


# ============================================================================= the section
def write(doc, f):
    doc.section("Analysis")
    parts = (("What worked", lambda: [goal_met(f), recipe(f), our_kernels(f), tuned_tiles(f), fused_tta(f),
                                      path_steps(f), compile_graphs(f)]),
             ("What did not", lambda: [fewer_kernels(f), goal(f), cut_benches(f), halfwidth(f), eager_tweaks(f),
                                       flops(f), distillation(f)]),
             ("Why F", lambda: why_f(f)), ("Limits", lambda: limits(f)), ("Next steps", lambda: next_steps(f)))
    for title, items in parts:
        items = [x for x in items() if x]
        if items:
            doc.heading(title, 2)
            doc.bullets(items, size=8.7)
