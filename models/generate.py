"""Summaries from a model: shared by the trainer's evaluation and `models.predict`."""
from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import torch

from models.config import TrainConfig
from models.data import collate
from models.errors import CheckpointError
from models.families import FAMILIES, Family, get_family
from models.methods import load_pretrained, load_tokenizer

log = logging.getLogger(__name__)
METADATA = "sumsweep.json"  # written beside every saved checkpoint: family and config it was trained with


def generate(model, tokenizer, family: Family, features: list[dict[str, list[int]]], *, num_beams: int,
             max_new_tokens: int, batch_size: int, device: torch.device,
             on_rows: Callable[[int], object] | None = None) -> list[str]:
    """One summary per feature row, in order. `on_rows` is called with each batch's row count once it is
    generated (a progress bar's `update`)."""
    return [first for first, *_ in generate_candidates(
        model, tokenizer, family, features, num_beams=num_beams, num_return=1, max_new_tokens=max_new_tokens,
        batch_size=batch_size, device=device, on_rows=on_rows)]


@torch.inference_mode()
def generate_candidates(model, tokenizer, family: Family, features: list[dict[str, list[int]]], *, num_beams: int,
                        num_return: int, max_new_tokens: int, batch_size: int, device: torch.device,
                        on_rows: Callable[[int], object] | None = None) -> list[list[str]]:
    """The `num_return` best beams of each feature row, best first, rows in order (an ensemble votes over
    them). Rows are batched by length so batches carry little padding. A batch that runs out of GPU memory
    is tried again halved, and the rest go at that size: what was generated is kept."""
    key = "prompt_ids" if family.is_causal else "input_ids"
    order = sorted(range(len(features)), key=lambda i: len(features[i][key]))
    summaries: list[list[str]] = [[] for _ in features]
    was_training = model.training
    model.eval()
    start = 0
    while start < len(order):
        rows = order[start: start + batch_size]
        # Causal models continue the prompt, so prompts are left-padded to end at the same column.
        batch = collate([{"input_ids": features[i][key]} for i in rows], tokenizer.pad_token_id,
                        left_pad=family.is_causal)
        batch = {k: v.to(device) for k, v in batch.items()}
        try:
            out = model.generate(**batch, num_beams=max(num_beams, num_return), num_return_sequences=num_return,
                                 max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
        except torch.OutOfMemoryError:
            if len(rows) == 1:
                raise
            out = None
        if out is None:  # outside the handler, whose traceback held the failed batch's tensors
            batch_size = len(rows) // 2
            log.warning("generating %d rows at a time ran out of GPU memory; going on with %d", len(rows), batch_size)
            torch.cuda.empty_cache()
            continue
        if family.is_causal:
            out = out[:, batch["input_ids"].shape[1]:]
        texts = tokenizer.batch_decode(out, skip_special_tokens=True)
        for n, i in enumerate(rows):  # the sequences of a row come together, best first
            summaries[i] = [text.strip() for text in texts[n * num_return: (n + 1) * num_return]]
        if on_rows:
            on_rows(len(rows))
        start += len(rows)
    model.train(was_training)
    return summaries


def save_checkpoint(model, tokenizer, config: TrainConfig, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)  # a PEFT model saves its adapter alone
    tokenizer.save_pretrained(folder)
    (folder / METADATA).write_text(json.dumps(config.to_dict(), indent=2, ensure_ascii=False), encoding="utf-8")


def load_checkpoint(folder: str | Path, device: torch.device, family: str | None = None):
    """A checkpoint ready to generate: (model, tokenizer, family, config). A folder this project wrote says how
    it was trained (sumsweep.json); any other Hugging Face folder (a model, or a LoRA adapter) needs `family`,
    and generates with TrainConfig's defaults."""
    folder = Path(folder)
    config = read_metadata(folder, family)
    family = get_family(config.model.architecture)
    if (folder / "adapter_config.json").is_file():
        from peft import AutoPeftModelForCausalLM, AutoPeftModelForSeq2SeqLM

        auto = AutoPeftModelForCausalLM if family.is_causal else AutoPeftModelForSeq2SeqLM
        # The adapter is merged into full-precision base weights: generation needs no peft after this.
        model = load_pretrained(auto, str(folder)).merge_and_unload()
    else:
        from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

        model = load_pretrained(AutoModelForCausalLM if family.is_causal else AutoModelForSeq2SeqLM, str(folder))
    return model.to(device).eval(), load_tokenizer(str(folder)), family, config


def read_metadata(folder: Path, family: str | None = None) -> TrainConfig:
    """How a checkpoint folder was trained: its sumsweep.json, or for a plain Hugging Face folder, the
    defaults for `family`."""
    if not folder.is_dir():
        raise CheckpointError(f"checkpoint folder {folder} does not exist; pass a folder written by training "
                              "or by save_pretrained")
    meta = folder / METADATA
    if meta.is_file():
        config = TrainConfig.from_dict(json.loads(meta.read_text(encoding="utf-8")), source=str(meta))
        if family is not None and get_family(family).name != config.model.architecture:
            raise CheckpointError(f"{folder} was trained as family '{config.model.architecture}' ({METADATA}), "
                                  f"not '{family}'; leave --family out or pass --family "
                                  f"{config.model.architecture}")
        return config
    if family is None:
        raise CheckpointError(f"{folder} has no {METADATA}, so its family is unknown; pass --family (one of "
                              f"{', '.join(FAMILIES)}) for a plain Hugging Face checkpoint folder")
    get_family(family)  # an unknown name says which exist
    return TrainConfig().override({"model.architecture": family, "model.checkpoint": str(folder)},
                                  source="--family")
