"""Ctrl-C during a study: it always stops the search, and no trial is left RUNNING, whenever it comes.

Inside a trial's objective a Ctrl-C raises at once, and the trial is recorded as failed. Outside it
(while Optuna creates or records a trial) it is held, and raised as the next objective starts or once
the finished trial is recorded: one raised there could leave a trial RUNNING. A KeyboardInterrupt can
also be lost on the way, as when it lands in a weakref callback that SQLAlchemy runs (Python prints
"Exception ignored" and goes on); so every Ctrl-C is noted first, and a trial that ends with one noted
is failed all the same. A second Ctrl-C raises at once, wherever it lands.
"""
from __future__ import annotations

import signal
from collections.abc import Callable
from contextlib import contextmanager

import optuna


class TrialInterrupted(KeyboardInterrupt):
    """A Ctrl-C that stopped a running trial, which is recorded as failed."""


class HeldInterrupt:
    def __init__(self):
        self.inside_objective = False
        self.pending = False

    def _on_sigint(self, signum, frame) -> None:
        again, self.pending = self.pending, True
        if again:  # the user insists: stop now, and let a third Ctrl-C end the process
            signal.signal(signal.SIGINT, signal.default_int_handler)
            raise TrialInterrupted if self.inside_objective else KeyboardInterrupt
        if self.inside_objective:
            raise TrialInterrupted

    @contextmanager
    def installed(self):
        """SIGINT handled here while the study runs; a Ctrl-C still held at the end is raised then."""
        previous = signal.signal(signal.SIGINT, self._on_sigint)
        try:
            yield self
        finally:
            signal.signal(signal.SIGINT, previous)
        self.raise_if_pending()

    def raise_if_pending(self) -> None:
        if self.pending:
            raise KeyboardInterrupt

    def guard(self, objective: Callable[[optuna.Trial], float]) -> Callable[[optuna.Trial], float]:
        def guarded(trial: optuna.Trial) -> float:
            self.inside_objective = True
            try:
                if self.pending:
                    raise TrialInterrupted
                value = objective(trial)
            except TrialInterrupted:
                raise
            except BaseException as err:  # pruned or failed while a Ctrl-C was noted: the Ctrl-C wins
                if self.pending:
                    raise TrialInterrupted from err
                raise
            finally:
                self.inside_objective = False
            if self.pending:  # a Ctrl-C was lost inside the trial: fail it as if it had arrived
                raise TrialInterrupted
            return value

        return guarded
