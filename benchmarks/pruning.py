"""Does pruning pay? The same study with the default pruner and without, over several seeds.

    python benchmarks/pruning.py [--trials 12] [--seeds 0 1 2] [--out benchmarks/results]

Each seed runs the demo t5 study twice with the same sampler seed: once with --pruner hyperband (the
default) and once with --pruner none. The cost of a study is its trials' training + evaluation
seconds. The figure of merit: the seconds the pruned study needed to come within 0.5 ROUGE points
(0.005) of the unpruned study's final best, over the unpruned study's total seconds (lower is better;
the goal is at most 1/3). Writes pruning.json and pruning.png (best value against cumulative seconds).
"""
from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

import optuna
from optuna.trial import TrialState

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

TOLERANCE = 0.005  # 0.5 ROUGE points, as a fraction


def curve(study: optuna.Study) -> list[tuple[float, float]]:
    """(cumulative seconds, best value so far) after each finished trial, in trial order."""
    points, spent, best = [], 0.0, float("-inf")
    for trial in study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED)):
        spent += trial.user_attrs.get("train_seconds", 0) + trial.user_attrs.get("eval_seconds", 0)
        if trial.state == TrialState.COMPLETE:
            best = max(best, trial.value)
        points.append((spent, best))
    return points


def seconds_to_reach(points: list[tuple[float, float]], target: float) -> float | None:
    return next((s for s, best in points if best >= target), None)


def run_pair(seed: int, trials: int, work: Path) -> dict:
    from search.run import main

    curves = {}
    for pruner in ("hyperband", "none"):
        url = f"sqlite:///{work / f'pruning-{seed}.db'}"
        study = f"{pruner}-{seed}"
        code = main(["--family", "t5", "--demo", "--trials", str(trials), "--pruner", pruner, "--seed", str(seed),
                     "--storage", url, "--study", study, "--output-root", str(work / "outputs"), "--no-wandb"])
        assert code == 0, f"study {study} failed"
        curves[pruner] = curve(optuna.load_study(study_name=study, storage=url))
    full_total, full_best = curves["none"][-1]
    reached = seconds_to_reach(curves["hyperband"], full_best - TOLERANCE)
    return {"seed": seed, "curves": curves, "unpruned_seconds": full_total, "unpruned_best": full_best,
            "pruned_best": curves["hyperband"][-1][1], "pruned_total_seconds": curves["hyperband"][-1][0],
            "pruned_seconds_to_reach": reached,
            "ratio": reached / full_total if reached is not None else None}


def plot(pairs: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(pairs), figsize=(5 * len(pairs), 4), squeeze=False)
    for ax, pair in zip(axes[0], pairs):
        for pruner, style in (("none", "--"), ("hyperband", "-")):
            xs, ys = zip(*pair["curves"][pruner])
            ax.step(xs, ys, style, where="post", label=pruner)
        ax.axhline(pair["unpruned_best"] - TOLERANCE, color="grey", linewidth=0.5)
        ax.set(title=f"seed {pair['seed']}: ratio {pair['ratio'] if pair['ratio'] is None else round(pair['ratio'], 2)}",
               xlabel="cumulative train + eval seconds", ylabel="best mean ROUGE F1")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main_benchmark() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--work", type=Path, default=Path("/tmp/sumsweep-pruning"))
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    pairs = []
    for seed in args.seeds:
        pairs.append(run_pair(seed, args.trials, args.work))
        ratios = [p["ratio"] for p in pairs]
        reached = [r for r in ratios if r is not None]
        summary = {"ratio": max(reached) if len(reached) == len(ratios) else None, "ratios": ratios,
                   "goal": "ratio <= 1/3", "tolerance": TOLERANCE, "trials": args.trials, "pairs": pairs,
                   "command": " ".join(["python3", *sys.argv]), "date": datetime.date.today().isoformat(),
                   "device": "cpu"}
        (args.out / "pruning.json").write_text(json.dumps(summary, indent=2))
        plot(pairs, args.out / "pruning.png")
        print(f"seed {seed}: unpruned {pairs[-1]['unpruned_seconds']:.0f}s best {pairs[-1]['unpruned_best']:.4f}; "
              f"pruned reached it after {pairs[-1]['pruned_seconds_to_reach']}s -> ratio {pairs[-1]['ratio']}",
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main_benchmark())
