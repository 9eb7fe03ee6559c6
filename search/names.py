"""A study's name as the user gave it, and the folder its outputs go in: one folder inside the output root,
whatever the name holds."""
from __future__ import annotations

import hashlib
import re
from pathlib import Path

from models import ConfigError

LONGEST_NAME = 512  # what Optuna's storage keeps of a study name (PostgreSQL refuses a longer one)
FOLDER_BYTES = 100  # file systems allow 255 bytes per folder name; W&B and the trials add their own names below
UNSAFE = re.compile(r"[/\\\x00-\x1f\x7f]+")  # path separators and control characters


def check_study_name(name: str | None) -> None:
    """--study's mistakes, found before anything starts (None: the default name is used)."""
    if name is None:
        return
    if not name.strip():
        raise ConfigError("--study is empty; give a name, or leave --study out for FAMILY-CHECKPOINT")
    if len(name) > LONGEST_NAME:
        raise ConfigError(f"--study is {len(name)} characters long; the storage keeps at most {LONGEST_NAME}: "
                          "give a shorter name")


def study_folder(output_root: Path, name: str) -> Path:
    """output_root/name for a name that is a plain folder name. Any other (too long, with / or .., control
    characters) gets its safe characters cut short and a digest of the whole name, so two studies never
    share a folder and none writes outside the output root."""
    if _plain(name):
        return Path(output_root) / name
    safe = _cut(UNSAFE.sub("_", name), FOLDER_BYTES - 11).strip(" .") or "study"
    return Path(output_root) / f"{safe}-{hashlib.sha256(name.encode()).hexdigest()[:10]}"


def _plain(name: str) -> bool:
    return (not UNSAFE.search(name) and name.strip(" .") == name and name not in ("", ".", "..")
            and len(name.encode()) <= FOLDER_BYTES)


def _cut(text: str, most_bytes: int) -> str:
    """`text` cut to at most `most_bytes` bytes of UTF-8, on a character boundary."""
    return text.encode()[:most_bytes].decode(errors="ignore")
