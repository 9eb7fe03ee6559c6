"""The door between the wings: search/ uses only what `models/__init__.py` names, and `import models` is cheap."""
import ast
import subprocess
import sys
from pathlib import Path

import models

REPO = Path(__file__).resolve().parents[1]


def models_imports(path: Path) -> list[tuple[int, str]]:
    """(line, what) for every import of models in a source file: `models.x` modules and names taken from models."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names if alias.name.startswith("models.")]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "models":
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
    return found


def test_search_imports_only_the_models_contract():
    public = {f"models.{name}" for name in models.__all__}
    outside = [f"{path.relative_to(REPO)}:{line} {name}" for path in sorted((REPO / "search").glob("*.py"))
               for line, name in models_imports(path) if name not in public]
    assert outside == [], "search/ reaches past models/__init__.py's __all__: " + ", ".join(outside)


def test_every_name_of_the_contract_resolves():
    missing = [name for name in models.__all__ if not hasattr(models, name)]
    assert missing == []


def test_import_models_loads_no_torch():
    loaded = subprocess.run([sys.executable, "-c", "import sys, models; print(*sorted(sys.modules))"], cwd=REPO,
                            capture_output=True, text=True, check=True).stdout.split()
    assert {"torch", "transformers", "accelerate", "optuna"}.isdisjoint(loaded)
