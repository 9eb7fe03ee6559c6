#!/usr/bin/env bash
# One study per family, in turn: scripts/run_all_families.sh --trials 20 --train-data data/train.csv --val-data data/dev.csv
# (any search.run option passes through; --demo for the bundled data). Same as --family all.
set -euo pipefail
cd "$(dirname "$0")/.."
for family in bart t5 mt5 flan-t5 gpt2 kogpt2; do
  echo "== $family"
  python3 -m search.run --family "$family" "$@"
done
python3 scripts/collect_results.py --output results_comparison.csv
