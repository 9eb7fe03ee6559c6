"""Ctrl-C during a study: no trial is left RUNNING, whenever it comes.

Optuna records a trial as failed when KeyboardInterrupt comes out of its objective. One that comes
while Optuna creates a trial (`study.ask`, before the objective runs) escapes with the trial RUNNING,
and as it has no heartbeat yet, no later run fails it as stale; one that comes while Optuna records a
finished trial can cut that short. So outside the objective a Ctrl-C is held: it is raised as the
next objective starts (that trial is then recorded as failed) or once the finished trial is recorded.
"""
from __future__ import annotations

import signal
from collections.abc import Callable
from contextlib import contextmanager

import optuna


class HeldInterrupt:
    def __init__(self):
        self.inside_objective = False
        self.pending = False

    def _on_sigint(self, signum, frame) -> None:
        if self.inside_objective:
            raise KeyboardInterrupt
        self.pending = True

    @contextmanager
    def installed(self):
        """SIGINT handled here while the study runs; a Ctrl-C still held at the end is raised then."""
        previous = signal.signal(signal.SIGINT, self._on_sigint)
        try:
            yield self
        finally:
            signal.signal(signal.SIGINT, previous)
        if self.pending:
            raise KeyboardInterrupt

    def guard(self, objective: Callable[[optuna.Trial], float]) -> Callable[[optuna.Trial], float]:
        def guarded(trial: optuna.Trial) -> float:
            self.inside_objective = True
            try:
                if self.pending:
                    raise KeyboardInterrupt
                return objective(trial)
            finally:
                self.inside_objective = False

        return guarded

    def after_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        """A study callback, run once Optuna has recorded the trial."""
        if self.pending:
            raise KeyboardInterrupt
