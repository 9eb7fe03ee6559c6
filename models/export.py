"""A saved checkpoint as a Hugging Face folder to hand on: copied as it is, or its LoRA adapter merged into
the base weights (a plain model folder that loads without peft)."""
from __future__ import annotations

import shutil
from pathlib import Path

from models.generate import METADATA, read_metadata

ADAPTER = "adapter_config.json"


def is_adapter(folder: str | Path) -> bool:
    return (Path(folder) / ADAPTER).is_file()


def export_checkpoint(folder: str | Path, out: str | Path, merge_lora: bool = False) -> str:
    """Write `folder`'s checkpoint into the folder `out` (which may exist, empty). Returns what was written:
    "model", "adapter" or "merged"."""
    folder, out = Path(folder), Path(out)
    if not (merge_lora and is_adapter(folder)):
        shutil.copytree(folder, out, dirs_exist_ok=True)
        return "adapter" if is_adapter(folder) else "model"
    from peft import AutoPeftModelForCausalLM, AutoPeftModelForSeq2SeqLM

    from models.families import get_family
    from models.methods import load_pretrained, load_tokenizer

    family = get_family(read_metadata(folder).model.architecture)
    auto = AutoPeftModelForCausalLM if family.is_causal else AutoPeftModelForSeq2SeqLM
    # Loaded in full precision (a QLoRA adapter too): the merged weights are the ones the trial was scored with.
    model = load_pretrained(auto, str(folder)).merge_and_unload()
    model.save_pretrained(out)
    load_tokenizer(str(folder)).save_pretrained(out)
    shutil.copy2(folder / METADATA, out / METADATA)
    return "merged"
