"""Does pruning pay? The same study with the default pruner and without, over several seeds.

    python benchmarks/pruning.py [--trials 12] [--seeds 0 1 2] [--out benchmarks/results]
    # the shipped bart space on a random-init bart-base-sized model, one pruner per GPU, then merged:
    CUDA_VISIBLE_DEVICES=0 python3 benchmarks/pruning.py --family bart --base --method full --seeds 0 --pruners hyperband --out a &
    CUDA_VISIBLE_DEVICES=1 python3 benchmarks/pruning.py --family bart --base --method full --seeds 0 --pruners none --out b
    python3 benchmarks/pruning.py --merge a/pruning.json b/pruning.json --out benchmarks/results

Each seed runs the demo study of a family (t5 by default, its tiny checkpoint) twice with the same
sampler seed: once with --pruner hyperband (the default) and once with --pruner none. The cost of a
study is its trials' training + evaluation seconds. The figure of merit: the seconds the pruned study
needed to come within 0.5 ROUGE points (0.005) of the unpruned study's final best, over the unpruned
study's total seconds (lower is better; the goal is at most 1/3). Writes pruning.json and pruning.png
(best value against cumulative seconds).
"""
from __future__ import annotations

import argparse
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


def data_args(family: str, base: bool, method: str | None, work: Path) -> list[str]:
    """The demo data, on the family's tiny checkpoint or on a random-init base-sized one."""
    fixed = ["--method", method] if method else []
    if not base:
        return ["--demo", *fixed]
    from benchmarks.methods import make_base_checkpoint
    from models.demo import demo_assets

    assets = demo_assets(family)
    return ["--train-data", str(assets.train), "--val-data", str(assets.dev),
            "--checkpoint", str(make_base_checkpoint(family, work, tiny=False)), *fixed]


def run_study(family: str, data: list[str], pruner: str, seed: int, trials: int, work: Path,
              extra: list[str] = ()) -> list:
    from search.run import main

    url = f"sqlite:///{work / f'pruning-{seed}.db'}"
    study = f"{family}-{pruner}-{seed}"
    code = main(["--family", family, *data, "--trials", str(trials), "--pruner", pruner, "--seed", str(seed),
                 "--storage", url, "--study", study, "--output-root", str(work / "outputs"), "--no-wandb", *extra])
    assert code == 0, f"study {study} failed"
    return curve(optuna.load_study(study_name=study, storage=url))


def pair(seed: int, curves: dict) -> dict:
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
    parser.add_argument("--family", default="t5")
    parser.add_argument("--base", action="store_true", help="a random-init base-sized model, not the tiny one")
    parser.add_argument("--method", help="fix the method rather than search it (e.g. full)")
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--pruners", nargs="+", default=["hyperband", "none"], choices=["hyperband", "none"])
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="passed to search.run")
    parser.add_argument("--timeout", type=float, help="search.run's --timeout: no trial starts after this many seconds")
    parser.add_argument("--merge", nargs="+", type=Path, metavar="JSON", help="join runs of one pruner each")
    parser.add_argument("--work", type=Path, default=Path("/tmp/sumsweep-pruning"))
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.merge:
        runs = [json.loads(path.read_text()) for path in args.merge]
        curves = {seed: {p: c for run in runs for p, c in run["curves"].get(str(seed), {}).items()}
                  for seed in {s for run in runs for s in run["curves"]}}
        write(args, runs[0], curves, [c for run in runs for c in run["commands"]])
        return 0
    args.work.mkdir(parents=True, exist_ok=True)
    data = data_args(args.family, args.base, args.method, args.work)
    extra = [*(a for kv in args.set for a in ("--set", kv)), *(["--timeout", str(args.timeout)] if args.timeout else [])]
    curves: dict = {}
    for seed in args.seeds:
        for pruner in args.pruners:
            curves.setdefault(str(seed), {})[pruner] = run_study(args.family, data, pruner, seed, args.trials, args.work,
                                                                 extra)
            write(args, {"family": args.family, "base": args.base, "trials": args.trials}, curves,
                  [" ".join(["python3", *sys.argv])])
    return 0


def write(args, setting: dict, curves: dict, commands: list[str]) -> None:
    """pruning.json (with the ratio of every seed both pruners ran) and, where there are such, the plot."""
    from benchmarks.methods import stamp

    pairs = [pair(int(seed), c) for seed, c in sorted(curves.items()) if {"hyperband", "none"} <= c.keys()]
    ratios = [p["ratio"] for p in pairs]
    reached = [r for r in ratios if r is not None]
    summary = stamp({"family": setting["family"], "base": setting["base"], "trials": setting["trials"],
                     "ratio": max(reached) if pairs and len(reached) == len(ratios) else None, "ratios": ratios,
                     "goal": "ratio <= 1/3", "tolerance": TOLERANCE, "pairs": pairs, "curves": curves,
                     "commands": commands})
    (args.out / "pruning.json").write_text(json.dumps(summary, indent=2))
    if pairs:
        plot(pairs, args.out / "pruning.png")
    for p in pairs:
        print(f"seed {p['seed']}: unpruned {p['unpruned_seconds']:.0f}s best {p['unpruned_best']:.4f}; "
              f"pruned reached it after {p['pruned_seconds_to_reach']}s -> ratio {p['ratio']}", flush=True)


if __name__ == "__main__":
    raise SystemExit(main_benchmark())
