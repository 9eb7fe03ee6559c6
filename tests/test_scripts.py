"""The scripts and benchmarks nobody imports in tests still have to parse and show their usage."""
import runpy
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PROGRAMS = sorted(p for folder in ("scripts", "benchmarks") for p in (REPO / folder).glob("*.py")
                  if p.name != "__init__.py")


@pytest.mark.parametrize("program", PROGRAMS, ids=[p.name for p in PROGRAMS])
def test_every_program_shows_its_usage(program, monkeypatch, capsys):
    # Run as `python PROGRAM --help` would, in this process: its imports are the ones the tests already made.
    monkeypatch.setattr(sys, "argv", [str(program), "--help"])
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.chdir(REPO)
    with pytest.raises(SystemExit) as stop:
        runpy.run_path(str(program), run_name="__main__")
    assert stop.value.code in (0, None) and "usage" in capsys.readouterr().out.lower()
