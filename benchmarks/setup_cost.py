"""Setup seconds of each trial in one process: the model, the tokenizer, the tokenized data, the optimizer.

Three one-step trials of the same config, one after the other as a study's worker runs them, on the demo's
training rows and 8 dev rows; the first pays for tokenizing (then cached), the others show the fixed cost
that every further trial pays.

    python3 benchmarks/setup_cost.py --family bart                                     # the tiny demo BART
    python3 benchmarks/setup_cost.py --family llm --checkpoint checkpoints/gemma3-270m  # LoRA on Gemma 3 270M
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", choices=("bart", "llm"), default="bart")
    parser.add_argument("--checkpoint", help="default: the tiny demo checkpoint of the family")
    parser.add_argument("--trials", type=int, default=3)
    args = parser.parse_args(argv)
    from models.cli import quiet_libraries
    from models.config import TrainConfig
    from models.demo import demo_assets
    from models.trainer import train

    quiet_libraries()
    work = Path(tempfile.mkdtemp(prefix="setup_cost."))
    assets = demo_assets(args.family)
    with open(assets.dev, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))[:8]
    dev = work / "dev8.csv"
    with dev.open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    config = TrainConfig.from_yaml(REPO / "spaces" / f"{args.family}.yaml").override({
        "model.checkpoint": args.checkpoint or str(assets.checkpoint), "training.max_steps": 1,
        "training.batch_size": 1, "training.gradient_accumulation_steps": 1, "training.eval_steps": 10 ** 6,
        "training.eval_subset": 0, "training.num_beams": 1, "training.generation_max_length": 4,
        "training.rouge_tokenize": "whitespace"})
    seconds = [train(config, assets.train, dev, work / f"trial-{i}", progress=False).setup_seconds
               for i in range(args.trials)]
    print(json.dumps({"family": args.family, "checkpoint": config.model.checkpoint,
                      "setup_seconds": [round(s, 3) for s in seconds]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
