"""Rows in, tokenized examples out: an on-disk cache of tokenized rows, padding and batches (random or
length-grouped). Reading the files is models/datafiles.py's."""
from __future__ import annotations

import hashlib
import json
import os
import random
import sys
import weakref
from dataclasses import dataclass
from pathlib import Path

import torch

from models.datafiles import read_rows
from models.families import Family
from models.metrics import read_references


LARGE = 20_000  # rows from which first-time tokenization is announced

@dataclass
class Split:
    """One data source, read and tokenized. `references` is empty for a test file."""
    source: str
    fnames: list[str]
    dialogues: list[str]
    references: list[list[str]]
    features: list[dict[str, list[int]]]  # input_ids, labels (when summaries exist), prompt_ids
    skipped: int  # rows dropped for an empty dialogue (or, where summaries are needed, an empty summary)

    def __len__(self) -> int:
        return len(self.fnames)


def load_split(source: str | Path, tokenizer, family: Family, max_source: int, max_target: int,
               need_summary: bool = True, cache_dir: Path | None = None, columns: str = "", augment=None) -> Split:
    """`source`: any file or dataset models/datafiles.py reads; `columns` maps its column names to ours.
    `augment` (models/augment.py, for the training split only) adds augmented copies of the rows; the cache
    key, made of the rows themselves, tells them apart."""
    rows, skipped = read_rows(source, need_summary, columns)
    if augment is not None:
        rows = augment(rows)
    dialogues = [r["dialogue"].strip() for r in rows]
    refs = [[ref.strip() for ref in read_references(r)] for r in rows] if need_summary else []
    targets = [r[0] for r in refs] if need_summary else None
    key = _cache_key(dialogues, targets, tokenizer, family, max_source, max_target)
    # JSON: lists of token ids load far faster than through torch.load's safe unpickler, and every trial
    # loads its splits.
    cache = (cache_dir or default_cache_dir()) / "tokenized" / f"{key}.json"
    features = _read_cache(cache)
    if features is None:
        if len(dialogues) >= LARGE:  # minutes on a big file: say what is happening, once, then it is cached
            print(f"tokenizing {len(dialogues):,} rows of {source} (cached for the next run)", file=sys.stderr,
                  flush=True)
        features = tokenize(dialogues, targets, tokenizer, family, max_source, max_target)
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(features, separators=(",", ":")), encoding="utf-8")
        os.replace(tmp, cache)  # atomic: parallel trials may tokenize the same data at once
    return Split(str(source), [r["fname"] for r in rows], dialogues, refs, features, skipped)


def _read_cache(cache: Path) -> list[dict[str, list[int]]] | None:
    """The cached features, or None where there are none (or the file is damaged: tokenized again)."""
    try:
        return json.loads(cache.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def tokenize(dialogues: list[str], summaries: list[str] | None, tokenizer, family: Family,
             max_source: int, max_target: int) -> list[dict[str, list[int]]]:
    if family.is_causal:
        return _tokenize_causal(dialogues, summaries, tokenizer, family, max_source, max_target)
    sources = tokenizer([family.prefix + d for d in dialogues], truncation=True, max_length=max_source)["input_ids"]
    if summaries is None:
        return [{"input_ids": s} for s in sources]
    targets = tokenizer(text_target=summaries, truncation=True, max_length=max_target)["input_ids"]
    return [{"input_ids": s, "labels": t} for s, t in zip(sources, targets)]


def _tokenize_causal(dialogues, summaries, tokenizer, family, max_source, max_target):
    """dialogue + separator + summary + eos, the loss on the summary alone.

    A long dialogue is cut from the front: the end of a conversation usually holds its
    conclusion, and the separator must stay so the model knows where the summary starts.
    """
    sep = tokenizer(family.separator, add_special_tokens=False)["input_ids"]
    # Llama-style models (Gemma, SmolLM...) were trained with <bos> first and do far worse without
    # it; GPT-2's tokenizer adds none.
    bos = [tokenizer.bos_token_id] if _adds_bos(tokenizer) else []
    bodies = tokenizer(dialogues, add_special_tokens=False)["input_ids"]
    keep = max(max_source - len(sep) - len(bos), 0)
    prompts = [bos + body[len(body) - keep:] + sep for body in bodies]
    if summaries is None:
        return [{"prompt_ids": p} for p in prompts]
    eos = [tokenizer.eos_token_id]
    targets = tokenizer(summaries, add_special_tokens=False)["input_ids"]
    features = []
    for prompt, target in zip(prompts, targets):
        target = target[: max_target - 1] + eos
        features.append({"input_ids": prompt + target, "labels": [-100] * len(prompt) + target,
                         "prompt_ids": prompt})
    return features


def _adds_bos(tokenizer) -> bool:
    """Whether the tokenizer starts every text with <bos> by itself, as Llama-style ones do."""
    return tokenizer.bos_token_id is not None and tokenizer("a")["input_ids"][:1] == [tokenizer.bos_token_id]


def default_cache_dir() -> Path:
    return Path(os.environ.get("SUMSWEEP_CACHE", Path.home() / ".cache" / "sumsweep"))


def _cache_key(dialogues: list[str], targets: list[str] | None, tokenizer, family: Family, max_source: int,
               max_target: int) -> str:
    """Keyed by the texts tokenized, not by a file: the same rows hit the cache in any format or column naming."""
    digest = hashlib.sha256()
    digest.update(json.dumps([dialogues, targets], ensure_ascii=False).encode())
    if tokenizer not in _TOKENIZER_DIGESTS:  # a study's tokenizer is one shared object (methods.load_tokenizer)
        _TOKENIZER_DIGESTS[tokenizer] = tokenizer_digest(tokenizer)
    digest.update(_TOKENIZER_DIGESTS[tokenizer].encode())
    digest.update(repr((family.kind, family.prefix, family.separator, max_source, max_target, targets is not None,
                        tokenizer.eos_token_id, tokenizer.pad_token_id,
                        _adds_bos(tokenizer))).encode())
    return digest.hexdigest()[:32]


def pad(rows: list[list[int]], value: int, left: bool = False, multiple_of: int = 1) -> torch.Tensor:
    width = -(-max(len(r) for r in rows) // multiple_of) * multiple_of
    return torch.tensor([[value] * (width - len(r)) + r if left else r + [value] * (width - len(r)) for r in rows])


def collate(features: list[dict[str, list[int]]], pad_id: int, key: str = "input_ids",
            left_pad: bool = False, multiple_of: int = 1) -> dict[str, torch.Tensor]:
    """Pad a batch to its longest row (rounded up to `multiple_of`). Left padding is for causal
    generation, where new tokens follow the prompt."""
    rows = [f[key] for f in features]
    batch = {"input_ids": pad(rows, pad_id, left_pad, multiple_of),
             "attention_mask": pad([[1] * len(r) for r in rows], 0, left_pad, multiple_of)}
    if key == "input_ids" and "labels" in features[0]:
        batch["labels"] = pad([f["labels"] for f in features], -100, left_pad, multiple_of)
    return batch


class RandomBatches:
    """Batches of rows in a new random order each epoch, as Hugging Face's Trainer draws them.

    Seeded, so a run is repeatable; each pass over it is a new epoch with its own order.
    """

    def __init__(self, size: int, batch_size: int, seed: int):
        self.size, self.batch_size, self.seed = size, batch_size, seed
        self.epoch = 0

    def __len__(self) -> int:
        return -(-self.size // self.batch_size)

    def __iter__(self):
        rng = random.Random(self.seed + self.epoch)
        self.epoch += 1
        order = list(range(self.size))
        rng.shuffle(order)
        return iter(self.batches(order, rng))

    def batches(self, order: list[int], rng: random.Random) -> list[list[int]]:
        return [order[i: i + self.batch_size] for i in range(0, len(order), self.batch_size)]


class LengthGroupedBatches(RandomBatches):
    """Batches of similar lengths, in random order, so little of each batch is padding
    (`training.group_by_length`).

    Shuffled rows are cut into windows of 50 batches, sorted by length inside each window and
    batched; the batches are then shuffled. Less padding, but batches that are not i.i.d.: on the
    demo data a bart-base run ended at a dev loss 9% above random batches' (benchmarks/README.md).
    """

    def __init__(self, lengths: list[int], batch_size: int, seed: int, window: int = 50):
        super().__init__(len(lengths), batch_size, seed)
        self.lengths, self.window = lengths, window

    def batches(self, order: list[int], rng: random.Random) -> list[list[int]]:
        span = self.batch_size * self.window
        batches = []
        for start in range(0, len(order), span):
            chunk = sorted(order[start: start + span], key=self.lengths.__getitem__, reverse=True)
            batches += [chunk[i: i + self.batch_size] for i in range(0, len(chunk), self.batch_size)]
        rng.shuffle(batches)
        return batches


_TOKENIZER_DIGESTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # each split of each trial asks


def tokenizer_digest(tokenizer) -> str:
    """sha256 of what a fast tokenizer is (its whole serialized spec), without the truncation and padding
    that each call sets on it. Hashed as serialized: parsing Gemma's 262,144-token spec took seconds."""
    backend = tokenizer.backend_tokenizer
    truncation, padding = backend.truncation, backend.padding
    backend.no_truncation()
    backend.no_padding()
    try:
        return hashlib.sha256(backend.to_str().encode()).hexdigest()
    finally:  # left as it was found
        if truncation:
            backend.enable_truncation(**truncation)
        if padding:
            backend.enable_padding(**padding)
