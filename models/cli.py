"""What the single-run commands share: one-line errors instead of tracebacks, and quiet libraries."""
from __future__ import annotations

import logging
import os
import sys
from typing import Callable

from models.errors import USER_ERRORS


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
