"""Running a study again: after editing its space, with a seed, and straight after its search was killed."""
import functools
import gc
import multiprocessing as mp
import os
import signal
import socket
import time

import optuna
import pytest
import yaml
from optuna.trial import TrialState

import search.study
from models.cli import run_cli
from search.owners import OWNER, owner_gone, start_time
from search.run import main
from search.space import SPACES_DIR, Space
from search.storage import open_storage
from search.study import run_study
from test_search import args_for, data, fake_train

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def load(storage_url, study_name):
    return optuna.load_study(study_name=study_name, storage=open_storage(storage_url))


def write_space(tmp_path, edit=lambda raw: None):
    """A user's copy of spaces/t5.yaml, as edited by `edit`."""
    raw = yaml.safe_load((SPACES_DIR / "t5.yaml").read_text(encoding="utf-8"))
    edit(raw)
    path = tmp_path / "my-t5.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    return path


def search_command(monkeypatch, storage_url, tmp_path, study_name, space, trials):
    """`python -m search.run --space ... --demo` in this process, with the stand-in trainer; its exit code."""
    monkeypatch.setattr(search.study, "run_study", functools.partial(run_study, train_fn=fake_train))
    argv = ["--space", str(space), "--demo", "--trials", str(trials), "--storage", storage_url, "--study", study_name,
            "--output-root", str(tmp_path / "outputs"), "--no-wandb"]
    with pytest.raises(SystemExit) as stop:
        run_cli(lambda: main(argv))
    return stop.value.code


def test_a_space_the_study_cannot_share_is_refused_before_any_trial(storage_url, tmp_path, study_name,
                                                                    monkeypatch, capsys):
    space = write_space(tmp_path)
    assert search_command(monkeypatch, storage_url, tmp_path, study_name, space, 2) == 0
    before = [(t.number, t.state) for t in load(storage_url, study_name).trials]

    write_space(tmp_path, lambda raw: raw["search"].update({"training.scheduler": {"choices": ["linear"]}}))
    capsys.readouterr()
    assert search_command(monkeypatch, storage_url, tmp_path, study_name, space, 4) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for words in ("training.scheduler", "['linear', 'cosine']", "['linear']", "--study", "old range"):
        assert words in err, err
    assert [(t.number, t.state) for t in load(storage_url, study_name).trials] == before  # nothing written

    def compatible(raw):  # a widened float range, a new default, a key not searched
        raw["search"]["training.learning_rate"]["low"] = 1.0e-5
        raw["training"]["warmup_ratio"] = 0.05
        raw["training"]["max_target_length"] = 100

    write_space(tmp_path, compatible)
    assert search_command(monkeypatch, storage_url, tmp_path, study_name, space, 4) == 0
    trials = load(storage_url, study_name).trials
    assert sum(t.state in FINISHED for t in trials) == 4 and not [t for t in trials if t.state == TrialState.FAIL]


def test_a_seed_repeats_a_new_study_and_a_resumed_one_draws_on(storage_url, tmp_path, study_name):
    space = Space.for_family("t5")
    for trials in ("3", "6"):  # --trials 3, then the same command with --trials 6
        resumed = run_study(args_for(storage_url, tmp_path, "--trials", trials, "--seed", "7"), space,
                            data(tmp_path), study_name, train_fn=fake_train)
    drawn = [t.params for t in resumed.trials]
    assert len(drawn) == 6 and all(a != b for i, a in enumerate(drawn) for b in drawn[:i])
    fresh = run_study(args_for(storage_url, tmp_path, "--trials", "6", "--seed", "7"), space, data(tmp_path),
                      f"{study_name}-fresh", train_fn=fake_train)
    assert [t.params for t in fresh.trials] == drawn  # from scratch the same; resuming changed nothing


def killed_search(storage_url, tmp_path, study_name, running) -> None:
    """A search that trains trial 0, then hangs in trial 1 until it is killed."""
    def hangs_in_trial_1(config, *args, label=None, **kwargs):
        if label != "trial-0000":
            running.set()
            time.sleep(3600)
        return fake_train(config, *args, label=label, **kwargs)

    args = args_for(storage_url, tmp_path, "--trials", "2")
    run_study(args, Space.for_family("t5"), data(tmp_path), study_name, train_fn=hangs_in_trial_1)
    os._exit(0)


def test_a_rerun_at_once_fails_and_requeues_the_trial_of_a_killed_search(storage_url, tmp_path, study_name):
    # Forked: a real process that owns a trial and dies, without a second import of torch.
    ctx = mp.get_context("fork")
    running = ctx.Event()
    search_process = ctx.Process(target=killed_search, args=(storage_url, tmp_path, study_name, running))
    gc.collect()
    gc.freeze()  # the objects it inherits (database connections among them) are never collected there
    try:
        search_process.start()
    finally:
        gc.unfreeze()
    assert running.wait(timeout=300)
    os.kill(search_process.pid, signal.SIGKILL)
    search_process.join()
    [killed] = load(storage_url, study_name).get_trials(states=(TrialState.RUNNING,))

    # At once, well within the heartbeat's grace period, and with nothing left to do (1 finished, --trials 1).
    run_study(args_for(storage_url, tmp_path, "--trials", "1"), Space.for_family("t5"), data(tmp_path), study_name,
              train_fn=fake_train)
    trials = load(storage_url, study_name).trials
    assert trials[killed.number].state == TrialState.FAIL
    [retry] = [t for t in trials if t.system_attrs.get("failed_trial") == killed.number]
    assert retry.state == TrialState.WAITING

    run_study(args_for(storage_url, tmp_path, "--trials", "2"), Space.for_family("t5"), data(tmp_path), study_name,
              train_fn=fake_train)
    trials = load(storage_url, study_name).trials
    assert trials[retry.number].state in FINISHED and trials[retry.number].params == killed.params
    assert sum(t.state in FINISHED for t in trials) == 2 and not [t for t in trials if t.state == TrialState.RUNNING]


def test_a_trial_owned_on_another_host_waits_for_its_heartbeat(storage_url, tmp_path, study_name):
    run_study(args_for(storage_url, tmp_path, "--trials", "1"), Space.for_family("t5"), data(tmp_path), study_name,
              train_fn=fake_train)
    study = load(storage_url, study_name)
    elsewhere = study.ask()
    elsewhere.set_user_attr(OWNER, {"trial": elsewhere.number, "host": f"not-{socket.gethostname()}", "pid": 1,
                                    "started": "0:0"})
    run_study(args_for(storage_url, tmp_path, "--trials", "1"), Space.for_family("t5"), data(tmp_path), study_name,
              train_fn=fake_train)
    assert load(storage_url, study_name).trials[elsewhere.number].state == TrialState.RUNNING


def test_a_reused_process_id_is_not_the_owner():
    trial = optuna.trial.create_trial(state=TrialState.RUNNING, user_attrs={})
    me = {"trial": trial.number, "host": socket.gethostname(), "pid": os.getpid()}
    trial.user_attrs[OWNER] = {**me, "started": start_time(os.getpid())}
    assert not owner_gone(trial)
    trial.user_attrs[OWNER] = {**me, "started": "another boot:12"}  # same id, another process
    assert owner_gone(trial)
