"""Many writers on one SQLite file while a reader polls it, as the dashboard does."""
import multiprocessing as mp
import time

import optuna
from optuna.trial import TrialState

from search.storage import open_storage

WORKERS, TRIALS = 8, 25


def worker(url: str) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name="busy", storage=open_storage(url))
    study.optimize(lambda t: t.suggest_float("x", 0, 1) ** 2, n_trials=TRIALS)


def reader(url: str, stop) -> None:
    storage = open_storage(url)
    while not stop.is_set():
        optuna.load_study(study_name="busy", storage=storage).get_trials(deepcopy=False)
        time.sleep(0.05)


def test_eight_workers_and_a_reader_lose_no_trial(tmp_path):
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    study = optuna.create_study(study_name="busy", storage=open_storage(url))
    study.enqueue_trial({"x": 0.5})  # trial 0, as every study starts: exactly one worker may take it
    ctx = mp.get_context("spawn")
    stop = ctx.Event()
    watcher = ctx.Process(target=reader, args=(url, stop))
    watcher.start()
    workers = [ctx.Process(target=worker, args=(url,)) for _ in range(WORKERS)]
    for p in workers:
        p.start()
    for p in workers:
        p.join(timeout=600)
    stop.set()
    watcher.join(timeout=60)
    assert [p.exitcode for p in workers] == [0] * WORKERS and watcher.exitcode == 0

    trials = optuna.load_study(study_name="busy", storage=open_storage(url)).trials
    assert len(trials) == WORKERS * TRIALS
    assert all(t.state == TrialState.COMPLETE for t in trials)
    assert sorted(t.number for t in trials) == list(range(WORKERS * TRIALS))
    assert sum(t.params["x"] == 0.5 for t in trials) == 1
