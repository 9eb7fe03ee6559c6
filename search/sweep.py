"""python -m search.sweep --family t5 [--demo | --train-data ... --val-data ...] [--create]

Writes sweeps/FAMILY.yaml: a W&B sweep over the same space file as the Optuna study (same
parameters, ranges and distributions; hyperband early termination mirroring our pruner), whose
program is `python -m search.agent`, so every sweep run lands in the same Optuna study.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from models import ConfigError, is_hub, quiet_libraries, run_cli
from search.names import check_study_name
from search.run import build_parser, load_spaces
from search.space import Space
from search.storage import hide_passwords, redact, with_absolute_sqlite_path, without_password
from search.study import prepare


def wandb_parameter(distribution) -> dict[str, Any]:
    if isinstance(distribution, CategoricalDistribution):
        return {"values": list(distribution.choices)}
    if isinstance(distribution, IntDistribution):
        kind = "q_log_uniform_values" if distribution.log else "int_uniform"
        extra = {"q": 1} if distribution.log else {}
        return {"distribution": kind, "min": distribution.low, "max": distribution.high, **extra}
    assert isinstance(distribution, FloatDistribution)
    return {"distribution": "log_uniform_values" if distribution.log else "uniform",
            "min": distribution.low, "max": distribution.high}


def sweep_config(space: Space, study: str, metric: str, agent_args: list[str]) -> dict[str, Any]:
    """W&B has no conditional parameters: LoRA's are always drawn, and the agent drops them for full."""
    return {
        "name": study,
        "program": "search/agent.py",
        "method": "bayes",
        "metric": {"name": metric, "goal": "maximize"},
        # Each eval logs the metric once: W&B's hyperband counts those logs as its iterations.
        "early_terminate": {"type": "hyperband", "min_iter": 1, "eta": 3},
        "parameters": {p.name: wandb_parameter(p.distribution) for p in space.params},
        "command": ["${env}", "${interpreter}", "-m", "search.agent", *agent_args, "${args}"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    parser.prog = "python -m search.sweep"
    parser.add_argument("--output", help="default sweeps/FAMILY.yaml")
    parser.add_argument("--create", action="store_true", help="register the sweep with W&B (needs wandb login)")
    args = parser.parse_args(argv)
    hide_passwords(sys.argv)
    if "," in args.family or args.family == "all":
        raise ConfigError("a sweep covers one family; pass --family with one name")
    check_study_name(args.study)
    quiet_libraries()
    [space] = load_spaces(args)
    _, study = prepare(args, space)
    # Absolute paths: each agent runs the command from wherever `wandb agent` was started.
    # W&B keeps the sweep's command and shows it to everyone in the project: no password in it.
    storage = without_password(with_absolute_sqlite_path(args.storage))
    agent_args = ["--family", space.family, "--study", study, "--storage", storage, "--metric", args.metric,
                  "--output-root", str(Path(args.output_root).resolve()), "--wandb-project", args.wandb_project]
    if args.space:
        agent_args += ["--space", str(Path(args.space).resolve())]
    if args.demo:
        agent_args.append("--demo")
    for pair in args.set:
        agent_args += ["--set", pair]
    if args.keep_top != 1:  # each agent deletes the checkpoints that fall out of the best K
        agent_args += ["--keep-top", str(args.keep_top)]
    for flag, value in (("--train-data", args.train_data), ("--val-data", args.val_data),
                        ("--checkpoint", args.checkpoint), ("--method", args.method), ("--columns", args.columns)):
        if value:
            local = ((flag.endswith("data") and not is_hub(value))
                     or (flag == "--checkpoint" and Path(value).exists()))  # not a hub id
            agent_args += [flag, str(Path(value).resolve()) if local else value]
    if args.storage != redact(args.storage):
        print("note: the sweep file's command has the storage URL without its password; give each agent "
              "the password in PGPASSWORD or ~/.pgpass", file=sys.stderr)
    config = sweep_config(space, study, args.metric, agent_args)
    output = Path(args.output or Path("sweeps") / f"{space.family}.yaml")
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True), encoding="utf-8")
    print(f"wrote {output} ({len(config['parameters'])} parameters, study {study})")
    if args.create:
        import wandb

        from search.wandb_runs import wandb_mode

        if wandb_mode() != "online":
            raise ConfigError("--create needs a W&B login; run wandb login (or set WANDB_API_KEY) first")
        sweep_id = wandb.sweep(sweep=config, project=args.wandb_project)
        print(f"start agents: scripts/launch_agents.sh {args.wandb_project}/{sweep_id} 0  (or: wandb agent "
              f"{args.wandb_project}/{sweep_id})")
    else:
        print(f"register it with: wandb sweep --project {args.wandb_project} {output}")
    return 0


if __name__ == "__main__":
    run_cli(main)
