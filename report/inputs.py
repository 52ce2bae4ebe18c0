"""The report's inputs, read once and checked: results.csv (one bench invocation) and front_selection.json,
kernel_profile.json, persistent.json, logs/*.log beside it; a bad one raises ReportError, absent ones are None."""
import glob
import json
import os
import re
from dataclasses import dataclass

import pandas as pd

from utils import RENAMED, RESULT_COLUMNS


class ReportError(Exception):
    """A bad or missing input, in one line (build.py prints it and exits with code 2)."""


NEEDED = ("script", "variant", "invocation")
NUMERIC = ("acc", "acc_mean", "acc_std", "acc_ci_low", "acc_ci_high", "e2e_p50_ms", "e2e_p95_ms", "e2e_p99_ms",
           "e2e_mean_ms", "e2e_std_ms", "lat_p50_ms", "lat_mean_ms", "lat_p95_ms", "gpu_lat_p50_ms",
           "gpu_pipelined_ms", "size_mb", "speedup_e2e_ci_low", "speedup_e2e_ci_high", "speedup_p50",
           "recipe_time_s", "train_time_s", "compile_s", "val_acc", "runs", "iters")
STAGE_LINE = re.compile(r"^== (\S+): wall time (\d+) s, exit (\d+)\s*$")
PYTEST_SUMMARY = re.compile(r"^=*\s*((?:\d+ \w+(?:, )?)+ in [\d.]+s)\b")


@dataclass
class Study:
    """Everything the report shows, as read."""
    cfg: object
    results: str               # path of results.csv
    invocation: str
    rows: pd.DataFrame         # the invocation's bench rows, one per variant (index = variant)
    finals: pd.DataFrame       # final runs' train rows, with role and run_seed from their labels
    front_runs: pd.DataFrame   # front runs' train rows, with front_shape and run_seed
    selection: dict            # front_selection.json, or None
    profile: dict              # kernel_profile.json's "variants", or None
    persistent: dict           # persistent.json (env, variants), or None
    stages: list               # [(stage, wall s, exit code)] from logs/*.log
    gpu_tests: dict            # test_gpu.log: summary, agreement lines, failed tests; or None
    cluster: pd.DataFrame = None  # F's and F85's rows of the newest invocation that ran the cluster engine (index = variant)
    seed_source: dict = None   # {F / F85: (invocation, commit, label)} whose seed statistics the row shows (borrow_seeds)


def table_variants(cfg):
    return [v for v in cfg.variants if cfg.variants[v].table]


def cluster_variants(cfg):
    return [v for v in cfg.variants if cfg.variants[v].kernel_engine == "cluster"]


def ablation_variants(cfg):
    return [v for v in cfg.variants if not cfg.variants[v].table and not v.startswith("P_")]


def read_csv(path):
    """results.csv as text, old column names renamed, the current columns all present, the numeric
    ones as numbers."""
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except FileNotFoundError:
        raise ReportError(f"{path}: no such file") from None
    except pd.errors.EmptyDataError:
        raise ReportError(f"{path} is empty: run `sh reproduce.sh bench` first") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
        raise ReportError(f"{path}: not a readable CSV file ({str(e).splitlines()[0][:100]})") from None
    except OSError as e:
        raise ReportError(f"cannot read {path} ({e.strerror or e})") from None
    df = df.rename(columns=RENAMED)
    lacking = [c for c in NEEDED if c not in df.columns]
    if lacking:
        raise ReportError(f"{path}: not a results.csv of this kit (no column {', '.join(lacking)})")
    for c in RESULT_COLUMNS:  # a file of an earlier schema: its missing columns are empty
        if c not in df.columns:
            df[c] = ""
    for c in NUMERIC:
        try:
            df[c] = pd.to_numeric(df[c].replace("", float("nan")))
        except (ValueError, TypeError):
            raise ReportError(f"{path}: column {c} holds a value that is not a number") from None
    return df


def lacks(cfg, inv_rows):
    """What one invocation lacks to make the report: table variants with an e2e latency, front rows."""
    timed = set(inv_rows.loc[inv_rows["e2e_p50_ms"].notna(), "variant"])
    out = [v for v in table_variants(cfg) if v not in timed]
    if front_rows(inv_rows).empty:
        out.append("front rows on the validation split")
    return out


def front_rows(rows):
    """Front points: a shape, a P_ variant, scored on the validation split."""
    return rows[(rows["shape"] != "") & rows["variant"].str.startswith("P_") & (rows["split"] == "val")
                & rows["e2e_p50_ms"].notna()]


def pick_invocation(cfg, df, path):
    """The newest bench invocation (by its last row) that holds every table variant and front rows."""
    bench = df[(df["script"] == "bench") & (df["invocation"] != "")]
    newest_first = list(dict.fromkeys(reversed(bench["invocation"].tolist())))
    for inv in newest_first:
        rows = bench[bench["invocation"] == inv]
        if not lacks(cfg, rows):
            return inv, rows
    if not newest_first:
        raise ReportError(f"{path}: no bench rows: run `sh reproduce.sh bench`")
    missing = lacks(cfg, bench[bench["invocation"] == newest_first[0]])
    raise ReportError(f"{path}: no bench invocation holds every table variant and front rows (the newest, "
                      f"{newest_first[0]}, lacks {', '.join(missing)}): run `sh reproduce.sh bench`")


def check_one_gpu(inv, rows):
    gpus = sorted(set(rows["gpu"]))
    if len(gpus) > 1:
        raise ReportError(f"invocation {inv} mixes GPUs ({'; '.join(g or 'none' for g in gpus)}): "
                          "its rows are not one measurement")
    if gpus[0] == "":
        raise ReportError(f"invocation {inv} ran without a GPU: its timings are not the study's")


def cluster_rows(cfg, df):
    """F85's rows (F85 and F85_*: its paths) and F's two (its Triton kernels, F_cluster) of the
    newest bench invocation that ran a variant with kernel_engine: cluster, or None."""
    bench = df[(df["script"] == "bench") & (df["invocation"] != "")]
    hits = bench[bench["variant"].isin(cluster_variants(cfg))]
    if hits.empty:
        return None
    inv = hits["invocation"].iloc[-1]
    rows = bench[bench["invocation"] == inv].drop_duplicates("variant", keep="last")
    rows = rows[rows["variant"].str.fullmatch(r"F85(_.*)?|F|F_cluster")]
    check_one_gpu(inv, rows)
    return rows.set_index("variant", drop=False)


def newest_runs(df, pattern):
    """Train rows whose label matches pattern, the newest row per label, with the groups as columns."""
    tr = df[df["script"] == "train"]
    tr = tr[tr["label"].str.fullmatch(pattern)].drop_duplicates("label", keep="last")
    groups = tr["label"].str.extract(pattern)
    return pd.concat([tr.reset_index(drop=True), groups.reset_index(drop=True)], axis=1)


def final_runs(df, rows):
    """The final runs of F's and F85's shapes (labels final_<role>_s<seed>)."""
    fin = newest_runs(df, r"final_(?P<role>F|F85)_s(?P<run_seed>\d+)")
    shape = fin["role"].map(lambda role: rows.at[role, "shape"])
    return fin[(fin["shape"] == "") | (fin["shape"] == shape)]  # rows of another shape trained another model


def read_json(path, what):
    """A JSON file written by the kit, or None when it is absent."""
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError) as e:
        raise ReportError(f"{path}: not a readable {what} ({type(e).__name__})") from None
    if not isinstance(data, dict):
        raise ReportError(f"{path}: not a {what} (no mapping at the top)")
    return data


def read_selection(path):
    sel = read_json(path, "front selection (front.py writes it)")
    missing = [k for k in ("rule", "split", "chosen", "candidates", "invocation", "f_min_acc", "f85_min_acc")
               if sel is not None and k not in sel]
    if missing:
        raise ReportError(f"{path}: no '{missing[0]}' key (front.py writes it)")
    if sel is not None and not all(isinstance(sel["chosen"].get(r), dict) and "variant" in sel["chosen"][r]
                                   for r in ("F", "F85")):
        raise ReportError(f"{path}: 'chosen' must name a variant for F and for F85")
    return sel


def read_variants(path, tool, keys, need="F"):
    """A GPU tool's JSON (None if absent), checked: its 'variants' hold `need`, every entry `keys`."""
    data = read_json(path, f"{os.path.basename(path)} ({tool} writes it)")
    v = None if data is None else data.get("variants")
    if data is not None and (not isinstance(v, dict) or need not in v):
        raise ReportError(f"{path}: no 'variants' entry for {need}")
    bad = [n for n, e in (v or {}).items() if not isinstance(e, dict) or any(k not in e for k in keys)]
    if bad:
        raise ReportError(f"{path}: variant {bad[0]} lacks one of {', '.join(keys)}")
    return data


def read_lines(path):
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.read().splitlines()
    except OSError as e:
        raise ReportError(f"cannot read {path} ({e.strerror or e})") from None


def read_stages(folder):
    """[(stage, wall s, exit code)] from the last wall-time line of each stage log."""
    out = []
    for path in sorted(glob.glob(os.path.join(folder, "*.log"))):
        found = [m for m in map(STAGE_LINE.match, read_lines(path)) if m]
        if found:
            out.append((found[-1].group(1), int(found[-1].group(2)), int(found[-1].group(3))))
    return out


def read_gpu_tests(path):
    """The pytest summary of tests/test_gpu.py, the failed tests' names and every e2e-vs-FP32 line."""
    if not os.path.isfile(path):
        return None
    lines = read_lines(path)
    summary = next((m.group(1) for m in map(PYTEST_SUMMARY.match, reversed(lines)) if m), "")
    agree = [ln.strip() for ln in lines if re.match(r"F\w* e2e vs FP32", ln)]
    parts = re.split(r"\n=+ (\w[\w ]*?) =+\n", "\n" + "\n".join(lines) + "\n")  # pytest's ==== NAME ==== sections
    fails = parts[parts.index("FAILURES") + 1] if "FAILURES" in parts else ""  # passes (-rP) have headers too
    failed = re.findall(r"^_{3,} (test\S+) _{3,}$", fails, re.M)
    return {"summary": summary, "agreement": agree, "failed": failed or bool(re.search(r"failed|error", summary))}


SEED_COLS = ("acc_mean", "acc_std", "acc_seeds", "acc_ci_low", "acc_ci_high")


def borrow_seeds(df, rows, inv):
    """F's and F85's seed statistics where this invocation's row has none (its machine held only
    the shipped files, not the final runs' seed files): taken from the newest earlier bench row of
    the same variant, shape, TTA and file name whose shipped file scored the same test accuracy
    there (the same file; its path then may differ: its label is kept).  Changes rows; {role:
    (invocation, commit, label)}."""
    bench = df[(df["script"] == "bench") & (df["invocation"] != inv) & (df["acc_seeds"] != "")]
    got = {}
    for role in ("F", "F85"):
        if role not in rows.index or rows.at[role, "acc_seeds"]:
            continue
        r = rows.loc[role]
        same = bench[(bench["variant"] == role) & (bench["shape"] == r["shape"]) & (bench["tta"] == r["tta"])
                     & (bench["checkpoint"].map(os.path.basename) == os.path.basename(r["checkpoint"]))
                     & ((bench["acc"] - r["acc"]).abs() < 0.005)]
        if len(same):
            src = same.iloc[-1]
            for c in SEED_COLS:
                rows.at[role, c] = src[c]
            got[role] = (src["invocation"], src["git_commit"], src["label"])
    return got


def load(cfg, results):
    """Read every input beside results.csv into a Study."""
    df = read_csv(results)
    inv, rows = pick_invocation(cfg, df, results)
    check_one_gpu(inv, rows)
    rows = rows.drop_duplicates("variant", keep="last").set_index("variant", drop=False)
    seed_source = borrow_seeds(df, rows, inv)
    here = os.path.dirname(os.path.abspath(results))
    return Study(cfg=cfg, results=results, invocation=inv, rows=rows, finals=final_runs(df, rows),
                 front_runs=newest_runs(df, r"front_(?P<front_shape>.+)_s(?P<run_seed>\d+)"),
                 selection=read_selection(os.path.join(here, "front_selection.json")),
                 profile=(read_variants(os.path.join(here, "kernel_profile.json"), "tools/kernel_profile.py",
                                        ("e2e_p50", "device_p50", "gpu", "pipe", "kernels")) or {}).get("variants"),
                 persistent=read_variants(os.path.join(here, "persistent.json"), "tools/persistent_bench.py",
                                          ("e2e", "acc", "agree", "stale", "phases", "splits")),
                 stages=read_stages(os.path.join(here, "logs")),
                 gpu_tests=read_gpu_tests(os.path.join(here, "logs", "test_gpu.log")), seed_source=seed_source,
                 cluster=cluster_rows(cfg, df))
