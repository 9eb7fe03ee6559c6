"""CUDA graphs train what the compiled step without them trains: same eval losses, with gradient accumulation.

CUDA graphs replay into fixed memory, so a gradient the backward graph wrote could be overwritten by the
next accumulated micro-batch's replay; the trainer keeps gradients in buffers of their own instead. This
trains tiny models (dropout 0, so both runs draw nothing) with `gradient_accumulation_steps: 2`, label
smoothing 0.1 and bf16, compiled, with `training.cuda_graphs` on and off, on fixed and varied lengths,
and prints each run's eval losses (every 10 of 30 steps). Needs a GPU (CUDA graphs are CUDA's).

    python3 benchmarks/cuda_graphs.py --out benchmarks/results/cuda_graphs.json
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.methods import make_base_checkpoint, stamp, write_json  # noqa: E402
from benchmarks.trainer_vs_hf import datasets  # noqa: E402
from models.config import TrainConfig  # noqa: E402
from models.trainer import release_memory, train  # noqa: E402

DROPOUTS = ("dropout", "attention_dropout", "activation_dropout", "dropout_rate", "resid_pdrop", "embd_pdrop",
            "attn_pdrop")


def without_dropout(checkpoint: Path) -> Path:
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(checkpoint)
    for name in DROPOUTS:
        if hasattr(config, name):
            setattr(config, name, 0.0)
    config.save_pretrained(checkpoint)
    return checkpoint


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="gpt2,bart")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("benchmarks/cuda_graphs.py needs a CUDA GPU; run it on the GPU machine")
    work = Path(tempfile.mkdtemp(prefix="cuda_graphs."))
    sets = datasets(work, rows=16 * 40)
    runs = {}
    for family in args.models.split(","):
        checkpoint = without_dropout(make_base_checkpoint(family, work, tiny=True))
        for data in ("fixed", "demo"):
            for graphs in (True, False):
                config = TrainConfig().override({
                    "model.architecture": family, "model.checkpoint": str(checkpoint), "method": "full",
                    "training.batch_size": 8, "training.gradient_accumulation_steps": 2,
                    "training.learning_rate": 1e-3, "training.max_steps": 30, "training.eval_steps": 10,
                    "training.label_smoothing": 0.1, "training.precision": "bf16", "training.compile": "always",
                    "training.cuda_graphs": graphs, "training.eval_subset": 0, "training.eval_batch_size": 16,
                    "training.num_beams": 1, "training.generation_max_length": 8,
                    "training.rouge_tokenize": "whitespace"})
                key = f"{family}/{data}/{'graphs' if graphs else 'nographs'}"
                result = train(config, sets[data][0], sets[data][1], work / key.replace("/", "-"), progress=False)
                runs[key] = {"eval_losses": [e["eval_loss"] for e in result.evals],
                             "samples_per_s": result.samples_per_second,
                             "first_step_seconds": result.first_step_seconds}
                print(key, json.dumps(runs[key]), flush=True)
                release_memory()
                write_json(Path(args.out), stamp({"runs": runs}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
