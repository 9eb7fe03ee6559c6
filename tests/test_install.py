"""The package as a user installs it: `pip install .` (not editable) into a fresh environment, run from
another folder, so nothing can come from this checkout."""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from search.commands import COMMANDS, main as sumsweep

REPO = Path(__file__).resolve().parents[1]
# What a checkout holds beyond its sources (run-time outputs, build leftovers), left out of the copy installed.
NOT_SOURCES = shutil.ignore_patterns(".git", "build", "*.egg-info", "outputs", "wandb", "sweeps", "checkpoints",
                                     "studies.db*", ".cache", "__pycache__", ".pytest_cache", ".whl", ".device",
                                     ".venv", ".tox")


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Path:
    """A fresh environment holding sumsweep installed from a copy of the checkout, the copy then deleted.

    torch and the other dependencies come from this interpreter's site-packages (installing them again would
    take minutes); the environment's own site-packages come first, so `search` and `models` resolve there.
    """
    root = tmp_path_factory.mktemp("install")
    source, env = root / "source", root / "venv"
    shutil.copytree(REPO, source, ignore=NOT_SOURCES)  # an in-tree build would leave build/ in the checkout
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(env)], check=True)
    # this interpreter's pip and setuptools, run by the environment's python, install into the environment
    subprocess.run([str(env / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    str(source)], cwd=root, check=True)
    shutil.rmtree(source)
    return env


def run_installed(env: Path, program: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """A program of the environment, as a user's shell runs it: no PYTHONPATH pointing into a checkout."""
    environ = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    environ["PATH"] = f"{env / 'bin'}{os.pathsep}{environ.get('PATH', '')}"
    environ.setdefault("OMP_NUM_THREADS", "1")  # as conftest.py: one thread runs the tiny models faster here
    return subprocess.run([str(env / "bin" / program), *args], cwd=cwd, env=environ, capture_output=True, text=True,
                          timeout=1800)


# Trials of seconds, not minutes: the point here is where the code and the space files come from.
SHORT = ["--set", "training.max_steps=20", "--set", "training.num_beams=1", "--set", "training.generation_max_length=32"]


def test_installed_package_runs_the_demo_from_another_folder(venv, tmp_path):
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    done = run_installed(venv, "python", "-m", "search.run", "--family", "t5", "--trials", "2", "--demo",
                         "--no-wandb", "--seed", "0", "--storage", url, "--study", "installed",
                         "--output-root", str(tmp_path / "outputs"), *SHORT, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    study = optuna.load_study(study_name="installed", storage=url)
    finished = study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))
    assert len(finished) == 2 and all(t.user_attrs["steps"] <= 20 for t in finished)  # --set held in every trial
    space = Path(study.user_attrs["space"]).resolve()
    assert space.name == "t5.yaml" and space.is_relative_to(venv.resolve()), f"space read from {space}"
    assert (tmp_path / "outputs" / "installed" / "summary.txt").is_file()

    # collect comes with the package too
    done = run_installed(venv, "sumsweep", "collect", "--storage", url, "--output", "rows.csv", cwd=tmp_path)
    assert done.returncode == 0 and "wrote 2 trials of 1 studies" in done.stdout, done.stderr[-3000:]


def test_sumsweep_lists_its_commands_and_shows_each_ones_help(venv, tmp_path):
    done = run_installed(venv, "sumsweep", "--help", cwd=tmp_path)
    assert done.returncode == 0
    assert all(re.search(rf"^\s+{name}\s", done.stdout, re.M) for name in COMMANDS), done.stdout
    done = run_installed(venv, "sumsweep", "search", "--help", cwd=tmp_path)
    assert done.returncode == 0 and "usage: python -m search.run" in done.stdout and "--trials" in done.stdout


def test_unknown_command_is_one_line_naming_the_commands(capsys):
    with pytest.raises(SystemExit) as exit_info:
        sumsweep(["serach", "--demo"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.strip().count("\n") == 0
    assert "'serach'" in err and "search, train, predict" in err
