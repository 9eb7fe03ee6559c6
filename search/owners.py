"""Which process runs a trial, so that a rerun on the same machine can fail the trials of a dead one at once.

Heartbeats find a dead worker only after the grace period; a rerun started sooner, or one with nothing
left to do, would leave its trial RUNNING for good. Each trial records its owner (host, process id and
the process's start time, since the system reuses process ids); a run on the same host fails a trial
whose owner is gone and re-queues its parameters as a stale trial is. Trials owned on other hosts still
wait for the heartbeat's grace period.
"""
from __future__ import annotations

import os
import socket
import warnings
from functools import cache
from pathlib import Path
from typing import Any

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import TrialState

from search.storage import RETRY_STALE

OWNER = "owner"  # the trial user attribute


@cache
def _boot_id() -> str:
    """Distinguishes process start times across reboots (they count from boot)."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def start_time(pid: int) -> str | None:
    """When process `pid` started (boot id and clock ticks since boot), or None if there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    except OSError:  # no /proc (not Linux): only whether the process exists is known
        return "" if _pid_exists(pid) else None
    # The command name (2nd field) may hold spaces and parentheses; the fields after it do not.
    return f"{_boot_id()}:{stat.rsplit(')', 1)[1].split()[19]}"


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by someone else
        return True
    return True


def this_process(trial_number: int) -> dict[str, Any]:
    pid = os.getpid()
    return {"trial": trial_number, "host": socket.gethostname(), "pid": pid, "started": start_time(pid)}


def claim(trial: optuna.Trial) -> None:
    """Record this process as the trial's owner; done as soon as the trial is asked."""
    trial.set_user_attr(OWNER, this_process(trial.number))


def owner_gone(trial: optuna.trial.FrozenTrial) -> bool:
    """True for a trial claimed on this host by a process that no longer runs. A retried trial carries its
    predecessor's owner (the retry copies user attributes) until it is claimed: that one is not its own."""
    owner = trial.user_attrs.get(OWNER)
    if not isinstance(owner, dict) or owner.get("trial") != trial.number or owner.get("host") != socket.gethostname():
        return False
    started = start_time(int(owner["pid"]))
    return started is None or (bool(started) and bool(owner.get("started")) and started != owner["started"])


def fail_dead_trials(study: optuna.Study) -> list[int]:
    """Fail the RUNNING trials whose owner is gone, re-queue their parameters, and fail those heartbeats
    show as stale (other hosts' too). Returns the numbers of the trials failed here."""
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if owner_gone(trial) and _fail(study, trial):
            failed.append(trial.number)
    with warnings.catch_warnings():  # marked experimental; it is what study.optimize runs before each trial
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    return failed


def fail_own_trials(study: optuna.Study) -> None:
    """Fail the RUNNING trials of this process: what a second Ctrl-C, which stops at once, may have left."""
    me = this_process(0)
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        owner = trial.user_attrs.get(OWNER)
        if isinstance(owner, dict) and owner.get("trial") == trial.number and \
                (owner.get("host"), owner.get("pid")) == (me["host"], me["pid"]):
            try:
                study.tell(trial.number, state=TrialState.FAIL)
            except (ValueError, UpdateFinishedTrialError):
                pass


def _fail(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
    """Fail one trial and queue it again; False if another process finished or failed it first."""
    owner = trial.user_attrs[OWNER]
    try:
        frozen = study.tell(trial.number, state=TrialState.FAIL)
    except (ValueError, UpdateFinishedTrialError):
        return False
    RETRY_STALE(study, frozen)
    print(f"trial #{trial.number} failed and queued again: its process {owner['pid']} on {owner['host']} "
          "ended without recording it", flush=True)
    return True
