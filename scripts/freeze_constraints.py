"""python scripts/freeze_constraints.py --out constraints.txt

The exact set CI tests: the installed version of every package that sumsweep and its dev extra need
(setup.cfg), and of what those need in turn. torch is written without its build tag (+cpu, +cu130), so
the same line accepts the CPU build here and a CUDA build a user installed first.
"""
from __future__ import annotations

import argparse
import configparser
import sys
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
HEADER = """\
# The exact versions CI tests: pip install -e '.[dev]' -c constraints.txt
# Made by scripts/freeze_constraints.py from a tested environment; setup.cfg holds the ranges.
"""


def declared(extras: list[str]) -> list[Requirement]:
    """setup.cfg's install_requires and the named extras."""
    config = configparser.ConfigParser()
    config.read(REPO / "setup.cfg", encoding="utf-8")
    text = config["options"]["install_requires"]
    text += "".join("\n" + config["options.extras_require"][extra] for extra in extras)
    return [Requirement(line) for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def applies(requirement: Requirement, extras: set[str]) -> bool:
    """A dependency's marker holds here, for the extras it was asked with (or none)."""
    marker = requirement.marker
    return marker is None or any(marker.evaluate({"extra": extra}) for extra in extras | {""})


def closure(requirements: list[Requirement]) -> dict[str, str]:
    """name -> installed version, for the requirements and everything they need."""
    versions: dict[str, str] = {}
    seen: set[tuple[str, str]] = set()
    todo = [(r, set(r.extras)) for r in requirements]
    while todo:
        requirement, extras = todo.pop()
        key = (canonicalize_name(requirement.name), ",".join(sorted(extras)))
        if key in seen:
            continue
        seen.add(key)
        try:
            dist = metadata.distribution(requirement.name)
        except metadata.PackageNotFoundError:
            raise SystemExit(f"error: {requirement.name} is not installed; run pip install -e '.[dev]' first")
        versions[dist.metadata["Name"]] = dist.version
        for line in dist.requires or []:
            needed = Requirement(line)
            if applies(needed, extras):
                todo.append((needed, set(needed.extras)))
    return versions


def pin(name: str, version: str) -> str:
    return f"{name}=={version.split('+')[0] if canonicalize_name(name) == 'torch' else version}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="file to write (default: print)")
    parser.add_argument("--extras", default="dev", help="comma-separated extras to include (default dev)")
    args = parser.parse_args(argv)
    versions = closure(declared([e for e in args.extras.split(",") if e]))
    text = HEADER + "".join(pin(name, versions[name]) + "\n" for name in sorted(versions, key=str.lower))
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
        print(f"wrote {len(versions)} packages to {args.out}")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
