"""What the commands share: one-line errors instead of tracebacks, quiet libraries, and `--set` overrides."""
from __future__ import annotations

import logging
import os
import sys
from typing import Callable

from models.errors import USER_ERRORS, ConfigError


def quiet_libraries(verbose: bool = False) -> None:
    """Our own lines only: the libraries' info logs and loading bars are kept for `verbose` (-v)."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if verbose:
        return
    for noisy in ("transformers", "accelerate", "peft", "bitsandbytes", "httpx", "optuna"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # "Loading weights" bars would bury the training progress
    hf_logging.set_verbosity_error()


def run_cli(main: Callable[[], int]) -> None:
    """Run a command's main; a user's mistake exits 2 with one line naming the problem and the fix."""
    try:
        code = main()
    except USER_ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        code = 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        code = 130
    raise SystemExit(code)


def parse_overrides(pairs: list[str]) -> dict[str, str]:
    """`--set training.learning_rate=1e-4`: values stay strings, the config coerces them by key."""
    overrides = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ConfigError(f"--set '{pair}' has no '='; write it as --set training.num_epochs=1")
        overrides[key.strip()] = _yaml_scalar(value.strip())
    return overrides


def _yaml_scalar(text: str):
    import yaml

    return yaml.safe_load(text) if text else text
