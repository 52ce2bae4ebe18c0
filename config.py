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
import os

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_CONFIG = os.path.join(HERE, "config.yaml")

MODEL_NAMES = ("mobilenetv3", "shufflenet", "resnet18", "fastnet")
COMPILE_MODES = ("none", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


class ConfigError(ValueError):
    """A configuration problem, with a one-line message for the user."""


# ----------------------------------------------------------------------------- schema
REQUIRED = object()


class Field:
    """A leaf: its accepted type(s), default (REQUIRED if none) and allowed values."""

    def __init__(self, types, default=REQUIRED, choices=None, item=None):
        self.types = types if isinstance(types, tuple) else (types,)
        self.default = default
        self.choices = choices
        self.item = item  # element type of a list

    def describe(self):
        names = {int: "int", float: "float", bool: "bool", str: "str", list: "list", type(None): "null"}
        text = " or ".join(names[t] for t in self.types)
        if self.item is not None:
            text += f" of {names[self.item]}"
        if self.choices:
            text += " (one of " + ", ".join(map(str, self.choices)) + ")"
        return text


class MapOf:
    """A section whose keys are free (or limited to `keys`) and whose values share one schema."""

    def __init__(self, schema, keys=None):
        self.schema = schema
        self.keys = keys


TRAIN = {
    "epochs": Field(int),
    "batch_size": Field(int),
    "lr": Field(float),
    "momentum": Field(float, 0.9),
    "weight_decay": Field(float, 5e-4),
    "warmup_epochs": Field(float, 1.0),
    "label_smoothing": Field(float, 0.0),
    "amp": Field(bool, True),
    "channels_last": Field(bool, True),
}

VARIANT = {
    "label": Field(str, ""),
    "model": Field(str, "", choices=MODEL_NAMES + ("",)),  # if set, the checkpoint must hold it
    "checkpoint": Field(str),
    "precision": Field(str, "fp32", choices=("fp32", "fp16")),
    "memory_format": Field(str, "contiguous", choices=("contiguous", "channels_last")),
    "fold_bn": Field(bool, False),
    "fuse": Field(bool, False),
    "compile": Field(str, "none", choices=COMPILE_MODES),
    "cuda_graph": Field(bool, False),
    "table": Field(bool, True),
}

SCHEMA = {
    "seed": Field(int),
    "paths": {
        "checkpoints": Field(str),
        "manifest": Field(str),
        "results": Field(str),
        "final_model": Field(str),
        "data_npz": Field(str),
        "download_root": Field(str),
    },
    "data": {
        "download": Field(bool, False),
        "val_size": Field(int),
        "mean": Field(list, item=float),
        "std": Field(list, item=float),
        "pad": Field(int, 4),
        "flip": Field(bool, True),
    },
    "models": {
        "fastnet": {
            "stem_width": Field(int),
            "stem_kernel": Field(int),
            "widths": Field(list, item=int),
            "depths": Field(list, item=int),
            "act": Field(str, "relu", choices=("relu", "gelu")),
            "head": Field(str, "pool_linear", choices=("pool_linear",)),
        },
    },
    "train": MapOf(TRAIN, keys=MODEL_NAMES),
    "distill": {
        "teacher": Field(str),
        "student": Field(str, choices=MODEL_NAMES),
        "tag": Field(str),
        "temperature": Field(float),
        "alpha": Field(float),
    },
    "eval": {
        "batch_size": Field(int, 500),
        "batch1_check": Field(int, 500),
    },
    "bench": {
        "device": Field(str, "cuda", choices=("cuda", "cpu")),
        "warmup": Field(int),
        "iters": Field(int),
        "runs": Field(int),
        "e2e_iters": Field(int, 300),
        "cudnn_benchmark": Field(bool, True),
        "reference": Field(str, "B1"),
    },
    "variants": MapOf(VARIANT),
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
def _type_ok(value, field):
    if isinstance(value, bool) and bool not in field.types:
        return False  # bool is an int in Python; never accept it as a number
    if isinstance(value, field.types):
        return True
    return float in field.types and isinstance(value, int) and not isinstance(value, bool)


def _check_leaf(key, value, field):
    if not _type_ok(value, field):
        raise ConfigError(f"config key '{key}': expected {field.describe()}, got {type(value).__name__} {value!r}")
    if field.item is not None:
        item = Field(field.item)
        for i, v in enumerate(value):
            if not _type_ok(v, item):
                raise ConfigError(f"config key '{key}[{i}]': expected {field.describe()}, got {v!r}")
        value = [float(v) if field.item is float else v for v in value]
    elif float in field.types and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if field.choices and value not in field.choices:
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


def validate(raw):
    """Check a raw nested dict against SCHEMA; return a Config with defaults filled in."""
    if not isinstance(raw, dict):
        raise ConfigError("config: the top level must be a mapping of sections")
    cfg = Config(_validate(raw, SCHEMA, ""))
    for name in cfg.variants:
        if not name.replace("_", "").isalnum():
            raise ConfigError(f"variant name '{name}': use letters, digits and '_' only")
    return cfg


# ----------------------------------------------------------------------------- overrides
def apply_override(raw, text):
    """Apply one 'dotted.key=value' override to a raw nested dict (in place)."""
    if "=" not in text:
        raise ConfigError(f"override '{text}': expected key=value, e.g. train.resnet18.epochs=5")
    key, _, value_text = text.partition("=")
    key = key.strip()
    try:
        value = yaml.safe_load(value_text) if value_text.strip() else ""
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
        with open(path) as f:
            raw = yaml.safe_load(f) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
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
    """Stable 12-hex-digit hash of the resolved configuration (the config file's location excluded)."""
    d = {k: v for k, v in dict(cfg).items() if k != "config_file"}
    blob = json.dumps(d, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def add_config_args(parser):
    """The options every script shares: --config and repeatable --set key=value."""
    parser.add_argument("--config", default=DEFAULT_CONFIG, help="YAML configuration (default: %(default)s)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override one config value, e.g. --set train.resnet18.epochs=5 (repeatable)")
    return parser
