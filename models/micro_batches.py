"""How many rows each forward pass of an optimizer step takes (`training.merge_micro_batches`).

`batch_size x gradient_accumulation_steps` is what one optimizer step learns from; the split into micro-batches
only makes it fit a GPU (the design document's 4 x 4 is sized for 16 GB). The loss weighs every summary token of
a step alike (models/trainer.py `optimizer_step`), so one batch of a step's 16 rows gives the loss and gradient
of four batches of 4, with a quarter of the kernel launches; and a small model's step on a large GPU is bound by
those launches, not by arithmetic (Gemma 3 270M with LoRA: about 25,000 operator calls a micro-batch). The rows
stay the config's: a merged batch is the same slice of the epoch's shuffle as the micro-batches it replaces.
Only the dropout draws differ.

`auto` merges on a GPU as far as its memory allows. A probe runs one forward and backward of the largest batch
the training rows can make at each size, from the whole step down; the optimizer's state, not allocated yet,
is added to its peak. On a CPU, `auto` keeps the config's batches: there is no launch cost to save there.
"""
from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Callable

import torch

from models.config import TrainConfig

HEADROOM = 0.85  # of the memory this process may take: the allocator fragments, and CUDA graphs take more


def rows_per_pass(config: TrainConfig, device: torch.device, fits: Callable[[int], bool]) -> int:
    """The config's `batch_size`, or a multiple of it that divides the step's rows, as `merge_micro_batches`
    says; `fits(rows)` is asked (largest first) only under `auto` on a GPU."""
    t = config.training
    steps = t.gradient_accumulation_steps
    merged = [t.batch_size * k for k in range(steps, 1, -1) if steps % k == 0]  # each divides the step's rows
    mode = t.merge_micro_batches
    if not merged or mode == "never" or (mode == "auto" and device.type != "cuda"):
        return t.batch_size
    if mode == "always":
        return merged[0]
    return next((rows for rows in merged if fits(rows)), t.batch_size)


def memory_probe(model, features: list[dict], make_batch: Callable, loss: Callable, causal: bool, smoothing,
                 device: torch.device, autocast: Callable[[], AbstractContextManager]) -> Callable[[int], bool]:
    """`fits(rows)`: whether a training step of `rows` of the longest rows fits in this process's share of the
    GPU. The random state is left as it was, and so are the gradients (none)."""
    probe_row = largest_row(features, causal)
    trainable = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)

    def fits(rows: int) -> bool:
        free, _ = torch.cuda.mem_get_info(device)
        allowed = HEADROOM * (free + torch.cuda.memory_reserved(device))  # other processes' memory left out
        torch.cuda.reset_peak_memory_stats(device)
        try:
            batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v
                     for k, v in make_batch([probe_row] * rows).items()}
            with torch.random.fork_rng(devices=[device]):
                with autocast():
                    value = loss(model, batch, causal, smoothing)
                value.backward()
            return torch.cuda.max_memory_allocated(device) + 2 * trainable <= allowed  # + AdamW's two moments
        except torch.OutOfMemoryError:
            return False
        finally:
            model.zero_grad(set_to_none=True)
            batch = value = None
            torch.cuda.empty_cache()

    return fits


def largest_row(features: list[dict], causal: bool) -> dict:
    """A row no batch exceeds in any dimension: the longest input; for a seq2seq model the longest summary, for
    a causal one the shortest prompt (its logits are kept from the batch's first summary token on)."""
    row = dict(max(features, key=lambda f: len(f["input_ids"])))
    if causal:
        row["prompt_ids"] = min((f["prompt_ids"] for f in features), key=len)
    else:
        row["labels"] = max((f["labels"] for f in features), key=len)
    return row
