"""Does data augmentation help where data is scarce? One config trained with and without each kind, over seeds.

The training set is the demo's first `--rows` rows (200 by default, where augmentation should matter most);
the dev set the demo's 200 dev rows, never augmented. Every run is spaces/bart.yaml's config (method full,
ROUGE on whitespace tokens) from one random-init bart-base-sized checkpoint, for the same `--steps` optimizer
steps: an augmented set (one copy a row, `data.augment.ratio` 1) is not trained longer, only on more varied
rows. Each run keeps its best eval's checkpoint and is scored on the whole dev set, as a trial is. Reported:
each variant's dev ROUGE (mean of R1/R2/RL F1) per seed, their mean and standard deviation, and the
difference of the means from `none`. `--paraphrase-file` (python -m models.paraphrase over the demo's training
file) adds a `paraphrase` variant: every training row's paraphrase added (`data.augment.paraphrase_ratio` 1).

    python3 benchmarks/augment.py --out benchmarks/results/augment.json                      # GPU, bart-base size
    python3 benchmarks/augment.py --tiny --rows 40 --steps 6 --seeds 0 1 --variants none turn_drop \
        --set training.num_beams=1 --set training.generation_max_length=24 --out /tmp/a.json        # CPU toy
"""
from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

VARIANTS = {
    "none": {},
    "turn_drop": {"data.augment.turn_drop": 0.15},
    "turn_swap": {"data.augment.turn_swap": 0.15},
    "token_delete": {"data.augment.token_delete": 0.1},
    "token_repeat": {"data.augment.token_repeat": 0.1},
    "speaker_swap": {"data.augment.speaker_swap": 0.5},
    "all": {"data.augment.turn_drop": 0.1, "data.augment.turn_swap": 0.1, "data.augment.token_delete": 0.05,
            "data.augment.token_repeat": 0.05, "data.augment.speaker_swap": 0.5},
}


def first_rows(source: Path, rows: int, out: Path) -> Path:
    with source.open(encoding="utf-8", newline="") as f:
        kept = list(csv.DictReader(f))[:rows]
    with out.open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(kept[0]))
        writer.writeheader()
        writer.writerows(kept)
    return out


def config_for(checkpoint: Path, steps: int, seed: int, variant: dict, overrides: dict):
    from models.config import TrainConfig

    config = TrainConfig.from_yaml(REPO / "spaces" / "bart.yaml")
    return config.override({"model.checkpoint": str(checkpoint), "method": "full", "training.max_steps": steps,
                            "training.eval_steps": max(1, steps // 4), "training.eval_subset": 64,
                            "training.rouge_tokenize": "whitespace", "training.seed": seed, **overrides, **variant},
                           source="benchmark")


def summarize(runs: dict[str, list[dict]]) -> dict:
    out = {}
    for name, done in runs.items():
        values = [r["mean"] for r in done]
        out[name] = {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                     "per_seed": values}
    if "none" in out:
        for name in out:
            out[name]["vs_none"] = out[name]["mean"] - out["none"]["mean"]
    return out


def merge(parts: list[dict], out: Path) -> int:
    """One result from runs of the same settings over different seeds (one GPU each, say)."""
    from benchmarks.methods import write_json

    body = {**parts[0], "runs": {}, "command": [part["command"] for part in parts if "command" in part]}
    for part in parts:
        for name, done in part["runs"].items():
            body["runs"].setdefault(name, []).extend(done)
    body["settings"]["seeds"] = sorted({r["seed"] for done in body["runs"].values() for r in done})
    body["summary"] = summarize(body["runs"])
    write_json(out, body)
    print(json.dumps(body["summary"], indent=1))
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--rows", type=int, default=200, help="training rows (the demo's first N)")
    parser.add_argument("--steps", type=int, default=300, help="optimizer steps of every run")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a config override for every run, e.g. training.num_beams=1")
    parser.add_argument("--tiny", action="store_true", help="the tiny demo checkpoint, for a CPU toy run")
    parser.add_argument("--paraphrase-file", help="a file python -m models.paraphrase wrote from the demo's "
                                                  "training data: adds the variant `paraphrase`")
    parser.add_argument("--merge", nargs="+", metavar="JSON", help="join runs of other seeds into --out")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    if args.merge:
        return merge([json.loads(Path(p).read_text(encoding="utf-8")) for p in args.merge], Path(args.out))
    if args.paraphrase_file:
        VARIANTS["paraphrase"] = {"data.augment.paraphrase_file": str(Path(args.paraphrase_file).resolve()),
                                  "data.augment.paraphrase_ratio": 1.0}
        args.variants.append("paraphrase")
    from benchmarks.methods import stamp, write_json
    from benchmarks.vs_hf_search import checkpoint
    from models.cli import quiet_libraries
    from models.demo import demo_assets
    from models.train import parse_overrides
    from models.trainer import train

    quiet_libraries()
    overrides = parse_overrides(args.set)

    work = Path(tempfile.mkdtemp(prefix="augment."))
    assets, ckpt = demo_assets("bart"), checkpoint(work, args.tiny)
    train_csv = first_rows(assets.train, args.rows, work / f"train{args.rows}.csv")
    runs: dict[str, list[dict]] = {name: [] for name in args.variants}
    body = {"settings": {"rows": args.rows, "dev_rows": 200, "steps": args.steps, "seeds": args.seeds,
                         "variants": {name: VARIANTS[name] for name in args.variants}, "tiny": args.tiny,
                         "config": "spaces/bart.yaml, method full, rouge_tokenize whitespace, augment ratio 1",
                         "overrides": overrides},
            "runs": runs}
    for seed in args.seeds:
        for name in args.variants:
            config = config_for(ckpt, args.steps, seed, VARIANTS[name], overrides)
            started = time.time()
            result = train(config, train_csv, assets.dev, work / f"{name}-{seed}", progress=False)
            runs[name].append({"seed": seed, **result.metrics, "best_step": result.best_step,
                               "seconds": time.time() - started})
            print(f"{name} seed {seed}: mean {result.metrics['mean']:.4f}", flush=True)
            body["summary"] = summarize({k: v for k, v in runs.items() if v})
            write_json(Path(args.out), stamp(body))
    print(json.dumps(body["summary"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
