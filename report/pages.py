"""The PDF (report/rapport.pdf): sections in order, each a short function.  Sentences only
format facts.gather()'s numbers (f.n holds the derived ones); where an input is missing the
sentence is left out rather than guessed."""
import pandas as pd

import layout as L
from facts import row


def sp_phrase(r):
    return f"{r.sp:.1f}× B1's speed [95 % interval {r.sp_lo:.1f}–{r.sp_hi:.1f}]" if pd.notna(r.sp) else \
        "no speedup: its invocation has no B1"


# ============================================================================= front matter
def title(doc, f):
    doc.heading("CIFAR-10 at batch 1 on one GPU: latency study v2", 0)
    doc.para("Every number below is computed by `python report/build.py` from results/results.csv, config.yaml and "
             + ", ".join(f.sources) + "; the only typed figures are the published anchors (section 'Anchors') and the "
             "study's two goals, each with its source.", size=8.5)
    doc.heading("Where the numbers come from", 2)
    for i, s in enumerate(L.provenance(f)):
        doc.para(s, size=8.5, color="#a04000" if f.mode != "single" and i == 0 else "black",
                 weight="bold" if f.mode != "single" and i == 0 else "normal")
    for s in L.hash_lines(f):
        doc.para(s, size=8.5, color="#a04000" if not f.hash_check["ok"] else "black")
    for s in L.env_lines(f):
        doc.para(s, size=8)


def summary(doc, f):
    doc.heading("Summary")
    out = []
    for role in ("F", "F85"):
        r, sel = row(f, role), f.selection[role]
        if r is None:
            continue
        out.append(f"{role} = front point {sel['variant']} ({L.shape_text(f, sel['front'])}; TTA {sel['tta']}): "
                   f"{r.acc:.2f} % on the test set through its timed path, seed mean {L.seed_stats(f, role, True)}; "
                   f"host p50 {r.lat_p50_ms * 1000:.1f} µs on {r.gpu}; {sp_phrase(r)}; trained in "
                   f"{r.train_time_s:.1f} s.")
    g = f.n["goal"]
    if g:
        verdict = (f"is met: {g['p50'] * 1000:.1f} µs, {-g['pct']:.0f} % under it" if g["pct"] <= 0 else
                   f"is missed by {g['pct']:.0f} % ({g['p50'] * 1000:.1f} µs)")
        out.append(f"The {g['goal'] * 1000:.0f} µs goal for F's host p50 {verdict}"
                   + (f"; F85 ({g['f85_p50'] * 1000:.1f} µs) is under it too." if g["f85_p50"] and g["f85_p50"] < g["goal"]
                      else "."))
    c = f.n["f_cudnn"]
    if c:
        out.append(f"F's weights through our Triton kernels vs cuDNN + torch.compile, in {f.timing_src}: "
                   f"{c['b'] * 1000:.1f} vs {c['a'] * 1000:.1f} µs host p50 ({c['x']:.2f}×).")
    ab, b1 = row(f, "AB94"), row(f, "B1")
    if ab is not None:
        out.append(f"AB94, the airbench94 net trained by our recipe: seed mean {L.seed_stats(f, 'AB94', True)} without "
                   f"TTA, p50 {ab.lat_p50_ms * 1000:.1f} µs.")
    if b1 is not None:
        cut = f.rec.loc["B1"].p50_ms if f.rec is not None and "B1" in f.rec.index else None
        out.append(f"B1, the speed reference ({b1.label}): {b1.acc:.2f} %, p50 {b1.lat_p50_ms:.2f} ms"
                   + (f" in the front invocation, {cut:.2f} ms in the recovered cut bench." if cut else "."))
    doc.bullets(out)


def method(doc, f):
    c, t = f.cfg, f.cfg.train.fastnet
    doc.section("Method")
    doc.bullets([
        f"Benchmark: every variant built once, then interleaved runs (run 1 of every variant, then run 2, ...) of "
        f"{c.bench.warmup} untimed and {c.bench.iters} timed batch-1 calls, input already on the GPU. Host p50 = "
        "median of the run medians of the host clock between two torch.cuda.synchronize(); GPU p50 from CUDA events; "
        "pipelined = back-to-back CUDA-graph replays / N. Speedup p50 = B1's p50 / the variant's, B1 of the same "
        "invocation, with a bootstrap 95 % interval over runs.",
        "Accuracy: all test images through each variant's own timed path (the object that is timed). A front point "
        f"is one shape x one TTA mode ({', '.join(c.front.tta)}); its accuracy is the mean over seeds "
        f"{list(c.front.seeds)}, each seed's checkpoint evaluated through that path.",
    ] + ([
        "A cut bench (the lent machine went back before it wrote its rows) keeps one log line per finished timed run: "
        "tools/bench_log.py recovers the host p50 and the speedup interval from those lines, nothing else.",
    ] if f.recovered.get("used") else []) + [
        f"Front recipe (train.fastnet): {t.epochs} epochs, batch {t.batch_size}, SGD Nesterov lr {t.lr:g} momentum "
        f"{t.momentum:g}, weight decay {t.weight_decay:g}, label smoothing {t.label_smoothing:g}, flip "
        f"{t.flip}, translate {t.pad} px, lookahead every {t.lookahead_every} steps"
        + (", trained on train + validation (fixed schedule, last epoch kept)" if t.train_on_val else "") + ".",
        f"Selection (front.py): F = the fastest point with seed mean >= {c.front.f_min_acc:g} %, F85 = the fastest "
        f">= {c.front.f85_min_acc:g} %; the test set chose nothing before this rule ran once.",
    ], size=8.7)


# ============================================================================= results
def results(doc, f, figs=None):
    doc.section(f"Complete rows (invocation {f.front_inv})")
    doc.para("Accuracy through the timed path; seed mean over the front point's seeds; host, GPU and pipelined p50 "
             "(ms); speedup vs this invocation's B1; training time of the timed (first-seed) file.", size=8.5)
    doc.table(L.MAIN_HEAD, L.main_rows(f))
    if len(f.ablation):
        doc.table(L.ABL_HEAD, L.ablation_rows(f))
    gap = f.n["host_gap_us"]
    if gap:
        doc.para("Host vs GPU: " + "; ".join(f"{v}: host − GPU {a:.1f} µs, GPU − pipelined {b:.1f} µs"
                                            for v, (a, b) in gap.items())
                 + " — the launch-and-synchronise cost per call that no kernel work removes.", size=8.5)
    if figs and "host_gpu" in figs:
        doc.image(figs["host_gpu"], caption=f"Figure 1. Host vs GPU time per call of every complete row, invocation "
                  f"{f.front_inv} (log scale): host p50, GPU p50 from CUDA events, pipelined time for graph paths; "
                  "speedup p50 vs B1 with its 95 % interval.", width=6.2)
    b1 = row(f, "B1")
    if b1 is not None and pd.notna(b1.hw):
        doc.para(f"B1 runs eagerly: its own interval here is ±{b1.hw:.0f} %, so every speedup of this invocation "
                 "inherits that width; compare the fast paths by their p50s.", size=8.5)


def recovered(doc, f, figs):
    if f.rec is None or not len(f.rec):
        return
    doc.section("Every variant in one invocation: timing only, recovered from the log of a cut bench")
    for s in L.rec_notes(f):
        doc.para(s, size=8)
    doc.table(L.REC_HEAD, L.rec_rows(f, 34))
    hw = L.halfwidth_line(f)
    if hw:
        doc.para(hw, size=8.5, weight="bold")
    if "latency" in figs:
        doc.image(figs["latency"], caption=f"Figure 1. Host p50 of the table variants in the cut bench "
                  f"{f.recovered['used']} (log scale), with the speedup vs its B1 and the 95 % interval; timing "
                  "recovered from its log.", width=6.2)


def front(doc, f, figs):
    doc.section("The accuracy-latency front")
    if not len(f.front):
        doc.para("The front invocation holds no front points: run `sh reproduce.sh front`.")
        return
    doc.image(figs["front"], caption=front_caption(f))
    doc.para(front_paragraph(f), size=8.7)
    doc.table(L.FRONT_HEAD, L.front_rows(f))
    doc.para(L.selection_line(f), size=8.5)


def front_caption(f):
    s = (f"Figure 2. Seed-mean test accuracy through the timed path (error bars: std over seeds) vs host p50 (log), "
         f"invocation {f.front_inv}; grey: Pareto front; rings: F and F85; orange: AB94; dotted: the "
         f"{f.cfg.front.f_min_acc:g} % and {f.cfg.front.f85_min_acc:g} % thresholds. Left panel: filled triangle = "
         "B1 in the same invocation")
    if f.rec is not None and len(f.rec):
        s += (f"; open triangles = B1, B2, O2, D1 timed together in the cut bench {f.recovered['used']}, plotted at the "
              "FP32 test accuracy of their checkpoints (no accuracy through the path exists for them): they are "
              "placed against each other, not against the front's latencies (B1 itself moved between the two "
              "invocations)")
    return s + "."


def front_paragraph(f):
    n, fr = f.n, f.front
    s = [f"{len(fr)} points ({fr.front.nunique()} shapes x {fr.tta.nunique()} TTA modes); the Pareto front holds "
         f"{', '.join(n['pareto'])}."]
    c = n["cluster"]
    if c and len(c["names"]) > 1:
        s.append(f"The {len(c['names'])} fastest shapes without TTA ({', '.join(c['names'])}) lie within "
                 f"{(c['within'] - 1) * 100:.0f} % of each other, {c['lo'] * 1000:.1f}-{c['hi'] * 1000:.1f} µs, while "
                 f"their accuracy spans {c['acc_lo']:.2f}-{c['acc_hi']:.2f} %"
                 + (": at equal depth and this size, width costs almost no latency." if c["same_depth"] else "."))
    t = n["tta"]
    if t:
        s.append(f"Flip TTA fused into our kernels adds {t['dlat_med'] * 1000:.1f} µs p50 (median over {t['n']} "
                 f"shapes, {t['dlat_min'] * 1000:.1f}-{t['dlat_max'] * 1000:.1f}) for {t['dacc_med']:+.2f} points "
                 f"({t['dacc_min']:+.2f} to {t['dacc_max']:+.2f}).")
    return " ".join(s)


def kernels(doc, f):
    t, k = f.tta_kernels, f.kernels
    if not t.get("rows") and not (k.get("cudnn") and k.get("ours")) and not f.kernel_options:
        return
    doc.section("Per-kernel time")
    if k.get("cudnn") and k.get("ours"):
        doc.heading("F's weights: our kernels vs cuDNN, per kernel" if k.get("of_f")
                    else "cuDNN vs our kernels, per kernel, on another shape", 2)
        doc.para(L.cudnn_caption(f), size=8.3)
        doc.table(L.KSUM_HEAD, L.ksum_rows(k["paths"], list(k["paths"])))
        doc.table(["#", f"cuDNN path ({k['cudnn']})", "µs", f"ours ({k['ours']})", "µs"], L.kernel_pair_rows(f))
    c = f.n["f_cudnn"]
    if c:
        doc.para(f"The same pair in the complete rows ({f.timing_src}, 10 interleaved runs): F_kern {c['b'] * 1000:.1f} µs "
                 f"vs F_cudnn {c['a'] * 1000:.1f} µs host p50 ({c['x']:.2f}×)"
                 + (f"; F85 {f.n['f85_cudnn']['b'] * 1000:.1f} vs F85_cudnn {f.n['f85_cudnn']['a'] * 1000:.1f} µs "
                    f"({f.n['f85_cudnn']['x']:.2f}×)." if f.n["f85_cudnn"] else "."), size=8.5)
    if f.kernel_options:
        doc.heading("Tiles and launch options on F's path (tools/kernel_paths.py)", 2)
        doc.para(L.options_caption(), size=8.3)
        last = f.kernel_options[-1]["lease"]
        doc.para(f"The newest lease ({last}); every call's rows are in results/v2_tables.md.", size=8.3)
        doc.table(L.OPTS_HEAD, [r for r, o in zip(L.kernel_option_rows(f), f.kernel_options) if o["lease"] == last])
    if t.get("rows"):
        doc.heading("Flip TTA fused into the kernels; fewer kernels (an earlier build)", 2)
        doc.para(L.tta_kernel_caption(f) + " Earlier build: heuristic tiles, the global-max head.", size=8.3)
        doc.table(L.KSUM_HEAD, L.ksum_rows(t["paths"], t["rows"]))
        doc.table(L.f_kernel_head(f), L.f_kernel_rows(f, 18))
        doc.para("Fewer-kernel options (fuse_stem '+stem', fuse_pairs '+pairs') against the same path without them, "
                 "option minus base in µs (negative = faster), one pass each in the same call:", size=8.3)
        doc.table(L.OPT_HEAD, L.option_rows(f))


def anchors(doc, f):
    doc.section("Anchors")
    doc.para("Our rows beside published figures. The published ones are typed from their sources (listed below); "
             "they were measured on other hardware and timed differently (DAWNBench includes the copy from the host), "
             "so they place our numbers, they do not rank them.", size=8.5)
    rows = L.anchor_rows(f)
    doc.table(L.ANCHOR_HEAD[:5], [r[:5] for r in rows])
    doc.bullets([f"{r[0]}: {r[5]}. Source: {r[6]}." for r in rows], size=7.8)
