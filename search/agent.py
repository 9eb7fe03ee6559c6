"""python -m search.agent [search.run's options, as --option value] --training.learning_rate=0.001 ...

The program a W&B sweep runs (`wandb agent` calls it with the sweep's parameters as `--key=value`;
every `--key=value` word is a sweep parameter, so give the fixed options as `--option value`).
It trains one trial through the same `Objective.run` as an Optuna trial, logs it to W&B, and adds
the result to the Optuna study as a finished trial, so the study, the dashboard and
collect_results.py show sweep runs and Optuna trials together.
"""
from __future__ import annotations

import os
import signal
import sys
import uuid
from pathlib import Path
from typing import Any

import yaml
from optuna.trial import TrialState, create_trial

from models import quiet_libraries, run_cli
from search.names import check_study_name
from search.objective import Objective, keep_top_checkpoints
from search.run import build_parser, load_spaces
from search.space import Space, SpaceError, within
from search.storage import hide_passwords
from search.study import open_study, prepare
from search.wandb_runs import WandbRuns


def split_argv(argv: list[str]) -> tuple[list[str], dict[str, Any]]:
    """Our options, and the sweep's `--key=value` parameters (`--method=lora` is the searched method)."""
    options, given = [], {}
    for arg in argv:
        key, sep, value = arg.removeprefix("--").partition("=")
        if arg.startswith("--") and sep:
            given[key] = _number(yaml.safe_load(value))
        else:
            options.append(arg)
    return options, given


def _number(value: Any) -> Any:
    """YAML 1.1 reads `5e-05`, as Python writes 0.00005, as a string (it wants a dot: `5.0e-05`)."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def sweep_params(given: dict[str, Any], space: Space) -> dict[str, Any]:
    """The agent's parameters, checked against the space; conditional ones only where they apply."""
    known = {p.name: p for p in space.params}
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise SpaceError(f"parameter {', '.join(unknown)} is not in {space.path.name}; regenerate the sweep file "
                         "with python -m search.sweep")
    params = {}
    for p in space.params:  # in file order, so conditions see the values they depend on
        if p.active({**space.fixed, **params}) and p.name in given:
            value = within(p.distribution, given[p.name])
            if value is None:
                raise SpaceError(f"{p.name}={given[p.name]!r} is outside its range in {space.path.name}")
            params[p.name] = value
    return params


class StoppedBySweep(Exception):
    pass


def _stopped_by_sweep(signum, frame) -> None:
    raise StoppedBySweep()


def main(argv: list[str] | None = None) -> int:
    options, given = split_argv(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(options)
    hide_passwords(sys.argv)
    check_study_name(args.study)
    quiet_libraries()
    [space] = load_spaces(args)
    data, name = prepare(args, space)
    params = sweep_params(given, space)
    study = open_study(args, space, name, queue_baseline=False)
    run_name = f"sweep-{os.environ.get('WANDB_RUN_ID') or uuid.uuid4().hex[:8]}"
    wandb = None if args.no_wandb else WandbRuns(args.wandb_project, name, Path(args.output_root))
    objective = Objective(space, data, Path(args.output_root), metric=args.metric, wandb=wandb)
    intermediate: dict[int, float] = {}
    attrs: dict[str, Any] = {"source": "wandb-sweep", "run_name": run_name}

    def report(step: int, metrics: dict[str, float]) -> bool:
        intermediate[step] = metrics[args.metric]
        return False  # W&B's own early termination stops this process from outside

    distributions = {p.name: p.distribution for p in space.params if p.name in params}
    signal.signal(signal.SIGTERM, _stopped_by_sweep)
    try:
        result = objective.run(params, name, run_name, report, attrs.__setitem__)
    except StoppedBySweep:
        # W&B's hyperband ends a hopeless run with SIGTERM: that is what pruning means in the study.
        study.add_trial(create_trial(params=params, distributions=distributions, state=TrialState.PRUNED,
                                     intermediate_values=intermediate, user_attrs=attrs))
        print(f"{run_name}: stopped by the sweep's early termination; added to study {name} as pruned")
        return 0
    except BaseException:
        study.add_trial(create_trial(params=params, distributions=distributions, state=TrialState.FAIL,
                                     intermediate_values=intermediate, user_attrs=attrs))
        raise
    study.add_trial(create_trial(params=params, distributions=distributions, value=result.metrics[args.metric],
                                 intermediate_values=intermediate, user_attrs=attrs, state=TrialState.COMPLETE))
    # Found by its run name: other agents may have added trials to the study since.
    mine = next(t for t in reversed(study.get_trials(deepcopy=False)) if t.user_attrs.get("run_name") == run_name)
    if not args.keep_checkpoints:
        keep_top_checkpoints(args.keep_top)(study, mine)
    print(f"{run_name}: {args.metric} = {result.metrics[args.metric]:.4f}, added to study {name} "
          f"as trial #{mine.number}")
    return 0


if __name__ == "__main__":
    run_cli(main)
