"""ROUGE for Korean summaries, and for English ones as the English literature scores them.

rouge-score's default tokenizer drops every non-ASCII character, so Korean text
would always score 0. We therefore tokenize ourselves and hand rouge-score a
tokenizer object that only looks up pre-computed tokens. `rouge` and `rouge-stem`
are rouge-score's own tokenizer (without and with its Porter stemmer), for English.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kiwipiepy import Kiwi

# rouge-score (and nltk with it) loads in about a second: imported where it is used, so that the config,
# which lists these choices, stays quick to import.
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


class _LookupTokenizer:
    """rouge-score tokenizer that returns tokens computed beforehand in one batch."""

    def __init__(self, tokens: dict[str, list[str]]) -> None:
        self._tokens = tokens

    def tokenize(self, text: str) -> list[str]:
        return self._tokens[text]


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

    from rouge_score import rouge_scorer

    all_texts = list(predictions) + [r for refs in ref_rows for r in refs]
    scorer = rouge_scorer.RougeScorer(
        list(ROUGE_TYPES), tokenizer=_LookupTokenizer(_tokenize_all(all_texts, tokenize))
    )

    totals = dict.fromkeys(ROUGE_TYPES, 0.0)
    for pred, refs in zip(predictions, ref_rows):
        for ref in refs:
            # score(target, prediction): reference first.
            scores = scorer.score(ref, pred)
            for key in ROUGE_TYPES:
                totals[key] += scores[key].fmeasure / len(refs)

    result = {key: totals[key] / len(predictions) for key in ROUGE_TYPES}
    result["mean"] = sum(result[key] for key in ROUGE_TYPES) / len(ROUGE_TYPES)
    return result


def pairwise_rouge(groups: Sequence[Sequence[str]], tokenize: str = "morpheme") -> list[list[list[float]]]:
    """For each group of texts, the mean of ROUGE-1/2/L F1 between every two of them (F1 is symmetric, so
    each distinct pair is scored once; a text against itself is 1). All texts are tokenized in one batch."""
    if tokenize not in TOKENIZERS:
        raise ValueError(f"unknown tokenize {tokenize!r}; allowed values: {', '.join(TOKENIZERS)}")
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(
        list(ROUGE_TYPES), tokenizer=_LookupTokenizer(_tokenize_all([t for g in groups for t in g], tokenize)))
    scored: dict[tuple[str, str], float] = {}

    def agree(a: str, b: str) -> float:
        if a == b:
            return 1.0
        pair = (a, b) if a < b else (b, a)
        if pair not in scored:
            scores = scorer.score(*pair)
            scored[pair] = sum(scores[key].fmeasure for key in ROUGE_TYPES) / len(ROUGE_TYPES)
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
