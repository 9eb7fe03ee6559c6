"""Score a submission CSV against a gold CSV with Korean-aware ROUGE.

    python -m models.score --pred submission.csv --gold data/dev.csv [--json] [--tokenize morpheme]
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Sequence

from models.metrics import TOKENIZERS, read_references, rouge


class ScoreError(Exception):
    """A user-facing problem; the message reads '<problem>; <fix>'."""


def _read_csv(path: str, required: Sequence[str], flag: str) -> dict[str, dict[str, str]]:
    """Rows of a CSV keyed by fname, after checking the file is usable."""
    csv.field_size_limit(2**31 - 1)  # a gold file's dialogues may pass csv's default 131,072 characters
    try:
        # utf-8-sig so a BOM from Excel does not end up glued to the first column name.
        with open(path, encoding="utf-8-sig", newline="") as f:
            reader = csv.DictReader(f)
            fieldnames = reader.fieldnames or []
            rows = list(reader)
    except FileNotFoundError:
        raise ScoreError(f"{flag} file {path!r} not found; check the path") from None
    except IsADirectoryError:
        raise ScoreError(f"{flag} path {path!r} is a directory; pass a CSV file") from None
    except UnicodeDecodeError as e:
        raise ScoreError(f"{flag} file {path!r} is not valid UTF-8 ({e.reason} at byte {e.start}); "
                         "re-save it as UTF-8") from None
    except csv.Error as e:
        raise ScoreError(f"{flag} file {path!r} is not a valid CSV ({e}); fix the file") from None

    if not fieldnames:
        raise ScoreError(f"{flag} file {path!r} is empty; it needs a header row with {', '.join(required)}")
    for col in required:
        if col not in fieldnames:
            raise ScoreError(f"{flag} file {path!r} has no column {col!r} (columns: {', '.join(fieldnames)}); "
                             f"add a {col!r} column")
    if not rows:
        raise ScoreError(f"{flag} file {path!r} has a header but no rows; add rows to score")

    by_fname: dict[str, dict[str, str]] = {}
    for row in rows:
        fname = row["fname"]
        if fname in by_fname:
            raise ScoreError(f"fname {fname!r} appears more than once in {flag}; keep one row per fname")
        by_fname[fname] = row
    return by_fname


def _align(pred: dict[str, dict[str, str]], gold: dict[str, dict[str, str]]) -> tuple[list[str], list[list[str]]]:
    """Predictions and references in gold order; every fname must be on both sides."""
    for fname in gold:
        if fname not in pred:
            raise ScoreError(f"fname {fname!r} is in --gold but not in --pred; predict every gold row")
    for fname in pred:
        if fname not in gold:
            raise ScoreError(f"fname {fname!r} is in --pred but not in --gold; score against the matching gold file")
    predictions, references = [], []
    for fname, row in gold.items():
        refs = read_references(row)
        if not refs:
            raise ScoreError(f"fname {fname!r} has no reference summary in --gold; fill its summary column")
        predictions.append(pred[fname]["summary"] or "")
        references.append(refs)
    return predictions, references


def _table(scores: dict[str, float]) -> str:
    labels = {"rouge1": "ROUGE-1 F1", "rouge2": "ROUGE-2 F1", "rougeL": "ROUGE-L F1", "mean": "mean"}
    return "\n".join(f"{labels[k]:<11} {scores[k] * 100:6.2f}" for k in labels)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m models.score", description=__doc__.strip().splitlines()[0])
    parser.add_argument("--pred", required=True, help="submission CSV with fname,summary")
    parser.add_argument("--gold", required=True, help="gold CSV with fname,dialogue,summary[,summary2...]")
    parser.add_argument("--json", action="store_true", help="print one JSON object with fractions")
    parser.add_argument("--tokenize", choices=TOKENIZERS, default="morpheme",
                        help="morpheme (kiwipiepy, default) or whitespace")
    args = parser.parse_args(argv)

    try:
        pred = _read_csv(args.pred, ("fname", "summary"), "--pred")
        gold = _read_csv(args.gold, ("fname", "summary"), "--gold")
        predictions, references = _align(pred, gold)
    except ScoreError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    scores = rouge(predictions, references, tokenize=args.tokenize)
    print(json.dumps(scores) if args.json else _table(scores))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
