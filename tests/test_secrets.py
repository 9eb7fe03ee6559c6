"""A storage password stays a secret: no file the search or its libraries write holds it, nor the console."""
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import sqlalchemy
import yaml

from conftest import SECRET
from search.run import build_parser, worker_argv
from search.space import Space
from search.storage import open_storage, redact
from test_search import quick_space
from test_wandb import offline_runs, offline_wandb  # noqa: F401 (a fixture)

REPO = Path(__file__).resolve().parents[1]


def written_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and not p.is_symlink()]


@pytest.mark.parametrize("workers", [[], ["--gpus", "0"]], ids=["one process", "a worker"])
def test_storage_password_reaches_no_file_and_no_console(password_url, offline_wandb, tmp_path,  # noqa: F811
                                                         workers):
    # From tmp_path, so every file the run writes is under it (HOME too: offline_wandb).
    cmd = [sys.executable, "-m", "search.run", "--demo", "--space", str(quick_space(tmp_path)), "--trials", "1",
           "--storage", password_url, "--study", "secret", "--output-root", str(tmp_path / "outputs"), *workers]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert SECRET not in done.stdout + done.stderr
    assert redact(password_url) in done.stdout  # the study line names the storage, password hidden
    assert offline_runs(tmp_path / "outputs"), "no W&B run was written"
    files = written_files(tmp_path)
    assert any(p.suffix == ".wandb" for p in files) and any(p.name == "summary.txt" for p in files)
    for path in files:
        assert SECRET.encode() not in path.read_bytes(), path
    storage = open_storage(password_url)
    assert optuna.load_study(study_name="secret", storage=storage).trials
    assert SECRET not in database_text(storage.engine)


def database_text(engine) -> str:
    """Every row of every table in the storage, as text."""
    with engine.connect() as db:
        return repr([db.execute(sqlalchemy.text(f'SELECT * FROM "{table}"')).all()
                     for table in sqlalchemy.inspect(engine).get_table_names()])


def test_workers_get_the_storage_url_from_the_environment(tmp_path, monkeypatch):
    from search.storage import STORAGE_ENV

    space = Space.for_family("t5")
    argv = worker_argv(["--storage", f"postgresql://u:{SECRET}@h/db", "--gpus", "0,1"], space)
    assert "--storage" not in argv and SECRET not in " ".join(argv)
    monkeypatch.setenv(STORAGE_ENV, f"postgresql://u:{SECRET}@h/db")
    assert build_parser().parse_args([]).storage == f"postgresql://u:{SECRET}@h/db"


def test_sweep_file_holds_no_password(tmp_path, capsys):
    from search.sweep import main

    out = tmp_path / "t5.yaml"
    assert main(["--family", "t5", "--demo", "--output", str(out), "--storage",
                 f"postgresql://postgres:{SECRET}@db-host:5432/sumsweep"]) == 0
    command = yaml.safe_load(out.read_text(encoding="utf-8"))["command"]
    assert command[command.index("--storage") + 1] == "postgresql://postgres@db-host:5432/sumsweep"
    assert SECRET not in out.read_text(encoding="utf-8") and SECRET not in "".join(capsys.readouterr())
