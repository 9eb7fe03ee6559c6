"""Our trainer against the Hugging Face Trainer: training samples/s, same process, data, batch and precision.

For each model size (bart-base, t5-base, gpt2; random weights from configs, real vocabulary sizes,
the demo's tokenizer) and each dataset:
- `fixed`: every row fills the full lengths (source 512, target 128; gpt2 640 joined), so no padding;
- `demo`: the Korean demo dialogues as they are, whose lengths vary (padding is where real data loses),
the script trains
- `hf`: `Seq2SeqTrainer` / `Trainer` with bf16, fused AdamW and sdpa attention, batches of 16 padded by
  `DataCollatorForSeq2Seq` (its defaults: random batches, no length grouping);
- `ours`: `models.trainer.train` with `training.compile` set as asked (`--ours always,never`),
  through the whole trial code path: data cache, Accelerate, evaluation at the end, best checkpoint.
Samples/s counts the steps after the warm-up ones, so compiling is left out of it and reported apart
(`first_step_seconds`). Both trainers read the same tokenized rows (`models.data.load_split`).
HF and ours alternate for `--rounds` rounds in the process; the ratio is of their means (`versus_hf`).

    python3 benchmarks/trainer_vs_hf.py --out benchmarks/results/trainer_vs_hf.json
    python3 benchmarks/trainer_vs_hf.py --tiny --steps 8 --out /tmp/t.json    # CPU smoke run
"""
from __future__ import annotations

import argparse
import csv
import gc
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.methods import MODELS, device_name, make_base_checkpoint, stamp, write_json  # noqa: E402
from models.config import TrainConfig  # noqa: E402
from models.data import load_split  # noqa: E402
from models.datafiles import read_rows  # noqa: E402
from models.demo import demo_assets  # noqa: E402
from models.families import get_family  # noqa: E402
from models.methods import load_tokenizer  # noqa: E402
from models.trainer import release_memory, train  # noqa: E402

BATCH, SOURCE, TARGET, LR = 16, 512, 128, 1e-4
# Torch's own setting, for every HF run: our trainer turns cuDNN attention off for the rest of the
# process on varied lengths (models/trainer.py), and a later HF round would inherit that.
CUDNN_ATTENTION_DEFAULT = torch.backends.cuda.cudnn_sdp_enabled()


# -- data ---------------------------------------------------------------------------------------
def write_fixed_csv(path: Path, rows: int) -> Path:
    """Demo dialogues strung together until every row is longer than the lengths: no padding at all."""
    demo = read_rows(demo_assets("t5").train, need_summary=True)[0]
    with path.open("w", newline="", encoding="utf-8") as f:
        out = csv.writer(f)
        out.writerow(["fname", "dialogue", "summary"])
        for i in range(rows):
            picks = [demo[(i * 12 + k) % len(demo)] for k in range(12)]
            out.writerow([f"fixed_{i}", "\n".join(p["dialogue"] for p in picks),
                          " ".join(p["summary"] for p in picks)])
    return path


def datasets(work: Path, rows: int) -> dict[str, tuple[Path, Path]]:
    """name -> (train CSV, dev CSV); the dev set is small: evaluation is not what is measured here."""
    assets = demo_assets("t5")
    fixed = write_fixed_csv(work / "fixed.csv", rows)
    dev = work / "dev16.csv"
    with dev.open("w", newline="", encoding="utf-8") as f:  # csv, not lines: dialogues span several lines
        out = csv.writer(f)
        out.writerow(["fname", "dialogue", "summary"])
        rows = read_rows(assets.dev, need_summary=True)[0][:16]
        out.writerows([r["fname"], r["dialogue"], r["summary"]] for r in rows)
    return {"fixed": (fixed, dev), "demo": (assets.train, dev)}


# -- the Hugging Face baseline ---------------------------------------------------------------------
def run_hf(family: str, checkpoint: Path, train_csv: Path, steps: int, warmup: int, work: Path) -> dict:
    from transformers import (AutoModelForCausalLM, AutoModelForSeq2SeqLM, DataCollatorForSeq2Seq, Seq2SeqTrainer,
                              Seq2SeqTrainingArguments, TrainerCallback)

    fam = get_family(family)
    torch.backends.cuda.enable_cudnn_sdp(CUDNN_ATTENTION_DEFAULT)
    tokenizer = load_tokenizer(str(checkpoint))  # with GPT-2's pad token set, as a trial's is
    rows = [{k: v for k, v in f.items() if k in ("input_ids", "labels")}
            for f in load_split(train_csv, tokenizer, fam, SOURCE, TARGET).features]
    cls = AutoModelForCausalLM if fam.is_causal else AutoModelForSeq2SeqLM
    model = cls.from_pretrained(str(checkpoint), attn_implementation="sdpa")
    clock = {}

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step in (warmup, steps):
                torch.cuda.synchronize() if torch.cuda.is_available() else None
                clock[state.global_step] = time.perf_counter()

    args = Seq2SeqTrainingArguments(
        output_dir=str(work / "hf"), per_device_train_batch_size=BATCH, max_steps=steps, learning_rate=LR,
        lr_scheduler_type="linear", bf16=torch.cuda.is_available(), optim="adamw_torch_fused" if torch.cuda.is_available()
        else "adamw_torch", save_strategy="no", eval_strategy="no", logging_steps=steps, report_to="none",
        disable_tqdm=True, seed=0, dataloader_num_workers=0)
    trainer = Seq2SeqTrainer(model=model, args=args, train_dataset=rows, processing_class=tokenizer,
                             data_collator=DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=-100),
                             callbacks=[Clock()])
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    result = trainer.train()
    peak = torch.cuda.max_memory_allocated() / 2 ** 30 if torch.cuda.is_available() else 0.0
    del trainer, model
    gc.collect()
    release_memory()
    return {"samples_per_s": BATCH * (steps - warmup) / (clock[steps] - clock[warmup]),
            "train_loss": result.training_loss, "peak_gib": peak}


# -- ours ------------------------------------------------------------------------------------------
def run_ours(family: str, checkpoint: Path, data: tuple[Path, Path], steps: int, setting: str,
             work: Path) -> dict:
    """`setting`: a `training.compile` value, "-nographs" added for `training.cuda_graphs: false`."""
    compile_mode, _, variant = setting.partition("-")
    config = TrainConfig().override({
        "model.architecture": family, "model.checkpoint": str(checkpoint), "method": "full",
        "training.batch_size": BATCH, "training.gradient_accumulation_steps": 1, "training.learning_rate": LR,
        "training.scheduler": "linear", "training.max_steps": steps, "training.eval_steps": steps,
        "training.max_source_length": SOURCE, "training.max_target_length": TARGET,
        "training.precision": "bf16" if torch.cuda.is_available() else "fp32", "training.compile": compile_mode,
        "training.cuda_graphs": variant != "nographs",
        "training.eval_subset": 0, "training.eval_batch_size": 16, "training.num_beams": 1,
        "training.generation_max_length": 8, "training.rouge_tokenize": "whitespace"})
    from torch._dynamo.utils import counters

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    graphs, breaks = counters["stats"]["unique_graphs"], sum(counters["graph_break"].values())
    started = time.perf_counter()
    result = train(config, data[0], data[1], work / f"ours-{family}-{setting}", progress=False)
    wall = time.perf_counter() - started
    release_memory()
    return {"samples_per_s": result.samples_per_second, "compiled": result.compiled,
            "first_step_seconds": result.first_step_seconds, "setup_seconds": result.setup_seconds,
            "train_seconds": result.train_seconds, "eval_seconds": result.eval_seconds, "wall_seconds": wall,
            "eval_loss": result.metrics["eval_loss"], "peak_gib": result.peak_memory_gb,
            "graphs_compiled": counters["stats"]["unique_graphs"] - graphs,
            "graph_breaks": sum(counters["graph_break"].values()) - breaks}


def versus_hf(runs: dict[str, list[dict]]) -> dict:
    """Ours (its faster setting) against HF, each as the mean over the rounds both have finished.

    Rounds alternate HF and ours in one process, so neither is always the one that runs in a
    fresher process: one run of each spread 10-20% between measurements on the H200.
    """
    rounds = min(len(r) for r in runs.values())
    mean = {name: sum(r["samples_per_s"] for r in rs[:rounds]) / rounds for name, rs in runs.items()}
    best = max((name for name in runs if name != "hf"), key=mean.get)
    return {"ours": mean[best], "hf": mean["hf"], "ratio": mean[best] / mean["hf"], "rounds": rounds,
            "compiled": runs[best][0]["compiled"]}


# -- main ------------------------------------------------------------------------------------------
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--data", default="fixed,demo", help="fixed (full lengths), demo (varied lengths)")
    parser.add_argument("--ours", default="always,never",
                        help="training.compile settings to run for ours; always-nographs: compiled, no CUDA graphs")
    parser.add_argument("--no-hf", action="store_true", help="ours only (e.g. a second process, to time the cache)")
    parser.add_argument("--steps", type=int, default=100, help="optimizer steps per run")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of HF then ours, alternating in one process")
    parser.add_argument("--warmup", type=int, default=10, help="HF steps left out of samples/s")
    parser.add_argument("--tiny", action="store_true", help="tiny models, for a CPU smoke run")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="trainer_vs_hf."))
    sets = datasets(work, rows=BATCH * args.steps)
    body = {"settings": {"batch": BATCH, "source": SOURCE, "target": TARGET, "steps": args.steps,
                         "warmup": args.warmup, "lr": LR, "tiny": args.tiny, "device": device_name()},
            "runs": {}, "models": {}}
    for family in args.models.split(","):
        checkpoint = make_base_checkpoint(family, work, args.tiny)
        for data_name in args.data.split(","):
            key = f"{family}/{data_name}"
            runs = body["runs"].setdefault(key, {})  # trainer -> its runs, one a round
            for round_ in range(args.rounds):
                if not args.no_hf:
                    runs.setdefault("hf", []).append(
                        run_hf(family, checkpoint, sets[data_name][0], args.steps, args.warmup, work))
                    print(key, f"round {round_}", "hf", json.dumps(runs["hf"][-1]), flush=True)
                for mode in args.ours.split(","):
                    runs.setdefault(f"ours-{mode}", []).append(
                        run_ours(family, checkpoint, sets[data_name], args.steps, mode, work))
                    print(key, f"round {round_}", f"ours-{mode}", json.dumps(runs[f"ours-{mode}"][-1]), flush=True)
                    if "hf" in runs:
                        summary = versus_hf(runs)
                        body.setdefault("models" if data_name == "fixed" else "real_length", {})[family] = summary
                        print(key, "ratio so far", f"{summary['ratio']:.2f}", flush=True)
                    write_json(Path(args.out), stamp(body))  # after every run: a timeout keeps what finished
    return 0


if __name__ == "__main__":
    sys.exit(main())
