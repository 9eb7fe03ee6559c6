"""What one training step is made of: batches in the shape a model's forward takes, the loss, and
the micro-batches accumulated into one optimizer step."""
from __future__ import annotations

import inspect
import itertools
import math
from typing import Callable

import torch
import torch.nn.functional as F

from models.data import collate
from models.families import Family


def batch_maker(model, family: Family, pad_id: int) -> Callable[[list[dict]], dict[str, torch.Tensor | int]]:
    """A collate_fn: rows padded into what `model`'s forward takes, plus the labels (built on the CPU)."""
    hf_model = model.get_base_model() if hasattr(model, "get_base_model") else model  # under a PEFT wrapper
    # The dialogue's own tokens are never scored, so a causal model's logits (a vocabulary-wide row
    # per token: at gpt2 size a third of the step) are computed from the batch's first summary on.
    keep_logits = family.is_causal and "logits_to_keep" in inspect.signature(hf_model.forward).parameters

    def make(rows: list[dict[str, list[int]]]) -> dict[str, torch.Tensor | int]:
        # Lengths in multiples of 8 suit the tensor cores, and keep true the alignment guards that
        # inductor puts on a compiled graph's symbolic lengths (`length % 8 == 0`, seen on the H200),
        # which would otherwise retrace it at the first batch of another length.
        batch = collate(rows, pad_id, multiple_of=8)
        if keep_logits:  # rounded up to a multiple of 8 too: each count is one more shape to compile or record
            length, prompt = batch["input_ids"].size(1), min(len(r["prompt_ids"]) for r in rows)
            batch["logits_to_keep"] = min(length, math.ceil((length - prompt + 1) / 8) * 8)
        if not family.is_causal:
            batch["decoder_input_ids"] = hf_model.prepare_decoder_input_ids_from_labels(labels=batch["labels"])
        return batch

    return make


def forward_loss(model, batch: dict, causal: bool, smoothing: float | torch.Tensor) -> torch.Tensor:
    # use_cache=False: T5 would build a cache object at every step, which also breaks a compiled graph.
    logits = model(**{k: v for k, v in batch.items() if k != "labels"}, use_cache=False).logits
    labels = batch["labels"][:, -logits.size(1):]  # the positions whose logits were kept
    if causal:  # position t predicts token t + 1
        logits, labels = logits[:, :-1], labels[:, 1:]
    return smoothed_cross_entropy(logits.reshape(-1, logits.size(-1)).float(), labels.reshape(-1), smoothing)


def smoothed_cross_entropy(logits: torch.Tensor, labels: torch.Tensor,
                           smoothing: float | torch.Tensor) -> torch.Tensor:
    """`F.cross_entropy(logits, labels, ignore_index=-100, label_smoothing=smoothing)`; for a tensor
    `smoothing`, written out. A compiled step takes it as a tensor and so serves every trial's
    label_smoothing: that op's float would be a constant of the graph, and each value a new compile.
    Eager, torch's own fused op is used."""
    if not isinstance(smoothing, torch.Tensor):
        return F.cross_entropy(logits, labels, ignore_index=-100, label_smoothing=smoothing)
    scored = labels != -100
    log_total = logits.logsumexp(-1)
    nll = log_total - logits.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)  # -log p(label)
    uniform = log_total - logits.mean(-1)  # -mean over the vocabulary of log p
    return (((1 - smoothing) * nll + smoothing * uniform) * scored).sum() / scored.sum()


def accumulation_windows(loader, steps: int):
    """The micro-batches of each optimizer step: `steps` at a time, the last of an epoch maybe fewer."""
    batches = iter(loader)
    while window := list(itertools.islice(batches, steps)):
        yield window


def scored_tokens(batch: dict, causal: bool) -> torch.Tensor:
    """How many label tokens the loss averages over (a causal model's first position predicts nothing)."""
    labels = batch["labels"][:, 1:] if causal else batch["labels"]
    return (labels != -100).sum()
