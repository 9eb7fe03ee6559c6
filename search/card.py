"""The model card (README.md) of an exported trial: what was trained, how well, on which data, and how to
train it again and use it. Hugging Face shows the YAML block on top as the model's metadata."""
from __future__ import annotations

from pathlib import Path

import optuna
import yaml
from optuna.trial import FrozenTrial, TrialState

from models import get_family

METHODS = {"full": "full fine-tuning", "lora": "LoRA", "qlora": "QLoRA (4-bit base + LoRA)", "unsloth": "unsloth LoRA"}
WRITTEN = {"model": "the fine-tuned model", "adapter": "the LoRA adapter alone: the base checkpoint loads with it",
           "merged": "the LoRA adapter merged into the base weights: a plain model, no peft needed"}
SPLITS = (("train", "train_data", "train_sha256"), ("dev", "val_data", "val_sha256"))


def model_card(study: optuna.Study, trial: FrozenTrial, written: str) -> str:
    """The card of `trial`, the best of `study`; `written` is what the folder holds (models.export)."""
    attrs, config = trial.user_attrs, trial.user_attrs.get("config", {})
    family = get_family(config.get("model.architecture") or study.user_attrs["family"])
    checkpoint = config.get("model.checkpoint", study.user_attrs.get("checkpoint", "?"))
    metric = study.user_attrs.get("metric", "mean")
    completed = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    rouge = ", ".join(f"{key} {attrs[key]:.4f}" for key in ("rouge1", "rouge2", "rougeL") if key in attrs)
    lines = [
        "---", front_matter(family.is_causal, checkpoint, written).rstrip(), "---", "",
        f"# {study.study_name}: trial #{trial.number}", "",
        f"The best trial ({completed} completed) of the sumsweep study `{study.study_name}`, fine-tuned for "
        "dialogue summarization.", "",
        "| | |", "|---|---|",
        f"| family | {family.name} ({family.kind}) |",
        f"| base checkpoint | `{checkpoint}` |",
        f"| method | {METHODS.get(attrs.get('method', ''), attrs.get('method', '?'))} |",
        f"| this folder | {WRITTEN[written]} |",
        f"| dev ROUGE ({metric}, maximized) | **{trial.value:.4f}**" + (f" ({rouge})" if rouge else "") +
        f", tokenized by {config.get('training.rouge_tokenize', 'morpheme')} |",
        f"| trained | {attrs.get('steps', '?')} optimizer steps in {attrs.get('train_seconds', 0):.0f} s |",
        "", "## Parameters", "",
        "What the search chose for this trial (the whole training config is `sumsweep.json`):", "",
        *table(("parameter", "value"), [(f"`{k}`", show(v)) for k, v in trial.params.items()],
               "none: every key was fixed"),
        "", "## Data", "",
        *table(("split", "file", "sha256"), [(split, f"`{attrs[path]}`", f"`{attrs.get(digest) or 'not local'}`")
                                              for split, path, digest in SPLITS if path in attrs],
               "not recorded by the trial"),
        "", "## Train it again", "",
        "From this folder, with the files above (same sha256):", "",
        "```bash", reproduce_command(attrs), "```", "",
        "## Use", "",
        *usage(family, checkpoint, written, config),
    ]
    return "\n".join(lines) + "\n"


def front_matter(causal: bool, checkpoint: str, written: str) -> str:
    meta = {"library_name": "peft" if written == "adapter" else "transformers",
            "pipeline_tag": "text-generation" if causal else "summarization",
            "tags": ["summarization", "dialogue-summarization", "sumsweep", "optuna"]}
    if not Path(checkpoint).expanduser().exists():  # a hub id; a local folder means nothing on the hub
        meta["base_model"] = checkpoint
    return yaml.safe_dump(meta, sort_keys=False, allow_unicode=True)


def reproduce_command(attrs: dict) -> str:
    train, dev = attrs.get("train_data", "TRAIN.csv"), attrs.get("val_data", "DEV.csv")
    return f"python -m models.train --config sumsweep.json --train-data {train} --val-data {dev} --output-dir retrained"


def usage(family, checkpoint: str, written: str, config: dict) -> list[str]:
    auto = "AutoModelForCausalLM" if family.is_causal else "AutoModelForSeq2SeqLM"
    if written == "adapter":
        auto = auto.replace("AutoModel", "AutoPeftModel")
        imports, note = f"from peft import {auto}", f"  # loads `{checkpoint}` too"
    else:
        imports, note = f"from transformers import {auto}", ""
    text = (f"dialogue + {family.separator!r}" if family.is_causal  # the summary follows the separator
            else f"{family.prefix!r} + dialogue" if family.prefix else "dialogue")
    return ["```bash",
            f"python -m models.predict --checkpoint FOLDER --family {family.name} --test-data test.csv "
            "--output submission.csv",
            "```", "", "```python",
            "from transformers import AutoTokenizer", imports, "",
            'folder = "FOLDER"  # this folder, or its hub repo id',
            f"model = {auto}.from_pretrained(folder){note}",
            "tokenizer = AutoTokenizer.from_pretrained(folder)",
            f"inputs = tokenizer({text}, return_tensors='pt')",
            f"summary_ids = model.generate(**inputs, num_beams={config.get('training.num_beams', 4)}, "
            f"max_new_tokens={config.get('training.generation_max_length', 100)})",
            "```"]


def table(header: tuple[str, ...], rows: list[tuple[str, ...]], empty: str) -> list[str]:
    if not rows:
        return [empty]
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(row) + " |" for row in rows)]


def show(value) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)
