"""The PDF's text, part by part, following the plan (J5-13 to J5-16): introduction, method,
results, conclusion and the provenance appendix.  Every number comes from facts.py."""
import facts
from config import config_hash
from facts import ms, num
from inputs import front_rows, table_variants

LABEL_WRAP = {1: 22}  # the Variant column of the latency tables, wrapped to keep the font readable


def introduction(doc, s):
    g, fr = s.cfg.goals, s.cfg.front
    doc.heading("1. Introduction")
    doc.para("This report describes a CIFAR-10 classifier that answers one image at a time on a GPU: a uint8 "
             "32×32 RGB image in host memory goes in, its class id comes back to the host. The kit trains the "
             "models, evaluates each through exactly the inference path that is timed, benchmarks every variant "
             "and builds this report from the measurements.")
    doc.para("Objectives", size=9.5)
    doc.bullets([f"Test accuracy of at least {num(g.f85_acc_low)} % on the CIFAR-10 test set.",
                 "The lowest batch-1 latency, measured end to end, with a reproducible protocol and its spread."])
    doc.para("Constraints", size=9.5)
    doc.bullets([f"CIFAR-10 only: its training images ({s.cfg.data.val_size:,} of them held out as a validation "
                 "split) and its test images.",
                 "One GPU, batch 1: one image per call, no batching across requests."])
    doc.para("Goals (config.yaml, goals)", size=9.5)
    doc.bullets([f"F's end-to-end p50 ≤ {ms(g.f_e2e_ms)} ms; F85's ≤ {ms(g.f85_e2e_ms)} ms.",
                 f"The lower end of the 95 % interval of the mean test accuracy over the final seeds: ≥ "
                 f"{num(g.f_acc_low)} % for F, ≥ {num(g.f85_acc_low)} % for F85.",
                 f"F's training recipe (whitening, training and final evaluation) in ≤ {num(g.recipe_s)} s.",
                 f"F is the fastest front point at ≥ {num(fr.f_min_acc)} % validation accuracy, F85 the fastest at "
                 f"≥ {num(fr.f85_min_acc)} % (front.f_min_acc, front.f85_min_acc)."])


def method_approach(doc, s):
    d, fn = s.cfg.distill, s.cfg.models.fastnet
    doc.heading("2. Method")
    doc.heading("Approach: baseline, optimisation, measurement", 2)
    doc.para("Each variant is a checkpoint plus an inference path (config.yaml, variants); one object "
             "(inference.Predictor) serves the benchmark, the accuracy evaluation and users alike, so the accuracy "
             "shown for a variant is the accuracy of what is timed. The study goes in steps:")
    doc.bullets([f"Baselines: B1, {s.rows.at['B1', 'label']}, is the speed reference; B2 is a ResNet-18 with a "
                 "CIFAR stem.",
                 "Optimisations of B1's path, one at a time: O1 (FP16), O2 (FP16 + torch.compile, reduce-overhead), "
                 "O3 (channels_last).",
                 f"Distillation: D1 is B1's architecture trained from B2's soft targets (temperature "
                 f"{d.temperature:g}, alpha {d.alpha:g}).",
                 f"FastNet: a small network (stem: {fn.stem}, {fn.stem_kernel}×{fn.stem_kernel}, {fn.stem_width} "
                 f"channels; activation {fn.act}; order {fn.order}) in the front shapes below, each with the "
                 f"test-time augmentation (TTA) modes {', '.join(s.cfg.front.tta)}.",
                 "F's inference path built one change at a time (the ablation F_fp32 … F), then F's end-to-end "
                 "input/output alternatives."])
    doc.table(["Shape", "Widths", "Convs per block", "Convs (with stem)"],
              [[n, str(list(sh.widths)), str(list(sh.depths)), str(1 + sum(sh.depths))]
               for n, sh in s.cfg.front.shapes.items()],
              note="The front shapes (config.yaml, front.shapes); every shape is trained with train.fastnet's recipe.")


def method_protocol(doc, s):
    b, f = s.cfg.bench, s.rows.loc["F"]
    here, rows = config_hash(s.cfg), sorted(set(s.rows["config_hash"]))
    same = "the hash of config.yaml as it is now" if rows == [here] else f"not config.yaml's hash now ({here})"
    doc.heading("Benchmark protocol", 2)
    doc.bullets([
        "Every variant is built once (weights loaded, BatchNorm folded, compiled, CUDA graphs captured), "
        "outside the timed region.",
        f"{f['runs']:.0f} short runs, interleaved: run 1 of every variant, then run 2, … so slow drifts of the "
        "card hit all variants alike.",
        f"Per run and variant: {b.e2e_iters} timed end-to-end calls, each one started after the previous one has "
        "ended on the GPU (a synchronise, or for a kernel launched ahead or serving until it waits for the "
        "call's image), "
        f"outside the timed region; then {b.warmup} untimed warm-up calls and {f['iters']:.0f} timed device-side "
        "calls, each between two synchronisations; the GPU time of such calls from CUDA events; for CUDA-graph "
        "paths, back-to-back replays divided by their count (pipelined). The garbage collector is off while timing.",
        "Statistics: p50 = the median of the run medians (one slow run cannot move it); p95 and p99 of all calls "
        "pooled; mean and standard deviation of the run means; speedup = B1's e2e p50 / the variant's, B1 of the "
        "same invocation, with a bootstrap 95 % interval over runs.",
        f"All rows come from one invocation, {s.invocation}, on one GPU; they carry config hash "
        f"{', '.join(rows)}, {same}."])
    doc.heading("End-to-end latency", 2)
    doc.para("The headline latency runs from a uint8 32×32×3 image in host memory to the class id as a Python "
             "integer on the host, one image per call, a different test image every call. It includes moving the "
             f"image to the GPU and the answer back. F's path ({f['io']}): "
             + ("its first kernel reads the image from mapped host memory and the host polls an answer word "
                "in pinned memory. " if f["io"].startswith("mapped+poll") else
                "see the I/O alternatives in section 3. ")
             + ("Each call also launches the next call's CUDA graph, whose first kernel waits on a flag word "
                "in host memory until that call's image is there, so the launch is not on the critical path. "
                if f["io"].endswith("+ahead") else "")
             + (f"F85's path ({s.rows.at['F85', 'io']}) is one kernel launched once that serves every call: it "
                "waits on a flag word in host memory for the call's number, reads the image, answers, and waits "
                "for the next. " if "F85" in s.rows.index and facts.serving(s.rows.at["F85", "io"]) else "")
             + "Eager paths copy the image and synchronise. The device-side latency (input already on the GPU) "
               "and the GPU time explain where the end-to-end time goes.")


def method_choice(doc, s):
    doc.heading("How F and F85 were chosen", 2)
    sel, fr = s.selection, s.cfg.front
    if sel is None:
        doc.para("No results/front_selection.json was found: the choice of F and F85 is not documented here; "
                 "the front points are listed in section 3.")
    else:
        c = sel["chosen"]
        doc.para(f"front.py applied a fixed rule to the front points, on the {sel['split']} split: {sel['rule']} "
                 f"(f_min_acc = {num(sel['f_min_acc'])} %, f85_min_acc = {num(sel['f85_min_acc'])} %). "
                 f"It chose F = {c['F']['variant']} ({num(c['F']['acc_mean'])} % validation seed mean, e2e p50 "
                 f"{ms(c['F']['e2e_p50_ms'])} ms) and F85 = {c['F85']['variant']} ({num(c['F85']['acc_mean'])} %, "
                 f"{ms(c['F85']['e2e_p50_ms'])} ms) from invocation {sel['invocation']}, over "
                 f"{len(sel['candidates'])} candidates"
                 + ("." if sel.get("F_reached_threshold", True) else
                    "; no point reached f_min_acc, so F is the most accurate point."))
        doc.para(rule_here_text(s))
    doc.para(f"Each front shape was trained once per front seed ({', '.join(map(str, fr.seeds))}) on the training "
             "split without the validation images, and every seed was scored through the timed path on the "
             f"validation split. The chosen shapes were then trained on all training images for each final seed "
             f"({', '.join(map(str, s.cfg.final.seeds))}); the first seed's file is shipped, whatever it scores.")
    doc.para("In this run the test set chose nothing: it is read once per final model, to report its accuracy, "
             "and decides only the test accuracies shown and the accuracy goals' verdicts. The front's shapes and "
             "TTA modes, the recipe and the thresholds were fixed before the run; they come from earlier rounds of "
             "the study, whose authors had seen test accuracies too (results/recipe/ holds the validation "
             "exploration that set the recipe, test columns beside).")
    t = s.cfg.train.fastnet
    doc.heading("Training time", 2)
    doc.para(f"Timed like airbench: the whitening initialisation, the {t.epochs} epochs (batch {t.batch_size}) and "
             "the final evaluation, with CUDA events (recipe_time_s). Compilation and cuDNN's autotuning run "
             "before, on a copy of the state, and are reported apart (compile_s).")


def rule_here_text(s):
    picks, why = facts.rule_here(s)
    if picks is None:
        return f"Applied to this invocation's front rows, the rule chooses nothing: {why}."
    rec = (s.selection["chosen"]["F"]["variant"], s.selection["chosen"]["F85"]["variant"])
    same = "the same choice" if picks == rec else "a different choice; the shipped files follow front.py's record"
    return (f"Applied to this invocation's re-measurement of the front, the same rule picks F = {picks[0]} and "
            f"F85 = {picks[1]}: {same}.")


def speedup_sentence(s):
    ref = s.cfg.bench.reference
    parts = [f"{v} {facts.speedup(s, v):.2f}×" for v in table_variants(s.cfg) if v != ref]
    d1, o1 = s.rows.loc["D1"], s.rows.loc["O1"]
    return (f"Against {ref} ({ms(s.rows.at[ref, 'e2e_p50_ms'])} ms e2e p50): {', '.join(parts)}. D1 (distilled) "
            f"reaches {num(d1['acc'])} % against O1's {num(o1['acc'])} % on the same architecture and path "
            f"({d1['acc'] - o1['acc']:+.2f} points).")


def step_sentence(s):
    chain = [v for v in facts.ABLATION_CHAIN if v in s.rows.index]
    if len(chain) < 2:
        return "The ablation steps were not benched in this invocation."
    p50 = s.rows.loc[chain, "e2e_p50_ms"]
    gains = (p50.shift(1) - p50).iloc[1:]
    best = gains.idxmax()
    return (f"From {chain[0]} ({ms(p50.iloc[0])} ms) to {chain[-1]} ({ms(p50.iloc[-1])} ms): "
            f"{p50.iloc[0] / p50.iloc[-1]:.1f}× end to end; the largest single step is {best} "
            f"({gains[best]:.4f} ms less than the step before).")


def results_tables(doc, s, figs):
    doc.heading("3. Results")
    doc.heading("Results table", 2)
    doc.table(*facts.main_table(s), wrap_at=LABEL_WRAP, note=facts.latency_note(s) + " " + facts.source_line(s))
    doc.image(figs["latency"], "Figure 1. End-to-end p50 per table variant (bars), whiskers to the e2e p95, "
                               "device-side p50 marked (triangles); log scale.")
    doc.image(figs["accuracy"], "Figure 2. Accuracy against end-to-end p50: table variants on the test split, "
                                "front points as their validation seed mean; dashed and dotted lines: the goals.")
    doc.heading("Seed statistics", 2)
    doc.bullets([facts.seed_line(s, "F"), facts.seed_line(s, "F85")])
    doc.heading("Goals", 2)
    doc.table(*facts.goals_table(s), wrap_at={0: 44, 1: 34})
    doc.para(goals_summary(s))


def results_gains(doc, s, figs):
    doc.heading("Analysis of the gains", 2)
    doc.para(speedup_sentence(s))
    doc.table(*facts.step_table(s), wrap_at=LABEL_WRAP,
              intro="Ablation of F's inference path, one change per step, on F's weights:")
    doc.para(step_sentence(s))
    doc.table(*facts.pair_table(s, facts.io_pairs(s)), wrap_at={2: 30},
              intro="End-to-end input/output of F's kernels (mapped: the first kernel reads host memory; copy: a "
                    "copy node; poll: the host polls an answer word; sync: the stream is synchronised; ahead: each "
                    "call also launches the next call's graph, which waits for that call's image at a gate: a kernel "
                    "of its own, or in the first layer's kernel, whose polling program may also copy the image "
                    "to the device for the others):")
    doc.table(*facts.pair_table(s, facts.PAIRS), wrap_at={2: 30},
              intro="Programmatic dependent launch (PDL) on and off, its trigger early or late, F85's Triton kernels "
                    "against its one-kernel path, and F85's weights through cuDNN + torch.compile:")
    doc.heading("GPU time and host overhead", 2)
    doc.table(*facts.breakdown_table(s), note="e2e − GPU: what launching, moving the image and returning the "
                                              "answer add to the GPU's own time, at the p50. The GPU column times the "
                                              "graph's launch too; a call launched ahead (F) does not wait for "
                                              "that launch, so for it e2e − GPU understates the time outside the "
                                              "kernels (tools/e2e_trace.py splits a call on the GPU's clock). A "
                                              "serving path (F85: one launch answers every call) has no such "
                                              "split: its GPU column times a launch per call, which its "
                                              "end-to-end call does not pay.")
    doc.image(figs["host_gpu"], "Figure 3. GPU time (CUDA events) and the rest of the end-to-end p50, CUDA-graph "
                                "variants (serving paths apart); ticks: pipelined replays.")
    if s.profile is None:
        doc.para("No results/kernel_profile.json: no per-kernel table.")
    else:
        doc.heading("Per-kernel time (torch.profiler, one graph replay, µs)", 2)
        doc.table(*facts.kernel_table(s), note="F: our Triton kernels (one per conv layer; a split-K layer's partial "
                                               "sums meet through relaxed atomics, one acq_rel arrival count "
                                               "per tile); F_cudnn: the same weights through cuDNN and "
                                               "torch.compile in one CUDA graph. Host times from the profiling run. "
                                               "With PDL a kernel starts before the previous one has ended: its time "
                                               "includes that wait, and the sum of kernels exceeds the GPU time.")
    if s.persistent is not None:
        doc.heading("A persistent kernel: one launch for every call", 2)
        doc.para("kernel_server.py runs the net in ONE launch that stays on the GPU: program 0 polls a request word "
                 "in pinned host memory and copies the image in; the programs (one per SM) take each layer's work "
                 "items and meet at a grid barrier between layers. tools/persistent_bench.py times it against the "
                 "graph path in a process of its own ({gpu}, commit {git_commit}); same answers: on the 10,000 test "
                 "images; stale: in 2,000 calls alternating two images:".format(**s.persistent["env"]))
        doc.bullets(facts.persistent_lines(s) + [
            "A barrier costs about a kernel boundary (a release, the last arrival seen at L2, an acquire), so only "
            "the small net gains from the saved launch. It is not a shipped path: it holds every SM spinning, and "
            "the process must stop it before other GPU work (F85's serving kernel, below, holds one cluster of 16 "
            "SMs and meets at hardware barriers instead)."])


def results_cluster(doc, s):
    if s.cluster is None:
        return
    c = s.cluster
    inv = c["invocation"].iloc[0]
    doc.heading("The whole net in one thread-block cluster", 2)
    doc.para("kernel_engine: cluster (cluster_net.py, cluster_kernel.cu) runs F85's net as ONE kernel of one "
             "thread-block cluster (16 blocks, one per SM; F85_cluster8: 8). Each block keeps its slice of every "
             "layer's weights in shared memory, owns a band of every layer's output and pushes it into the shared "
             "memory of the next layer's blocks that need it (st.async, counted on the receiver's mbarrier), so no "
             "layer ends at a kernel boundary or goes through L2; block 0 reads the image from host memory and "
             "writes the answer word. Launched ahead (F85_cluster_ahead) the kernel is its own gate. Serving "
             "(e2e_launch: serve) it is launched once and answers call after call: after each answer the blocks "
             "re-arm their barriers, meet at one cluster barrier and block 0 waits for the next call's number, so "
             "a call costs no launch; after e2e_ahead_ms without a call it ends and the next call launches it "
             "again. F85_tagged writes the image with its call number in every 16 bytes, so that block 0 reads "
             "both in one trip over PCIe. F's net (3.9 MB of weights, 245 KB a block) does not fit beside its "
             "staged maps: for it the planner cuts each wide layer into 16 channels a block over whole maps, "
             "streams the last layers' weights into each block per call, and lets buffers whose lifetimes are "
             "apart share bytes, with a cluster barrier after a GEMM where that frees enough (F_cluster). "
             "The paths in invocation {inv} ({gpu}, commit {c}, {runs} runs), accuracy through each path's own "
             "end-to-end call on the test split:".format(
                 inv=inv, gpu=c["gpu"].iloc[0], c=c["git_commit"].iloc[0], runs=int(c["runs"].iloc[0])))
    note = ("The final table's invocation." if inv == s.invocation else
            "Not the final table's invocation: compare these rows with each other only (the same variant moves by "
            "10-20 % between machines).")
    doc.table(*facts.cluster_table(s), note=note + " GPU p50: CUDA events around one launch of the path on a "
                                                   "device input (for a serving path: its per-call launch).")
    if "F" in c.index and "F_cluster" in c.index:
        f, fc = c.at["F", "e2e_p50_ms"], c.at["F_cluster", "e2e_p50_ms"]
        doc.para(f"F_cluster answers as F's Triton kernels but takes {ms(fc)} ms against {ms(f)} ms "
                 f"({fc / f - 1:+.0%}). Over 16 SMs a wide layer gives each block 16 channels: a GEMM of a few "
                 "row tiles whose warps each run the whole K loop, one step after another (latency, not "
                 "arithmetic), and every block sends its slice to all 16 blocks; the one-kernel-per-layer path "
                 "spreads each layer over many more SMs (tools/cluster_trace.py shows the time per phase).")


def results_front_and_anchors(doc, s):
    doc.heading("Front points (validation split)", 2)
    doc.table(*facts.front_table(s), note=facts.FRONT_NOTE + " Chosen: front.py's record.")
    doc.heading("Public anchors", 2)
    doc.table(*facts.anchors_table(s), wrap_at={0: 26, 1: 18, 2: 28, 3: 40},
              note="Sources: " + facts.anchor_sources() + ".")


def conclusion(doc, s):
    doc.heading("4. Conclusion")
    doc.bullets([model_summary(s, "F"), model_summary(s, "F85"), goals_summary(s)])
    doc.para(retained_text(s))
    doc.heading("Possible improvements", 2)
    doc.bullets(improvements(s))


def model_summary(s, role):
    r = s.rows.loc[role]
    return (f"{role} (shape {r['shape']}, TTA {r['tta']}): {num(r['acc'])} % on the test set (seed mean "
            f"{num(r['acc_mean'])} %), e2e p50 {ms(r['e2e_p50_ms'])} ms, {facts.speedup(s, role):.2f}× "
            f"{s.cfg.bench.reference}.")


def goals_summary(s):
    goals = facts.goals(s).values()
    missed = [f"{what}: {text}" for what, _, text, m in goals if m is False]
    unmeasured = sum(m is None for *_, m in goals)
    return (f"Goals: {sum(m is True for *_, m in goals)} of {len(goals)} met"
            + ("; " + "; ".join(missed) if missed else "")
            + (f"; {unmeasured} not measured" if unmeasured else "") + ".")


def retained_text(s):
    if s.selection is None:
        return "Final model retained: F, whose selection record is absent (see section 2)."
    c = s.selection["chosen"]["F"]
    why = ("the fastest front point whose validation seed mean reached f_min_acc"
           if s.selection.get("F_reached_threshold", True) else "the most accurate point (none reached f_min_acc)")
    return (f"Final model retained: F = {c['variant']} (checkpoints/final_model.pth), {why}: "
            f"{num(c['acc_mean'])} % against {num(s.selection['f_min_acc'])} %, at {ms(c['e2e_p50_ms'])} ms when "
            "chosen.")


def improvements(s):
    e2e, dev, gpu, pipe, share = facts.breakdown(s, "F")
    if s.cfg.variants["F"].e2e_launch == "ahead":
        out = [f"F's e2e p50 is {ms(e2e)} ms against {ms(gpu)} ms of CUDA-event time for its graph on a device "
               "input, but that event time includes the graph's launch, which F's call, launched ahead, does not "
               "wait for: how much of F's call lies outside its kernels (the flag's and the answer's trips across "
               "PCIe, the host's own work) is split on the GPU's clock by tools/e2e_trace.py, not by these columns. "
               "The host's own work (input check, image copy, flag, poll, return) is timed with the GPU faked by "
               "tools/call_overhead.py; our kernels' polled paths call through one closure that keeps Python's "
               "attribute lookups and method calls out of the span between the flag and the answer. "
               "The same tool splits each layer into the wait for the layer before, its K loop and its tail; "
               "for F the tails of the three split-K layers (the K slices' partial sums meeting through an "
               "arrival count and a read back, then the epilogue and, in the last, the head) are the largest "
               "part left."]
        alts = [(v, how) for v, how in (("F_next", "the sums met in the next kernel, which runs the epilogue as it "
                                         "loads them"),
                                        ("F_flag", "the partial tiles met by flagged words that the last slice "
                                         "polls")) if v in s.rows.index]
        if alts:
            out[-1] += (" Two cheaper meetings within Triton were measured and lost: " + "; ".join(
                f"{how} ({v}: e2e p50 {ms(s.rows.loc[v, 'e2e_p50_ms'])} ms)" for v, how in alts) +
                f", against F's {ms(e2e)} ms.")
        out[-1] += (" So the next lever is a meeting of the K slices inside one thread-block cluster, over "
                    "distributed shared memory, which our Triton kernels cannot express.")
    else:
        out = [f"Of F's e2e p50 ({ms(e2e)} ms) the GPU works {ms(gpu)} ms; the remaining {ms(e2e - gpu)} ms "
               f"({share:.0f} %) is launching, moving the image and returning the answer"
               + (": the host side is the larger part, so fewer or cheaper round trips between host and GPU gain "
                  "most." if share > 50 else ": GPU work is the larger part, so cheaper or fewer kernels gain most.")]
    if pipe < gpu:  # replays overlap: the difference is spent between kernels, not in them
        out.append(f"Back to back, a replay takes {ms(pipe)} ms against {ms(gpu)} ms alone: {ms(gpu - pipe)} ms "
                   "of each call is launch latency and gaps between kernels rather than arithmetic.")
    if s.profile is not None:
        top = ", ".join(f"#{i} ({t:.1f} µs)" for i, (_, t) in sorted(enumerate(s.profile["F"]["kernels"], 1),
                                                                       key=lambda x: -x[1][1])[:2])
        out.append(f"The costliest of F's {len(s.profile['F']['kernels'])} kernels, in layer order (the stem first, "
                   f"the head inside the last): {top}.")
    c = s.cluster
    if c is not None and "F85" in c.index and "F85_triton" in c.index:
        f85, tri = c.at["F85", "e2e_p50_ms"], c.at["F85_triton", "e2e_p50_ms"]
        out.append(f"F85's path ({c.at['F85', 'label']}): {ms(f85)} ms e2e p50 against {ms(tri)} ms for its Triton "
                   f"kernels in the same invocation ({f85 / tri - 1:+.0%}).")
    if c is not None and "F" in c.index and "F_cluster" in c.index:
        f, fc = c.at["F", "e2e_p50_ms"], c.at["F_cluster", "e2e_p50_ms"]
        if fc > f:
            out.append(f"For F the one-cluster kernel (F_cluster, {ms(fc)} ms) is slower than its Triton kernels "
                       f"({ms(f)} ms): at batch 1 F's arithmetic needs more than one cluster's 16 SMs, so a faster F "
                       "needs its wide layers' GEMMs spread wider (several clusters handing maps over, or wgmma "
                       "tiles that keep the tensor cores fed), not fewer launches.")
        else:
            out.append(f"For F the one-cluster kernel (F_cluster, {ms(fc)} ms) beats its Triton kernels ({ms(f)} ms) "
                       "but is not F's table path: the table path is F's config entry.")
    return out


def appendix(doc, s):
    doc.heading("Appendix: provenance")
    doc.table(*facts.provenance_table(s))
    if s.stages:
        doc.table(*facts.stage_table(s), intro="Stage wall times of `sh reproduce.sh` (results/logs):")
    else:
        doc.para("No stage log with a wall-time line in results/logs.")
    t = s.gpu_tests
    if t is None:
        doc.para("No results/logs/test_gpu.log: the GPU tests' outcome is not shown.")
    else:
        names = ", ".join(t["failed"]) if isinstance(t["failed"], list) else "see the log"
        doc.para(f"tests/test_gpu.py: {t['summary'] or 'no pytest summary line in its log'}"
                 + (f"; failed: {names}." if t["failed"] else ".") + " " + (". ".join(t["agreement"]) + "." if
                                                                            t["agreement"] else "No e2e-vs-FP32 line."))
    doc.para(f"Front points: {len(front_rows(s.rows))}; final runs in results.csv: "
             f"{(s.finals['role'] == 'F').sum()} of F, {(s.finals['role'] == 'F85').sum()} of F85.")


def write(doc, s, figs):
    doc.heading("CIFAR-10 classification at batch 1: a latency study", 0)
    doc.para(f"Bench invocation {s.invocation} on {s.rows.iloc[0]['gpu']}.", color="#333333")
    introduction(doc, s)
    method_approach(doc, s)
    method_protocol(doc, s)
    method_choice(doc, s)
    results_tables(doc, s, figs)
    results_gains(doc, s, figs)
    results_cluster(doc, s)
    results_front_and_anchors(doc, s)
    conclusion(doc, s)
    appendix(doc, s)
