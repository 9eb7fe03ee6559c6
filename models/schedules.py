"""Learning-rate schedules: warmup then linear decay, half-cosine decay, or constant.

The same multipliers as transformers' `get_scheduler` for these three names (its "constant" ignores
warmup too), written here because importing that function imports peft, seconds of every worker's start.
"""
from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from models.config import SCHEDULERS


def lr_multiplier(name: str, step: int, warmup: int, total: int) -> float:
    """The factor on the base learning rate after `step` optimizer steps."""
    if name == "constant":
        return 1.0
    if step < warmup:
        return step / max(1, warmup)
    if name == "linear":
        return max(0.0, (total - step) / max(1, total - warmup))
    if name == "cosine":
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(1, total - warmup))))
    raise ValueError(f"unknown schedule {name!r}; use one of {', '.join(SCHEDULERS)}")


def lr_schedule(name: str, optimizer: Optimizer, warmup: int, total: int) -> LambdaLR:
    if name not in SCHEDULERS:
        raise ValueError(f"unknown schedule {name!r}; use one of {', '.join(SCHEDULERS)}")
    return LambdaLR(optimizer, lambda step: lr_multiplier(name, step, warmup, total))
