"""python -m search.collect --output results_comparison.csv [--storage URL]

Every finished trial of every study in the storage as one CSV row (read from the studies,
not from the text files under outputs/).
"""
from __future__ import annotations

import argparse
import csv

import optuna
from optuna.trial import TrialState

from models import run_cli
from search.storage import default_url, open_storage, study_names

FIXED = ["study", "trial", "state", "family", "checkpoint", "method", "rouge1", "rouge2", "rougeL", "mean",
         "eval_loss", "train_seconds", "peak_memory_gb", "steps"]
STATES = (TrialState.COMPLETE, TrialState.PRUNED)


def rows(storage) -> list[dict]:
    out = []
    for name in study_names(storage):
        study = optuna.load_study(study_name=name, storage=storage)
        for trial in study.get_trials(deepcopy=False, states=STATES):
            config = trial.user_attrs.get("config", {})
            out.append({
                "study": name, "trial": trial.number, "state": trial.state.name.lower(),
                "family": config.get("model.architecture", study.user_attrs.get("family")),
                "checkpoint": config.get("model.checkpoint", study.user_attrs.get("checkpoint")),
                "method": trial.user_attrs.get("method", config.get("method")),
                **{k: trial.user_attrs.get(k) for k in FIXED[6:]},
                **trial.params,
            })
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m search.collect", description=__doc__.splitlines()[0])
    parser.add_argument("--output", default="results_comparison.csv")
    parser.add_argument("--storage", default=default_url(), help="default $SUMSWEEP_STORAGE, else sqlite:///studies.db")
    args = parser.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    table = rows(open_storage(args.storage))
    params = sorted({k for row in table for k in row} - set(FIXED))
    with open(args.output, "w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIXED + params)
        writer.writeheader()
        writer.writerows(table)
    print(f"wrote {len(table)} trials of {len({r['study'] for r in table})} studies to {args.output}")
    return 0


if __name__ == "__main__":
    run_cli(main)
