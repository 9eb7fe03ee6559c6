"""Write the synthetic Korean demo dataset (train/dev/test CSVs) used when no real data is at hand.

    python scripts/make_demo_data.py --out data/ [--train 2000 --dev 200 --test 100 --seed 0]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script, not installed

from models.demo_data import write_demo_data  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for train.csv, dev.csv, test.csv")
    parser.add_argument("--train", type=int, default=2000, help="rows in train.csv")
    parser.add_argument("--dev", type=int, default=200, help="rows in dev.csv")
    parser.add_argument("--test", type=int, default=100, help="rows in test.csv (no summary column)")
    parser.add_argument("--seed", type=int, default=0, help="same seed, byte-identical files")
    args = parser.parse_args(argv)

    paths = write_demo_data(args.out, n_train=args.train, n_dev=args.dev, n_test=args.test, seed=args.seed)
    counts = {"train": args.train, "dev": args.dev, "test": args.test}
    for split, path in paths.items():
        print(f"{split}: {path} ({counts[split]} rows)")


if __name__ == "__main__":
    main()
