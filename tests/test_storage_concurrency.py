"""Many writers on one SQLite file while a reader polls it, as the dashboard does."""
import functools
import gc
import multiprocessing as mp
import os
import time
from pathlib import Path
from tempfile import gettempdir

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


# Processes started together in each round. Each SQLite round is a new file: creating its tables raced
# in 3 of 4 tries with 2 processes (three tries all missing it: 1 in 64). PostgreSQL's tables exist after
# the first test: its rounds race on the study and its trials.
ROUNDS = {"sqlite": (2, 2, 2, 8), "postgresql": (2, 8)}


def search_process(index: int, rounds, url_for_round, start) -> None:
    """One `python -m search.run` (its main, through the same error handling) per round it takes part in,
    started with the others at the barrier. The storage and the study are real; the trainer is the stand-in,
    the input checks (tokenizer, data files) and the report are skipped: none is the point here."""
    import search.study
    from models.cli import run_cli
    from search.objective import StudyData
    from search.run import main
    from test_search import fake_train

    search.study.run_study = functools.partial(search.study.run_study, train_fn=fake_train)
    search.study.prepare = lambda args, space: (StudyData(Path("train.csv"), Path("dev.csv")), args.study)
    search.study.print_report = lambda study, folder: None  # its plots take seconds
    codes = []
    for number, processes in enumerate(rounds):
        start.wait()
        if index >= processes:
            continue
        argv = ["--family", "t5", "--trials", "3", "--storage", url_for_round(number), "--study", f"together-{number}",
                "--seed", "3", "--no-wandb", "--output-root", str(Path(gettempdir()) / f"together-{os.getpid()}")]
        try:
            run_cli(lambda: main(argv))
        except SystemExit as stop:
            codes.append(stop.code)
    os._exit(max(codes, default=0))


def round_url(base: str, tmp: str, number: int) -> str:
    return f"sqlite:///{tmp}/studies-{number}.db" if base.startswith("sqlite") else base


def test_searches_started_together_share_one_study_and_stop_at_its_target(storage_url, tmp_path):
    """Independent searches on a new storage: none dies on the tables or the study being created by another,
    and each study ends with exactly the trials asked for."""
    # Forked from this process, which has imported torch already (8 imports of it would take minutes on
    # 2 cores); frozen, the objects inherited (database connections among them) are never collected there.
    ctx = mp.get_context("fork")
    rounds = ROUNDS["sqlite" if storage_url.startswith("sqlite") else "postgresql"]
    start = ctx.Barrier(max(rounds))
    url_for_round = functools.partial(round_url, storage_url, str(tmp_path))
    processes = [ctx.Process(target=search_process, args=(i, rounds, url_for_round, start))
                 for i in range(max(rounds))]
    gc.collect()
    gc.freeze()
    try:
        for p in processes:
            p.start()
    finally:
        gc.unfreeze()
    for p in processes:
        p.join(timeout=600)
    assert [p.exitcode for p in processes] == [0] * len(processes)
    for number in range(len(rounds)):
        trials = optuna.load_study(study_name=f"together-{number}", storage=open_storage(url_for_round(number))).trials
        assert sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials) == 3, number
        assert sum(bool(t.user_attrs.get("baseline")) for t in trials) == 1, number
        assert not [t for t in trials if t.state == TrialState.RUNNING], number
        drawn = [t.params for t in trials if t.params and not t.user_attrs.get("baseline")]
        assert all(a != b for i, a in enumerate(drawn) for b in drawn[:i]), "two searches drew the same parameters"


def hold_one_asker(url: str, got) -> None:
    from search.storage import one_asker

    with one_asker(url, "together-0"):
        got.set()


def test_one_process_at_a_time_asks_a_postgresql_study_for_a_trial():
    """PostgreSQL may give two trials asked at once the same number; asking is serialized by a lock.
    (SQLite needs none: each of its transactions takes the write lock.)"""
    from conftest import fresh_database
    from search.storage import one_asker

    with fresh_database() as url:
        one_at_a_time(url, mp.get_context("spawn"), one_asker)


def one_at_a_time(storage_url, ctx, one_asker) -> None:
    got = ctx.Event()
    other = ctx.Process(target=hold_one_asker, args=(storage_url, got))
    with one_asker(storage_url, "together-0"):
        other.start()
        assert not got.wait(3)  # the other process waits while this one asks
    assert got.wait(60)  # and asks once this one is done
    other.join(timeout=60)
    assert other.exitcode == 0
