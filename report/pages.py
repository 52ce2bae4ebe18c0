"""The PDF (report/rapport.pdf): sections in order, each a short function.  Sentences only
format facts.gather()'s numbers (f.n holds the derived ones); where an input is missing the
sentence is left out rather than guessed."""
import pandas as pd

import layout as L


def get(f, v):
    for t in (f.table, f.ablation):
        if v in t.index:
            return t.loc[v]
    return None


def inv_note(f, *rows):
    """' (a)' after numbers taken from tagged invocations, in the fallback only."""
    tags = sorted({r.tag for r in rows if r is not None})
    return f" ({', '.join(tags)})" if f.mode == "fallback" and tags else ""


def sp_phrase(r):
    return f"{r.sp:.1f}× B1's speed [95 % interval {r.sp_lo:.1f}–{r.sp_hi:.1f}]" if pd.notna(r.sp) else \
        "no speedup: its invocation has no B1"


# ============================================================================= front matter
def title(doc, f):
    doc.heading("CIFAR-10 at batch 1 on one GPU: latency study v2", 0)
    doc.para("Every number below is computed by `python report/build.py` from results/results.csv, config.yaml and "
             + ", ".join(f.sources) + "; the only typed figures are the published anchors of section 7, with "
             "their sources.", size=8.5)
    for i, s in enumerate(L.provenance(f)):
        doc.para(s, size=8.5, indent=0.2 if i else 0, color="#a04000" if f.mode == "fallback" else "black",
                 weight="bold" if f.mode == "fallback" and i == 0 else "normal")
    for s in L.hash_lines(f):
        doc.para(s, size=8.5, color="#a04000" if not f.hash_check["ok"] else "black")
    for s in L.env_lines(f):
        doc.para(s, size=8)


def summary(doc, f):
    doc.heading("Summary")
    out = []
    for role in ("F", "F85"):
        r, sel = get(f, role), f.selection[role]
        if r is None:
            continue
        c, p = f.n["f_cudnn" if role == "F" else "f85_cudnn"], L.front_point(f, role)
        s = (f"{role} = front point {sel['variant']} ({L.shape_text(f, sel['front'])}; TTA {sel['tta']}): "
             f"{r.acc:.2f} % on the test set through its timed path, seed mean {L.seed_stats(f, role, True)}; host "
             f"p50 {r.lat_p50_ms * 1000:.1f} µs on {r.gpu}{inv_note(f, r)}; {sp_phrase(r)}")
        if pd.isna(r.sp) and p is not None and pd.notna(p.speedup_p50):
            s += (f" (the front point in {p.invocation if f.mode == 'single' else f.invs.set_index('invocation').tag[p.invocation]}: "
                  f"{p.speedup_p50:.1f}× [{p.speedup_ci_low:.1f}–{p.speedup_ci_high:.1f}])")
        out.append(s + (f"; {c['a'] * 1000:.1f} µs through cuDNN + torch.compile on the same weights." if c else "."))
    ab, b1 = get(f, "AB94"), get(f, "B1")
    if ab is not None:
        out.append(f"AB94, the airbench94 net trained by our recipe: seed mean {L.seed_stats(f, 'AB94', True)} without "
                   f"TTA, p50 {ab.lat_p50_ms * 1000:.1f} µs{inv_note(f, ab)}.")
    if b1 is not None:
        out.append(f"B1, the speed reference ({b1.label}): {b1.acc:.2f} %, p50 {b1.lat_p50_ms:.2f} ms{inv_note(f, b1)}.")
    doc.bullets(out)


def method(doc, f):
    c, t = f.cfg, f.cfg.train.fastnet
    doc.heading("1. Method")
    doc.bullets([
        f"Benchmark: every variant built once, then interleaved runs (run 1 of every variant, then run 2, ...) of "
        f"{c.bench.warmup} untimed and the per-run timed batch-1 calls listed above, input already on the GPU. Host "
        "p50 = median of the run medians of the host clock between two torch.cuda.synchronize(); GPU p50 from CUDA "
        "events; pipelined = back-to-back CUDA-graph replays / N. Speedup p50 = B1's p50 / the variant's, B1 of the "
        "same invocation, with a bootstrap 95 % interval over runs.",
        "Accuracy: all test images through each variant's own timed path (the object that is timed). A front point "
        f"is one shape x one TTA mode ({', '.join(c.front.tta)}); its accuracy is the mean over seeds "
        f"{list(c.front.seeds)}, each seed's checkpoint evaluated through that path.",
        f"Front recipe (train.fastnet): {t.epochs} epochs, batch {t.batch_size}, SGD Nesterov lr {t.lr:g} momentum "
        f"{t.momentum:g}, weight decay {t.weight_decay:g}, label smoothing {t.label_smoothing:g}, flip "
        f"{t.flip}, translate {t.pad} px, lookahead every {t.lookahead_every} steps"
        + (", trained on train + validation (fixed schedule, last epoch kept)" if t.train_on_val else "") + ".",
        f"Selection (front.py): F = the fastest point with seed mean >= {c.front.f_min_acc:g} %, F85 = the fastest "
        f">= {c.front.f85_min_acc:g} %; the test set chose nothing before this rule ran once.",
    ], size=8.7)


# ============================================================================= results
def results(doc, f, figs):
    doc.heading("2. Results table")
    doc.table(L.MAIN_HEAD, L.main_rows(f))
    for s in L.footnotes(f):
        doc.para(s, size=7.5, color="#333333")
    doc.image(figs["latency"], caption="Figure 1. Host p50 per table variant (log scale) with the speedup vs B1 of "
              "the same invocation and its 95 % interval.", width=6.2)


def ablation(doc, f):
    doc.heading("3. Ablation")
    doc.para("O2 with compile's default mode; F's inference path one step at a time on the same weights (× vs "
             "previous step = the previous row's p50 / this row's); F's and F85's weights through cuDNN + "
             "torch.compile instead of our kernels.", size=8.5)
    doc.table(L.ABL_HEAD, L.ablation_rows(f, 44))


def host_gpu(doc, f):
    doc.heading("4. Host vs GPU time per call")
    doc.para("Host p50: what a caller waits. GPU p50: CUDA events around the call. Pipelined: GPU time per call of "
             "back-to-back graph replays. Launch + host = 1 - GPU / host.", size=8.5)
    doc.table(L.HG_HEAD, L.host_gpu_rows(f), right=[False, True, True, True, True])
    gap = f.n["host_gap_us"]
    if gap:
        doc.para("; ".join(f"{v}: host − GPU {a:.1f} µs, GPU − pipelined {b:.1f} µs" for v, (a, b) in gap.items())
                 + ": the launch-and-synchronise cost per call that no kernel work removes.", size=8.5)


def front(doc, f, figs):
    if not len(f.front):
        doc.heading("5. The accuracy-latency front")
        doc.para("No invocation in results.csv holds front points: run `sh reproduce.sh front`.")
        return
    doc.heading("5. The accuracy-latency front")
    doc.image(figs["front"], caption=f"Figure 2. Seed-mean test accuracy (error bars: std over seeds) vs host p50 "
              f"(log), invocation {f.front_inv}; grey: Pareto front; rings: F and F85; orange: AB94; dotted: the "
              f"{f.cfg.front.f_min_acc:g} % and {f.cfg.front.f85_min_acc:g} % thresholds; left panel: baselines "
              "(triangles, one run each)" + (" from the invocations tagged" if f.mode == "fallback" else "") + ".")
    doc.para(front_paragraph(f), size=8.7)
    doc.table(L.FRONT_HEAD, L.front_rows(f))
    doc.para(L.selection_line(f), size=8.5)


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
        s.append(f"Flip TTA adds {t['dlat_med'] * 1000:.1f} µs p50 (median over {t['n']} shapes, "
                 f"{t['dlat_min'] * 1000:.1f}-{t['dlat_max'] * 1000:.1f}) for {t['dacc_med']:+.2f} points "
                 f"({t['dacc_min']:+.2f} to {t['dacc_max']:+.2f}).")
    fu = n["f_up"]
    if fu:
        s.append(f"F ({f.selection['F']['variant']}) is the fastest point at >= {f.cfg.front.f_min_acc:g} %; the next, "
                 f"{fu['v']}, is {fu['x']:.2f}x slower at {fu['acc']:.2f} %.")
    return " ".join(s)


def kernels(doc, f):
    k = f.kernels
    if not k or not k.get("cudnn") or not k.get("ours"):
        return
    doc.heading("6. Per-kernel time: cuDNN path vs our kernels")
    doc.para(f"From {k['path']}. " + L.kernel_caption(f), size=8.5)
    doc.table(L.KSUM_HEAD, L.kernel_summary_rows(f))
    doc.table(["#", f"cuDNN path ({k['cudnn']})", "µs", f"ours ({k['ours']})", "µs"], L.kernel_pair_rows(f))


def anchors(doc, f):
    doc.heading("7. Anchors")
    doc.para("Our rows beside published figures. The published ones are typed from their sources (listed below); "
             "they were measured on other hardware and timed differently (DAWNBench includes the copy from the host), "
             "so they place our numbers, they do not rank them.", size=8.5)
    rows = L.anchor_rows(f)
    doc.table(L.ANCHOR_HEAD[:5], [r[:5] for r in rows])
    doc.bullets([f"{r[0]}: {r[5]}. Source: {r[6]}." for r in rows], size=7.8)
