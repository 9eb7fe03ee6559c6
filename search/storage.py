"""Storage URL -> Optuna storage: SQLite for one machine, PostgreSQL across machines.

SQLite gets WAL journaling (readers such as the dashboard never block a writer) and a busy
timeout (concurrent workers wait for the lock instead of failing). Trials heartbeat, so one
whose worker died is failed by the next worker and re-queued with the same parameters.
"""
from __future__ import annotations

import functools
import hashlib
import os
import random
import re
import sqlite3
import time
import warnings
from collections.abc import Callable
from contextlib import closing, contextmanager
from pathlib import Path

import optuna
import sqlalchemy
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

from models import ConfigError

DEFAULT_URL = "sqlite:///studies.db"
STORAGE_ENV = "SUMSWEEP_STORAGE"  # the storage URL given out of the command line (workers get it this way)
HEARTBEAT_SECONDS = 30
GRACE_SECONDS = 120  # > the longest pause between heartbeats, a slow eval included
BUSY_TIMEOUT_SECONDS = 60
with warnings.catch_warnings():  # marked experimental; we rely on it knowingly
    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
    # A trial whose worker died is queued again with the same parameters, up to 3 times (search/owners.py too).
    RETRY_STALE = RetryHeartbeatStaleTrialCallback(max_retry=3)
# What processes opening a new database at the same moment see when another one created a table first.
CREATION_RACE = ("already exists", "duplicate key", "unique constraint", "database is locked")


class StorageError(ConfigError):
    pass


# user:password@ after the scheme; greedy up to the last @ of the URL, since a password may hold a raw @
_PASSWORD = re.compile(r"(://[^:/@\s]*):\S*@")


def redact(url: str) -> str:
    """The URL with its password replaced, fit for logs and error messages."""
    return _PASSWORD.sub(r"\1:***@", url)


def without_password(url: str) -> str:
    """The URL with no password: the driver then takes it from PGPASSWORD or ~/.pgpass."""
    return _PASSWORD.sub(r"\1@", url)


def default_url() -> str:
    return os.environ.get(STORAGE_ENV) or DEFAULT_URL


def hide_passwords(argv: list[str]) -> None:
    """Every storage password in `argv` (sys.argv) replaced, in place: W&B records a run's command line."""
    argv[:] = [redact(arg) for arg in argv]


def with_absolute_sqlite_path(url: str) -> str:
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
        if folder.exists() and not folder.is_dir():
            raise StorageError(f"storage folder {folder} is a file, not a folder; use a path in a folder")
        if not folder.is_dir():
            raise StorageError(f"storage folder {folder} does not exist; create it or use another path")
    elif "@" in (_host(url) or ""):  # the driver would take the password's tail for the host
        raise StorageError(f"storage {redact(url)} has an @ in its password; write it as %40, or leave the "
                           "password out of the URL and set PGPASSWORD")
    if url.startswith("postgresql"):
        check_postgres_driver(url)


def _host(url: str) -> str | None:
    try:
        return sqlalchemy.engine.make_url(url).host
    except sqlalchemy.exc.ArgumentError:  # not a URL SQLAlchemy can read: open_storage says so
        return None


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
        path = Path(url.removeprefix("sqlite:///"))
        with _sqlite_faults(path):
            _while_locked(lambda: _use_wal(path))
            _while_locked(lambda: _check_writable(path))
        # isolation_level None: Python's sqlite3 must not open transactions itself (see _serialize_writes)
        engine_kwargs = {"connect_args": {"timeout": BUSY_TIMEOUT_SECONDS, "isolation_level": None}}
    elif url.startswith(("postgresql", "mysql")):
        engine_kwargs = {"pool_pre_ping": True}
    try:
        storage = _rdb_storage(url, engine_kwargs, heartbeat, grace_period)
    except Exception as err:  # sqlalchemy's errors carry the whole URL: never print them raw
        reason = redact(str(err).splitlines()[0]) if str(err) else type(err).__name__
        raise StorageError(f"cannot open storage {redact(url)} ({reason}); check the URL, "
                           "that the database server runs, and the credentials") from None
    if sqlite:
        _serialize_writes(storage.engine)
    return storage


def _rdb_storage(url: str, engine_kwargs: dict, heartbeat: int, grace_period: int) -> RDBStorage:
    """Optuna's storage; opened again when another process created the same tables meanwhile (on the
    next try the tables exist, and Optuna leaves them be)."""
    for attempt in range(5):
        try:
            return RDBStorage(url, engine_kwargs=engine_kwargs, heartbeat_interval=heartbeat,
                              grace_period=grace_period, heartbeat_stale_trial_callback=RETRY_STALE)
        except sqlalchemy.exc.SQLAlchemyError as err:
            if attempt == 4 or not any(words in str(err).lower() for words in CREATION_RACE):
                raise
            time.sleep(0.1 * (attempt + 1))
    raise AssertionError("unreachable")


@contextmanager
def one_asker(url: str, study_name: str):
    """While held, no other process asks the study for a trial. PostgreSQL numbers a new trial by counting
    the trials committed before it, so two processes asking at once can get the same number, and then
    neither sees the other as asked first: both train, and the study ends with more trials than asked.
    A session-level advisory lock on the study's name serializes asking. SQLite needs none: each of its
    transactions holds the write lock (_serialize_writes)."""
    if not url.startswith("postgresql"):
        yield
        return
    key = int.from_bytes(hashlib.sha256(study_name.encode()).digest()[:8], "big", signed=True)
    with _lock_engine(url, os.getpid()).connect() as conn:
        conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:key)"), {"key": key})
        conn.commit()
        try:
            yield
        finally:
            conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:key)"), {"key": key})
            conn.commit()


@functools.cache
def _lock_engine(url: str, pid: int) -> sqlalchemy.engine.Engine:
    """One small pool a process (keyed by pid: a forked child must not share its parent's connections)."""
    return sqlalchemy.create_engine(url, pool_size=1, max_overflow=0, pool_pre_ping=True)


def _serialize_writes(engine) -> None:
    """Every SQLite transaction takes the write lock when it begins.

    Python's sqlite3 begins a transaction only at the first write, so two workers can both read
    trial 0 as WAITING and both start it (Optuna's row lock is a no-op on SQLite). BEGIN IMMEDIATE
    makes the read and the write one step; the busy timeout makes the others wait their turn.
    """
    sqlalchemy.event.listen(engine, "begin", lambda conn: conn.exec_driver_sql("BEGIN IMMEDIATE"))


def _while_locked(step: Callable[[], None]) -> None:
    """An SQLite step tried again while another process holds a lock that the busy timeout does not wait
    for: searches started together on a new file switch it to WAL at the same moment."""
    deadline = time.monotonic() + BUSY_TIMEOUT_SECONDS
    while True:
        try:
            return step()
        except sqlite3.OperationalError as err:
            if not ("locked" in str(err) or "busy" in str(err)) or time.monotonic() > deadline:
                raise
            time.sleep(0.05 + 0.1 * random.random())


def _use_wal(path: Path) -> None:
    # WAL is a property of the database file, so setting it once here covers every later connection.
    with closing(sqlite3.connect(path, timeout=BUSY_TIMEOUT_SECONDS)) as db:
        db.execute("PRAGMA journal_mode=WAL")


def _check_writable(path: Path) -> None:
    """A study writes from its first step: a file it can read but not write is refused before any work."""
    with closing(sqlite3.connect(path, timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None)) as db:
        # A write rolled back: SQLite opens a file it may not write read-only, and says so only on a write.
        db.execute("BEGIN IMMEDIATE")
        db.execute("CREATE TABLE sumsweep_write_check (x)")
        db.execute("ROLLBACK")


@contextmanager
def _sqlite_faults(path: Path):
    """SQLite's own errors about the file, as one line naming it and the fix."""
    try:
        yield
    except sqlite3.DatabaseError as err:
        said = str(err)
        if "not a database" in said:
            raise StorageError(f"storage file {path} is not a SQLite database; point --storage at another file "
                               "(e.g. sqlite:///studies.db) or move it away") from None
        if "readonly" in said or "read-only" in said:
            raise StorageError(f"storage file {path} is read-only; make it writable, or copy it to a writable "
                               "folder and point --storage at the copy") from None
        if "unable to open" in said:
            raise StorageError(f"cannot create or open storage file {path}: its folder {path.parent} is not "
                               "writable; make it writable or point --storage at a writable folder") from None
        raise StorageError(f"storage file {path} cannot be used ({said}); point --storage at another file") from None


def study_names(storage: RDBStorage) -> list[str]:
    return [s.study_name for s in optuna.study.get_all_study_summaries(storage, include_best_trial=False)]
