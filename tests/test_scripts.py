"""The scripts and benchmarks nobody imports in tests still have to parse and show their usage."""
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PROGRAMS = sorted(p for folder in ("scripts", "benchmarks") for p in (REPO / folder).glob("*.py")
                  if p.name != "__init__.py")


@pytest.mark.parametrize("program", PROGRAMS, ids=[p.name for p in PROGRAMS])
def test_every_program_shows_its_usage(program):
    done = subprocess.run([sys.executable, str(program), "--help"], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0 and "usage" in done.stdout.lower(), done.stderr[-2000:]
