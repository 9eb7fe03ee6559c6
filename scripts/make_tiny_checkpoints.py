"""python scripts/make_tiny_checkpoints.py [--out DIR]

Builds (or finds, when already cached) the demo data and every family's tiny checkpoint and
prints where they are; `--out` also copies them there. `--demo` builds them on first use anyway.
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.demo import demo_assets  # noqa: E402
from models.families import FAMILIES  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="copy the checkpoints into this folder")
    args = parser.parse_args(argv)
    for family in FAMILIES:
        checkpoint = demo_assets(family).checkpoint
        if args.out:
            checkpoint = Path(shutil.copytree(checkpoint, args.out / checkpoint.name, dirs_exist_ok=True))
        print(f"{family:8} {checkpoint}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
