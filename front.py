"""Choose F and F85 from the accuracy-latency front, by a fixed rule, on the validation split.

    python front.py                      # the newest bench invocation that holds front rows
    python front.py --invocation ID      # a given one;  --dry-run: print the choice, write nothing
    python front.py --force              # replace an existing selection record

A front point = one shape x one TTA mode, benched by `python bench.py --variant front` through
F's inference path; its accuracy is the mean over the front seeds, each scored through that
same end-to-end path on the 5k validation split (acc_mean; the checkpoints trained on the
other 45k images), its latency the end-to-end p50 of the same invocation.  Then:
  F   = the fastest point with acc_mean >= front.f_min_acc; if none, the most accurate point,
        flagged (F_reached_threshold: false);
  F85 = the fastest point with acc_mean >= front.f85_min_acc (the plan's objective).
"Fastest" = the lowest e2e p50 of a point's best run (then of all its calls): bench.py runs
every point in turn, run after run, and a disturbance of the host only adds time: its least
disturbed run measures a point, so a few disturbed runs cannot reorder two points that differ
by a microsecond.
The test set decides nothing here.  The thresholds are applied to the validation means as
they are (no calibration): the final runs then report the chosen shapes' test accuracy over
final.seeds, beside their validation means, so any gap between the splits is shown, not used.
Every point of the configured front must be there with every seed, unless --allow-partial
(recorded).  The record, with the rule and every candidate's numbers, goes to
paths.front_selection; `python train.py --final-runs` trains and ships what it names.
"""
import json
import os

import pandas as pd

from config import add_config_args, front_variant_name, load_config, resolve_path
import utils

RULE = ("F = the fastest point (end-to-end p50 of its best run, then of all its calls) whose seed-mean "
        "validation accuracy >= f_min_acc (else the most accurate point, flagged); F85 = the fastest point "
        "whose seed-mean validation accuracy >= f85_min_acc")
CANDIDATE_COLUMNS = ("variant", "shape", "tta", "acc_mean", "acc_std", "acc_ci_low", "acc_ci_high", "acc_seeds",
                     "e2e_best_run_p50_ms", "e2e_p50_ms", "e2e_p95_ms", "e2e_mean_ms", "lat_p50_ms", "gpu_lat_p50_ms",
                     "size_mb", "recipe_time_s")


def front_rows(cfg, invocation=None):
    """The bench rows of one invocation's front points (the newest invocation with any)."""
    path = resolve_path(cfg, cfg.paths.results)
    try:
        df = pd.read_csv(path, dtype={"shape": str, "split": str, "invocation": str})
    except (OSError, ValueError) as e:
        raise utils.KitError(f"{path}: cannot read the results ({type(e).__name__}: {str(e)[:120]})") from None
    fr = df[(df["script"] == "bench") & df["shape"].notna() & (df["split"] == "val")]
    if invocation:
        fr = fr[fr["invocation"] == invocation]
    elif len(fr):
        fr = fr[fr["invocation"] == fr["invocation"].iloc[-1]]
    fr = fr[fr["acc_mean"].notna()]
    if fr.empty:
        raise utils.KitError(f"no front rows with seed accuracies on the validation split in {path}"
                             + (f" for invocation {invocation}" if invocation else "")
                             + ": run `python train.py --front` then `python bench.py --variant front`")
    return fr


def missing_points(cfg, fr):
    """What the rows lack of the configured front: points, or seeds of a point."""
    out = []
    for shape in cfg.front.shapes:
        for tta in cfg.front.tta:
            name = front_variant_name(shape, tta)
            row = fr[fr["variant"] == name]
            if row.empty:
                out.append(f"point {name}")
                continue
            seeds = {s.split(":")[0] for s in str(row.iloc[-1]["acc_seeds"]).split(";") if ":" in s}
            lost = [str(s) for s in cfg.front.seeds if str(s) not in seeds]
            if lost:
                out.append(f"{name} seed(s) {','.join(lost)}")
    return out


def best_run_p50(runs, pooled):
    """The lowest of a point's per-run e2e p50s (bench's e2e_run_p50s_ms, 'a;b;...'), or its
    pooled e2e p50 where they are not recorded."""
    if not isinstance(runs, str):
        return pooled
    vals = [float(v) for v in runs.split(";") if v.strip() not in ("", "nan")]
    return min(vals) if vals else pooled


def by_speed(fr):
    """The rows, fastest first by the rule's measure (e2e_best_run_p50_ms added, then e2e p50)."""
    runs = fr["e2e_run_p50s_ms"] if "e2e_run_p50s_ms" in fr else [None] * len(fr)
    fr = fr.assign(e2e_best_run_p50_ms=[best_run_p50(r, p) for r, p in zip(runs, fr["e2e_p50_ms"])])
    return fr.sort_values(["e2e_best_run_p50_ms", "e2e_p50_ms"], kind="stable")


def choose(fr, f_min, f85_min):
    """(F row, F85 row, F reached its threshold?) from a front's rows."""
    ranked = by_speed(fr)
    ok = ranked[ranked["acc_mean"] >= f_min]
    f, reached = (ok.iloc[0], True) if len(ok) else (ranked.sort_values("acc_mean", kind="stable").iloc[-1], False)
    ok85 = ranked[ranked["acc_mean"] >= f85_min]
    if ok85.empty:
        raise utils.KitError(f"no front point reaches {f85_min} % on validation (best {fr['acc_mean'].max():.2f} %)")
    return f, ok85.iloc[0], reached


def candidate(row):
    """One point's numbers as plain JSON values (NaN -> null)."""
    out = {}
    for k in CANDIDATE_COLUMNS:
        v = row.get(k)
        v = v.item() if hasattr(v, "item") else v
        out[k] = utils.json_number(v, 5) if isinstance(v, float) else v
    return out


def choice_words(chosen):
    """{'F': {'variant': ...}, 'F85': {...}} -> 'F P_t3_flip, F85 P_t1'."""
    return ", ".join(f"{role} {c.get('variant')}" for role, c in chosen.items())


def recorded_choice(path):
    """The choice an existing selection record holds, in words ('unreadable' if it is not one)."""
    try:
        with open(path) as fh:
            return choice_words(json.load(fh)["chosen"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):  # the refusal stands either way
        return "unreadable"


def main():
    ap = utils.ArgParser(__doc__)
    ap.add_argument("--invocation", help="bench invocation id (default: the newest with front rows)")
    ap.add_argument("--dry-run", action="store_true", help="print the choice, write nothing")
    ap.add_argument("--force", action="store_true", help="replace an existing selection record")
    ap.add_argument("--allow-partial", action="store_true",
                    help="choose even if points or seeds of the configured front are missing (recorded)")
    add_config_args(ap)
    a = ap.parse_args()
    cfg = load_config(a.config, a.overrides)
    out = resolve_path(cfg, cfg.paths.front_selection)
    if not a.dry_run:
        utils.check_writable(out, "set another file with --set paths.front_selection=FILE")
    fr = front_rows(cfg, a.invocation)
    lost = missing_points(cfg, fr)
    if lost and not a.allow_partial:
        raise utils.KitError(f"the front is incomplete ({len(lost)} missing: {'; '.join(lost[:4])}"
                             f"{' ...' if len(lost) > 4 else ''}); bench it whole, or add --allow-partial")
    f, f85, reached = choose(fr, cfg.front.f_min_acc, cfg.front.f85_min_acc)
    sel = {"rule": RULE, "split": "val", "calibration": "none: thresholds applied to the validation means as they are",
           "f_min_acc": cfg.front.f_min_acc, "f85_min_acc": cfg.front.f85_min_acc, "F_reached_threshold": reached,
           "invocation": str(f["invocation"]), "gpu": str(f["gpu"]) if isinstance(f["gpu"], str) else "",
           "seeds": list(cfg.front.seeds), "partial": lost,
           "chosen": {"F": candidate(f), "F85": candidate(f85)},
           "candidates": [candidate(r) for _, r in by_speed(fr).iterrows()]}
    for role, r in (("F", f), ("F85", f85)):
        utils.log(f"front: {role} = {r['variant']} ({r['acc_mean']:.2f} % validation mean of seeds, "
                  f"e2e p50 {r['e2e_p50_ms']:.4f} ms, best run {r['e2e_best_run_p50_ms']:.4f})")
    if not reached:
        utils.log(f"front: no point reaches {cfg.front.f_min_acc} % on validation: F is the most accurate point")
    if a.dry_run:
        return
    if os.path.exists(out):
        change = f"choice {recorded_choice(out)} -> {choice_words(sel['chosen'])}"
        if not a.force:
            raise utils.KitError(f"{out} exists ({change}): add --force to replace it")
        utils.log(f"front: replacing {out} ({change})")
    text = json.dumps(sel, indent=1, allow_nan=False)  # NaN would not be JSON: json_number made them null
    utils.atomic_write_bytes(out, (text + "\n").encode())
    utils.log(f"front: wrote {out}; next: python train.py --final-runs")


if __name__ == "__main__":
    utils.run_main(main)
