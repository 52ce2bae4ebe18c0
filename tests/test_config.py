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


# ---- ranges and lengths are in the schema (without it, each would be a traceback, or worse,
# exit 0 with an untrained model registered) ----
@pytest.mark.parametrize("override, words", [
    ("train.fastnet.epochs=0", ["train.fastnet.epochs", "0", ">= 1"]),
    ("train.fastnet.epochs=-3", ["train.fastnet.epochs", ">= 1"]),
    ("train.fastnet.batch_size=0", ["train.fastnet.batch_size", ">= 1"]),
    ("train.fastnet.batch_size=-1", ["train.fastnet.batch_size", ">= 1"]),
    ("train.resnet18.lr=0", ["train.resnet18.lr", "> 0"]),
    ("eval.batch_size=0", ["eval.batch_size", ">= 1"]),
    ("data.mean=[0.5, 0.5]", ["data.mean", "of 3", "2 item"]),
    ("data.std=[0.2, 0.2, 0.2, 0.2]", ["data.std", "of 3"]),
    ("data.std=[0.2, 0, 0.2]", ["data.std[1]", "> 0"]),
    ("models.fastnet.stem_kernel=0", ["models.fastnet.stem_kernel", ">= 1"]),
    ("models.fastnet.widths=[64, -8, 256]", ["models.fastnet.widths[1]", ">= 1"]),
    ("models.fastnet.depths=[]", ["models.fastnet.depths", ">= 1"]),
    ("bench.runs=0", ["bench.runs", ">= 1"]),
    ("distill.alpha=1.5", ["distill.alpha", "<= 1"]),
    ("train.fastnet.lr=nan", ["train.fastnet.lr", "not a finite number"]),
    ("data.mean=[.nan, 0.5, 0.5]", ["data.mean[0]", "not a finite number"]),
])
def test_out_of_range_values_stop_with_the_key_and_the_bound(override, words):
    with pytest.raises(ConfigError) as e:
        load_config(None, [override])
    msg = str(e.value)
    assert all(w in msg for w in words), msg
    assert "\n" not in msg


# ---- item h: what float() accepts (YAML reads 1e-3, without a dot, as a string) ----
@pytest.mark.parametrize("text, value", [("1e-3", 1e-3), ("2E-4", 2e-4), ("5", 5.0), (".5", 0.5)])
def test_float_keys_take_what_float_takes(text, value):
    cfg = load_config(None, [f"train.fastnet.lr={text}", f"data.std=[{text}, 0.2, 0.2]"])
    assert cfg.train.fastnet.lr == value and isinstance(cfg.train.fastnet.lr, float)
    assert cfg.data.std[0] == value and isinstance(cfg.data.std[0], float)


def test_int_keys_do_not_take_float_text():
    with pytest.raises(ConfigError, match="expected int"):
        load_config(None, ["train.fastnet.epochs=1e1"])


# ---- item m: a config whose top level is not a mapping: one line, even with overrides ----
@pytest.mark.parametrize("body", ["- seed: 1\n- paths: {}\n", "42\n", "just text\n"])
def test_top_level_must_be_a_mapping(tmp_path, body):
    p = tmp_path / "c.yaml"
    p.write_text(body)
    with pytest.raises(ConfigError, match="top level must be a mapping") as e:
        load_config(str(p), ["seed=1"])
    assert str(p) in str(e.value) and "\n" not in str(e.value)


# ---- section 2: the hash names the study, not where its files go ----
def test_hash_does_not_depend_on_paths(tmp_path):
    a = load_config()
    b = load_config(None, [f"paths.results={tmp_path}/r.csv", f"paths.checkpoints={tmp_path}/ck"])
    assert config_hash(a) == config_hash(b)
    assert config_hash(load_config(None, ["train.fastnet.epochs=3"])) != config_hash(a)


def test_a_leading_at_is_a_checkpoint_reference_not_a_yaml_error():
    cfg = load_config(None, ["variants.F.checkpoint=@f85"])  # unquoted, as a user types it
    assert cfg.variants.F.checkpoint == "@f85"


def test_binary_config_file_is_one_line(tmp_path):
    p = tmp_path / "bin.yaml"
    p.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(ConfigError, match="not a readable YAML text file"):
        load_config(str(p))
