"""models/config.py: every space file loads with the design document's values; every mistake is a ConfigError."""
import re
import textwrap

import pytest

from models.config import CHOICES, TrainConfig
from models.errors import ConfigError
from search.space import SPACES_DIR

# family: (learning_rate, batch_size, gradient_accumulation_steps, scheduler) from the design document
DOCUMENT = {
    "bart": (5e-5, 8, 2, "linear"),
    "t5": (3e-4, 8, 2, "linear"),
    "mt5": (3e-4, 6, 2, "linear"),
    "flan-t5": (3e-4, 8, 2, "linear"),
    "gpt2": (5e-5, 4, 4, "cosine"),
    "kogpt2": (5e-5, 4, 4, "cosine"),
}


def write(tmp_path, text, name="config.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def test_every_space_file_is_covered():
    # the six families of the design document, plus `llm` (LoRA on any local decoder LLM)
    assert sorted(p.stem for p in SPACES_DIR.glob("*.yaml")) == sorted([*DOCUMENT, "llm"])


@pytest.mark.parametrize("family", sorted(DOCUMENT))
def test_space_file_has_the_document_values(family):
    config = TrainConfig.from_yaml(SPACES_DIR / f"{family}.yaml")
    lr, batch, accum, scheduler = DOCUMENT[family]
    t, q = config.training, config.qlora
    assert config.model.architecture == family
    assert t.learning_rate == pytest.approx(lr) and isinstance(t.learning_rate, float)
    assert t.batch_size == batch and isinstance(t.batch_size, int)
    assert t.gradient_accumulation_steps == accum
    assert t.scheduler == scheduler
    assert (q.lora_rank, q.lora_alpha, q.load_in_4bit) == (16, 32, True)
    assert config.method == "full"


# -- errors name the key ---------------------------------------------------------------------


def test_unknown_key_in_a_block(tmp_path):
    path = write(tmp_path, """
        training:
          learnig_rate: 1.0e-4
    """)
    with pytest.raises(ConfigError, match=r"training\.learnig_rate") as err:
        TrainConfig.from_yaml(path)
    assert str(path) in str(err.value)


def test_unknown_block(tmp_path):
    path = write(tmp_path, """
        trainig:
          learning_rate: 1.0e-4
    """)
    with pytest.raises(ConfigError, match="unknown block 'trainig'") as err:
        TrainConfig.from_yaml(path)
    assert "training" in str(err.value)  # says what to use instead


def test_block_that_is_not_a_mapping(tmp_path):
    path = write(tmp_path, """
        training: 3
    """)
    with pytest.raises(ConfigError, match="'training' must be a mapping"):
        TrainConfig.from_yaml(path)


def test_wrong_type_names_the_key_and_value(tmp_path):
    path = write(tmp_path, """
        training:
          batch_size: "eight"
    """)
    with pytest.raises(ConfigError, match=r"training\.batch_size") as err:
        TrainConfig.from_yaml(path)
    assert "eight" in str(err.value) and "int" in str(err.value)


@pytest.mark.parametrize("key, value", [
    ("training.batch_size", 8.5),
    ("training.gradient_checkpointing", "yes please"),
    ("training.learning_rate", True),
    ("model.architecture", 5),
])
def test_wrong_types_in_overrides(key, value):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        TrainConfig().override({key: value})


@pytest.mark.parametrize("text, lines", [
    ("model:\n  architecture: t5\ntraining:\n\tbatch_size: 8\n", {4}),  # a tab indent on line 4
    ("model:\n  architecture: t5\ntraining:\n  batch_size: [8\n  learning_rate: 3.0e-4\n", {4, 5}),  # unclosed [
])
def test_bad_yaml_gives_the_line(tmp_path, text, lines):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match="not valid YAML") as err:
        TrainConfig.from_yaml(path)
    message = str(err.value)
    assert str(path) in message
    match = re.search(r"line (\d+)", message)
    assert match and int(match.group(1)) in lines


def test_missing_file(tmp_path):
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match="does not exist") as err:
        TrainConfig.from_yaml(path)
    assert str(path) in str(err.value)


def test_unknown_family(tmp_path):
    path = write(tmp_path, """
        model:
          architecture: bart2
    """)
    with pytest.raises(ConfigError, match=r"model\.architecture") as err:
        TrainConfig.from_yaml(path)
    assert "bart" in str(err.value) and "kogpt2" in str(err.value)  # lists the known families


def test_qlora_and_unsloth_together(tmp_path):
    path = write(tmp_path, """
        qlora:
          use_qlora: true
          use_unsloth: true
    """)
    with pytest.raises(ConfigError, match=r"qlora\.use_qlora"):
        TrainConfig.from_yaml(path)


def test_qlora_without_4bit(tmp_path):
    path = write(tmp_path, """
        qlora:
          use_qlora: true
          load_in_4bit: false
    """)
    with pytest.raises(ConfigError, match=r"qlora\.load_in_4bit"):
        TrainConfig.from_yaml(path)
    # 16-bit LoRA is the documented alternative and is fine
    assert TrainConfig().override({"qlora.use_lora": True, "qlora.load_in_4bit": False}).method == "lora"


@pytest.mark.parametrize("key, value", [
    ("training.learning_rate", 0),
    ("training.batch_size", 0),
    ("training.scheduler", "exponential"),
    ("training.warmup_ratio", 1.0),
    ("training.metric", "bleu"),
])
def test_out_of_range_values_name_the_key(key, value):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        TrainConfig().override({key: value})


@pytest.mark.parametrize("key", sorted(CHOICES))
@pytest.mark.parametrize("value", ["sometimes", True, 3])  # YAML reads `--set KEY=yes` as True
def test_a_key_of_a_few_words_names_them_whatever_was_given(key, value):
    words = re.escape(", ".join(CHOICES[key]))
    with pytest.raises(ConfigError, match=rf"'{re.escape(key)}'.*use one of {words}$"):
        TrainConfig().override({key: value}).validate()


def test_unknown_override_key():
    with pytest.raises(ConfigError, match=r"'training\.lr'"):
        TrainConfig().override({"training.lr": 1e-4})
    with pytest.raises(ConfigError, match="unknown method 'sgd'"):
        TrainConfig().override({"method": "sgd"})


# -- override and the flat view ---------------------------------------------------------------


@pytest.mark.parametrize("method, flags", [
    ("full", (False, False, False)),
    ("lora", (True, False, False)),
    ("qlora", (False, True, False)),
    ("unsloth", (False, False, True)),
])
def test_method_override_sets_the_flags(method, flags):
    start = TrainConfig().override({"method": "lora"})
    config = start.override({"method": method})
    q = config.qlora
    assert (q.use_lora, q.use_qlora, q.use_unsloth) == flags
    assert config.method == method
    assert config.to_flat()["method"] == method
    assert start.method == "lora"  # override returns a copy


def test_override_does_not_touch_the_original():
    base = TrainConfig.from_yaml(SPACES_DIR / "t5.yaml")
    changed = base.override({"training.learning_rate": 1e-3, "qlora.lora_rank": 8})
    assert base.training.learning_rate == pytest.approx(3e-4) and base.qlora.lora_rank == 16
    assert changed.training.learning_rate == pytest.approx(1e-3) and changed.qlora.lora_rank == 8


@pytest.mark.parametrize("family", sorted(DOCUMENT))
@pytest.mark.parametrize("method", ["full", "lora", "qlora", "unsloth"])
def test_to_flat_round_trips(family, method):
    config = TrainConfig.from_yaml(SPACES_DIR / f"{family}.yaml").override(
        {"method": method, "training.learning_rate": 1.5e-4, "training.max_steps": 20})
    flat = config.to_flat()
    assert all(key == "method" or "." in key and not isinstance(value, dict) for key, value in flat.items())
    assert TrainConfig().override(flat) == config
    assert TrainConfig().override(flat).to_flat() == flat


def test_yaml_exponent_without_a_dot_is_a_float(tmp_path):
    path = write(tmp_path, """
        training:
          learning_rate: 3e-4
          warmup_ratio: 1e-1
          num_epochs: 2
    """)
    import yaml

    assert yaml.safe_load(path.read_text())["training"]["learning_rate"] == "3e-4"  # what PyYAML really gives
    config = TrainConfig.from_yaml(path)
    assert config.training.learning_rate == pytest.approx(3e-4)
    assert isinstance(config.training.learning_rate, float)
    assert config.training.warmup_ratio == pytest.approx(0.1)
    assert config.training.num_epochs == 2.0 and isinstance(config.training.num_epochs, float)


def test_search_block_is_ignored_by_the_config(tmp_path):
    path = write(tmp_path, """
        model:
          architecture: bart
        search:
          training.learning_rate: {low: 1.0e-5, high: 1.0e-3, log: true}
    """)
    assert TrainConfig.from_yaml(path).model.architecture == "bart"


def test_empty_file_gives_the_defaults(tmp_path):
    assert TrainConfig.from_yaml(write(tmp_path, "")) == TrainConfig()
