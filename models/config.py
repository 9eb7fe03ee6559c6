"""TrainConfig: the one typed contract between the search and the trainer.

A config file uses the design document's keys (`model.architecture`, `model.checkpoint`,
`training.*`, `qlora.*`) and `data.*` (`data.columns`, `data.augment.*`); a space file adds a `search:` block,
which belongs to the search side and is ignored here. Every value can also be addressed by its dotted name
("training.learning_rate"), which is how the search and the command line override it.
"""
from __future__ import annotations

import copy
import dataclasses
import functools
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from models.datafiles import parse_columns
from models.errors import ConfigError
from models.families import FAMILIES
from models.metrics import TOKENIZERS


METHODS = ("full", "lora", "qlora", "unsloth")
METRICS = ("mean", "rouge1", "rouge2", "rougeL")  # maximized; mean is that of the three F1
SCHEDULERS = ("linear", "cosine", "constant")
PRECISIONS = ("auto", "bf16", "fp16", "fp32")
COMPILE = ("auto", "always", "never")
MERGE = ("auto", "always", "never")
CHOICES = {"model.architecture": FAMILIES, "training.scheduler": SCHEDULERS, "training.precision": PRECISIONS,
           "training.compile": COMPILE, "training.merge_micro_batches": MERGE, "training.metric": METRICS,
           "training.rouge_tokenize": TOKENIZERS}  # the keys that take one of a few words


@dataclass
class ModelConfig:
    architecture: str = "t5"
    checkpoint: str = "t5-small"


@dataclass
class TrainingConfig:
    batch_size: int = 8
    gradient_accumulation_steps: int = 2
    learning_rate: float = 3e-4
    scheduler: str = "linear"
    warmup_ratio: float = 0.0
    weight_decay: float = 0.01
    num_epochs: float = 3.0
    max_steps: int = -1  # > 0 caps optimizer steps (a quick run), whatever num_epochs says
    label_smoothing: float = 0.0
    max_grad_norm: float = 1.0
    precision: str = "auto"  # bf16 where the GPU has it, else fp16 on GPU, fp32 on CPU
    gradient_checkpointing: bool = False
    group_by_length: bool = False  # batches of similar lengths: less padding, but it learned worse in our runs
    compile: str = "auto"  # torch.compile the model; auto: where it pays (models/compiling.py)
    cuda_graphs: bool = True  # a compiled step on one GPU replays as a CUDA graph (models/compiling.py)
    # A step's accumulated micro-batches run as fewer, larger ones: the same rows and loss, fewer launches.
    merge_micro_batches: str = "auto"  # auto: on a GPU, as far as its memory allows (models/micro_batches.py)
    max_source_length: int = 512
    max_target_length: int = 128
    eval_steps: int = 200  # also evaluated at the end of training
    eval_subset: int = 200  # dev rows generated at intermediate evals; the final eval uses all
    eval_batch_size: int = 64  # rows a generation batch takes: fewer, larger ones evaluate faster
    num_beams: int = 4
    generation_max_length: int = 100
    metric: str = "mean"  # rouge1 | rouge2 | rougeL | mean, maximized
    rouge_tokenize: str = "morpheme"  # one of models.metrics.TOKENIZERS: rouge or rouge-stem for English
    seed: int = 42


@dataclass
class MethodConfig:
    """The training method (full, lora, qlora, unsloth) and its LoRA settings; its YAML section is `qlora:`."""
    use_lora: bool = False
    use_qlora: bool = False
    use_unsloth: bool = False
    load_in_4bit: bool = True
    lora_rank: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05


@dataclass
class AugmentConfig:
    """Augmented copies of training rows (models/augment.py); never of dev or test rows. Off while every
    rate is 0 and paraphrase_ratio is. Seeded by training.seed."""
    ratio: float = 1.0  # augmented rows added per training row (0.5: half the rows get one)
    turn_drop: float = 0.0  # each turn but the first and last left out with this probability
    turn_swap: float = 0.0  # each pair of adjacent turns swapped
    token_delete: float = 0.0  # each word inside a turn left out (speaker tags never)
    token_repeat: float = 0.0  # each word inside a turn said twice
    speaker_swap: float = 0.0  # share of augmented rows with #Person1# and #Person2# relabelled, summary too
    paraphrase_file: str = ""  # the training data's paraphrases, written by python -m models.paraphrase
    paraphrase_ratio: float = 0.0  # share of the training rows whose paraphrase is added (0: none, 1: all)

    RATES = ("turn_drop", "turn_swap", "token_delete", "token_repeat", "speaker_swap")

    @property
    def noising(self) -> bool:
        return self.ratio > 0 and any(getattr(self, rate) > 0 for rate in self.RATES)

    @property
    def paraphrasing(self) -> bool:
        return self.paraphrase_ratio > 0

    @property
    def active(self) -> bool:
        return self.noising or self.paraphrasing


@dataclass
class DataConfig:
    columns: str = ""  # "dialogue=text,summary=highlights,fname=doc_id": the data's names for ours (models/datafiles.py)
    augment: AugmentConfig = field(default_factory=AugmentConfig)


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    qlora: MethodConfig = field(default_factory=MethodConfig)
    data: DataConfig = field(default_factory=DataConfig)

    @property
    def method(self) -> str:
        if self.qlora.use_unsloth:
            return "unsloth"
        if self.qlora.use_qlora:
            return "qlora"
        return "lora" if self.qlora.use_lora else "full"

    def optimizer_steps(self, rows: int, processes: int = 1) -> int:
        """How many optimizer steps a run takes on `rows` training rows: known before it starts."""
        t = self.training
        if t.max_steps > 0:
            return t.max_steps
        batches = math.ceil(math.ceil(rows / t.batch_size) / processes)  # per process, as a prepared loader has them
        return max(1, math.ceil(t.num_epochs * math.ceil(batches / t.gradient_accumulation_steps)))

    # -- construction -------------------------------------------------------------------
    @classmethod
    def from_yaml(cls, path: str | Path) -> "TrainConfig":
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist; pass a file from spaces/ or your own copy")
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark else ""
            raise ConfigError(f"{path} is not valid YAML{where}; fix the syntax there") from None
        return cls.from_dict(raw or {}, source=str(path))

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str = "config") -> "TrainConfig":
        if not isinstance(raw, dict):
            raise ConfigError(f"{source}: expected a mapping with model/training/qlora/data blocks")
        flat: dict[str, Any] = {}
        for section, values in raw.items():
            if section == "search":  # the search side's block (search.space reads it)
                continue
            if section not in _SECTIONS:
                raise ConfigError(f"{source}: unknown block '{section}'; use one of {', '.join(_SECTIONS)}")
            if not isinstance(values, dict):
                raise ConfigError(f"{source}: '{section}' must be a mapping of keys to values")
            flat.update(_flatten(values, section))
        return cls().override(flat, source=source)

    def override(self, values: dict[str, Any], source: str = "override") -> "TrainConfig":
        """A copy with dotted keys replaced; `method` sets the qlora.use_* flags."""
        config = copy.deepcopy(self)
        for key, value in values.items():
            if key == "method":
                config._set_method(value, source)
                continue
            section, _, name = key.partition(".")
            if section not in _SECTIONS or name not in _FIELD_TYPES[section]:
                raise ConfigError(f"{source}: unknown key '{key}'; see spaces/t5.yaml for the keys")
            *path, leaf = key.split(".")
            block = functools.reduce(getattr, path, config)  # data.augment.turn_drop: config.data.augment
            setattr(block, leaf, _coerce(value, _FIELD_TYPES[section][name], key, source))
        config.validate(source)
        return config

    def _set_method(self, method: str, source: str) -> None:
        if method not in METHODS:
            raise ConfigError(f"{source}: unknown method '{method}'; use one of {', '.join(METHODS)}")
        self.qlora.use_lora = method == "lora"
        self.qlora.use_qlora = method == "qlora"
        self.qlora.use_unsloth = method == "unsloth"

    def validate(self, source: str = "config") -> None:
        t, q, a = self.training, self.qlora, self.data.augment
        checks = [
            *((self.value(key) in words, key, f"use one of {', '.join(words)}") for key, words in CHOICES.items()),
            (t.batch_size >= 1, "training.batch_size", "use 1 or more"),
            (t.gradient_accumulation_steps >= 1, "training.gradient_accumulation_steps", "use 1 or more"),
            (t.learning_rate > 0, "training.learning_rate", "use a positive number"),
            (t.num_epochs > 0 or t.max_steps > 0, "training.num_epochs", "use a positive number (or set max_steps)"),
            (0 <= t.warmup_ratio < 1, "training.warmup_ratio", "use a fraction in [0, 1)"),
            (0 <= t.label_smoothing < 1, "training.label_smoothing", "use a fraction in [0, 1)"),
            (t.eval_steps >= 1, "training.eval_steps", "use 1 or more"),
            (t.num_beams >= 1, "training.num_beams", "use 1 or more"),
            (t.max_source_length >= 8 and t.max_target_length >= 4, "training.max_source_length",
             "use lengths of at least 8 (source) and 4 (target) tokens"),
            (q.lora_rank >= 1 and q.lora_alpha > 0, "qlora.lora_rank", "use a positive rank and alpha"),
            (sum((q.use_lora, q.use_qlora, q.use_unsloth)) <= 1, "qlora.use_qlora",
             "set at most one of use_lora, use_qlora, use_unsloth"),
            (not (q.use_qlora and not q.load_in_4bit), "qlora.load_in_4bit",
             "QLoRA is 4-bit by definition; set use_lora for 16-bit LoRA instead"),
            (0 <= a.ratio <= 10, "data.augment.ratio", "use augmented rows per training row in [0, 10]"),
            *((0 <= getattr(a, rate) <= 1, f"data.augment.{rate}", "use a probability in [0, 1]")
              for rate in a.RATES),
            (0 <= a.paraphrase_ratio <= 1, "data.augment.paraphrase_ratio",
             "use the share of training rows whose paraphrase is added, in [0, 1]"),
            (not a.paraphrasing or a.paraphrase_file, "data.augment.paraphrase_file",
             "name the file python -m models.paraphrase wrote, or set data.augment.paraphrase_ratio to 0"),
        ]
        for ok, key, fix in checks:
            if not ok:
                raise ConfigError(f"{source}: bad value for '{key}'; {fix}")
        parse_columns(self.data.columns, source=f"{source}: data.columns")

    def value(self, key: str) -> Any:
        """A dotted key's value (`method` too)."""
        return self.method if key == "method" else functools.reduce(getattr, key.split("."), self)

    @staticmethod
    def type_of(key: str) -> type:
        """The Python type of a dotted key's value (`method` is a str)."""
        section, _, name = key.partition(".")
        return str if key == "method" else _FIELD_TYPES[section][name]

    # -- views --------------------------------------------------------------------------
    def to_flat(self) -> dict[str, Any]:
        """Every hyperparameter as one flat dict of dotted keys, logged verbatim."""
        flat = {k: v for s in _SECTIONS for k, v in _flatten(dataclasses.asdict(getattr(self, s)), s).items()}
        flat["method"] = self.method
        return flat

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return {s: dataclasses.asdict(getattr(self, s)) for s in _SECTIONS}


_SECTIONS = {"model": ModelConfig, "training": TrainingConfig, "qlora": MethodConfig, "data": DataConfig}


def _field_types(cls: type, prefix: str = "") -> dict[str, type]:
    """A block's keys and their types; a nested block's keys dotted (augment.turn_drop)."""
    hints = typing.get_type_hints(cls)
    types: dict[str, type] = {}
    for f in dataclasses.fields(cls):
        kind = hints[f.name]
        if dataclasses.is_dataclass(kind):
            types.update(_field_types(kind, f"{prefix}{f.name}."))
        else:
            types[f"{prefix}{f.name}"] = kind
    return types


_FIELD_TYPES = {section: _field_types(cls) for section, cls in _SECTIONS.items()}


def _flatten(values: dict[str, Any], prefix: str) -> dict[str, Any]:
    """{"augment": {"turn_drop": 0.1}} under "data" -> {"data.augment.turn_drop": 0.1}."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}.{key}"))
        else:
            flat[f"{prefix}.{key}"] = value
    return flat


def _coerce(value: Any, kind: type, key: str, source: str) -> Any:
    """YAML gives `3e-4` as a string and `16` for a float: accept what is meant, refuse the rest."""
    try:
        if kind is bool:
            if isinstance(value, bool):
                return value
            raise TypeError
        if kind is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise TypeError
            return int(value)
        if kind is float:
            if isinstance(value, bool):
                raise TypeError
            return float(value)
        if not isinstance(value, str):
            raise TypeError
        return value
    except (TypeError, ValueError):
        if key in CHOICES:  # YAML reads yes/no/on/off as booleans
            raise ConfigError(f"{source}: bad value for '{key}' ({value!r}); "
                              f"use one of {', '.join(CHOICES[key])}") from None
        raise ConfigError(f"{source}: '{key}' must be {kind.__name__}, got {value!r}") from None
