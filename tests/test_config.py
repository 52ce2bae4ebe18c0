"""config.py: loading, validation, overrides, hashing."""
import pytest

from config import ConfigError, apply_override, config_hash, load_config


def test_default_config_loads_and_has_every_table_variant():
    cfg = load_config()
    assert cfg.train.resnet18.epochs > 0
    assert {"B1", "B2", "O1", "O2", "O3", "D1", "F"} <= set(cfg.variants)
    assert cfg.variants.F.cuda_graph is True and cfg.variants.B1.precision == "fp32"
    # defaults filled in for keys a variant does not give
    assert cfg.variants.B1.memory_format == "contiguous" and cfg.variants.B1.compile == "none"


def test_overrides_are_parsed_as_yaml():
    cfg = load_config(None, ["train.resnet18.epochs=5", "seed=7", "data.mean=[0.5, 0.5, 0.5]",
                             "variants.F.cuda_graph=false", "train.fastnet.lr=1"])
    assert cfg.train.resnet18.epochs == 5 and cfg.seed == 7
    assert cfg.data.mean == [0.5, 0.5, 0.5]
    assert cfg.variants.F.cuda_graph is False
    assert isinstance(cfg.train.fastnet.lr, float) and cfg.train.fastnet.lr == 1.0  # int accepted as float


@pytest.mark.parametrize("override, words", [
    ("train.resnet18.epochz=5", ["train.resnet18.epochz", "epochs"]),
    ("bogus=1", ["'bogus'", "seed"]),
    ("train.vgg.epochs=1", ["train.vgg", "resnet18"]),
])
def test_unknown_key_names_the_key_and_the_valid_ones(override, words):
    with pytest.raises(ConfigError) as e:
        load_config(None, [override])
    msg = str(e.value)
    assert "unknown config key" in msg and all(w in msg for w in words)
    assert "\n" not in msg


@pytest.mark.parametrize("override, words", [
    ("train.resnet18.epochs=five", ["train.resnet18.epochs", "expected int", "str"]),
    ("train.resnet18.epochs=true", ["expected int", "bool"]),
    ("bench.runs=1.5", ["bench.runs", "expected int"]),
    ("data.std=[0.2, x, 0.2]", ["data.std[1]", "float"]),
    ("variants.F.precision=int8", ["variants.F.precision", "fp32, fp16"]),
])
def test_wrong_type_names_the_key_and_the_expected_type(override, words):
    with pytest.raises(ConfigError) as e:
        load_config(None, [override])
    assert all(w in str(e.value) for w in words), str(e.value)


def test_override_syntax_errors():
    with pytest.raises(ConfigError, match="expected key=value"):
        apply_override({}, "train.resnet18.epochs")
    with pytest.raises(ConfigError, match="is a value, not a section"):
        apply_override({}, "seed.x=1")


def test_missing_required_key_and_missing_file(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("seed: 1\n")
    with pytest.raises(ConfigError, match="'paths.checkpoints' is missing"):
        load_config(str(p))
    with pytest.raises(ConfigError, match="not found"):
        load_config(str(tmp_path / "nope.yaml"))
    p.write_text("seed: [1\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(str(p))


def test_hash_is_stable_and_follows_the_values():
    a, b = load_config(), load_config()
    assert config_hash(a) == config_hash(b) and len(config_hash(a)) == 12
    assert config_hash(load_config(None, ["seed=43"])) != config_hash(a)
    # the same values reached through an override hash the same
    assert config_hash(load_config(None, [f"seed={a.seed}"])) == config_hash(a)


def test_relative_paths_resolve_next_to_the_config(tmp_path):
    from config import resolve_path
    cfg = load_config()
    assert resolve_path(cfg, "checkpoints").endswith("/checkpoints")
    assert resolve_path(cfg, "/abs/x") == "/abs/x"
