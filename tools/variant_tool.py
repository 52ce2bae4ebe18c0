"""The shared start of the GPU tools that time Predictor variants (host_phases.py, e2e_trace.py):
the config, the variants asked for (each must pass the tool's test), a CUDA GPU, a writable --out,
the environment line and the test images; and the JSON written at the end."""
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import utils  # noqa: E402
from config import load_config  # noqa: E402
from data import host_split  # noqa: E402


def start(a, fits, what, why_gpu):
    """(cfg, variants, device, env, test images) for parsed args a (--variants, --out, config
    args); fits(variant config) says whether the tool can time a variant, what names such a variant
    in the error, why_gpu says what the tool does on the GPU."""
    cfg = load_config(a.config, a.overrides)
    variants = [v for v in a.variants.split(",") if v]
    bad = [v for v in variants if v not in cfg.variants or not fits(cfg.variants[v])]
    if bad:
        raise utils.KitError(f"--variants: '{bad[0]}' is not {what} "
                             f"(valid: {', '.join(v for v in cfg.variants if fits(cfg.variants[v]))})")
    if not torch.cuda.is_available():
        raise utils.KitError(f"{why_gpu}: run it on a machine with a CUDA GPU")
    if a.out:
        utils.check_writable(a.out, "give a writable --out file")
    env = utils.env_info()
    imgs, _ = host_split(cfg, "test")
    print(f"{env['gpu']} (driver {env['driver']}), torch {env['torch']}, commit {env['git_commit']}")
    return cfg, variants, torch.device("cuda"), env, imgs


def write(path, res):
    """The tool's medians as JSON, where --out asked for them (nothing without it)."""
    if path:
        with open(path, "w") as f:
            json.dump(res, f, indent=1)
