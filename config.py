"""Load, validate and override the kit's configuration (config.yaml).

    from config import load_config
    cfg = load_config()                                   # ./config.yaml next to this file
    cfg = load_config("my.yaml", ["train.resnet18.epochs=5", "seed=1"])
    cfg.train.resnet18.epochs, cfg["bench"]["runs"], config_hash(cfg)

Every key of config.yaml is declared in SCHEMA below, with its type and, for optional
keys, its default.  An unknown key or a value of the wrong type raises ConfigError with a
one-line message naming the key and what was expected.  Overrides are `dotted.key=value`
strings; the value is parsed as YAML (5 -> int, 0.1 -> float, true -> bool, [1, 2] -> list).
No globals are exec'd: scripts pass the returned Config object around.
"""
from __future__ import annotations

import copy
import hashlib
import json
import math
import os

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_CONFIG = os.path.join(HERE, "config.yaml")

MODEL_NAMES = ("mobilenetv3", "shufflenet", "resnet18", "fastnet")
TTA_MODES = ("none", "flip", "flip_translate")
COMPILE_MODES = ("none", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


class ConfigError(ValueError):
    """A configuration problem, with a one-line message for the user."""


# ----------------------------------------------------------------------------- schema
REQUIRED = object()


class Field:
    """A leaf: its accepted type(s), default (REQUIRED if none), allowed values and bounds.

    lo / hi are inclusive bounds and gt an exclusive lower bound, checked on the number or, for
    a list, on each item; length is a list's exact length, min_len its least.  They live here so
    that a bad value stops at load time with the key's name, not as a traceback mid-run.
    """

    def __init__(self, types, default=REQUIRED, choices=None, item=None, lo=None, hi=None, gt=None,
                 length=None, min_len=None):
        self.types = types if isinstance(types, tuple) else (types,)
        self.default = default
        self.choices = choices
        self.item = item  # element type of a list
        self.lo, self.hi, self.gt, self.length, self.min_len = lo, hi, gt, length, min_len

    def describe(self):
        names = {int: "int", float: "float", bool: "bool", str: "str", list: "list", type(None): "null"}
        text = " or ".join(names[t] for t in self.types)
        if self.length is not None:
            text += f" of {self.length}"
        elif self.min_len:
            text += f" of >= {self.min_len}"
        if self.item is not None:
            text += f" {names[self.item]}" if self.length or self.min_len else f" of {names[self.item]}"
        if self.choices:
            text += " (one of " + ", ".join(map(str, self.choices)) + ")"
        text += self.describe_bounds()
        return text

    def describe_bounds(self):
        parts = [f"> {self.gt}" if self.gt is not None else "", f">= {self.lo}" if self.lo is not None else "",
                 f"<= {self.hi}" if self.hi is not None else ""]
        parts = [p for p in parts if p]
        return (" " + " and ".join(parts)) if parts else ""

    def in_bounds(self, v):
        # written so that NaN fails every bound (each comparison with NaN is False)
        return ((self.lo is None or v >= self.lo) and (self.hi is None or v <= self.hi)
                and (self.gt is None or v > self.gt))


class MapOf:
    """A section whose keys are free (or limited to `keys`) and whose values share one schema."""

    def __init__(self, schema, keys=None):
        self.schema = schema
        self.keys = keys


TRAIN = {
    "epochs": Field(int, lo=1),
    "batch_size": Field(int, lo=1),
    "lr": Field(float, gt=0),
    "momentum": Field(float, 0.9, lo=0, hi=1),
    "weight_decay": Field(float, 5e-4, lo=0),
    "warmup_epochs": Field(float, 1.0, lo=0),
    "label_smoothing": Field(float, 0.0, lo=0, hi=1),
    "amp": Field(bool, True),
    "channels_last": Field(bool, True),
    # fastnet recipe knobs (airbench's ideas); at their defaults the recipe is plain SGD
    "lr_start": Field(float, 0.0, lo=0),            # warm-up starts at lr_start x lr
    "bias_lr_scale": Field(float, 1.0, gt=0),       # lr multiplier of BN biases and other vectors
    "decay_biases": Field(bool, False),       # decay them by weight_decay / bias_lr_scale
    "pad": Field(int, -1, lo=-1),                    # crop translation in px (-1: data.pad)
    "flip": Field(str, "random", choices=("random", "alternate", "none")),
    "lookahead": Field(bool, False),
    "lookahead_every": Field(int, 5, lo=1),
    "lookahead_base": Field(float, 0.95, lo=0, hi=1),
    "whiten_bias_epochs": Field(int, 0, lo=0),      # whitening stem: its bias trains this many epochs (0: all)
    "select": Field(str, "best_val", choices=("best_val", "last")),
    "val_every_epoch": Field(bool, True),     # with select: last, validate every epoch (log) or only at the end
    "compile": Field(bool, False),            # torch.compile the training net (warm-up timed apart)
    "train_on_val": Field(bool, False),       # train on train + validation (a fixed schedule chosen before)
    "cudnn_benchmark": Field(bool, False),    # let cuDNN autotune (fast, not bit-reproducible); warm-up timed apart
    "fused_optimizer": Field(bool, True),     # on CUDA, torch's fused SGD (same update, fewer launches)
}

VARIANT = {
    "label": Field(str, ""),
    "model": Field(str, "", choices=MODEL_NAMES + ("",)),  # if set, the checkpoint must hold it
    "checkpoint": Field(str),
    "precision": Field(str, "fp32", choices=("fp32", "fp16")),
    "memory_format": Field(str, "contiguous", choices=("contiguous", "channels_last")),
    "fold_bn": Field(bool, False),
    "cudnn_relu": Field(bool, False),   # cuDNN's conv+bias+ReLU kernel where the net allows
    "compile": Field(str, "none", choices=COMPILE_MODES),
    "cuda_graph": Field(bool, False),
    "table": Field(bool, True),
    # test-time augmentation, inside the timed path: none | flip (2 views) | flip_translate (6 views)
    # | ckpt (the mode stored in the checkpoint: the front point's that was chosen)
    "tta": Field(str, "none", choices=TTA_MODES + ("ckpt",)),
    "shape": Field(str, ""),     # set on the front's variants: the front shape's name
    "kernels": Field(bool, False),  # fastnet through our Triton kernels (kernel_net.py) instead of cuDNN
    # their tiles: tuned = paths.kernel_tiles' entry for this GPU and layer (the heuristic where
    # there is none; the row's notes count both) | heuristic.  kernel_pdl: programmatic dependent launch;
    # kernel_pdl_trigger: when a kernel lets the next one launch: early (after its wait for the previous
    # one) | late (after its K loop: the next kernel's programs are placed on the SMs nearer its end)
    "kernel_tiles": Field(str, "tuned", choices=("tuned", "heuristic")),
    "kernel_pdl": Field(bool, False),
    "kernel_pdl_trigger": Field(str, "early", choices=("early", "late")),
    # where a split-K layer's K slices meet: count (the last slice to arrive at a tile, by an
    # arrival count, reads their sum back and runs the epilogue) | next (the slices add into fp32
    # sums and the kernel ends; the next kernel runs the epilogue as it loads them, after the last
    # layer a head kernel: no count, no read-back between a K loop and its kernel's end) | flag (the
    # tile's last slice polls the others' partial tiles, each value beside the call's epoch in one
    # 64-bit word: no fence, no count, no read-back).  On the H200, F: next ~8 us and flag ~4 us
    # slower than count (rows F_next, F_flag)
    "kernel_split_meet": Field(str, "count", choices=("count", "next", "flag")),
    # who runs the kernels' net: triton (one kernel per layer, kernel_net.py) | cluster (the whole
    # net in one launch of one thread-block cluster, cluster_net.py; Hopper, nvcc at build time);
    # kernel_cluster_blocks: the cluster's blocks (8 is the portable size, 16 the largest)
    "kernel_engine": Field(str, "triton", choices=("triton", "cluster")),
    "kernel_cluster_blocks": Field(int, 16, choices=(8, 16)),
    # the end-to-end call of a CUDA-graph path: how the image gets in (mapped: the first kernel
    # reads pinned host memory, kernels only; copy: a copy node in the graph; tagged: e2e_launch
    # serve only, the image written with its call number in every 16 bytes, so the kernel's gate
    # reads it in the same trip over PCIe that says the call came) and how the host waits for
    # the answer word (poll it | synchronise); eager paths copy and synchronise
    "e2e_input": Field(str, "copy", choices=("mapped", "copy", "tagged")),
    "e2e_wait": Field(str, "poll", choices=("poll", "sync")),
    # and who launches the graph: call (each call launches its own) | ahead (each call also
    # launches the NEXT call's graph, whose first kernel waits for that call's image: the launch
    # leaves the critical path; kernels, mapped and poll only) | serve (kernel_engine: cluster:
    # one launch answers call after call, each behind its gate, until no call comes for
    # e2e_ahead_ms: no launch per call at all).  e2e_ahead_ms: how long a graph launched ahead
    # (or the serving kernel) waits for its image; then it expires and the next call launches afresh
    "e2e_launch": Field(str, "call", choices=("call", "ahead", "serve")),
    "e2e_ahead_ms": Field(float, 2.0, gt=0, hi=1000),
    # where a graph launched ahead (kernel_engine: triton) waits for its image: kernel (a gate
    # kernel of one program before the net's first kernel) | stem (every program of the first
    # layer's kernel waits itself: one kernel boundary fewer between the flag and the image) |
    # stage (as stem, and the program that sees the flag first copies the image into device
    # memory in one wide read; the others read it there, not across PCIe)
    "e2e_gate": Field(str, "kernel", choices=("kernel", "stem", "stage")),
    # e2e_gate stem | stage: how many reads of the host's flag the polling program keeps in flight,
    # staggered (one read crossing PCIe is a round trip; on the H200, 4 made F's call ~13 us slower)
    "e2e_polls": Field(int, 1, choices=(1, 4)),
}

# fastnet's choices and bounds, shared by models.fastnet and the front shapes.  Upper bounds too:
# a checkpoint's model_kwargs are checked against this schema, and widths of 200000 would be a
# 1.4 TB allocation, not an error
ACTS, STEMS = ("relu", "gelu"), ("conv", "whiten")
MAX_WIDTH, MAX_DEPTH, MAX_STEM_KERNEL = 4096, 64, 31

# A front shape: widths/depths, and optionally other models.fastnet keys it changes (None: keep).
SHAPE = {
    "widths": Field(list, item=int, min_len=1, lo=1, hi=MAX_WIDTH),
    "depths": Field(list, item=int, min_len=1, lo=1, hi=MAX_DEPTH),
    "stem": Field((str, type(None)), None, choices=STEMS),
    "stem_width": Field((int, type(None)), None, lo=1, hi=MAX_WIDTH),
    "stem_kernel": Field((int, type(None)), None, lo=1, hi=MAX_STEM_KERNEL),
    "act": Field((str, type(None)), None, choices=ACTS),
}

SCHEMA = {
    "seed": Field(int, lo=0),
    "paths": {
        "checkpoints": Field(str),
        "manifest": Field(str),
        "results": Field(str),
        "final_model": Field(str),
        "f85_model": Field(str, "checkpoints/f85_model.pth"),
        "front_selection": Field(str, "results/front_selection.json"),
        "kernel_tiles": Field(str, "results/kernels/tiles.json"),  # tools/kernel_tune.py's tile cache
        "data_npz": Field(str),
        "data_bundle": Field(str, "../shared/cifar10"),  # the offline bundle, unpacked into data_npz if missing
        "download_root": Field(str),
    },
    "data": {
        "download": Field(bool, True),
        "val_size": Field(int, lo=1),
        "split_seed": Field(int, 42, lo=0),  # fixes which train images are the validation split
        "mean": Field(list, item=float, length=3),         # one per RGB channel
        "std": Field(list, item=float, length=3, gt=0),
        "pad": Field(int, 4, lo=0),
        "flip": Field(bool, True),
    },
    "models": {
        "fastnet": {
            "stem_width": Field(int, lo=1, hi=MAX_WIDTH),
            "stem_kernel": Field(int, lo=1, hi=MAX_STEM_KERNEL),
            "widths": Field(list, item=int, min_len=1, lo=1, hi=MAX_WIDTH),
            "depths": Field(list, item=int, min_len=1, lo=1, hi=MAX_DEPTH),
            "act": Field(str, "relu", choices=ACTS),
            "stem": Field(str, "conv", choices=STEMS),
            "order": Field(str, "act_pool", choices=("act_pool", "pool_bn")),
            "bn_frozen": Field(bool, False),
            "bn_momentum": Field(float, 0.1, lo=0, hi=1),
            "bn_eps": Field(float, 1e-5, gt=0),
            "head_bias": Field(bool, True),
            "logit_scale": Field(float, 1.0, gt=0),
            "dirac": Field(bool, False),
        },
    },
    "train": MapOf(TRAIN, keys=MODEL_NAMES),
    "distill": {
        "teacher": Field(str),
        "student": Field(str, choices=MODEL_NAMES),
        "tag": Field(str),
        "temperature": Field(float, gt=0),
        "alpha": Field(float, lo=0, hi=1),
    },
    "eval": {
        "batch_size": Field(int, 500, lo=1),
        "batch1_check": Field(int, 500, lo=0),
    },
    "bench": {
        "device": Field(str, "auto", choices=("auto", "cuda", "cpu")),
        "warmup": Field(int, lo=0),
        "iters": Field(int, lo=2),      # a std needs two calls
        "runs": Field(int, lo=1),
        "e2e_iters": Field(int, 300, lo=0),
        "cudnn_benchmark": Field(bool, True),
        "reference": Field(str, "B1"),
    },
    "variants": MapOf(VARIANT),
    # The accuracy-latency front: each shape trained on the training split for every seed by
    # `python train.py --front` (tags front_<shape>_s<seed>), benched on the validation split by
    # `python bench.py --variant front --split val` through variant `template`'s inference
    # path, once per tta mode; front.py then chooses F and F85 from those rows.
    "front": {
        "seeds": Field(list, [42, 1, 2], item=int, min_len=1, lo=0),
        "tta": Field(list, ["none", "flip"], item=str, min_len=1),
        "template": Field(str, "F"),
        "f_min_acc": Field(float, 94.0, lo=0, hi=100),
        "f85_min_acc": Field(float, 85.0, lo=0, hi=100),
        "shapes": MapOf(SHAPE),
    },
    # The final runs: the chosen shapes (F, F85) trained on all 50k images for each seed, fixed
    # before the run; the first seed's file is the shipped one, whatever it scores.
    "final": {
        "seeds": Field(list, item=int, min_len=1, lo=0),
    },
    # The study's targets, checked by the report against one bench invocation (met / missed by)
    "goals": {
        "f_e2e_ms": Field(float, 0.030, gt=0),       # F's end-to-end p50
        "f85_e2e_ms": Field(float, 0.015, gt=0),     # F85's end-to-end p50
        "f_acc_low": Field(float, 94.0, lo=0, hi=100),    # lower bound of the 95 % interval of F's seed mean
        "f85_acc_low": Field(float, 85.0, lo=0, hi=100),  # the same for F85
        "recipe_s": Field(float, 5.0, gt=0),         # F's recipe: whitening + training + final evaluation
    },
}


# ----------------------------------------------------------------------------- Config object
class Config(dict):
    """A dict with attribute access (cfg.train.resnet18.epochs); nested dicts are Configs too."""

    def __init__(self, data=(), **kw):
        super().__init__()
        for k, v in dict(data, **kw).items():
            self[k] = Config(v) if isinstance(v, dict) and not isinstance(v, Config) else v

    def __getattr__(self, key):
        try:
            return self[key]
        except KeyError:
            raise AttributeError(key) from None

    def to_dict(self):
        """Plain nested dicts/lists (what checkpoints and json store)."""
        return json.loads(json.dumps(self))


# ----------------------------------------------------------------------------- validation
def _as_float(value, field):
    """A float field takes what float() takes: YAML reads '1e-3' (no dot) as a string."""
    if float in field.types and isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _type_ok(value, field):
    if isinstance(value, bool) and bool not in field.types:
        return False  # bool is an int in Python; never accept it as a number
    if isinstance(value, field.types):
        return True
    return float in field.types and isinstance(value, int) and not isinstance(value, bool)


def _check_number(key, value, field):
    """Type, int -> float, choices and bounds of one number (or str/bool) against field."""
    value = _as_float(value, field)
    if not _type_ok(value, field):
        raise ConfigError(f"config key '{key}': expected {field.describe()}, got {type(value).__name__} {value!r}")
    if float in field.types and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"config key '{key}': {value!r} is not a finite number")
    if isinstance(value, (int, float)) and not isinstance(value, bool) and not field.in_bounds(value):
        raise ConfigError(f"config key '{key}': {value!r} is out of range (expected{field.describe_bounds()})")
    return value


def _check_leaf(key, value, field):
    if field.item is None:
        value = _check_number(key, value, field)
    else:
        if not _type_ok(value, field):
            raise ConfigError(f"config key '{key}': expected {field.describe()}, got {type(value).__name__} {value!r}")
        if value is not None and ((field.length is not None and len(value) != field.length)
                                  or (field.min_len and len(value) < field.min_len)):
            raise ConfigError(f"config key '{key}': expected {field.describe()}, got {len(value)} item(s) {value!r}")
        item = Field(field.item, lo=field.lo, hi=field.hi, gt=field.gt)  # the bounds hold for each item
        value = None if value is None else [_check_number(f"{key}[{i}]", v, item) for i, v in enumerate(value)]
    if field.choices and value is not None and value not in field.choices:  # None: an optional key left unset
        raise ConfigError(f"config key '{key}': {value!r} is not one of {', '.join(map(str, field.choices))}")
    return value


def _validate(node, schema, prefix):
    if isinstance(schema, Field):
        return _check_leaf(prefix, node, schema)
    if not isinstance(node, dict):
        raise ConfigError(f"config key '{prefix}': expected a section (mapping), got {type(node).__name__}")
    if isinstance(schema, MapOf):
        out = {}
        for k, v in node.items():
            if schema.keys is not None and k not in schema.keys:
                raise ConfigError(f"unknown config key '{prefix}.{k}' (valid: {', '.join(schema.keys)})")
            out[k] = _validate(v, schema.schema, f"{prefix}.{k}")
        return out
    out = {}
    for k in node:
        if k not in schema:
            where = f"'{prefix}.{k}'" if prefix else f"'{k}'"
            raise ConfigError(f"unknown config key {where} (valid: {', '.join(schema)})")
    for k, sub in schema.items():
        key = f"{prefix}.{k}" if prefix else k
        if k in node:
            out[k] = _validate(node[k], sub, key)
        elif isinstance(sub, Field):
            if sub.default is REQUIRED:
                raise ConfigError(f"config key '{key}' is missing (expected {sub.describe()})")
            out[k] = copy.deepcopy(sub.default)
        elif isinstance(sub, MapOf):
            out[k] = {}
        else:
            out[k] = _validate({}, sub, key)
    return out


def check_model_kwargs(model, kw):
    """A checkpoint's model_kwargs against models.<model>: known keys, types and bounds (keys
    left out take the builder's defaults).  Raises ConfigError naming the key."""
    schema = SCHEMA["models"].get(model, {})
    for k, v in kw.items():
        if k not in schema:
            raise ConfigError(f"unknown key '{k}' (valid: {', '.join(schema) or 'none'})")
        _check_leaf(k, v, schema[k])


def validate(raw):
    """Check a raw nested dict against SCHEMA; return a Config with defaults filled in."""
    if not isinstance(raw, dict):
        raise ConfigError("config: the top level must be a mapping of sections")
    cfg = Config(_validate(raw, SCHEMA, ""))
    for name in cfg.variants:
        if not name.replace("_", "").isalnum():
            raise ConfigError(f"variant name '{name}': use letters, digits and '_' only")
    add_front_variants(cfg)
    return cfg


def front_tag(shape, seed):
    """Manifest tag of one front checkpoint."""
    return f"front_{shape}_s{seed}"


def final_tag(role, seed):
    """Manifest tag of one final-run checkpoint (role F or F85)."""
    return f"final_{role}_s{seed}"


def front_variant_name(shape, tta):
    return f"P_{shape}" + ("" if tta == "none" else f"_{tta}")


def add_front_variants(cfg):
    """One variant per front shape and tta mode: the template variant's inference path on the
    shape's checkpoint of the first front seed (the shipped one, fixed before any run; the other
    seeds are evaluated by bench.py through the same path for the seed mean)."""
    fr = cfg.front
    if not fr.shapes:
        return
    if not fr.seeds:
        raise ConfigError("front.seeds: give at least one seed (the first one's checkpoint is shipped)")
    bad = [t for t in fr.tta if t not in TTA_MODES]
    if bad:
        raise ConfigError(f"front.tta: unknown mode '{bad[0]}' (valid: {', '.join(TTA_MODES)})")
    if fr.template not in cfg.variants:
        raise ConfigError(f"front.template '{fr.template}' is not a variant (valid: {', '.join(cfg.variants)})")
    for shape in fr.shapes:
        if not shape.replace("_", "").isalnum():
            raise ConfigError(f"front shape name '{shape}': use letters, digits and '_' only")
        for tta in fr.tta:
            v = dict(cfg.variants[fr.template])
            v.update(label=f"front {shape}" + (f" + {tta} TTA" if tta != "none" else ""), model="fastnet",
                     checkpoint="@" + front_tag(shape, fr.seeds[0]), tta=tta, table=False, shape=shape)
            cfg.variants[front_variant_name(shape, tta)] = Config(_validate(v, VARIANT, "variants.front"))


def validate_variant(v, where):
    """A variant dict checked against the schema, missing keys at their defaults."""
    return _validate(dict(v), VARIANT, where)


def front_model_kwargs(cfg, shape):
    """models.fastnet with the front shape's keys applied."""
    kw = dict(cfg.models.fastnet)
    kw.update({k: v for k, v in dict(cfg.front.shapes[shape]).items() if v is not None})
    return kw


# ----------------------------------------------------------------------------- overrides
def apply_override(raw, text):
    """Apply one 'dotted.key=value' override to a raw nested dict (in place)."""
    if "=" not in text:
        raise ConfigError(f"override '{text}': expected key=value, e.g. train.resnet18.epochs=5")
    key, _, value_text = text.partition("=")
    key = key.strip()
    try:  # '@tag' (a checkpoint reference) is a string, although YAML reserves a leading '@'
        value = value_text.strip() if value_text.strip().startswith("@") else \
            yaml.safe_load(value_text) if value_text.strip() else ""
    except yaml.YAMLError as e:
        raise ConfigError(f"override '{text}': value is not valid YAML ({str(e).splitlines()[0]})") from None
    parts = key.split(".")
    node, schema, path = raw, SCHEMA, []
    for i, part in enumerate(parts):
        path.append(part)
        last = i == len(parts) - 1
        if isinstance(schema, MapOf):
            if schema.keys is not None and part not in schema.keys:
                raise ConfigError(f"unknown config key '{'.'.join(path)}' (valid: {', '.join(schema.keys)})")
            schema = schema.schema
        elif isinstance(schema, dict):
            if part not in schema:
                raise ConfigError(f"unknown config key '{'.'.join(path)}' (valid: {', '.join(schema)})")
            schema = schema[part]
        else:
            raise ConfigError(f"config key '{'.'.join(path[:-1])}' is a value, not a section")
        if last:
            node[part] = value
        else:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
    return raw


# ----------------------------------------------------------------------------- public API
def load_config(path=None, overrides=()):
    """Read config.yaml (or `path`), apply overrides, validate, resolve relative paths."""
    path = os.path.abspath(path or DEFAULT_CONFIG)
    if not os.path.isfile(path):
        raise ConfigError(f"config file not found: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            raw = yaml.safe_load(f) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    except (UnicodeDecodeError, OSError) as e:  # a binary file, a folder, no permission
        raise ConfigError(f"{path}: not a readable YAML text file ({type(e).__name__}); give a config.yaml") from None
    if not isinstance(raw, dict):  # before the overrides, which walk a mapping
        raise ConfigError(f"{path}: the top level must be a mapping of sections (seed:, paths:, ...), "
                          f"not a {type(raw).__name__}")
    for text in overrides or ():
        apply_override(raw, text)
    cfg = validate(raw)
    cfg["config_file"] = path
    return cfg


def resolve_path(cfg, p):
    """A config path, relative to the config file's folder unless absolute."""
    base = os.path.dirname(cfg.get("config_file", DEFAULT_CONFIG))
    return p if os.path.isabs(p) else os.path.normpath(os.path.join(base, p))


def config_hash(cfg):
    """Stable 12-hex-digit hash of the resolved configuration.  Where files go (paths.*, the
    config file's location) is left out: a run writing its rows elsewhere with --set
    paths.results=... ran the same study and carries the same hash."""
    d = {k: v for k, v in dict(cfg).items() if k not in ("config_file", "paths")}
    blob = json.dumps(d, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def add_config_args(parser):
    """The options every script shares: --config and repeatable --set key=value."""
    parser.add_argument("--config", default=DEFAULT_CONFIG, help="YAML configuration (default: %(default)s)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override one config value, e.g. --set train.resnet18.epochs=5 (repeatable)")
    return parser
