"""torch.compile where it pays: the training forward and its loss, as one graph, replayed as CUDA graphs.

A base-sized model's step on an H200 is bound by Python and kernel launches, not by the GPU: at
bart-base size, compiled, the GPU was busy 15 of the 38 ms a step took (a profile, benchmarks/README.md).
A whole-step graph cuts the Python, and CUDA graphs the launches: each batch shape's step is recorded
once and then replayed as one launch. The loss fuses into the graph, so no fp32 copy of the logits is
ever made. BART's LayerDrop check would break that graph at every layer: `without_layerdrop` takes it
out where it decides nothing. State-dict keys do not change, so checkpoints save as usual. Generation
must run eager (`torch.compiler.set_stance("force_eager")`): its one-token steps would otherwise compile
a graph for every cache length.
"""
from __future__ import annotations

import functools
import types
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from models.config import TrainConfig
from models.steps import forward_loss

# On an H200 (benchmarks/README.md, batch 16, one graph each, CUDA graphs), against eager in the same
# process: on the demo's varied lengths compiling took 77 s at bart-base size and 63 s at gpt2 size and
# saved 18 and 17 ms a batch, so it paid after about 4,200 and 3,600 batches; at fixed full lengths
# (eager from an earlier call) after 800-1,400 (t5-base: 89 s, 113 ms a batch). Auto waits for 5,000
# batches, past the slowest of these with a margin for the spread between runs (10-20%); t5-base on
# varied lengths was not measured. It decides per trial, though a worker's later trials reuse the step.
MIN_BATCHES = 5_000


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


def inductor_options(config: TrainConfig, device: torch.device, processes: int, varied_lengths: bool) -> dict:
    """Inductor's settings for the compiled step.

    - `triton.cudagraphs` (`training.cuda_graphs`, one GPU): the step replays as CUDA graphs, one a
      batch shape, recorded the first time that shape comes (and again for a new model, whose weights
      sit at other addresses). On an H200 at fixed lengths: 1.9x the samples/s of the compiled step
      without them at bart-base size, 1.3x at gpt2, 1.5x at t5-base. Across processes (DDP) they are
      not used: untried there.
    - `shape_padding` off where lengths vary: inductor's matmul padding guards on the symbolic sizes
      (`length * batch >= 768`), which retraced BART at the first short batch (16 samples/s on an
      H200, against 462 without it).
    """
    options = {}
    if config.training.cuda_graphs and device.type == "cuda" and processes == 1:
        options["triton.cudagraphs"] = True
    if varied_lengths:
        options["shape_padding"] = False
    return options


def compiled_loss(config: TrainConfig, device: torch.device, processes: int,
                  varied_lengths: bool) -> tuple[Callable, torch.Tensor, bool]:
    """`forward_loss` compiled, with the label smoothing as the graph takes it, and whether it replays as
    CUDA graphs (then the gradients need buffers of their own: `gradients_of_their_own`).

    One graph for the forward and its loss: the vocabulary-wide logits are not copied to fp32. Where
    lengths vary, its shapes are symbolic from the first step: by default torch.compile retraces at
    each new kind of change (5 graphs, 250 s at gpt2 size on the demo data, on an H200).
    """
    options = inductor_options(config, device, processes, varied_lengths)
    loss = with_constant_floats(torch.compile(forward_loss, dynamic=varied_lengths or None, options=options or None))
    smoothing = torch.tensor(config.training.label_smoothing, device=device)  # searched: an input, not a constant
    return loss, smoothing, "triton.cudagraphs" in options


def gradients_of_their_own(model: nn.Module) -> None:
    """A CUDA graph's outputs live in memory the next replay writes over: the backward's gradients too,
    which a second accumulated micro-batch would then overwrite. So they add into buffers of their own,
    to be zeroed rather than freed at each step."""
    for p in model.parameters():
        if p.requires_grad:
            p.grad = torch.zeros_like(p)


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
