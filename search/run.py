"""python -m search.run --family t5 --trials 50 [--demo]

An Optuna study over a family's space file, stored in studies.db (or --storage URL). Running
the same command again resumes the study until it holds --trials finished trials.
"""
from __future__ import annotations

import argparse
import sys
import time
import warnings
from contextlib import nullcontext
from pathlib import Path

import optuna
from optuna.trial import TrialState

from models.cli import quiet_libraries, run_cli
from models.config import ConfigError
from models.data import read_rows
from models.demo import DEMO_OVERRIDES, demo_assets
from models.distributed import leave, rank, share, world_size
from models.methods import check_method_possible, load_tokenizer
from models.trainer import model_name, train
from search.interrupts import HeldInterrupt
from search.objective import Data, Objective, TrainFn, keep_best_checkpoint
from search.sinks import WandbRuns
from search.space import SPACES_DIR, Space
from search.storage import DEFAULT_URL, GRACE_SECONDS, HEARTBEAT_SECONDS, check_url, open_storage, redact
from search.summary import best_lines, short, write_report
from search.workers import check_mps, cuda_mps, run_workers

SAMPLERS = ("tpe", "random", "grid", "cmaes", "qmc")
PRUNERS = ("hyperband", "median", "sha", "wilcoxon", "none")
METRICS = ("mean", "rouge1", "rouge2", "rougeL")
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def make_sampler(name: str, space: Space, seed: int | None) -> optuna.samplers.BaseSampler:
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    if name == "grid":
        return optuna.samplers.GridSampler(space.grid(), seed=seed)
    return {
        # Trials cost minutes, so TPE starts modelling after 5 random ones (its default waits for 10);
        # multivariate + group model the parameters jointly and handle the LoRA-only ones.
        "tpe": lambda: optuna.samplers.TPESampler(seed=seed, n_startup_trials=5, multivariate=True, group=True),
        "random": lambda: optuna.samplers.RandomSampler(seed=seed),
        "cmaes": lambda: optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False),
        "qmc": lambda: optuna.samplers.QMCSampler(seed=seed, warn_independent_sampling=False),
    }[name]()


def make_pruner(name: str, eval_steps: int) -> optuna.pruners.BasePruner:
    """Resources are optimizer steps; a trial reports at every eval (every `eval_steps` steps).

    No trial is judged before its third eval: ROUGE after one or two evals mostly measures how fast
    a model learns to stop generating, not how good it will be.
    """
    first_judged = 3 * eval_steps
    return {
        "hyperband": lambda: optuna.pruners.HyperbandPruner(min_resource=first_judged, reduction_factor=3),
        "median": lambda: optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=first_judged - 1),
        "sha": lambda: optuna.pruners.SuccessiveHalvingPruner(min_resource=first_judged),
        "wilcoxon": lambda: optuna.pruners.WilcoxonPruner(p_threshold=0.1),
        "none": optuna.pruners.NopPruner,
    }[name]()


# `all` is the design document's six; `llm` needs a checkpoint made by scripts/install_llm.py first.
DOCUMENT_FAMILIES = ("bart", "t5", "mt5", "flan-t5", "gpt2", "kogpt2")


def parse_families(text: str) -> list[str]:
    known = sorted(p.stem for p in SPACES_DIR.glob("*.yaml"))
    families = list(DOCUMENT_FAMILIES) if text == "all" else [f.strip() for f in text.split(",") if f.strip()]
    unknown = [f for f in families if f not in known]
    if unknown or not families:
        raise ConfigError(f"unknown family '{','.join(unknown) or text}'; use one of {', '.join(known)}, "
                          "a comma-separated list, or all")
    return families


def prepare(args, family: str | None) -> tuple[Space, Data, str]:
    """Everything that can be wrong with the input, found before any study is touched."""
    space = Space.load(args.space) if args.space else Space.for_family(family)
    family = space.family
    if args.demo:
        assets = demo_assets(family)
        for key, value in {**DEMO_OVERRIDES, "model.checkpoint": str(assets.checkpoint)}.items():
            space.fix(key, value)
        data = Data(Path(args.train_data or assets.train), Path(args.val_data or assets.dev))
    elif args.train_data and args.val_data:
        data = Data(Path(args.train_data), Path(args.val_data))
    else:
        raise ConfigError("no data given; pass --train-data and --val-data, or --demo")
    if args.checkpoint:
        space.fix("model.checkpoint", args.checkpoint)
    if args.method:
        space.fix("method", args.method)
    read_rows(data.train, need_summary=True)
    read_rows(data.val, need_summary=True)
    method_param = next((p for p in space.params if p.name == "method"), None)
    for method in (method_param.distribution.choices if method_param else (space.defaults.method,)):
        check_method_possible(method)
    checkpoint = space.defaults.model.checkpoint
    load_tokenizer(checkpoint)  # a checkpoint that is neither local nor reachable fails here, not in trial 0
    name = args.study or f"{family}-{'demo' if args.demo else model_name(checkpoint)}"
    return space, data, name


def open_study(args, space: Space, name: str, queue_baseline: bool = True) -> optuna.Study:
    """Load the study, or create it with trial 0 (the space's defaults) queued first.

    A sweep agent passes queue_baseline=False: it never asks the study for a trial, so a queued one
    would wait forever.
    """
    storage = open_storage(args.storage, args.heartbeat, args.grace_period)
    study = optuna.create_study(study_name=name, storage=storage, direction="maximize", load_if_exists=True,
                                sampler=make_sampler(args.sampler, space, args.seed),
                                pruner=make_pruner(args.pruner, space.defaults.training.eval_steps))
    if not study.get_trials(deepcopy=False) and "family" not in study.user_attrs:
        study.set_user_attr("family", space.family)
        study.set_user_attr("space", str(space.path))
        study.set_user_attr("metric", args.metric)
        study.set_user_attr("checkpoint", space.defaults.model.checkpoint)
        if queue_baseline:
            study.enqueue_trial(space.baseline(), user_attrs={"baseline": True})
    return study


def run_study(args, space: Space, data: Data, name: str, train_fn: TrainFn = train) -> optuna.Study:
    study = open_study(args, space, name)
    done = sum(t.state in FINISHED for t in study.get_trials(deepcopy=False))
    remaining = args.trials - done
    print(f"study {name} in {redact(args.storage)}: {done} finished trials, "
          f"{max(remaining, 0)} to go (space {space.path.name}, sampler {args.sampler}, pruner {args.pruner})")
    if remaining <= 0:
        return study

    started = {"t": time.perf_counter()}

    def progress(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        elapsed = time.perf_counter() - started["t"]
        started["t"] = time.perf_counter()
        finished = sum(t.state in FINISHED for t in study.get_trials(deepcopy=False))
        value = f"{args.metric}={trial.value:.4f}" if trial.value is not None else \
            f"at step {max(trial.intermediate_values, default=0)}" if trial.state == TrialState.PRUNED else ""
        try:
            best = f"best {study.best_value:.4f} (#{study.best_trial.number})"
        except ValueError:
            best = "no best yet"
        print(f"[{finished}/{args.trials}] trial #{trial.number} {trial.state.name.lower()} {value}  "
              f"{elapsed:.0f}s  {best}  {short(trial.params)}", flush=True)

    wandb = None if args.no_wandb else WandbRuns(args.wandb_project, name, Path(args.output_root))
    objective = Objective(space, data, Path(args.output_root), metric=args.metric, train_fn=train_fn, wandb=wandb)
    # Under accelerate launch a failed trial ends the worker: the other ranks may be inside a collective
    # that no message reaches, and the launcher ends them when rank 0 exits with an error.
    catch = (Exception,) if world_size() == 1 else ()
    with HeldInterrupt().installed() as interrupt:
        study.optimize(interrupt.guard(objective), n_trials=remaining, timeout=args.timeout, catch=catch,
                       callbacks=[optuna.study.MaxTrialsCallback(args.trials, states=FINISHED),
                                  keep_best_checkpoint if not args.keep_checkpoints else (lambda s, t: None),
                                  progress, interrupt.after_trial])
    if wandb and wandb.upload_hint():
        print(wandb.upload_hint())
    return study


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m search.run", description=__doc__.splitlines()[0])
    parser.add_argument("--family", default="t5", help="a family, a comma-separated list, or all (default t5)")
    parser.add_argument("--space", help="your own space file (a copy of spaces/FAMILY.yaml)")
    parser.add_argument("--trials", type=int, default=20, help="finished trials the study should hold")
    parser.add_argument("--train-data", help="training CSV with fname,dialogue,summary")
    parser.add_argument("--val-data", help="dev CSV with fname,dialogue,summary")
    parser.add_argument("--demo", action="store_true", help="bundled Korean demo data and tiny checkpoints")
    parser.add_argument("--storage", default=DEFAULT_URL, help=f"storage URL (default {DEFAULT_URL})")
    parser.add_argument("--study", help="study name (default FAMILY-CHECKPOINT, FAMILY-demo with --demo)")
    parser.add_argument("--sampler", choices=SAMPLERS, default="tpe")
    parser.add_argument("--pruner", choices=PRUNERS, default="hyperband")
    parser.add_argument("--timeout", type=float, help="stop starting trials after this many seconds")
    parser.add_argument("--checkpoint", help="hub id or local folder; fixes model.checkpoint")
    parser.add_argument("--method", choices=("full", "lora", "qlora", "unsloth"), help="fixes the training method")
    parser.add_argument("--seed", type=int, help="sampler seed, for a repeatable search")
    parser.add_argument("--metric", choices=METRICS, default="mean", help="maximized (default: mean of R1/R2/RL F1)")
    parser.add_argument("--output-root", default="outputs", help="where trials and reports are written")
    parser.add_argument("--keep-checkpoints", action="store_true", help="keep every trial's checkpoint, not the best")
    parser.add_argument("--wandb-project", default="sumsweep", help="W&B project (a run per trial, grouped by study)")
    parser.add_argument("--no-wandb", action="store_true", help="no W&B runs")
    parser.add_argument("--gpus", help="one worker per GPU on the same study, e.g. 0,1,2,3")
    parser.add_argument("--trials-per-gpu", type=int, default=1, help="workers sharing each GPU (with --gpus)")
    parser.add_argument("--gpus-per-trial", type=int, default=1,
                        help="GPUs per worker, one trial data-parallel over them under accelerate launch (with --gpus)")
    parser.add_argument("--mps", action="store_true",
                        help="run the workers under CUDA MPS, started for the search and stopped after (with --gpus)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--heartbeat", type=int, default=HEARTBEAT_SECONDS,
                        help="seconds between a running trial's heartbeats")
    parser.add_argument("--grace-period", type=int, default=GRACE_SECONDS,
                        help="a trial silent this long is failed and re-queued with the same parameters")
    return parser


def worker_argv(argv: list[str], space: Space, study: str) -> list[str]:
    """This command for one worker: one family's space and study, without the worker options."""
    parser = build_parser()
    args = vars(parser.parse_args(argv))
    skip = ("help", "gpus", "trials_per_gpu", "gpus_per_trial", "mps", "family", "space", "study", "worker")
    out = []
    for action in parser._actions:
        value = args.get(action.dest)
        if action.dest in skip or value is None:
            continue
        flag = action.option_strings[0]
        if isinstance(action, argparse._StoreTrueAction):
            out += [flag] if value else []
        else:
            out += [flag, str(value)]
    return out + ["--space", str(space.path), "--study", study]


def check_gpus_per_trial(gpus: list[str], per_trial: int, per_gpu: int) -> None:
    if per_trial < 1:
        raise ConfigError(f"--gpus-per-trial {per_trial} gives a trial no GPU; use 1 or more")
    if per_trial == 1:
        return
    if not gpus:
        raise ConfigError(f"--gpus-per-trial {per_trial} needs --gpus, e.g. --gpus 0,1,2,3")
    if len(gpus) % per_trial:
        raise ConfigError(f"--gpus {','.join(gpus)} cannot be split into groups of --gpus-per-trial {per_trial}; "
                          f"give a multiple of {per_trial} GPUs")
    if per_gpu > 1:
        raise ConfigError(f"--trials-per-gpu {per_gpu} and --gpus-per-trial {per_trial} do not mix: "
                          "a trial over several GPUs has them to itself")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    if args.trials < 1:
        raise ConfigError(f"--trials {args.trials} asks for no trial; use 1 or more")
    check_url(args.storage)
    if args.space and "," in args.family:
        raise ConfigError("--space takes one family's file; run one --family with it")
    gpus = args.gpus.split(",") if args.gpus else []
    check_gpus_per_trial(gpus, args.gpus_per_trial, args.trials_per_gpu)
    if args.mps:
        if not gpus:
            raise ConfigError("--mps shares a GPU between workers, so it needs --gpus (and --trials-per-gpu 2 or more)")
        check_mps()
    quiet_libraries()

    families = [None] if args.space else parse_families(args.family)
    prepared = [prepare(args, family) for family in families]  # every family's input checked before any study
    if rank() > 0:  # one of a worker's processes under accelerate launch: it trains what rank 0 shares
        for space, data, _ in prepared:
            Objective(space, data, Path(args.output_root), metric=args.metric).follow()
        leave()
        return 0
    # Started before any study is opened: if it cannot start, nothing is written.
    with cuda_mps() if args.mps else nullcontext():
        for space, data, name in prepared:
            try:
                if gpus:
                    open_study(args, space, name)  # created once here, so trial 0 is queued once
                    code = run_workers(worker_argv(argv, space, name), gpus, args.trials_per_gpu, args.gpus_per_trial)
                    if code:
                        return code
                    study = open_study(args, space, name)
                else:
                    study = run_study(args, space, data, name)
                    share(None)  # the study is over: the other ranks stop following
                if args.worker:
                    continue
            except KeyboardInterrupt:
                print("\ninterrupted: the running trial is recorded as failed; run the same command to go on",
                      file=sys.stderr)
                return 130
            report = write_report(study, Path(args.output_root) / name)
            print("\n".join(best_lines(study)))
            print(f"report: {report}/summary.txt")
    leave()
    if args.storage.startswith("sqlite:///"):
        print(f"look at it: optuna-dashboard {args.storage}")
    return 0


if __name__ == "__main__":
    run_cli(main)
