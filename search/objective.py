"""One trial: parameters -> TrainConfig -> models.trainer.train, with its story told to the study and W&B.

Two drivers share `Objective.run`: an Optuna trial (`__call__`, which can prune) and a W&B sweep
agent (`search.agent`, whose result is added to the study afterwards).
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import optuna
from optuna.trial import TrialState

from models.config import TrainConfig
from models.trainer import Report, Result, train
from search.sinks import WandbRuns
from search.space import Space

TrainFn = Callable[..., Result]  # models.trainer.train, or a stand-in in tests of the search alone
Record = Callable[[str, Any], None]  # where a trial's attributes go: trial.set_user_attr, or a dict


@dataclass
class Data:
    train: Path
    val: Path


class Objective:
    def __init__(self, space: Space, data: Data, output_root: Path, metric: str = "mean",
                 train_fn: TrainFn = train, progress: bool = True, wandb: WandbRuns | None = None):
        self.space, self.data, self.output_root, self.metric = space, data, Path(output_root), metric
        self.train_fn, self.progress, self.wandb = train_fn, progress, wandb

    def __call__(self, trial: optuna.Trial) -> float:
        params = self.space.suggest(trial)

        def report(step: int, metrics: dict[str, float]) -> bool:
            trial.report(metrics[self.metric], step)
            return trial.should_prune()

        result = self.run(params, trial.study.study_name, f"trial-{trial.number:04d}", report, trial.set_user_attr)
        if result.stopped_early:
            raise optuna.TrialPruned(f"pruned at step {result.steps}")
        return result.metrics[self.metric]

    def run(self, params: dict[str, Any], study: str, name: str, report: Report, record: Record) -> Result:
        """Train one parameter set; `name` (trial-0007, sweep-RUNID) names its folder and W&B run."""
        config = self.config(params)
        record("config", config.to_flat())
        record("method", config.method)
        record("worker", os.environ.get("SUMSWEEP_WORKER", "main"))  # set by search.workers for each slot
        if self.wandb:
            self.wandb.start(f"{study}-{name}", {**config.to_flat(), "study": study})

        def report_everywhere(step: int, metrics: dict[str, float]) -> bool:
            if self.wandb:
                self.wandb.log(step, metrics)
            return report(step, metrics)

        output_dir = self.output_root / study / name
        try:
            result = self.train_fn(config, self.data.train, self.data.val, output_dir, report=report_everywhere,
                                   progress=self.progress, label=name)
        except BaseException as err:  # the trial fails (Ctrl-C too); the reason stays with it
            record("fail_reason", f"{type(err).__name__}: {str(err)[:500]}")
            if self.wandb:
                self.wandb.finish("failed", {})
            raise
        for key, value in result.metrics.items():
            record(key, value)
        for key in ("train_seconds", "eval_seconds", "peak_memory_gb", "steps", "checkpoint", "oom_retries"):
            record(key, getattr(result, key))
        if self.wandb:
            self.wandb.finish("pruned" if result.stopped_early else "complete",
                              {**result.metrics, "train_seconds": result.train_seconds,
                               "peak_memory_gb": result.peak_memory_gb})
        return result

    def config(self, params: dict[str, Any]) -> TrainConfig:
        return self.space.config({**params, "training.metric": self.metric})


def keep_best_checkpoint(study: optuna.Study, _: optuna.trial.FrozenTrial) -> None:
    """A study callback: delete every trial's checkpoint but the best's, so disk use stays flat."""
    try:
        best = study.best_trial.number
    except ValueError:  # no completed trial yet
        best = None
    for trial in study.get_trials(deepcopy=False):
        path = trial.user_attrs.get("checkpoint")
        if path and trial.number != best and trial.state != TrialState.RUNNING and Path(path).is_dir():
            shutil.rmtree(path, ignore_errors=True)
