"""One trial: parameters -> TrainConfig -> models.train_model, with its story told to the study and W&B.

Two drivers share `Objective.run`: an Optuna trial (`__call__`, which can prune) and a W&B sweep
agent (`search.agent`, whose result is added to the study afterwards). Under `accelerate launch`
(--gpus-per-trial) rank 0 is the Optuna trial and shares its parameters and every prune decision;
the other ranks `follow` it, so all train the same config and stop at the same step.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import optuna
from optuna.trial import TrialState

from models import KeepCheckpoint, Report, Result, TrainConfig, rank, share, train_model, wait_for_everyone, world_size
from search.names import study_folder
from search.space import Space
from search.wandb_runs import WandbRuns

TrainFn = Callable[..., Result]  # models.train_model, or a stand-in in tests of the search alone
Record = Callable[[str, Any], None]  # where a trial's attributes go: trial.set_user_attr, or a dict


@dataclass
class StudyData:
    """What every trial of a study trains on (train) and is scored on (val)."""
    train: str | Path  # a path, or hub:NAME[:CONFIG]:SPLIT (models/datafiles.py)
    val: str | Path
    skipped: tuple[int, int] = (0, 0)  # rows of each file left out for an empty dialogue or summary

    def described(self) -> dict[str, str | None]:
        """What each trial records of its data: where the files were and their sha256, to tell later which
        data a model was trained on (a file given by path is recorded by its absolute path)."""
        return {"train_data": _where(self.train), "train_sha256": sha256_of(self.train),
                "val_data": _where(self.val), "val_sha256": sha256_of(self.val)}


def _where(source: str | Path) -> str:
    """A local file or folder by its absolute path; anything else (hub:NAME:SPLIT) as given."""
    path = Path(source)
    return str(path.resolve()) if path.exists() else str(source)


def sha256_of(path: str | Path) -> str | None:
    """The sha256 of a file, or of a folder's files (their relative paths and contents, in path order);
    None where there is nothing local to read."""
    path = Path(path)
    if path.is_file():
        files = [path]
    elif path.is_dir():  # a `datasets` folder, say
        files = sorted(p for p in path.rglob("*") if p.is_file())
    else:  # a hub dataset, or a file gone
        return None
    digest = hashlib.sha256()
    for file in files:
        if path.is_dir():
            digest.update(file.relative_to(path).as_posix().encode() + b"\0")
        with file.open("rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()


class Objective:
    def __init__(self, space: Space, data: StudyData, output_root: Path, metric: str = "mean",
                 train_fn: TrainFn = train_model, progress: bool = True, wandb: WandbRuns | None = None,
                 keep_top: int | None = None):
        self.space, self.data, self.output_root, self.metric = space, data, Path(output_root), metric
        self.train_fn, self.progress, self.wandb = train_fn, progress, wandb
        self.keep_top = keep_top  # checkpoints the study keeps (`keep_top_checkpoints`); None: every trial's

    @functools.cached_property
    def data_described(self) -> dict[str, str | None]:
        return self.data.described()  # once: every trial of this process trains on the same files

    def __call__(self, trial: optuna.Trial) -> float:
        params = self.space.suggest(trial)
        study, name = trial.study.study_name, f"trial-{trial.number:04d}"
        share((params, study, name))  # the other ranks' `follow` trains it too

        def report(step: int, metrics: dict[str, float]) -> bool:
            trial.report(metrics[self.metric], step)
            return share(trial.should_prune())  # every rank stops at the same step

        result = self.run(params, study, name, report, trial.set_user_attr, self.keep_checkpoint(trial.study))
        if result.stopped_early:
            raise optuna.TrialPruned(f"pruned at step {result.steps}")
        return result.metrics[self.metric]

    def follow(self) -> None:
        """A rank other than 0: train each trial rank 0 shares, until it shares None (its study is over).

        Only rank 0 talks to the study and W&B; ranks that asked the study themselves would each
        train a different trial.
        """
        while (shared := share()) is not None:
            params, study, name = shared
            self.run(params, study, name, report=lambda step, metrics: share(), record=lambda key, value: None)

    def keep_checkpoint(self, study: optuna.Study) -> KeepCheckpoint | None:
        """Whether a trial's checkpoint is worth writing: not if `keep_top_checkpoints` would delete it at the
        trial's end (a pruned trial's, or one outside the best `keep_top` so far). Writing a base-sized model
        is a noticeable share of a short trial; an answer on a stale view of the study only keeps more."""
        if self.keep_top is None:
            return None

        def worth_writing(value: float, stopped_early: bool) -> bool:
            if stopped_early:
                return False
            best = top_trials(study, self.keep_top)
            return len(best) < self.keep_top or value > best[-1].value

        return worth_writing

    def run(self, params: dict[str, Any], study: str, name: str, report: Report, record: Record,
            keep_checkpoint: KeepCheckpoint | None = None) -> Result:
        """Train one parameter set; `name` (trial-0007, sweep-RUNID) names its folder and W&B run."""
        config = self.config(params)
        record("config", config.to_flat())
        record("method", config.method)
        record("worker", os.environ.get("SUMSWEEP_WORKER", "main"))  # set by search.workers for each slot
        record("ranks", world_size())  # processes training this one trial (--gpus-per-trial)
        for key, value in self.data_described.items():
            record(key, value)
        if world_size() > 1:  # each rank says what it trains: one digest per trial, or the ranks disagree
            print(f"{name}: rank {rank()} of {world_size()} trains config {config_digest(config.to_flat())}",
                  flush=True)

        def report_everywhere(step: int, metrics: dict[str, float]) -> bool:
            if self.wandb:
                self.wandb.log(step, metrics)
            return report(step, metrics)

        output_dir = study_folder(self.output_root, study) / name
        try:
            if self.wandb:  # inside: a run that cannot start (its folder gone) fails the trial with the reason
                self.wandb.start(f"{study}-{name}", {**config.to_flat(), "study": study})
            result = self.train_fn(config, self.data.train, self.data.val, output_dir, report=report_everywhere,
                                   progress=self.progress, label=name, keep_checkpoint=keep_checkpoint)
        except BaseException as err:  # the trial fails (Ctrl-C too); the reason stays with it
            record("fail_reason", f"{type(err).__name__}: {str(err)[:500]}")
            if self.wandb:
                self.wandb.finish("failed", {})
            raise
        wait_for_everyone()  # rank 0 may delete this trial's checkpoint next: no rank may still be scoring it
        for key, value in result.metrics.items():
            record(key, value)
        for key in ("train_seconds", "eval_seconds", "peak_memory_gb", "steps", "checkpoint", "oom_retries",
                    "samples_per_second", "setup_seconds", "save_seconds", "first_step_seconds", "compiled",
                    "rows_per_pass"):
            record(key, getattr(result, key))
        if self.wandb:
            self.wandb.finish("pruned" if result.stopped_early else "complete",
                              {**result.metrics, "train_seconds": result.train_seconds,
                               "peak_memory_gb": result.peak_memory_gb})
        return result

    def config(self, params: dict[str, Any]) -> TrainConfig:
        return self.space.config({**params, "training.metric": self.metric})


def config_digest(flat: dict[str, Any]) -> str:
    """A short fingerprint of a flat config (a trial's `config` attribute)."""
    return hashlib.sha256(json.dumps(flat, sort_keys=True).encode()).hexdigest()[:12]


def top_trials(study: optuna.Study, count: int) -> list[optuna.trial.FrozenTrial]:
    """The `count` best completed trials, best first (ties: the earlier trial first)."""
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return sorted(done, key=lambda t: (-t.value, t.number))[:count]


def keep_top_checkpoints(keep: int) -> Callable[[optuna.Study, optuna.trial.FrozenTrial], None]:
    """A study callback: delete every trial's checkpoint but those of the `keep` best completed trials, so
    disk use stays bounded.

    Safe with any number of processes on one study: values never change once recorded, so a trial that one
    process finds outside the best `keep` can never come back into them, and running trials are left alone.
    """
    def prune(study: optuna.Study, _: optuna.trial.FrozenTrial) -> None:
        top = {t.number for t in top_trials(study, keep)}
        for trial in study.get_trials(deepcopy=False):
            path = trial.user_attrs.get("checkpoint")
            if path and trial.number not in top and trial.state.is_finished() and Path(path).is_dir():
                shutil.rmtree(path, ignore_errors=True)

    return prune
