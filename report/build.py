"""Build the report from the results: results/final_table.md, results/v2_tables.md,
checkpoints/README.md, report/figures/*.png and report/rapport.pdf.

    python report/build.py                       # everything
    python report/build.py --table-only          # the three markdown files alone
    python report/build.py --pages /tmp/pages    # also every PDF page as a PNG (to look at)
    python report/build.py --kernels results/kernels/study/kernel_bench.json

Complete rows come from the invocation front.py chose F and F85 from (results/front_selection.json):
F, F85 and AB94 are its front points P_<shape>[_flip], never rows named "F" of other invocations.
When that invocation does not hold every table and ablation variant, the timing of a cut bench that
did is recovered from results/bench_cut_runs.csv (tools/bench_log.py) and shown apart, labelled;
the PDF's first page says so, once.
Modules: facts.py (rows read once, invocation chosen, every number), figures.py (matplotlib),
layout.py / doc.py / pages.py / analysis.py (markdown writers, the A4 layout, the PDF's sections).
"""
import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import facts  # noqa: E402

ROOT = facts.ROOT


def outputs(root=ROOT):
    """Where the report's files go (a test passes a temporary root)."""
    return {"table": os.path.join(root, "results", "final_table.md"), "v2": os.path.join(root, "results", "v2_tables.md"),
            "ckpt": os.path.join(root, "checkpoints", "README.md"), "figs": os.path.join(root, "report", "figures"),
            "pdf": os.path.join(root, "report", "rapport.pdf")}


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as fh:
        fh.write(text)
    print(f"wrote {os.path.relpath(path, ROOT) if path.startswith(ROOT) else path}")


def pdf(f, figs, path, pages_dir=None):
    import analysis
    import pages
    from doc import Doc
    doc = Doc(path, "CIFAR-10 batch-1 latency study, v2")
    for section in (pages.title, pages.summary, pages.method):
        section(doc, f)
    pages.results(doc, f, figs)
    pages.recovered(doc, f, figs)
    pages.front(doc, f, figs)
    pages.kernels(doc, f)
    pages.anchors(doc, f)
    analysis.write(doc, f)
    doc.close(pages_dir)
    return len(doc.figs)


def say_source(f):
    """The choice of invocation(s) and the config check, on the terminal."""
    import layout
    for s in layout.provenance(f) + layout.hash_lines(f):
        print(s)
    print(f"kernels: {f.kernels.get('path', 'none found')}; F's shape: {f.tta_kernels.get('path', 'none found')}")
    print(f"recovered cut bench: {f.recovered.get('used') or 'none'}")


def run(results, kernels=None, table_only=False, pages_dir=None, out=None, selection=None, cut_runs=None,
        tta_kernels=None):
    import layout
    out = out or outputs()
    f = facts.gather(results, kernels, selection, cut_runs_path=cut_runs, tta_kernels_path=tta_kernels)
    say_source(f)
    write(out["table"], layout.final_table_md(f))
    write(out["v2"], layout.v2_tables_md(f))
    write(out["ckpt"], layout.checkpoints_md(f))
    if table_only:
        return f
    import figures
    figs = figures.make(f, out["figs"])
    print("wrote " + ", ".join(os.path.basename(p) for p in figs.values()))
    n = pdf(f, figs, out["pdf"], pages_dir)
    print(f"wrote {out['pdf']} ({n} pages)")
    return f


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", default=os.path.join(facts.RES, "results.csv"))
    ap.add_argument("--kernels", help="a kernel_bench.json (default: the newest results/kernels/*/kernel_bench.json)")
    ap.add_argument("--table-only", action="store_true", help="the markdown files only")
    ap.add_argument("--pages", help="also write every PDF page as PNG into this folder")
    a = ap.parse_args()
    try:
        run(a.results, a.kernels, a.table_only, a.pages)
    except facts.ReportError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
