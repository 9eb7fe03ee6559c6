"""python -m search.refit --study NAME [--train-data train.csv --val-data dev.csv]

The study's best config trained once more on train + dev (by default the data its best trial recorded), for a
final submission: the same number of epochs over the larger set, evaluated only at its end. Its dev score is no
longer a held-out figure: the dev rows are in its training data.
"""
from __future__ import annotations

import argparse
import csv
import math
import sys
from pathlib import Path

from models import ConfigError, quiet_libraries, run_cli
from search.ensemble import load_study
from search.names import study_folder
from search.storage import check_url, default_url, hide_passwords



def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m search.refit", description=__doc__.splitlines()[0])
    parser.add_argument("--study", required=True, help="the study whose best trial's config is trained again")
    parser.add_argument("--storage", default=default_url(), help="default $SUMSWEEP_STORAGE, else sqlite:///studies.db")
    parser.add_argument("--train-data", help="training data (default: what the best trial recorded)")
    parser.add_argument("--val-data", help="dev data, trained on now, not held out (default: the best trial's)")
    parser.add_argument("--output-root", default="outputs", help="writes OUTPUT_ROOT/STUDY/refit/")
    return parser


def refit_steps(config, train_rows: int, all_rows: int):
    """The config for train + dev: a run capped by max_steps gets its cap scaled to the same number of epochs
    (one by num_epochs already has them); one eval, at the end, since no held-out rows are left to choose by."""
    t = config.training
    steps = max(1, math.ceil(t.max_steps * all_rows / train_rows)) if t.max_steps > 0 else t.max_steps
    refit = config.override({"training.max_steps": steps})
    return refit.override({"training.eval_steps": refit.optimizer_steps(all_rows)})


def write_rows(path: Path, rows: list[dict[str, str]]) -> Path:
    """Rows, named as sumsweep names them (fname, dialogue, summary, summary2...), as a CSV that training reads
    without a column mapping."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(dict.fromkeys(k for row in rows for k in row)), restval="")
        writer.writeheader()
        writer.writerows(rows)
    return path


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    hide_passwords(sys.argv)
    check_url(args.storage)
    quiet_libraries()
    study = load_study(args.storage, args.study)
    try:
        best = study.best_trial
    except ValueError:
        raise ConfigError(f"study {args.study} has no completed trial yet; run its search first") from None
    if "config" not in best.user_attrs:
        raise ConfigError(f"trial #{best.number} of study {args.study} recorded no config; it cannot be trained again")

    from models import TrainConfig, read_rows, train_model

    config = TrainConfig().override(best.user_attrs["config"], source=f"trial #{best.number}'s config")
    train_path = args.train_data or best.user_attrs.get("train_data")
    val_path = args.val_data or best.user_attrs.get("val_data")
    if not (train_path and val_path):
        raise ConfigError(f"trial #{best.number} recorded no data; pass --train-data and --val-data (the study's)")
    columns = config.data.columns
    train_rows, dev_rows = (read_rows(path, need_summary=True, columns=columns)[0] for path in (train_path, val_path))
    folder = study_folder(Path(args.output_root), args.study) / "refit"
    both, dev = write_rows(folder / "train+dev.csv", train_rows + dev_rows), write_rows(folder / "dev.csv", dev_rows)
    config = refit_steps(config.override({"data.columns": ""}), len(train_rows), len(train_rows) + len(dev_rows))
    steps = config.optimizer_steps(len(train_rows) + len(dev_rows))
    print(f"refit of trial #{best.number} ({best.value:.4f} on held-out dev) on {len(train_rows)} train + "
          f"{len(dev_rows)} dev rows: {steps} steps (the trial trained {best.user_attrs.get('steps', '?')})")
    result = train_model(config, both, dev, folder, label="refit")
    metric = study.user_attrs.get("metric", "mean")
    score = result.metrics[metric]
    study.set_user_attr("refit", {"trial": best.number, "steps": result.steps, "checkpoint": result.checkpoint,
                                  f"{metric}_on_trained_dev": score, "held_out_dev": best.value})
    print(f"dev {metric} {score:.4f}: NOT a held-out score, the dev rows were trained on (the trial's held-out "
          f"dev score: {best.value:.4f})")
    print(f"checkpoint: {result.checkpoint}  (python -m models.predict --checkpoint {result.checkpoint} "
          "--test-data test.csv)")
    return 0


if __name__ == "__main__":
    run_cli(main)
