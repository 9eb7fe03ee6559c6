"""The few collective steps a search needs when one trial runs on several processes (`accelerate launch`).

Rank 0 alone talks to the study; the other ranks train what it shares with them. A process that
was not launched that way (WORLD_SIZE unset) is rank 0 of 1: it creates no process group, and
`share` hands its argument straight back.
"""
from __future__ import annotations

import functools
import os
from typing import Any

import torch
from accelerate import PartialState
from accelerate.utils import broadcast_object_list


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))  # set by accelerate launch (torchrun) for every rank


def rank() -> int:
    return _state().process_index if world_size() > 1 else 0


def share(obj: Any = None) -> Any:
    """Rank 0's `obj`, on every rank (the others pass nothing). Every rank must call it at the same point."""
    if world_size() == 1:
        return obj
    _state()  # joins the ranks first: accelerate's helper, left to itself, would join them without cpu=True
    box = [obj]
    broadcast_object_list(box, from_process=0)
    return box[0]


def wait_for_everyone() -> None:
    if world_size() > 1:
        _state().wait_for_everyone()


def close_process_group() -> None:
    """Close the process group before the interpreter exits: gloo's threads, left to the exit, can
    abort it ("terminate called without an active exception", seen once in ten CPU runs)."""
    if world_size() > 1:
        _state().destroy_process_group()


@functools.cache
def _state() -> PartialState:
    # Created before the trainer's Accelerator, which then joins this state. On a machine without CUDA
    # it must be told cpu=True: otherwise every rank that torchrun starts runs alone (DistributedType.NO)
    # and samples its own trial; with it, the ranks form one gloo group.
    return PartialState(cpu=not torch.cuda.is_available())
