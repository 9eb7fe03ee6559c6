"""A space file: the family's recommended config (the defaults) plus the `search:` ranges.

From it come the parameters of an Optuna trial, the baseline that trial 0 runs (the
defaults exactly), and the parameters of a W&B sweep. Parameters are named by their
dotted config key ("training.learning_rate"), or `method` for the training method.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

from models import ConfigError, TrainConfig


def _spaces_dir() -> Path:
    """The family space files: package data once installed, else the checkout's spaces/ (the files users copy)."""
    here = Path(__file__).resolve().parent
    installed = here / "spaces"  # setup.cfg ships spaces/*.yaml as the package search.spaces
    return installed if installed.is_dir() else here.parent / "spaces"


SPACES_DIR = _spaces_dir()


class SpaceError(ConfigError):
    """A space file that cannot be searched; the message names the key."""


@dataclass(frozen=True)
class Param:
    name: str
    distribution: BaseDistribution
    when: dict[str, tuple[Any, ...]] = field(default_factory=dict)  # sampled only where these params hold these values

    def active(self, chosen: dict[str, Any]) -> bool:
        return all(chosen.get(key) in values for key, values in self.when.items())


@dataclass
class Space:
    path: Path
    defaults: TrainConfig
    params: list[Param]
    fixed: dict[str, Any] = field(default_factory=dict)  # overrides the user pinned (--method, --checkpoint)
    trial_0_steps: int | None = None  # optimizer steps of the baseline trial, once `schedule_evals` knows the data

    @property
    def family(self) -> str:
        return self.defaults.model.architecture

    @classmethod
    def for_family(cls, family: str) -> "Space":
        path = SPACES_DIR / f"{family}.yaml"
        if not path.is_file():
            known = ", ".join(sorted(p.stem for p in SPACES_DIR.glob("*.yaml")))
            raise SpaceError(f"no space file for family '{family}'; use one of {known}, or pass --space FILE")
        return cls.load(path)

    @classmethod
    def load(cls, path: str | Path) -> "Space":
        path = Path(path)
        defaults = TrainConfig.from_yaml(path)  # also validates the model/training/qlora blocks
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        block = raw.get("search") or {}
        if not isinstance(block, dict):
            raise SpaceError(f"{path}: 'search' must map parameter names to ranges")
        known = set(defaults.to_flat())
        params: list[Param] = []
        for name, spec in block.items():
            if name not in known:
                raise SpaceError(f"{path}: unknown search key '{name}'; use a config key such as "
                                 "training.learning_rate, or method")
            params.append(_param(path, name, spec, [p.name for p in params]))
        space = cls(path, defaults, params)
        space.baseline()  # refuse a space whose own defaults lie outside its ranges, before any trial
        space._check_values_fit_config()
        return space

    def _check_values_fit_config(self) -> None:
        """Every choice and both ends of every range must make a valid config, or trial 7 would stop the study."""
        for p in self.params:
            d = p.distribution
            values = d.choices if isinstance(d, CategoricalDistribution) else (d.low, d.high)
            for value in values:
                try:
                    self.defaults.override({p.name: value})
                except ConfigError as err:
                    raise SpaceError(f"{self.path}: search key '{p.name}' allows {value!r}, which the config "
                                     f"refuses ({err}); narrow the range") from None
            if isinstance(d, FloatDistribution) and TrainConfig.type_of(p.name) is int:
                raise SpaceError(f"{self.path}: search key '{p.name}' is an integer setting; "
                                 "write its low and high as integers")

    def fix(self, name: str, value: Any) -> None:
        """Pin one dimension (e.g. --method qlora): it is no longer sampled, and its conditions see the value."""
        self.defaults = self.defaults.override({name: value}, source="command line")
        self.fixed[name] = value
        self.params = [p for p in self.params if p.name != name]

    def schedule_evals(self, train_rows: int, processes: int = 1) -> None:
        """Evaluate often enough for a pruner to judge trials (it does so only at evals, from the second on):
        where the space's `eval_steps` (tuned for large data) leaves trial 0 fewer than 3 evals, trial 0 gets
        6. An `eval_steps` the user pinned (--set) is theirs to keep."""
        self.trial_0_steps = self.defaults.optimizer_steps(train_rows, processes)
        if self.trial_0_steps // self.defaults.training.eval_steps < 3 and "training.eval_steps" not in self.fixed:
            self.fix("training.eval_steps", max(1, self.trial_0_steps // 6))

    def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        """The trial's parameters, in file order; a conditional one only where its condition holds."""
        chosen = dict(self.fixed)
        params = {}
        for p in self.params:
            if p.active(chosen):
                chosen[p.name] = params[p.name] = _suggest(trial, p)
        return params

    def baseline(self) -> dict[str, Any]:
        """The defaults as trial parameters: what trial 0 of every new study runs."""
        flat = {**self.defaults.to_flat(), **self.fixed}
        params = {}
        for p in self.params:
            if p.active(flat):
                value = within(p.distribution, flat[p.name])
                if value is None:
                    raise SpaceError(f"{self.path}: the default {p.name}={flat[p.name]!r} is outside its search "
                                     "range; widen the range or change the default")
                params[p.name] = value
        return params

    def config(self, params: dict[str, Any]) -> TrainConfig:
        return self.defaults.override(params, source=f"trial parameters from {self.path.name}")

    def grid(self) -> dict[str, list[Any]]:
        """For the grid sampler: every choice, and for a numeric range its ends and the default."""
        flat = self.defaults.to_flat()
        grid = {}
        for p in self.params:
            d = p.distribution
            if isinstance(d, CategoricalDistribution):
                grid[p.name] = list(d.choices)
            else:
                grid[p.name] = sorted({d.low, d.high, min(max(flat[p.name], d.low), d.high)})
        return grid



def _suggest(trial: optuna.Trial, p: Param) -> Any:
    d = p.distribution
    if isinstance(d, CategoricalDistribution):
        return trial.suggest_categorical(p.name, d.choices)
    if isinstance(d, IntDistribution):
        return trial.suggest_int(p.name, d.low, d.high, step=d.step, log=d.log)
    return trial.suggest_float(p.name, d.low, d.high, step=d.step, log=d.log)


def within(d: BaseDistribution, value: Any) -> Any:
    """`value` as the distribution holds it (3.0 -> 3 for an int range), or None when outside it."""
    if isinstance(d, CategoricalDistribution):
        return value if value in d.choices else None
    if isinstance(d, IntDistribution) and float(value) != int(value):
        return None
    return type(d.low)(value) if d.low <= value <= d.high else None


def _param(path: Path, name: str, spec: Any, earlier: list[str]) -> Param:
    where = f"{path}: search key '{name}'"
    if not isinstance(spec, dict):
        raise SpaceError(f"{where} must be a mapping such as {{low: 1.0e-5, high: 1.0e-3, log: true}}")
    extra = set(spec) - {"low", "high", "log", "step", "choices", "when"}
    if extra:
        raise SpaceError(f"{where} has unknown field(s) {', '.join(sorted(extra))}; "
                         "use low/high/log/step, or choices, and when")
    when = spec.get("when") or {}
    if not isinstance(when, dict) or any(k not in earlier or not isinstance(v, list) for k, v in when.items()):
        raise SpaceError(f"{where}: 'when' must map parameters listed above it to lists of values")
    when = {k: tuple(v) for k, v in when.items()}
    if "choices" in spec:
        choices = spec["choices"]
        if not isinstance(choices, list) or not choices:
            raise SpaceError(f"{where} has an empty 'choices'; list at least one value")
        return Param(name, CategoricalDistribution(choices), when)
    if "low" not in spec or "high" not in spec:
        raise SpaceError(f"{where} needs both low and high (or choices)")
    low, high = _number(spec["low"]), _number(spec["high"])
    log, step = bool(spec.get("log", False)), spec.get("step")
    if low is None or high is None:
        raise SpaceError(f"{where}: low and high must be numbers")
    if log and step is not None:
        raise SpaceError(f"{where}: step and log cannot be combined; drop one")
    if not low < high:
        raise SpaceError(f"{where} has an empty range (low {low} is not below high {high}); make low < high")
    if log and low <= 0:
        raise SpaceError(f"{where}: a log range needs low > 0")
    try:
        if isinstance(low, int) and isinstance(high, int):
            return Param(name, IntDistribution(low, high, log=log, step=1 if step is None else step), when)
        return Param(name, FloatDistribution(float(low), float(high), log=log, step=step), when)
    except (TypeError, ValueError) as err:
        raise SpaceError(f"{where}: {err}") from None


def _number(value: Any) -> int | float | None:
    """YAML reads `3e-5` (no dot) as a string; take it as the number it means."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return value
    try:
        return float(value)
    except (TypeError, ValueError):
        return None
