"""ROUGE for Korean summaries, and for English ones as the English literature scores them.

rouge-score's default tokenizer drops every non-ASCII character, so Korean text would always score 0. We
therefore tokenize ourselves (Kiwi's morphemes, or whitespace) and score the tokens with rouge-score's own
arithmetic, written out here (`scores`; tests hold it to rouge-score's on random token lists): importing
rouge-score imports all of nltk, and nltk scikit-learn and pandas, 0.8 s of every worker's first eval.
`rouge` and `rouge-stem` are rouge-score's own tokenizer (without and with its Porter stemmer), for English.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kiwipiepy import Kiwi

TOKENIZERS = ("morpheme", "whitespace", "rouge", "rouge-stem")
ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")

_kiwi: Kiwi | None = None


def _get_kiwi() -> Kiwi:
    # Building Kiwi loads its model (~1 s), so do it once and only when needed.
    global _kiwi
    if _kiwi is None:
        from kiwipiepy import Kiwi

        _kiwi = Kiwi()
    return _kiwi


def _tokenize_all(texts: list[str], tokenize: str) -> dict[str, list[str]]:
    """Map each distinct text to its tokens (lower-cased, like rouge-score does)."""
    unique = list(dict.fromkeys(texts))
    if tokenize == "whitespace":
        return {t: t.lower().split() for t in unique}
    if tokenize in ("rouge", "rouge-stem"):
        from rouge_score.tokenizers import DefaultTokenizer

        tokenizer = DefaultTokenizer(use_stemmer=tokenize == "rouge-stem")
        return {t: tokenizer.tokenize(t) for t in unique}
    # One batch call is much faster than tokenizing text by text.
    results = _get_kiwi().tokenize(unique)
    return {t: [tok.form.lower() for tok in toks] for t, toks in zip(unique, results)}


def scores(reference: list[str], prediction: list[str]) -> dict[str, float]:
    """ROUGE-1, ROUGE-2 and ROUGE-L F1 of two token lists, as rouge-score computes them."""
    result = {f"rouge{n}": _f1(*_ngram_overlap(reference, prediction, n)) for n in (1, 2)}
    result["rougeL"] = _f1(_lcs_length(reference, prediction), len(prediction), len(reference))
    return result


def _ngram_overlap(reference: list[str], prediction: list[str], n: int) -> tuple[int, int, int]:
    ours, theirs = (Counter(zip(*(tokens[i:] for i in range(n)))) for tokens in (prediction, reference))
    return sum((ours & theirs).values()), sum(ours.values()), sum(theirs.values())


def _lcs_length(a: list[str], b: list[str]) -> int:
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b):
            current.append(previous[j] + 1 if x == y else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


def _f1(overlap: int, predicted: int, referenced: int) -> float:
    precision, recall = overlap / max(predicted, 1), overlap / max(referenced, 1)
    return 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0


def rouge(
    predictions: Sequence[str],
    references: Sequence[Sequence[str]],
    tokenize: str = "morpheme",
) -> dict[str, float]:
    """Mean ROUGE-1/2/L F1 (fractions in [0, 1]) over rows, plus their mean.

    Each row may have several references; its score is the *average* over them
    (the competition's convention, not the max). A bare string is accepted as a
    single reference so it is never silently split into characters.
    """
    if tokenize not in TOKENIZERS:
        raise ValueError(f"unknown tokenize {tokenize!r}; allowed values: {', '.join(TOKENIZERS)}")
    if len(predictions) == 0:
        raise ValueError("no predictions given; need at least one row to score")
    if len(predictions) != len(references):
        raise ValueError(
            f"length mismatch: {len(predictions)} predictions vs {len(references)} reference rows"
        )
    ref_rows = [[refs] if isinstance(refs, str) else list(refs) for refs in references]
    for i, refs in enumerate(ref_rows):
        if not refs:
            raise ValueError(f"row {i} has no references; every row needs at least one")

    tokens = _tokenize_all(list(predictions) + [r for refs in ref_rows for r in refs], tokenize)
    totals = dict.fromkeys(ROUGE_TYPES, 0.0)
    for pred, refs in zip(predictions, ref_rows):
        for ref in refs:
            for key, value in scores(tokens[ref], tokens[pred]).items():
                totals[key] += value / len(refs)

    result = {key: totals[key] / len(predictions) for key in ROUGE_TYPES}
    result["mean"] = sum(result[key] for key in ROUGE_TYPES) / len(ROUGE_TYPES)
    return result


def pairwise_rouge(groups: Sequence[Sequence[str]], tokenize: str = "morpheme") -> list[list[list[float]]]:
    """For each group of texts, the mean of ROUGE-1/2/L F1 between every two of them (F1 is symmetric, so
    each distinct pair is scored once; a text against itself is 1). All texts are tokenized in one batch."""
    if tokenize not in TOKENIZERS:
        raise ValueError(f"unknown tokenize {tokenize!r}; allowed values: {', '.join(TOKENIZERS)}")
    tokens = _tokenize_all([t for g in groups for t in g], tokenize)
    scored: dict[tuple[str, str], float] = {}

    def agree(a: str, b: str) -> float:
        if a == b:
            return 1.0
        pair = (a, b) if a < b else (b, a)
        if pair not in scored:
            scored[pair] = sum(scores(tokens[pair[0]], tokens[pair[1]]).values()) / len(ROUGE_TYPES)
        return scored[pair]

    return [[[agree(a, b) for b in group] for a in group] for group in groups]


def reference_columns(fieldnames: Iterable[str]) -> list[str]:
    """Reference columns in order: summary, summary2, summary3, ..."""
    names = set(fieldnames)
    cols = ["summary"] if "summary" in names else []
    n = 2
    while f"summary{n}" in names:
        cols.append(f"summary{n}")
        n += 1
    return cols


def read_references(row: dict) -> list[str]:
    """Non-empty reference summaries of one CSV row (multi-reference convention)."""
    return [row[c] for c in reference_columns(row) if row[c] and row[c].strip()]
