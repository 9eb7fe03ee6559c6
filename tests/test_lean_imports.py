"""A trial process starts without importing scikit-learn, and scikit-learn stays importable after."""
import subprocess
import sys

import pytest

pytest.importorskip("sklearn")  # installed with the dev extra (W&B Sweeps needs it)


def run(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_the_trainer_imports_without_scikit_learn_and_leaves_it_importable():
    out = run("import sys, models.trainer\n"
              "print('sklearn' in sys.modules)\n"
              "from sklearn.metrics import roc_curve\n"  # the user's own code may still use it
              "print(callable(roc_curve))")
    assert out.splitlines() == ["False", "True"]


def test_the_demo_imports_without_scikit_learn():
    assert run("import sys, models.demo; print('sklearn' in sys.modules)") == "False"
