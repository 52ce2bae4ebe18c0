"""Choose F and F85 from the accuracy-latency front, by code, from the bench rows (issue 9).

    python front.py                      # newest bench invocation that holds front rows
    python front.py --invocation ID      # a given one;  --dry-run: print the choice, write nothing

A front point = one shape x one TTA mode, benched by `python bench.py --variant front` through
F's inference path; its accuracy is the mean over the front seeds, each evaluated through that
same timed path (column acc_mean).  Then:
  F   = the fastest point (lowest p50) with acc_mean >= front.f_min_acc (94.0); if none, the
        most accurate point, flagged in the selection and the report;
  F85 = the fastest point with acc_mean >= front.f85_min_acc (85.0): the plan's own objective.
The test set chose nothing before this: shapes and recipe were fixed on the validation split;
this selection is the study's reported outcome, made once by the rule above.
The first front seed's checkpoint of each chosen shape is copied to paths.final_model /
paths.f85_model with its TTA mode stored in it (variants F and F85 read it: `tta: ckpt`), and
the choice goes to results/front_selection.json.
"""
import io
import json
import os

import pandas as pd
import torch

from config import add_config_args, front_tag, load_config, resolve_path
import utils


def front_rows(cfg, invocation=None):
    """The bench rows of one invocation's front points (newest invocation with any)."""
    path = resolve_path(cfg, cfg.paths.results)
    try:
        df = pd.read_csv(path, dtype={"front": str})
    except (OSError, ValueError) as e:
        raise utils.KitError(f"{path}: cannot read the results ({type(e).__name__}: {str(e)[:120]})") from None
    fr = df[(df["script"] == "bench") & df["front"].notna() & df["variant"].astype(str).str.startswith("P_")]
    if invocation:
        fr = fr[fr["invocation"] == invocation]
    elif len(fr):
        fr = fr[fr["invocation"] == fr["invocation"].iloc[-1]]
    fr = fr[fr["acc_mean"].notna()]
    if fr.empty:
        raise utils.KitError(f"no front rows with seed accuracies in {path}"
                             + (f" for invocation {invocation}" if invocation else "")
                             + ": run `python train.py --front` then `python bench.py --variant front`")
    return fr


def choose(fr, f_min, f85_min):
    """(F row, F85 row, F reached the threshold?) from a front's rows."""
    by_speed = fr.sort_values("lat_p50_ms")
    ok = by_speed[by_speed["acc_mean"] >= f_min]
    f, reached = (ok.iloc[0], True) if len(ok) else (fr.sort_values("acc_mean").iloc[-1], False)
    ok85 = by_speed[by_speed["acc_mean"] >= f85_min]
    if ok85.empty:
        raise utils.KitError(f"no front point reaches {f85_min} % (best {fr['acc_mean'].max():.2f} %)")
    return f, ok85.iloc[0], reached


def install(cfg, row, dest, role):
    """Copy the chosen point's first-seed checkpoint to dest, with its TTA mode in it."""
    src = utils.resolve_checkpoint(cfg, "@" + front_tag(row["front"], cfg.front.seeds[0]))
    ck = utils.load_checkpoint(src)
    ck.update(tta=row["tta"], selected={"role": role, "variant": row["variant"], "invocation": row["invocation"],
                                        "acc_mean": float(row["acc_mean"]), "lat_p50_ms": float(row["lat_p50_ms"]),
                                        "source": os.path.relpath(src, os.path.dirname(cfg.config_file))})
    buf = io.BytesIO()
    torch.save(ck, buf)
    utils.atomic_write_bytes(resolve_path(cfg, dest), buf.getvalue())


def summary(row):
    return {k: (row[k].item() if hasattr(row[k], "item") else row[k])
            for k in ("variant", "front", "tta", "acc", "acc_mean", "acc_std", "acc_seeds", "lat_p50_ms",
                      "gpu", "invocation")}


def main():
    ap = utils.ArgParser(__doc__)
    ap.add_argument("--invocation", help="bench invocation id (default: the newest with front rows)")
    ap.add_argument("--dry-run", action="store_true", help="print the choice, write nothing")
    add_config_args(ap)
    a = ap.parse_args()
    cfg = load_config(a.config, a.overrides)
    fr = front_rows(cfg, a.invocation)
    f, f85, reached = choose(fr, cfg.front.f_min_acc, cfg.front.f85_min_acc)
    sel = {"F": summary(f), "F85": summary(f85), "F_reached_threshold": reached,
           "f_min_acc": cfg.front.f_min_acc, "f85_min_acc": cfg.front.f85_min_acc, "points": len(fr)}
    for role, r in (("F", f), ("F85", f85)):
        utils.log(f"front: {role} = {r['variant']} ({r['acc_mean']:.2f} % mean of seeds, p50 {r['lat_p50_ms']:.4f} ms)")
    if not reached:
        utils.log(f"front: no point reaches {cfg.front.f_min_acc} %: F is the most accurate point")
    if a.dry_run:
        return
    install(cfg, f, cfg.paths.final_model, "F")
    install(cfg, f85, cfg.paths.f85_model, "F85")
    out = resolve_path(cfg, cfg.paths.front_selection)
    utils.atomic_write_bytes(out, (json.dumps(sel, indent=1, default=str) + "\n").encode())
    utils.log(f"front: wrote {cfg.paths.final_model}, {cfg.paths.f85_model} and {cfg.paths.front_selection}")


if __name__ == "__main__":
    utils.run_main(main)
