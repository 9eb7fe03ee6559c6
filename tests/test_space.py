"""search/space.py: the baseline is the recommended config, conditions hold, and bad space files say which key."""
import math

import optuna
import pytest
import yaml
from optuna.distributions import CategoricalDistribution

from models.config import TrainConfig
from search.space import SPACES_DIR, Space, SpaceError

FAMILIES = ["bart", "t5", "mt5", "flan-t5", "gpt2", "kogpt2"]
LORA_KEYS = {"qlora.lora_rank", "qlora.lora_alpha", "qlora.lora_dropout"}

optuna.logging.set_verbosity(optuna.logging.WARNING)


def contains(distribution, value):
    return distribution._contains(distribution.to_internal_repr(value))


def sampled(space, n=60, seed=0):
    """`n` trials' parameters from a fresh in-memory study with a seeded random sampler."""
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    out = []
    for _ in range(n):
        trial = study.ask()
        params = space.suggest(trial)
        assert params == trial.params  # everything suggested is recorded on the trial, nothing else
        study.tell(trial, 0.0)
        out.append(params)
    return out


# -- the shipped space files ------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_baseline_is_the_config_defaults(family):
    space = Space.for_family(family)
    defaults = TrainConfig.from_yaml(SPACES_DIR / f"{family}.yaml").to_flat()
    baseline = space.baseline()
    assert space.family == family
    assert baseline  # something is searched
    for name, value in baseline.items():
        assert value == pytest.approx(defaults[name]) if isinstance(value, float) else value == defaults[name], name
    # method defaults to full, so the LoRA keys are not part of trial 0
    assert baseline["method"] == "full"
    assert not LORA_KEYS & set(baseline)
    assert set(baseline) == {p.name for p in space.params} - LORA_KEYS
    # and trial 0's config is the file's config exactly
    assert space.config(baseline) == TrainConfig.from_yaml(SPACES_DIR / f"{family}.yaml")


@pytest.mark.parametrize("family", FAMILIES)
def test_baseline_lies_inside_the_ranges(family):
    space = Space.for_family(family)
    by_name = {p.name: p.distribution for p in space.params}
    for name, value in space.baseline().items():
        assert contains(by_name[name], value), (name, value)


def test_t5_baseline_values():
    baseline = Space.for_family("t5").baseline()
    assert baseline["training.learning_rate"] == pytest.approx(3e-4)
    assert baseline["method"] == "full"
    assert baseline["training.gradient_accumulation_steps"] == 2
    assert baseline["training.num_epochs"] == 3 and isinstance(baseline["training.num_epochs"], int)
    assert baseline["training.scheduler"] == "linear"


@pytest.mark.parametrize("family", FAMILIES)
def test_learning_rate_range_spans_about_a_decade_each_side(family):
    space = Space.for_family(family)
    default = space.defaults.training.learning_rate
    (lr,) = [p.distribution for p in space.params if p.name == "training.learning_rate"]
    assert lr.log
    assert lr.low <= default / 5
    assert lr.high >= default * 5


@pytest.mark.parametrize("family", FAMILIES)
def test_lora_keys_are_sampled_only_for_lora_methods(family):
    space = Space.for_family(family)
    trials = sampled(space)
    methods = {p["method"] for p in trials}
    assert methods == {"full", "lora", "qlora"}  # every branch was exercised
    for params in trials:
        if params["method"] in ("lora", "qlora"):
            assert LORA_KEYS <= set(params), params
        else:
            assert not LORA_KEYS & set(params), params
        space.config(params)  # every sampled point is a valid config


def test_sampled_values_lie_in_their_ranges():
    space = Space.for_family("t5")
    by_name = {p.name: p.distribution for p in space.params}
    for params in sampled(space, n=30, seed=1):
        for name, value in params.items():
            assert contains(by_name[name], value), (name, value)


def test_fixed_method_is_not_sampled_and_turns_lora_keys_on():
    space = Space.for_family("t5")
    space.fix("method", "lora")
    assert "method" not in {p.name for p in space.params}
    assert space.defaults.method == "lora"
    trials = sampled(space, n=15)
    for params in trials:
        assert "method" not in params
        assert LORA_KEYS <= set(params)
        assert space.config(params).method == "lora"
    baseline = space.baseline()
    assert "method" not in baseline
    assert (baseline["qlora.lora_rank"], baseline["qlora.lora_alpha"]) == (16, 32)


def test_fixed_full_method_turns_lora_keys_off():
    space = Space.for_family("t5")
    space.fix("method", "full")
    for params in sampled(space, n=15):
        assert "method" not in params and not LORA_KEYS & set(params)


def test_fixing_one_space_leaves_a_fresh_one_alone():
    Space.for_family("t5").fix("method", "qlora")
    fresh = Space.for_family("t5")
    assert "method" in {p.name for p in fresh.params} and fresh.fixed == {}


def test_unknown_family_lists_the_known_ones():
    with pytest.raises(SpaceError, match="no space file for family 'nope'") as err:
        Space.for_family("nope")
    for family in FAMILIES:
        assert family in str(err.value)


# -- bad space files --------------------------------------------------------------------------


def space_file(tmp_path, search, **training):
    """The t5 space file with its `search:` block (and any training values) replaced."""
    raw = yaml.safe_load((SPACES_DIR / "t5.yaml").read_text(encoding="utf-8"))
    raw["training"].update(training)
    raw["search"] = search
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return path


def test_a_copied_space_file_loads(tmp_path):
    raw = yaml.safe_load((SPACES_DIR / "t5.yaml").read_text(encoding="utf-8"))
    space = Space.load(space_file(tmp_path, raw["search"]))
    assert space.baseline() == Space.for_family("t5").baseline()


@pytest.mark.parametrize("search, key, problem", [
    ({"training.learnig_rate": {"low": 1e-5, "high": 1e-3}}, "training.learnig_rate", "unknown search key"),
    ({"training.warmup_ratio": {"low": 0.2, "high": 0.2}}, "training.warmup_ratio", "empty range"),
    ({"training.warmup_ratio": {"low": 0.3, "high": 0.1}}, "training.warmup_ratio", "empty range"),
    ({"training.num_beams": {"choices": []}}, "training.num_beams", "empty 'choices'"),
    ({"training.learning_rate": {"low": 1e-3, "high": 1e-2, "log": True}}, "training.learning_rate",
     "outside its search range"),
    ({"training.num_beams": {"choices": [1, 2]}}, "training.num_beams", "outside its search range"),
    ({"training.learning_rate": {"low": 1e-5, "high": 1e-3, "lg": True}}, "training.learning_rate",
     "unknown field"),
    ({"qlora.lora_rank": {"choices": [8, 16], "when": {"method": ["lora"]}},
      "method": {"choices": ["full", "lora"]}}, "qlora.lora_rank", "'when'"),
    ({"qlora.lora_rank": {"choices": [8, 16], "when": {"methd": ["lora"]}}}, "qlora.lora_rank", "'when'"),
    ({"method": {"choices": ["full", "lora"]},
      "qlora.lora_rank": {"choices": [8, 16], "when": {"method": "lora"}}}, "qlora.lora_rank", "'when'"),
    ({"training.learning_rate": {"low": 1e-5}}, "training.learning_rate", "needs both low and high"),
    ({"training.learning_rate": [1e-5, 1e-3]}, "training.learning_rate", "must be a mapping"),
    ({"training.learning_rate": {"low": 0.0, "high": 1e-3, "log": True}}, "training.learning_rate", "log range"),
])
def test_bad_space_files_name_the_key(tmp_path, search, key, problem):
    path = space_file(tmp_path, search)
    with pytest.raises(SpaceError) as err:
        Space.load(path)
    message = str(err.value)
    assert f"'{key}'" in message or f"{key}=" in message, message
    assert problem in message, message
    assert str(path) in message


def test_search_block_that_is_not_a_mapping(tmp_path):
    with pytest.raises(SpaceError, match="'search' must map"):
        Space.load(space_file(tmp_path, ["training.learning_rate"]))


def test_bad_config_block_in_a_space_file_is_a_config_error(tmp_path):
    from models.errors import ConfigError

    path = space_file(tmp_path, {}, learnig_rate=1e-4)
    with pytest.raises(ConfigError, match=r"training\.learnig_rate"):
        Space.load(path)


def test_integer_bounds_sample_integers_and_float_bounds_floats(tmp_path):
    path = space_file(tmp_path, {"training.num_epochs": {"low": 1, "high": 5},
                                 "training.warmup_ratio": {"low": 0.0, "high": 0.2},
                                 "training.scheduler": {"choices": ["linear", "cosine"]}})
    space = Space.load(path)
    for params in sampled(space, n=10):
        assert isinstance(params["training.num_epochs"], int)
        assert isinstance(params["training.warmup_ratio"], float) and 0.0 <= params["training.warmup_ratio"] <= 0.2
        assert params["training.scheduler"] in ("linear", "cosine")
    assert isinstance(next(p for p in space.params if p.name == "training.scheduler").distribution,
                      CategoricalDistribution)


def test_grid_lists_choices_and_range_ends_with_the_default():
    grid = Space.for_family("t5").grid()
    assert grid["method"] == ["full", "lora", "qlora"]
    assert grid["training.num_epochs"] == [1, 3, 5]
    low, mid, high = grid["training.learning_rate"]
    assert math.isclose(mid, 3e-4) and low < mid < high


# -- edge cases found by review, fixed since -------------------------------------------------


def test_step_with_log_is_a_space_error(tmp_path):
    path = space_file(tmp_path, {"training.learning_rate": {"low": 1e-5, "high": 1e-3, "log": True, "step": 1e-5}})
    with pytest.raises(SpaceError, match=r"training\.learning_rate"):
        Space.load(path)


@pytest.mark.parametrize("search", [
    {"training.batch_size": {"low": 1.0, "high": 16.0}},
    {"training.scheduler": {"choices": ["linear", "exponential"]}},
])
def test_ranges_the_config_refuses_are_refused_at_load(tmp_path, search):
    path = space_file(tmp_path, search)
    with pytest.raises(SpaceError, match=next(iter(search)).replace(".", r"\.")):
        Space.load(path)
