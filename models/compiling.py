"""torch.compile where it pays: the training forward and its loss, as one graph.

A whole-step graph cuts the per-step Python and kernel launches, which is what bounds a base-sized
model's step on an H200 (profiled at bart-base size, the GPU was busy for about a fifth of an eager
run's wall time), and the loss fuses into it, so no fp32 copy of the logits is ever made. BART's
LayerDrop check would break that graph at every layer: `without_layerdrop` takes it out where it
decides nothing. State-dict keys do not change, so checkpoints save as usual. Generation must run
eager (`torch.compiler.set_stance("force_eager")`): its one-token steps would otherwise compile a
graph for every cache length.
"""
from __future__ import annotations

import functools
import types

import torch
import torch.nn.functional as F
from torch import nn

from models.config import TrainConfig

# On an H200 (benchmarks/README.md, batch 16, the demo's varied lengths, one graph each), compiling took
# 68 s at gpt2 size, 118 s at bart-base size and 235 s at t5-base size. Against eager it saved 0.018 s
# a batch at gpt2 size and 0.020 s at bart-base size, so it paid after about 3,700 and 5,800 batches
# (t5-base eager was not measured on those lengths; at full lengths compiling saved 0.086 s a batch and
# took 78 s). Auto waits for 10,000 batches, past the slowest of these with a margin for the spread
# between runs (10-20%). It decides per trial, though a worker's later trials reuse the compiled step.
MIN_BATCHES = 10_000


def should_compile(config: TrainConfig, device: torch.device, batches: int) -> bool:
    """`training.compile`: always, never, or auto = full fine-tuning on a GPU of a long enough trial.

    Auto leaves adapters and 4-bit models eager: bitsandbytes' kernels break the graph, and unsloth
    compiles its own.
    """
    mode = config.training.compile
    if mode != "auto":
        return mode == "always"
    return (device.type == "cuda" and config.method == "full" and not config.training.gradient_checkpointing
            and batches >= MIN_BATCHES)


def without_layerdrop(model: nn.Module) -> None:
    """Take BART's LayerDrop draw out of training where its probability is 0.

    In train mode each BART stack draws `torch.rand([]) < layerdrop` before every layer, even at
    layerdrop 0: a data-dependent branch, so a graph break per layer. Such a stack is kept in eval
    mode (its layers, and everything else, still train), which skips the draw; the one other thing
    its train mode did, dropout after the embeddings' layer norm, is done by a hook on that norm.
    """
    for stack in model.modules():
        if getattr(stack, "layerdrop", None) == 0 and isinstance(getattr(stack, "layernorm_embedding", None),
                                                                  nn.LayerNorm):
            stack.layernorm_embedding.register_forward_hook(
                lambda norm, _, out, p=stack.dropout: F.dropout(out, p=p, training=norm.training))
            stack.train = types.MethodType(_train_children_only, stack)
            stack.train(stack.layernorm_embedding.training)


def _train_children_only(stack: nn.Module, mode: bool = True) -> nn.Module:
    nn.Module.train(stack, mode)
    stack.training = False
    return stack


def with_constant_floats(compiled):
    """`compiled`, traced with the floats it reads (dropout rates, norm epsilons) as constants.

    By default dynamo makes each such float a symbol, then finds that dropout and layer norm need the
    value fixed, and traces the whole step again: a quarter of the compile time (t5-base: 48 of 195 s
    on an H200; 9 of 34 s at the demo size here). A number that varies between trials must then come
    in as a tensor, or each new value compiles anew.
    """
    @functools.wraps(compiled)
    def run(*args, **kwargs):
        with torch._dynamo.config.patch(specialize_float=True):
            return compiled(*args, **kwargs)

    return run
