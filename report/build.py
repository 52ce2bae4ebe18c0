"""Build the report from the results of one bench invocation.

    python report/build.py                          # results/results.csv -> every output below
    python report/build.py --results PATH           # another results.csv (its sibling files beside it)
    python report/build.py --table-only             # the two markdown files alone
    python report/build.py --pages DIR              # also every PDF page as a PNG in DIR
    python report/build.py --root DIR               # the outputs under DIR instead of the kit's folder

Reads results.csv (the newest bench invocation holding every table variant and front rows),
front_selection.json, kernel_profile.json, persistent.json and logs/*.log beside it (each optional)
and config.yaml; a bad input stops with one 'error:' line and exit code 2.  Modules: inputs.py
(read, check), facts.py (every number), mdfiles.py (+ checkpoints.md.in), figures.py, sections.py
(the PDF's text), pdfdoc.py (layout).
"""
import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
for p in (ROOT, HERE):  # the kit's modules (config, utils, front) and the report's
    if p not in sys.path:
        sys.path.insert(0, p)

from config import ConfigError, load_config  # noqa: E402
from inputs import ReportError, load  # noqa: E402


def outputs(root):
    """Where the report's files go under a root (a test passes a temporary one)."""
    return {k: os.path.join(root, *p) for k, p in (("table", ("results", "final_table.md")), ("figures", (
        "report", "figures")), ("readme", ("checkpoints", "README.md")), ("pdf", ("report", "rapport.pdf")))}


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)
    print(f"wrote {path}")


def build(results, root=ROOT, cfg=None, table_only=False, pages_dir=None):
    """Every output from one results.csv; returns (Study, the PDF's blocks or None)."""
    import mdfiles
    s = load(cfg or load_config(), results)
    out = outputs(root)
    print(f"report: invocation {s.invocation}, {len(s.rows)} variants, on {s.rows.iloc[0]['gpu']}")
    write(out["table"], mdfiles.final_table_md(s))
    write(out["readme"], mdfiles.checkpoints_md(s))
    if table_only:
        return s, None
    import figures
    import sections
    from pdfdoc import Doc
    figs = figures.make(s, out["figures"])
    print(f"wrote {', '.join(figs.values())}")
    doc = Doc(f"CIFAR-10 batch-1 latency study — {s.invocation}")
    sections.write(doc, s, figs)
    print(f"wrote {out['pdf']} ({doc.save(out['pdf'], pages_dir)} pages)")
    return s, doc.blocks


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", default=os.path.join(ROOT, "results", "results.csv"), help="results.csv to read")
    ap.add_argument("--table-only", action="store_true", help="write the markdown files only")
    ap.add_argument("--pages", metavar="DIR", help="also write every PDF page as PNG into DIR")
    ap.add_argument("--root", default=ROOT, help="write the outputs under this folder (default: the kit's)")
    a = ap.parse_args()
    try:
        build(a.results, root=a.root, table_only=a.table_only, pages_dir=a.pages)
    except (ReportError, ConfigError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except OSError as e:  # an output that cannot be written
        print(f"error: cannot write {e.filename} ({e.strerror})", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
