"""One Optuna trial: parameters -> TrainConfig -> models.trainer.train; report() -> prune."""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import optuna
from optuna.trial import TrialState

from models.trainer import Result, train
from search.space import Space

TrainFn = Callable[..., Result]  # models.trainer.train, or a stand-in in tests of the search alone


@dataclass
class Data:
    train: Path
    val: Path


class Objective:
    def __init__(self, space: Space, data: Data, output_root: Path, metric: str = "mean",
                 train_fn: TrainFn = train, progress: bool = True):
        self.space, self.data, self.output_root, self.metric = space, data, Path(output_root), metric
        self.train_fn, self.progress = train_fn, progress

    def __call__(self, trial: optuna.Trial) -> float:
        params = self.space.suggest(trial)
        config = self.space.config({**params, "training.metric": self.metric})
        trial.set_user_attr("config", config.to_flat())
        trial.set_user_attr("method", config.method)

        def report(step: int, metrics: dict[str, float]) -> bool:
            trial.report(metrics[self.metric], step)
            return trial.should_prune()

        output_dir = self.output_root / trial.study.study_name / f"trial-{trial.number:04d}"
        try:
            result = self.train_fn(config, self.data.train, self.data.val, output_dir, report=report,
                                   progress=self.progress, label=f"trial #{trial.number}")
        except Exception as err:  # the trial fails, the search goes on; the reason stays with the trial
            trial.set_user_attr("fail_reason", f"{type(err).__name__}: {str(err)[:500]}")
            raise
        for key, value in result.metrics.items():
            trial.set_user_attr(key, value)
        trial.set_user_attr("train_seconds", result.train_seconds)
        trial.set_user_attr("eval_seconds", result.eval_seconds)
        trial.set_user_attr("peak_memory_gb", result.peak_memory_gb)
        trial.set_user_attr("steps", result.steps)
        trial.set_user_attr("checkpoint", result.checkpoint)
        trial.set_user_attr("oom_retries", result.oom_retries)
        if result.stopped_early:
            raise optuna.TrialPruned(f"pruned at step {result.steps}")
        return result.metrics[self.metric]


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
