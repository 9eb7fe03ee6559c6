"""Learning parity: our trainer against Hugging Face's Trainer, same config, rows, steps and seeds.

For each model (bart-base, t5-base and gpt2 sizes, and a llama-style `llm` with LoRA; random weights
from configs, the demo's tokenizers) the family's space defaults (spaces/*.yaml: the design
document's recipe) train on the demo's training rows once by `models.trainer.train` and once by
`Seq2SeqTrainer` (`Trainer`'s seq2seq subclass; causal models through it too), for each seed. Both
start from the same weights (`build_model` after `set_seed`), read the same tokenized rows and
draw random batches. Their final weights are then scored by one function here: dev cross-entropy
over every summary token in fp32, and greedy whitespace ROUGE on the dev set.
Goal: our dev loss mean within 1% of HF's, or lower.

    python3 benchmarks/parity.py --out benchmarks/results/parity.json                  # on the GPU
    python3 benchmarks/parity.py --tiny --models bart,gpt2 --seeds 0 --out /tmp/p.json # CPU smoke run
    python3 benchmarks/parity.py --merge a.json b.json --out benchmarks/results/parity.json   # seeds of a model joined
    python3 benchmarks/parity.py --models llm --checkpoint checkpoints/gemma3-270m --zero-shot --seeds 0 --out g.json

`--checkpoint` trains a real pretrained model instead of random weights; `--zero-shot` also scores the starting
weights. Each run records its training rows per second (`samples_per_s`), so the same run compares speed.
"""
from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from models.config import TrainConfig  # noqa: E402
from models.data import Split, load_split  # noqa: E402
from models.families import get_family  # noqa: E402
from models.generate import generate, load_checkpoint  # noqa: E402
from models.methods import build_model  # noqa: E402
from models.metrics import rouge  # noqa: E402
from models.train import parse_overrides  # noqa: E402
from models.steps import batch_maker  # noqa: E402
from models.trainer import release_memory, train  # noqa: E402

MODELS = ("bart", "t5", "gpt2", "llm")
TOLERANCE = 0.01  # ours may be at most 1% above HF's dev loss


# -- what both trainers get -------------------------------------------------------------------------
def parity_config(family: str, checkpoint: Path, seed: int, **overrides) -> TrainConfig:
    """The family's space defaults, evaluated once at the end (so the kept checkpoint is the last step's)."""
    config = TrainConfig.from_yaml(REPO / "spaces" / f"{family}.yaml")
    return config.override({"model.checkpoint": str(checkpoint), "training.seed": seed,
                            "training.eval_steps": 10 ** 9, "training.eval_subset": 0, "training.num_beams": 1,
                            "training.generation_max_length": 64, "training.rouge_tokenize": "whitespace",
                            "training.precision": "bf16" if torch.cuda.is_available() else "fp32", **overrides})


@torch.no_grad()
def dev_loss(model, tokenizer, family, split: Split, batch_size: int = 32) -> float:
    """Mean cross-entropy per summary token over the whole split, in fp32: the one yardstick for both."""
    model.eval()
    make = batch_maker(model, family, tokenizer.pad_token_id)
    device = next(model.parameters()).device
    total, tokens = 0.0, 0
    for start in range(0, len(split), batch_size):
        batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v
                 for k, v in make(split.features[start: start + batch_size]).items()}
        batch.pop("logits_to_keep", None)
        labels = batch.pop("labels")
        logits = model(**batch, use_cache=False).logits.float()
        if family.is_causal:
            logits, labels = logits[:, :-1], labels[:, 1:]
        total += torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), labels.reshape(-1),
                                                   ignore_index=-100, reduction="sum").item()
        tokens += (labels != -100).sum().item()
    return total / tokens


def dev_split(config: TrainConfig, tokenizer, family, dev_path: Path) -> Split:
    return load_split(dev_path, tokenizer, family, config.training.max_source_length, config.training.max_target_length)


def score(model, tokenizer, family, config: TrainConfig, dev_path: Path) -> dict[str, float]:
    t, dev = config.training, dev_split(config, tokenizer, family, dev_path)
    loss = dev_loss(model, tokenizer, family, dev)
    summaries = generate(model, tokenizer, family, dev.features, num_beams=1, max_new_tokens=t.generation_max_length,
                         batch_size=64, device=next(model.parameters()).device)
    return {"dev_loss": loss, "rouge": rouge(summaries, dev.references, "whitespace")["mean"]}


def untrained_loss(config: TrainConfig, dev_path: Path) -> float:
    """The dev loss of the starting weights: what both trainers must get well below."""
    family = get_family(config.model.architecture)
    model, tokenizer, _ = build_model(config, family, torch.device(device()), torch.float32)
    return dev_loss(model.to(device()), tokenizer, family, dev_split(config, tokenizer, family, dev_path))


# -- the two trainers --------------------------------------------------------------------------------
def run_ours(config: TrainConfig, train_csv: Path, dev_csv: Path, work: Path) -> dict[str, float]:
    result = train(config, train_csv, dev_csv, work, progress=False)
    model, tokenizer, family, _ = load_checkpoint(Path(result.checkpoint), torch.device(device()))
    out = {**score(model, tokenizer, family, config, dev_csv), "steps": result.steps,
           "train_seconds": result.train_seconds, "samples_per_s": samples_per_second(config, result.steps,
                                                                                      result.train_seconds)}
    del model
    release_memory()
    return out


def run_hf(config: TrainConfig, train_csv: Path, dev_csv: Path, work: Path) -> dict[str, float]:
    """`Seq2SeqTrainer` with every setting of `config` that it has, batches padded as ours are."""
    from transformers import DataCollatorForSeq2Seq, Seq2SeqTrainer, Seq2SeqTrainingArguments, set_seed

    t, family = config.training, get_family(config.model.architecture)
    set_seed(t.seed)
    model, tokenizer, _ = build_model(config, family, torch.device(device()), torch.float32)
    model.to(device())
    tokenizer.padding_side = "right"  # as ours trains; left padding would shift a causal model's positions
    rows = [{k: f[k] for k in ("input_ids", "labels")}
            for f in load_split(train_csv, tokenizer, family, t.max_source_length, t.max_target_length).features]
    args = Seq2SeqTrainingArguments(
        output_dir=str(work), per_device_train_batch_size=t.batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps, learning_rate=t.learning_rate,
        lr_scheduler_type=t.scheduler, warmup_steps=t.warmup_ratio,  # a float below 1 is a ratio in transformers 5
        weight_decay=t.weight_decay, num_train_epochs=t.num_epochs, max_steps=t.max_steps,
        label_smoothing_factor=t.label_smoothing, max_grad_norm=t.max_grad_norm, seed=t.seed,
        bf16=t.precision == "bf16", optim="adamw_torch_fused" if torch.cuda.is_available() else "adamw_torch",
        save_strategy="no", eval_strategy="no", logging_strategy="no", report_to="none", disable_tqdm=True,
        dataloader_num_workers=0)
    collator = DataCollatorForSeq2Seq(tokenizer, model=None if family.is_causal else model, label_pad_token_id=-100,
                                      pad_to_multiple_of=8)
    trainer = Seq2SeqTrainer(model=model, args=args, train_dataset=rows, processing_class=tokenizer,
                             data_collator=collator)
    fair_loss_scaling(trainer, family)
    result = trainer.train()
    out = {**score(model, tokenizer, family, config, dev_csv), "steps": result.global_step,
           "train_seconds": result.metrics["train_runtime"],
           "samples_per_s": samples_per_second(config, result.global_step, result.metrics["train_runtime"])}
    del trainer, model
    gc.collect()
    release_memory()
    return out


def samples_per_second(config: TrainConfig, steps: int, seconds: float) -> float:
    """Training rows per second over the whole run (both trainers timed the same way: setup left out)."""
    t = config.training
    return steps * t.batch_size * t.gradient_accumulation_steps / seconds if seconds else 0.0


def zero_shot(config: TrainConfig, dev_path: Path) -> dict[str, float]:
    """The starting weights' dev loss and ROUGE: what training has to improve on."""
    family = get_family(config.model.architecture)
    model, tokenizer, _ = build_model(config.override({"method": "full"}), family, torch.device(device()),
                                      torch.float32)
    out = score(model.to(device()), tokenizer, family, config, dev_path)
    del model
    release_memory()
    return out


def fair_loss_scaling(trainer, family) -> None:
    """BART's and T5's forward takes **kwargs but their loss ignores `num_items_in_batch`, so the Trainer
    neither passes a token count they use nor divides their loss by the accumulation steps (transformers
    #47688): gradients come out accumulation-times too large, and clipping then bites. Declaring the
    model's loss blind to those kwargs makes the Trainer divide, as ours does."""
    if not family.is_causal:
        trainer.model_accepts_loss_kwargs = False


def device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


# -- checkpoints ---------------------------------------------------------------------------------------
def make_checkpoint(family: str, work: Path, tiny: bool, given: str | None = None) -> Path:
    """bart-base / t5-base / gpt2 sizes (benchmarks/methods.py), a llama of gpt2's width and depth (grouped-query
    attention, gated MLP), or the tiny demo ones."""
    from models.demo import demo_assets

    if given:
        return Path(given)
    if tiny:
        return demo_assets(family).checkpoint
    if family != "llm":
        from benchmarks.methods import make_base_checkpoint
        return make_base_checkpoint(family, work, tiny=False)
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    out = work / "llm-base"
    if not (out / "config.json").is_file():
        tok = AutoTokenizer.from_pretrained(str(demo_assets("llm").checkpoint))
        torch.manual_seed(0)
        LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=768, intermediate_size=2048,
                                     num_hidden_layers=12, num_attention_heads=12, num_key_value_heads=4,
                                     max_position_embeddings=1024, bos_token_id=tok.bos_token_id,
                                     eos_token_id=tok.eos_token_id, tie_word_embeddings=True)).save_pretrained(out)
        tok.save_pretrained(out)
    return out


# -- the comparison -----------------------------------------------------------------------------------------
def compare(family: str, seeds: list[int], tiny: bool, work: Path, overrides: dict, on_seed=lambda summary: None,
            checkpoint: str | None = None, with_zero_shot: bool = False):
    """Both trainers over `seeds`; `on_seed` gets the summary so far after each seed (a timeout keeps it)."""
    from models.demo import demo_assets

    assets, checkpoint = demo_assets(family), make_checkpoint(family, work, tiny, checkpoint)
    runs = {"ours": [], "hf": []}
    if with_zero_shot:
        runs["zero_shot"] = [zero_shot(parity_config(family, checkpoint, seeds[0], **overrides), assets.dev)]
        print(family, "zero-shot", json.dumps(runs["zero_shot"][0]), flush=True)
    for seed in seeds:
        config = parity_config(family, checkpoint, seed, **overrides)
        runs["ours"].append(run_ours(config, assets.train, assets.dev, work / f"ours-{family}-{seed}"))
        runs["hf"].append(run_hf(config, assets.train, assets.dev, work / f"hf-{family}-{seed}"))
        print(family, "seed", seed, json.dumps({k: v[-1] for k, v in runs.items()}), flush=True)
        on_seed(summarize(runs, seeds[: len(runs["hf"])], config))
    return summarize(runs, seeds, config)


def summarize(runs: dict[str, list[dict]], seeds: list[int], config: TrainConfig) -> dict:
    return summary(runs, seeds, config.model.checkpoint, config.method, config.to_flat())


def joined(a: dict, b: dict) -> dict:
    """Two summaries of one model (the same config, other seeds) as one."""
    runs = {k: a["runs"].get(k, []) + (b["runs"].get(k, []) if k != "zero_shot" else []) for k in a["runs"]}
    return summary(runs, a["seeds"] + b["seeds"], a["checkpoint"], a["method"], a["config"])


def summary(runs: dict[str, list[dict]], seeds: list[int], checkpoint: str, method: str, config: dict) -> dict:
    def mean(trainer: str, key: str) -> float:
        return sum(r[key] for r in runs[trainer]) / len(runs[trainer])

    ours, hf = mean("ours", "dev_loss"), mean("hf", "dev_loss")
    speed = ({"ours_samples_per_s": mean("ours", "samples_per_s"), "hf_samples_per_s": mean("hf", "samples_per_s")}
             if all("samples_per_s" in r for r in runs["ours"] + runs["hf"]) else {})
    return {"ours": ours, "hf": hf, "ours_rouge": mean("ours", "rouge"), "hf_rouge": mean("hf", "rouge"), **speed,
            "checkpoint": checkpoint, "loss_ratio": ours / hf,
            "within_tolerance": ours <= hf * (1 + TOLERANCE), "seeds": seeds,
            "method": method, "steps": runs["ours"][0]["steps"], "runs": runs, "config": config}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a config override for both trainers, e.g. training.group_by_length=true")
    parser.add_argument("--label", default="", help="a suffix for the result's key (e.g. grouped)")
    parser.add_argument("--tiny", action="store_true", help="the tiny demo checkpoints, for a CPU smoke run")
    parser.add_argument("--checkpoint", help="a real model folder to train instead of random weights (one model)")
    parser.add_argument("--zero-shot", action="store_true", help="also score the starting weights")
    parser.add_argument("--merge", nargs="+", metavar="JSON", help="join earlier result files into --out")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    from benchmarks.methods import stamp, write_json

    if args.merge:
        parts = [json.loads(Path(p).read_text()) for p in args.merge]
        models: dict[str, dict] = {}
        for key, model in ((k, v) for p in parts for k, v in p["models"].items()):
            models[key] = joined(models[key], model) if key in models else model  # a model's seeds, joined
        merged = {"models": models,
                  "parts": [{k: p[k] for k in ("command", "date", "device", "commit") if k in p} for p in parts]}
        write_json(Path(args.out), {**merged, "tolerance": TOLERANCE})
        return 0
    overrides = parse_overrides(args.set)
    work = Path(tempfile.mkdtemp(prefix="parity."))
    body = {"models": {}, "tolerance": TOLERANCE, "overrides": overrides}
    for family in args.models.split(","):
        key = family + (f"-{args.label}" if args.label else "")
        def keep(summary, key=key):
            body["models"][key] = summary
            write_json(Path(args.out), stamp(body))

        keep(compare(family, args.seeds, args.tiny, work, overrides, on_seed=keep, checkpoint=args.checkpoint,
                     with_zero_shot=args.zero_shot))
        m = body["models"][key]
        print(f"{key}: dev loss ours {m['ours']:.4f} hf {m['hf']:.4f} (x{m['loss_ratio']:.4f}), "
              f"ROUGE ours {m['ours_rouge']:.4f} hf {m['hf_rouge']:.4f}", flush=True)
    return 0 if all(m["within_tolerance"] for m in body["models"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
