"""A SQLite storage that cannot be used: one line naming the file and the fix, and the file left as it was."""
import hashlib
import subprocess

import pytest

from models.cli import run_cli
from search.run import main


def run(argv):
    with pytest.raises(SystemExit) as stop:
        run_cli(lambda: main(argv))
    return stop.value.code


def demo_argv(tmp_path, url):
    return ["--family", "t5", "--demo", "--trials", "1", "--storage", url, "--output-root", str(tmp_path / "out"),
            "--no-wandb"]


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def immutable():
    """chattr +i: what stops root from writing (chmod does not); undone after the test."""
    marked = []

    def mark(path):
        if subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode:
            pytest.skip("chattr +i is not available here")
        marked.append(path)

    yield mark
    for path in marked:
        subprocess.run(["chattr", "-i", str(path)])


def refused(tmp_path, capsys, url, *words):
    assert run(demo_argv(tmp_path, url)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for word in words:
        assert word in err, err


def test_a_file_that_is_not_a_database_is_named_and_left_alone(tmp_path, capsys):
    path = tmp_path / "notes.db"
    path.write_text("my notes, not a database\n")
    before = digest(path)
    refused(tmp_path, capsys, f"sqlite:///{path}", str(path), "not a SQLite database", "--storage")
    assert digest(path) == before and sorted(p.name for p in tmp_path.iterdir()) == ["notes.db"]


def test_a_path_under_a_file_is_named(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    refused(tmp_path, capsys, f"sqlite:///{tmp_path / 'file' / 'studies.db'}", str(tmp_path / "file"), "not a folder")


def test_a_folder_that_cannot_be_written_is_named(tmp_path, capsys, immutable):
    folder = tmp_path / "locked"
    folder.mkdir()
    immutable(folder)
    refused(tmp_path, capsys, f"sqlite:///{folder / 'studies.db'}", str(folder), "not writable", "--storage")
    assert list(folder.iterdir()) == []


def test_a_read_only_database_is_named_and_left_alone(tmp_path, capsys, immutable):
    import optuna

    from search.storage import open_storage

    path = tmp_path / "studies.db"
    optuna.create_study(study_name="old", storage=open_storage(f"sqlite:///{path}"))
    before = digest(path)
    immutable(path)
    refused(tmp_path, capsys, f"sqlite:///{path}", str(path), "read-only", "--storage")
    assert digest(path) == before
