"""Nothing lost: out-of-memory retries, memory across trials, crashed workers."""
import gc
import os
import signal
import subprocess
import sys
import time

import optuna
import psutil
import pytest
import torch
from optuna.trial import TrialState

import models.trainer as trainer
from search.storage import open_storage, study_names
from test_search import quick_space

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_out_of_memory_halves_the_batch_and_keeps_the_effective_batch(tiny_config, tmp_path, monkeypatch):
    config, assets = tiny_config("t5", training__batch_size=8, training__gradient_accumulation_steps=2,
                                 training__max_steps=10, training__eval_steps=10)
    real_once, seen = trainer._train_once, []

    def fits_at_batch_2(config, *args):
        seen.append((config.training.batch_size, config.training.gradient_accumulation_steps))
        if config.training.batch_size > 2:  # as a smaller GPU would
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_once(config, *args)

    monkeypatch.setattr(trainer, "_train_once", fits_at_batch_2)
    result = trainer.train(config, assets.train, assets.dev, tmp_path, progress=False)
    assert seen == [(8, 2), (4, 4), (2, 8)]
    assert len(result.oom_retries) == 2 and "batch 8" in result.oom_retries[0]
    assert result.steps == 10


def test_out_of_memory_at_batch_1_fails_with_the_reason(tiny_config, tmp_path, monkeypatch):
    config, assets = tiny_config("t5", training__batch_size=2)

    def never_fits(config, *args):
        raise torch.OutOfMemoryError("CUDA out of memory.")

    monkeypatch.setattr(trainer, "_train_once", never_fits)
    with pytest.raises(trainer.OutOfMemory, match="batch 1 after 1 retries"):
        trainer.train(config, assets.train, assets.dev, tmp_path, progress=False)


def test_out_of_memory_in_a_data_parallel_trial_fails_without_a_retry(tiny_config, tmp_path, monkeypatch):
    config, assets = tiny_config("t5", training__batch_size=8)
    attempts = []

    def out_of_memory(config, *args):
        attempts.append(config.training.batch_size)
        raise torch.OutOfMemoryError("CUDA out of memory.")

    monkeypatch.setattr(trainer, "_train_once", out_of_memory)
    monkeypatch.setenv("WORLD_SIZE", "2")  # as accelerate launch sets it for --gpus-per-trial 2
    with pytest.raises(trainer.OutOfMemory, match="one of 2 processes.*lower training.batch_size"):
        trainer.train(config, assets.train, assets.dev, tmp_path, progress=False)
    assert attempts == [8]


def test_memory_does_not_grow_across_trials(tiny_config, tmp_path):
    """HF's search leaked a model per trial until trial N ran out; ours must release each one."""
    config, assets = tiny_config("bart", training__max_steps=4, training__eval_steps=2, training__eval_subset=4)
    process = psutil.Process()

    def rss_after_trial(i):
        stop = i % 2 == 0  # pruned and completed trials alike
        trainer.train(config, assets.train, assets.dev, tmp_path / str(i), report=lambda s, m: stop, progress=False)
        gc.collect()
        return process.memory_info().rss

    for i in range(3):  # allocator pools and caches settle
        rss_after_trial(i)
    first = rss_after_trial(3)
    for i in range(4, 16):
        last = rss_after_trial(i)
    assert last - first < 60 * 2**20, f"grew {(last - first) / 2**20:.0f} MiB over 12 trials"


def test_killed_worker_trial_is_retried_with_the_same_parameters(tmp_path):
    from models.demo import demo_assets

    assets = demo_assets("t5")
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    cmd = [sys.executable, "-m", "search.run", "--space", str(quick_space(tmp_path)), "--trials", "3",
           "--storage", url, "--study", "killed", "--train-data", str(assets.train), "--val-data", str(assets.dev),
           "--checkpoint", str(assets.checkpoint), "--output-root", str(tmp_path / "outputs"),
           "--heartbeat", "1", "--grace-period", "3"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    # kill it while trial 1 trains: its parameters are all chosen by then
    while not (running := _running_trial(url)) or running.number < 1 or "config" not in running.user_attrs:
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    time.sleep(4)  # past the grace period: the trial's heartbeat is stale

    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    study = optuna.load_study(study_name="killed", storage=open_storage(url))
    killed = study.trials[running.number]
    assert killed.state == TrialState.FAIL
    retried = [t for t in study.trials if t.system_attrs.get("failed_trial") == running.number]
    assert len(retried) == 1 and retried[0].params == killed.params
    assert sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in study.trials) == 3
    best = study.best_trial
    kept = sorted((tmp_path / "outputs" / "killed").glob("trial-*/best"))
    assert [p.parent.name for p in kept] == [f"trial-{best.number:04d}"]


def _running_trial(url):
    storage = open_storage(url)
    if "killed" not in study_names(storage):
        return None
    trials = optuna.load_study(study_name="killed", storage=storage).get_trials(states=(TrialState.RUNNING,))
    return trials[0] if trials else None


def test_workers_share_one_study_and_stop_together(tmp_path):
    """--gpus with fake device ids on a CPU machine: two workers, one study, Ctrl-C reaches both."""
    from models.demo import demo_assets

    assets = demo_assets("t5")
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    cmd = [sys.executable, "-m", "search.run", "--space", str(quick_space(tmp_path)), "--trials", "4",
           "--storage", url, "--study", "shared", "--train-data", str(assets.train), "--val-data", str(assets.dev),
           "--checkpoint", str(assets.checkpoint), "--output-root", str(tmp_path / "outputs"), "--gpus", "0,1",
           "--no-wandb"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "[gpu 0]" in done.stdout and "[gpu 1]" in done.stdout and "best trial" in done.stdout
    study = optuna.load_study(study_name="shared", storage=open_storage(url))
    finished = [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == 4  # a worker does not start a trial the study no longer needs
    assert {t.user_attrs["worker"] for t in finished} == {"gpu 0", "gpu 1"}
    assert sum(bool(t.user_attrs.get("baseline")) for t in study.trials) == 1

    proc = subprocess.Popen([*cmd[:6], "8", *cmd[7:]], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    while sum(t.state == TrialState.RUNNING for t in optuna.load_study(
            study_name="shared", storage=open_storage(url)).trials) < 2:
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out
    study = optuna.load_study(study_name="shared", storage=open_storage(url))
    assert not [t for t in study.trials if t.state == TrialState.RUNNING]
