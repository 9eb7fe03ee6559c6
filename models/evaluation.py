"""What the trainer measures and keeps: the dev loss, ROUGE of a saved checkpoint, and the best eval's weights."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, ContextManager

import torch
from accelerate.utils import send_to_device

from models.config import TrainConfig
from models.data import Split
from models.generate import generate, load_checkpoint
from models.metrics import rouge
from models.steps import forward_loss, scored_tokens


@torch.inference_mode()
def eval_loss(model, features: list[dict], make_batch: Callable, causal: bool, batch_size: int,
              device: torch.device, autocast: Callable[[], ContextManager]) -> float:
    """The loss per summary token, without label smoothing, under the training step's autocast. `batch_size`
    rows a pass: its logits (a vocabulary-wide fp32 row per token) are what a pass's memory goes to."""
    total, tokens = 0.0, 0
    for start in range(0, len(features), batch_size):
        batch = make_batch(features[start: start + batch_size])
        count = scored_tokens(batch, causal).item()  # counted on the CPU, before the batch goes to the GPU
        with autocast():
            loss = forward_loss(model, send_to_device(batch, device), causal, smoothing=0.0)
        total, tokens = total + loss.item() * count, tokens + count
    return total / max(tokens, 1)


def score_checkpoint(folder: Path, split: Split, device: torch.device, config: TrainConfig,
                     on_rows: Callable[[int], object] | None = None) -> dict[str, float]:
    """ROUGE of a saved checkpoint on a whole split, loaded as `models.predict` loads it."""
    t = config.training
    model, tokenizer, family, _ = load_checkpoint(folder, device)
    summaries = generate(model, tokenizer, family, split.features, num_beams=t.num_beams,
                         max_new_tokens=t.generation_max_length, batch_size=t.eval_batch_size, device=device,
                         on_rows=on_rows)
    del model
    return rouge(summaries, split.references, t.rouge_tokenize)


class BestWeights:
    """A copy, in host memory, of a model's trainable weights (all of them, or a PEFT model's adapters).

    The best eval's weights are copied here and written to disk once, after training, not at every new
    best (most evals of a climbing run are one): a bart-base checkpoint took 0.5 to 0.9 s to write in
    our runs, the copy next to nothing.
    """

    def __init__(self, model: torch.nn.Module):
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.kept: list[torch.Tensor] = []

    def keep(self) -> None:
        # Into pinned buffers allocated once, without waiting: the copies queue on the stream before the
        # next step's updates, and `restore` reads them back through the same stream.
        if not self.kept:
            self.kept = [torch.empty(p.shape, dtype=p.dtype, pin_memory=p.is_cuda) for p in self.params]
        for kept, param in zip(self.kept, self.params):
            kept.copy_(param.detach(), non_blocking=True)

    def restore(self) -> None:
        with torch.no_grad():
            for param, kept in zip(self.params, self.kept, strict=True):
                param.copy_(kept)
