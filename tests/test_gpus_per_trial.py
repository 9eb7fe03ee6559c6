"""--gpus-per-trial: one trial over several processes under accelerate launch, on CPU (gloo, 2 processes).

Rank 0 alone asks the study for trials and decides on pruning; the other rank trains what it shares.
The fake device ids name the groups; on this CPU machine each group is two CPU processes.
"""
import os
import re
import subprocess
import sys
from collections import defaultdict

import optuna
import pytest
from optuna.trial import TrialState

from search.objective import config_digest
from search.storage import open_storage, study_names
from search.workers import cpu_threads, exit_code, slots, worker_command
from test_search import quick_space
from test_search_cli import run_main

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def search(tmp_path, *extra):
    cmd = [sys.executable, "-m", "search.run", "--demo", "--space", str(quick_space(tmp_path)),
           "--study", "split", "--storage", f"sqlite:///{tmp_path / 's.db'}", "--output-root",
           str(tmp_path / "outputs"), "--gpus", "0,1", "--gpus-per-trial", "2", "--no-wandb", *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def load(tmp_path) -> optuna.Study:
    return optuna.load_study(study_name="split", storage=open_storage(f"sqlite:///{tmp_path / 's.db'}"))


def test_both_ranks_train_the_trial_rank_0_asked_for(tmp_path):
    done = search(tmp_path, "--trials", "2")
    assert done.returncode == 0, done.stdout + done.stderr
    study = load(tmp_path)
    # A rank that asked the study itself would have added trials of its own.
    assert len(study.trials) == 2 and all(t.state in FINISHED for t in study.trials)
    assert {(t.user_attrs["ranks"], t.user_attrs["worker"]) for t in study.trials} == {(2, "gpus 0,1")}

    said = defaultdict(dict)  # trial -> rank -> digest of the config that rank trained
    for trial, rank, digest in re.findall(r"\[gpus 0,1\] trial-(\d+): rank (\d) of 2 trains config (\w+)", done.stdout):
        said[int(trial)][int(rank)] = digest
    for trial in study.trials:
        assert said[trial.number] == {0: config_digest(trial.user_attrs["config"]),
                                      1: config_digest(trial.user_attrs["config"])}, done.stdout
    assert "best trial" in done.stdout


def test_a_trial_failing_on_rank_0_alone_ends_the_worker_and_nothing_hangs(tmp_path):
    # Only rank 0 writes a trial's logs; a file where its folder should be fails rank 0 alone, while rank 1
    # waits for it inside the first gradient all-reduce, where no message reaches it.
    (tmp_path / "outputs" / "split").mkdir(parents=True)
    (tmp_path / "outputs" / "split" / "trial-0000").write_text("in the way")
    done = search(tmp_path, "--trials", "2")
    assert done.returncode == 1, done.stdout + done.stderr
    [trial] = load(tmp_path).trials
    assert trial.state == TrialState.FAIL and "NotADirectoryError" in trial.user_attrs["fail_reason"]


def test_each_group_of_gpus_is_one_launch_of_that_many_processes():
    assert slots(["0", "1", "2", "3"], per_gpu=1, per_trial=2) == [("gpus 0,1", "0,1"), ("gpus 2,3", "2,3")]
    command = worker_command(["--trials", "5"], per_trial=2, port=29517)
    assert command[1:3] == ["-m", "accelerate.commands.launch"]
    assert command[command.index("--num_processes") + 1] == "2"
    assert command[command.index("--main_process_port") + 1] == "29517"
    assert command[-5:] == ["-m", "search.run", "--trials", "5", "--worker"]


def test_a_worker_killed_by_a_signal_fails_the_search():
    assert exit_code([0, -9]) == 137  # e.g. the kernel's out-of-memory killer
    assert exit_code([0, 2, 1]) == 2
    assert exit_code([0, 0]) == 0


def test_workers_share_out_the_cores_between_their_processes(monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 16)
    assert cpu_threads(4) == "4"  # e.g. --trials-per-gpu 4, or two groups of --gpus-per-trial 2
    assert cpu_threads(32) == "1"


def test_the_command_starts_its_workers_before_it_imports_torch():
    """search.run starts the workers first; search.study (torch, transformers) is imported after."""
    loaded = subprocess.run([sys.executable, "-c", "import sys, search.run; "
                             "print(sorted({'torch', 'transformers'} & set(sys.modules)))"],
                            cwd=REPO, capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "[]"


def test_input_found_wrong_once_the_workers_started_stops_them_and_writes_no_study(tmp_path):
    """The workers start before the parent has checked the data (they import torch meanwhile)."""
    import psutil

    missing = str(tmp_path / "missing.csv")
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    done = subprocess.run([sys.executable, "-m", "search.run", "--space", str(quick_space(tmp_path)), "--train-data",
                           missing, "--val-data", missing, "--storage", url, "--gpus", "0,1", "--no-wandb"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.startswith(f"error: data file {missing} does not exist") and done.stderr.count("\n") == 1
    assert "[gpu" not in done.stdout
    assert not (tmp_path / "studies.db").exists() or not study_names(open_storage(url))
    left = [p.pid for p in psutil.process_iter(["cmdline"]) if str(tmp_path) in " ".join(p.info["cmdline"] or [])]
    assert left == [], "workers outlived the search that started them"


def test_a_worker_whose_search_ends_before_the_study_exists_leaves_the_storage_alone(tmp_path):
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    done = subprocess.run([sys.executable, "-m", "search.run", "--demo", "--space", str(quick_space(tmp_path)),
                           "--storage", url, "--study", "orphan", "--no-wandb", "--worker"],
                          cwd=REPO, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1 and "ended before its study was ready" in done.stderr, done.stdout + done.stderr
    assert not (tmp_path / "studies.db").exists() or not study_names(open_storage(url))


BAD = {
    "odd count": (["--gpus", "0,1,2", "--gpus-per-trial", "2"], "--gpus 0,1,2 cannot be split into groups of"),
    "zero": (["--gpus", "0,1", "--gpus-per-trial", "0"], "--gpus-per-trial 0"),
    "with trials per gpu": (["--gpus", "0,1", "--gpus-per-trial", "2", "--trials-per-gpu", "2"], "do not mix"),
    "without gpus": (["--gpus-per-trial", "2"], "needs --gpus"),
    "mps without gpus": (["--mps"], "--mps shares a GPU between workers, so it needs --gpus"),
    "mps without its control program": (["--gpus", "0", "--trials-per-gpu", "2", "--mps"],
                                        "--mps needs nvidia-cuda-mps-control"),
}


@pytest.mark.parametrize("case", BAD, ids=list(BAD))
def test_bad_gpus_per_trial_is_one_line_and_writes_no_study(case, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path))  # no nvidia-cuda-mps-control, as on a machine without NVIDIA's driver
    extra, expected = BAD[case]
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    code, err = run_main(["--demo", "--storage", url, "--trials", "2", *extra], capsys)
    assert code == 2
    assert err.startswith("error: ") and err.strip().count("\n") == 0 and expected in err, err
    assert not (tmp_path / "studies.db").exists() or not study_names(open_storage(url))
