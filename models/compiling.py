"""torch.compile where it pays: the whole model, or its repeated blocks where the whole breaks.

A whole-model graph cuts the per-step Python and kernel launches, which is what bounds a base-sized
model's step on an H200 (profiled at bart-base size, the GPU was busy for about a fifth of an eager
run's wall time). BART's LayerDrop check breaks a whole-model graph at every layer, so there every
block of each stack is compiled in place instead: they share one graph, and the Python between them
stays eager. State-dict keys do not change either way, so checkpoints save as usual. Generation must
run eager (`torch.compiler.set_stance("force_eager")`): its one-token steps would otherwise compile a
graph for every cache length.
"""
from __future__ import annotations

import torch
from torch import nn

from models.config import TrainConfig
from models.families import Family

# On an H200 (benchmarks/trainer_vs_hf.py, batch 16, 512 + 128 tokens) compiling took 86 s at
# t5-base size and 53 s at gpt2 size, and saved 0.07 s and 0.035 s a step: it pays after about
# 1,200 and 1,500 batches. BART gained nothing measurable from its compiled blocks (258 against
# 243 samples/s, within run-to-run spread), so auto leaves it eager.
MIN_BATCHES = 2000
# Families whose layer loop holds a data-dependent branch (LayerDrop's `torch.rand([]) < p`).
LAYER_LOOP_BREAKS = ("bart",)


def should_compile(config: TrainConfig, device: torch.device, batches: int) -> bool:
    """`training.compile`: always, never, or auto = full fine-tuning on a GPU of a long enough trial.

    Auto leaves adapters and 4-bit models eager: bitsandbytes' kernels break the graph, and unsloth
    compiles its own.
    """
    mode = config.training.compile
    if mode != "auto":
        return mode == "always"
    return (device.type == "cuda" and config.method == "full" and not config.training.gradient_checkpointing
            and config.model.architecture not in LAYER_LOOP_BREAKS and batches >= MIN_BATCHES)


def compile_model(model: nn.Module, family: Family) -> None:
    if family.name in LAYER_LOOP_BREAKS:
        compile_blocks(model)
    else:
        model.compile()


def compile_blocks(model: nn.Module) -> None:
    """Compile, in place, every block of every stack of identical blocks."""
    compiled: list[str] = []
    for name, module in model.named_modules():
        if any(name.startswith(prefix + ".") for prefix in compiled):
            continue  # inside a block already compiled
        if isinstance(module, nn.ModuleList) and len(module) > 1 and len({type(m) for m in module}) == 1:
            for index, block in enumerate(module):
                block.compile()
                compiled.append(f"{name}.{index}")
