"""Storage URL -> Optuna storage: SQLite for one machine, PostgreSQL across machines.

SQLite gets WAL journaling (readers such as the dashboard never block a writer) and a busy
timeout (concurrent workers wait for the lock instead of failing). Trials heartbeat, so one
whose worker died is failed by the next worker and re-queued with the same parameters.
"""
from __future__ import annotations

import re
import sqlite3
import warnings
from pathlib import Path

import optuna
import sqlalchemy
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

from models.errors import ConfigError

DEFAULT_URL = "sqlite:///studies.db"
HEARTBEAT_SECONDS = 30
GRACE_SECONDS = 120  # > the longest pause between heartbeats, a slow eval included
BUSY_TIMEOUT_SECONDS = 60


class StorageError(ConfigError):
    pass


def redact(url: str) -> str:
    """The URL with its password replaced, fit for logs and error messages."""
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", url)


def anchored(url: str) -> str:
    """The URL with a relative SQLite path made absolute, for a command run from another folder."""
    if url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
        return f"sqlite:///{Path(url.removeprefix('sqlite:///')).resolve()}"
    return url


def check_url(url: str) -> None:
    """The mistakes a URL shows by itself, found before any work starts."""
    if "://" not in url:
        raise StorageError(f"storage '{url}' is not a URL; write sqlite:///{url} for a SQLite file "
                           "(optuna-dashboard wants the same form)")
    if url.startswith("sqlite:///"):
        folder = Path(url.removeprefix("sqlite:///")).parent
        if not folder.is_dir():
            raise StorageError(f"storage folder {folder} does not exist; create it or use another path")
    if url.startswith("postgresql"):
        check_postgres_driver(url)


def check_postgres_driver(url: str) -> None:
    """The PostgreSQL driver is an extra (sumsweep[postgres]): a URL that needs it says so before any work."""
    try:
        dialect = sqlalchemy.engine.make_url(url).get_dialect()
    except sqlalchemy.exc.ArgumentError:
        return  # a malformed URL or unknown driver: open_storage names it
    try:
        dialect.import_dbapi()
    except ImportError:
        fix = ("pip install 'sumsweep[postgres]'" if dialect.driver == "psycopg" else
               "install it, or use postgresql:// after pip install 'sumsweep[postgres]'")
        raise StorageError(f"storage {redact(url)} needs the PostgreSQL driver {dialect.driver}, "
                           f"which is not installed; {fix}") from None


def open_storage(url: str = DEFAULT_URL, heartbeat: int = HEARTBEAT_SECONDS,
                 grace_period: int = GRACE_SECONDS) -> RDBStorage:
    check_url(url)
    engine_kwargs = {}
    sqlite = url.startswith("sqlite:///")
    if sqlite:
        _use_wal(Path(url.removeprefix("sqlite:///")))
        # isolation_level None: Python's sqlite3 must not open transactions itself (see _serialize_writes)
        engine_kwargs = {"connect_args": {"timeout": BUSY_TIMEOUT_SECONDS, "isolation_level": None}}
    elif url.startswith(("postgresql", "mysql")):
        engine_kwargs = {"pool_pre_ping": True}
    try:
        with warnings.catch_warnings():  # the retry callback is marked experimental; we rely on it knowingly
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            storage = RDBStorage(url, engine_kwargs=engine_kwargs, heartbeat_interval=heartbeat,
                                 grace_period=grace_period,
                                 heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=3))
    except Exception as err:  # sqlalchemy's errors carry the whole URL: never print them raw
        reason = redact(str(err).splitlines()[0]) if str(err) else type(err).__name__
        raise StorageError(f"cannot open storage {redact(url)} ({reason}); check the URL, "
                           "that the database server runs, and the credentials") from None
    if sqlite:
        _serialize_writes(storage.engine)
    return storage


def _serialize_writes(engine) -> None:
    """Every SQLite transaction takes the write lock when it begins.

    Python's sqlite3 begins a transaction only at the first write, so two workers can both read
    trial 0 as WAITING and both start it (Optuna's row lock is a no-op on SQLite). BEGIN IMMEDIATE
    makes the read and the write one step; the busy timeout makes the others wait their turn.
    """
    sqlalchemy.event.listen(engine, "begin", lambda conn: conn.exec_driver_sql("BEGIN IMMEDIATE"))


def _use_wal(path: Path) -> None:
    # WAL is a property of the database file, so setting it once here covers every later connection.
    with sqlite3.connect(path, timeout=BUSY_TIMEOUT_SECONDS) as db:
        db.execute("PRAGMA journal_mode=WAL")


def study_names(storage: RDBStorage) -> list[str]:
    return [s.study_name for s in optuna.study.get_all_study_summaries(storage, include_best_trial=False)]
