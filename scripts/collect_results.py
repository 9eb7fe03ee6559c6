"""python scripts/collect_results.py --output results_comparison.csv [--storage URL]

Every finished trial of every study in the storage as one CSV row: `sumsweep collect` (search/collect.py),
kept here for the commands already written down.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without the package installed

from models.cli import run_cli  # noqa: E402
from search.collect import main  # noqa: E402

if __name__ == "__main__":
    run_cli(main)
