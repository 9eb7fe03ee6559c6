"""The trial loop of one process: trials until the study holds its target, however many processes share it.

Optuna's `study.optimize` with MaxTrialsCallback counts finished trials only, and only after each
trial: processes that start trials at the same moment all train theirs, and the study ends with more
than it asked for. Here a process asks for a trial only while finished plus running trials fall short of
the target, and trains an asked trial only if it is among the ones still needed: trials asked at the
same moment are taken in number order, and one not needed goes back to the queue untouched. A failed
trial does not count, so a process still running makes it up.
"""
from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext

import optuna
from optuna.trial import FrozenTrial, TrialState

from search.interrupts import HeldInterrupt
from search.owners import claim, fail_dead_trials

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
Callback = Callable[[optuna.Study, FrozenTrial], None]


def standing(study: optuna.Study) -> tuple[int, list[int]]:
    """The study's finished trials, and the numbers of its running ones."""
    trials = study.get_trials(deepcopy=False, states=(*FINISHED, TrialState.RUNNING))
    return sum(t.state in FINISHED for t in trials), [t.number for t in trials if t.state == TrialState.RUNNING]


def wanted(study: optuna.Study, target: int) -> bool:
    finished, running = standing(study)
    return finished + len(running) < target


def needed(study: optuna.Study, trial: optuna.Trial, target: int) -> bool:
    """Whether an asked trial is among those the study still needs: the finished ones and the running ones
    asked before it leave room for it."""
    finished, running = standing(study)
    return finished + sum(number < trial.number for number in running) < target


def give_back(study: optuna.Study, trial: optuna.Trial) -> None:
    """Return an asked trial to the queue, as it was: the next process to ask for a trial takes it."""
    storage = trial.storage
    trial_id = storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(study.study_name),
                                                               trial.number)
    storage.set_trial_state_values(trial_id, TrialState.WAITING)


@contextmanager
def heartbeat(study: optuna.Study, trial: optuna.Trial):
    """The trial's heartbeat while it runs, as study.optimize keeps it: a trial silent past the storage's
    grace period is failed and queued again by whichever process looks next."""
    storage = trial.storage
    interval = storage.get_heartbeat_interval()
    if interval is None:
        yield
        return
    trial_id = storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(study.study_name),
                                                               trial.number)
    stop = threading.Event()

    def beat() -> None:
        while True:
            storage.record_heartbeat(trial_id)
            if stop.wait(interval):
                return

    thread = threading.Thread(target=beat, name=f"heartbeat-{trial.number}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def run_one(study: optuna.Study, trial: optuna.Trial, objective: Callable[[optuna.Trial], float],
            catch: tuple[type[Exception], ...]) -> FrozenTrial:
    """Train one asked trial and record how it ended; an error not in `catch` is raised once recorded."""
    with heartbeat(study, trial):
        try:
            value = objective(trial)
        except optuna.TrialPruned:
            return study.tell(trial, state=TrialState.PRUNED)
        except BaseException as err:
            if "fail_reason" not in trial.user_attrs:  # e.g. a parameter the sampler could not draw
                trial.set_user_attr("fail_reason", f"{type(err).__name__}: {str(err)[:500]}")
            frozen = study.tell(trial, state=TrialState.FAIL)
            if not isinstance(err, catch):
                raise
            return frozen
    return study.tell(trial, value)


def run_trials(study: optuna.Study, objective: Callable[[optuna.Trial], float], target: int,
               interrupt: HeldInterrupt, callbacks: Sequence[Callback] = (),
               catch: tuple[type[Exception], ...] = (Exception,), timeout: float | None = None,
               before_trial: Callable[[optuna.Study, optuna.Trial], None] | None = None,
               asking: Callable[[], AbstractContextManager] = nullcontext) -> None:
    """Trials until the study holds `target` finished ones, with others running them too. Failed trials are
    made up, but a process stops after as many failures as the trials it set out to add (3 at least: it
    may be the last one running), or once `timeout` seconds have passed."""
    start = time.monotonic()
    patience = max(3, target - standing(study)[0])
    failures = 0
    while failures < patience and (timeout is None or time.monotonic() - start < timeout):
        fail_dead_trials(study)
        if not wanted(study, target):
            break
        with asking():  # the storage's lock, where asking at once could number two trials alike
            with warnings.catch_warnings():  # this loop keeps the heartbeat that Optuna's warning asks for
                warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
                trial = study.ask()
            if not needed(study, trial, target):
                give_back(study, trial)
                break
        claim(trial)
        if before_trial:
            before_trial(study, trial)
        frozen = run_one(study, trial, interrupt.guard(objective), catch)
        failures += frozen.state == TrialState.FAIL
        for callback in callbacks:
            callback(study, frozen)
        interrupt.raise_if_pending()
    fail_dead_trials(study)  # also when there was nothing left to do: no trial of a dead process stays RUNNING
