"""Score a submission against gold summaries with Korean-aware ROUGE (or rouge-score's own, for English).

    python -m models.score --pred submission.csv --gold data/dev.csv [--json] [--tokenize morpheme] [--columns ...]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from models.datafiles import read_table
from models.errors import USER_ERRORS, DataError
from models.metrics import TOKENIZERS, read_references, rouge


def _by_fname(source: str, flag: str, columns: str = "") -> dict[str, dict[str, str]]:
    """Rows of a file keyed by fname (or id), after checking the file is usable."""
    rows = read_table(source, ("fname", "summary"), columns)
    if not rows:
        raise DataError(f"{flag} file {source!r} has a header but no rows; add rows to score")
    by_fname: dict[str, dict[str, str]] = {}
    for row in rows:
        fname = row["fname"]
        if fname in by_fname:
            raise DataError(f"fname {fname!r} appears more than once in {flag}; keep one row per fname")
        by_fname[fname] = row
    return by_fname


def _align(pred: dict[str, dict[str, str]], gold: dict[str, dict[str, str]]) -> tuple[list[str], list[list[str]]]:
    """Predictions and references in gold order; every fname must be on both sides."""
    for fname in gold:
        if fname not in pred:
            raise DataError(f"fname {fname!r} is in --gold but not in --pred; predict every gold row")
    for fname in pred:
        if fname not in gold:
            raise DataError(f"fname {fname!r} is in --pred but not in --gold; score against the matching gold file")
    predictions, references = [], []
    for fname, row in gold.items():
        refs = read_references(row)
        if not refs:
            raise DataError(f"fname {fname!r} has no reference summary in --gold; fill its summary column")
        predictions.append(pred[fname]["summary"])
        references.append(refs)
    return predictions, references


def _table(scores: dict[str, float]) -> str:
    labels = {"rouge1": "ROUGE-1 F1", "rouge2": "ROUGE-2 F1", "rougeL": "ROUGE-L F1", "mean": "mean"}
    return "\n".join(f"{labels[k]:<11} {scores[k] * 100:6.2f}" for k in labels)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m models.score", description=__doc__.strip().splitlines()[0])
    parser.add_argument("--pred", required=True, help="submission with fname,summary, as models.predict writes it")
    parser.add_argument("--gold", required=True,
                        help="gold data with fname (or id), summary[, summary2...]: CSV, TSV, JSON Lines, Parquet, "
                             "a save_to_disk folder, or hub:NAME[:CONFIG]:SPLIT")
    parser.add_argument("--columns", default="", metavar="OURS=THEIRS,...",
                        help="the gold data's column names, e.g. summary=highlights,fname=doc_id")
    parser.add_argument("--json", action="store_true", help="print one JSON object with fractions")
    parser.add_argument("--tokenize", choices=TOKENIZERS, default="morpheme",
                        help="morpheme (kiwipiepy, default), whitespace, or rouge-score's own tokenizer for "
                             "English: rouge, rouge-stem (with its Porter stemmer)")
    args = parser.parse_args(argv)

    try:
        pred = _by_fname(args.pred, "--pred")
        gold = _by_fname(args.gold, "--gold", args.columns)
        predictions, references = _align(pred, gold)
    except USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    scores = rouge(predictions, references, tokenize=args.tokenize)
    print(json.dumps(scores) if args.json else _table(scores))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
