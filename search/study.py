"""One study: the input checked, the study opened (trial 0 queued), and trials run until it holds enough.

This is the half of `python -m search.run` that imports torch and transformers; search/run.py, the
command, starts any worker processes before it imports this module (see there why).
"""
from __future__ import annotations

import functools
import os
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy
import optuna
from optuna.distributions import check_distribution_compatibility
from optuna.storages import RDBStorage
from optuna.study import StudyDirection
from optuna.trial import TrialState

from models import (DEMO_OVERRIDES, ConfigError, check_family_fits, check_method_possible, close_process_group,
                    demo_assets, get_family, load_tokenizer, model_name, parse_overrides, quiet_libraries, rank,
                    read_rows, share, train_model, wait_for_everyone, world_size)
from search.interrupts import HeldInterrupt
from search.names import study_folder
from search.objective import StudyData, Objective, TrainFn, keep_top_checkpoints
from search.owners import fail_dead_trials, fail_own_trials
from search.space import Space
from search.storage import one_asker, open_storage, redact
from search.summary import fail_reason, params_line, print_report
from search.trials import FINISHED, run_trials
from search.wandb_runs import WandbRuns
from search.workers import wait_to_go


def make_sampler(name: str, space: Space, seed: int | None) -> optuna.samplers.BaseSampler:
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    if name == "grid":
        return optuna.samplers.GridSampler(space.grid(), seed=seed)
    return {
        # Trials cost minutes, so TPE starts modelling after 5 random ones (its default waits for 10);
        # multivariate + group model the parameters jointly and handle the LoRA-only ones; the constant liar
        # (Optuna 5's default, relied on here) counts the trials other workers are running as bad ones, so
        # workers asking at once do not all propose one point.
        "tpe": lambda: optuna.samplers.TPESampler(seed=seed, n_startup_trials=5, multivariate=True, group=True,
                                                  constant_liar=True),
        "random": lambda: optuna.samplers.RandomSampler(seed=seed),
        "cmaes": lambda: optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False),
        "qmc": lambda: optuna.samplers.QMCSampler(seed=seed, warn_independent_sampling=False),
    }[name]()


def worker_seed(seed: int | None) -> int | None:
    """--seed for the sampler a process opens the study with: --seed plus the worker's number (search/workers.py
    numbers them), since workers seeded alike would draw alike. Grid and QMC keep it; the others are seeded
    again for each trial (reseed)."""
    return None if seed is None else seed + int(os.environ.get("SUMSWEEP_WORKER_INDEX", "0"))


def trial_seed(seed: int, number: int) -> int:
    """The sampler's seed for trial `number`: --seed mixed with the number, which the study gives one trial
    only. A new study is repeatable, and no trial draws another's parameters: not a resumed study's
    first trials, nor a trial of a worker or of another search started at the same moment."""
    return int(numpy.random.SeedSequence([seed, number]).generate_state(1)[0])


def reseed(args, space: Space) -> Callable[[optuna.Study, optuna.Trial], None]:
    """Before each trial draws its parameters: a sampler seeded for that trial. Grid and QMC keep theirs:
    the study itself records which points they have drawn, so a resumed study goes on from there."""
    def seeded(study: optuna.Study, trial: optuna.Trial) -> None:
        if args.seed is not None and args.sampler not in ("grid", "qmc"):
            study.sampler = make_sampler(args.sampler, space, trial_seed(args.seed, trial.number))

    return seeded


def make_pruner(name: str, eval_steps: int, trial_0_steps: int | None) -> optuna.pruners.BasePruner:
    """Resources are optimizer steps; a trial reports at every eval (every `eval_steps` steps).

    No trial is judged before its second eval: the first mostly measures how fast a model learns to stop
    generating. Hyperband's largest budget is trial 0's length, known before it starts (Space.schedule_evals).
    """
    first_judged = 2 * eval_steps
    return {
        "hyperband": lambda: optuna.pruners.HyperbandPruner(
            min_resource=first_judged, max_resource=max(trial_0_steps, first_judged) if trial_0_steps else "auto",
            reduction_factor=3),
        "median": lambda: optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=first_judged - 1),
        "sha": lambda: optuna.pruners.SuccessiveHalvingPruner(min_resource=first_judged),
        "wilcoxon": lambda: optuna.pruners.WilcoxonPruner(p_threshold=0.1),
        "none": optuna.pruners.NopPruner,
    }[name]()


def pruning_plan(pruner: str, space: Space) -> str:
    """One line on when trials are judged, or why the pruner cannot act on this study."""
    every, steps = space.defaults.training.eval_steps, space.trial_0_steps
    schedule = f"evaluating every {every} steps" + (f" (trial 0 trains {steps})" if steps else "")
    if pruner in ("none", "wilcoxon"):
        return f"{schedule}; pruner {pruner}"
    if steps is not None and steps <= 2 * every:
        return (f"{schedule}; pruner {pruner} cannot act: no trial is judged before step {2 * every}, and trial 0 "
                f"ends at step {steps}; lower training.eval_steps or train longer")
    return f"{schedule}; pruner {pruner} judges trials from step {2 * every}"


def prepare(args, space: Space) -> tuple[StudyData, str]:
    """Everything that can be wrong with the input, found before any study is touched; fixes the
    command's choices (--demo, --checkpoint, --method, --columns, --set) into `space`. Returns the data and the study name."""
    if args.demo:
        assets = demo_assets(space.family)
        for key, value in {**DEMO_OVERRIDES, "model.checkpoint": str(assets.checkpoint)}.items():
            space.fix(key, value)
        data = StudyData(args.train_data or assets.train, args.val_data or assets.dev)
    elif args.train_data and args.val_data:
        data = StudyData(args.train_data, args.val_data)
    else:
        raise ConfigError("no data given; pass --train-data and --val-data, or --demo")
    if args.checkpoint:
        space.fix("model.checkpoint", args.checkpoint)
    if args.method:
        space.fix("method", args.method)
    if args.columns is not None:
        space.fix("data.columns", args.columns)
    for key, value in parse_overrides(args.set).items():
        space.fix(key, value)
    columns = space.defaults.data.columns
    train_rows, skipped_train = read_rows(data.train, need_summary=True, columns=columns)
    data.skipped = (skipped_train, read_rows(data.val, need_summary=True, columns=columns)[1])
    space.schedule_evals(len(train_rows), world_size())
    method_param = next((p for p in space.params if p.name == "method"), None)
    for method in (method_param.distribution.choices if method_param else (space.defaults.method,)):
        check_method_possible(method)
    checkpoint = space.defaults.model.checkpoint
    load_tokenizer(checkpoint)  # a checkpoint that is neither local nor reachable fails here, not in trial 0
    check_family_fits(checkpoint, get_family(space.defaults.model.architecture))
    return data, args.study or f"{space.family}-{'demo' if args.demo else model_name(checkpoint)}"


def open_study(args, space: Space, name: str, queue_baseline: bool = True) -> optuna.Study:
    """Load the study, or create it with trial 0 (the space's defaults) queued first.

    Of processes opening a new study at the same moment, the one that creates it queues trial 0. A space
    whose ranges the study's trials cannot share is refused before anything is written. A sweep agent
    passes queue_baseline=False: it never asks the study for a trial, so a queued one would wait forever.
    """
    storage = open_storage(args.storage, args.heartbeat, args.grace_period)
    created = create_empty_study(storage, name)
    check_space_fits(space, storage.get_all_trials(storage.get_study_id_from_name(name), deepcopy=False), name)
    study = optuna.create_study(study_name=name, storage=storage, direction="maximize", load_if_exists=True,
                                sampler=make_sampler(args.sampler, space, worker_seed(args.seed)),
                                pruner=make_pruner(args.pruner, space.defaults.training.eval_steps,
                                                   space.trial_0_steps))
    if created:
        study.set_user_attr("family", space.family)
        study.set_user_attr("space", str(space.path))
        study.set_user_attr("metric", args.metric)
        study.set_user_attr("checkpoint", space.defaults.model.checkpoint)
        if queue_baseline:
            study.enqueue_trial(space.baseline(), user_attrs={"baseline": True})
    return study


def outcome(trial: optuna.trial.FrozenTrial, metric: str) -> str:
    """A finished trial's result for its progress line: its value, where it was pruned, or why it failed."""
    if trial.value is not None:
        return f"{metric}={trial.value:.4f}"
    if trial.state == TrialState.PRUNED:
        return f"at step {max(trial.intermediate_values, default=0)}"
    return f"({fail_reason(trial)})" if trial.state == TrialState.FAIL else ""


def create_empty_study(storage: RDBStorage, name: str) -> bool:
    """Create the study if it does not exist; True for the one process that did."""
    try:
        storage.create_new_study([StudyDirection.MAXIMIZE], name)
    except optuna.exceptions.DuplicatedStudyError:
        return False
    return True


def check_space_fits(space: Space, trials: list[optuna.trial.FrozenTrial], name: str) -> None:
    """Refuse a space that Optuna cannot mix with the study's trials (a changed `choices` list, a range made
    log or integer): every new trial would fail at its first parameter."""
    stored = {key: d for t in trials for key, d in t.distributions.items()}
    for p in space.params:
        if p.name in stored:
            try:
                check_distribution_compatibility(stored[p.name], p.distribution)
            except ValueError:
                raise ConfigError(
                    f"{space.path.name} changes {p.name} from {describe(stored[p.name])} to "
                    f"{describe(p.distribution)}, which study {name}'s trials cannot share; start a new study "
                    f"(--study NEW-NAME) or put the old range back") from None


def describe(d: optuna.distributions.BaseDistribution) -> str:
    if isinstance(d, optuna.distributions.CategoricalDistribution):
        return f"choices {list(d.choices)}"
    kind = "integers" if isinstance(d, optuna.distributions.IntDistribution) else "floats"
    step = f" step {d.step}" if d.step not in (None, 1) else ""
    return f"{kind} {d.low}..{d.high}" + (" (log)" if d.log else "") + step


def run_study(args, space: Space, data: StudyData, name: str, train_fn: TrainFn = train_model) -> optuna.Study:
    study = open_study(args, space, name)
    fail_dead_trials(study)  # before counting: a trial of a process that died on this host is not running
    done = sum(t.state in FINISHED for t in study.get_trials(deepcopy=False))
    remaining = args.trials - done
    say = (lambda *_: None) if args.quiet else print
    say(f"study {name} in {redact(args.storage)}: {done} finished trials, "
        f"{max(remaining, 0)} to go (space {space.path.name}, sampler {args.sampler}, pruner {args.pruner})")
    if any(data.skipped):
        say(f"left out for an empty dialogue or summary: {data.skipped[0]} rows of {data.train}, "
            f"{data.skipped[1]} of {data.val}")
    if remaining <= 0:
        return study
    say(pruning_plan(args.pruner, space))

    began = time.perf_counter()
    started = {"t": began}

    def progress(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        elapsed = time.perf_counter() - started["t"]
        started["t"] = time.perf_counter()
        finished = sum(t.state in FINISHED for t in study.get_trials(deepcopy=False))
        value = outcome(trial, args.metric)
        try:
            best = f"best {study.best_value:.4f} (#{study.best_trial.number})"
        except ValueError:
            best = "no best yet"
        eta = study_eta(time.perf_counter() - began, finished - done, args.trials - finished)
        print(f"[{finished}/{args.trials}] trial #{trial.number} {trial.state.name.lower()} {value}  "
              f"{elapsed:.0f}s  {best}  {eta}{params_line(trial.params)}", flush=True)

    wandb = None if args.no_wandb else WandbRuns(args.wandb_project, name, Path(args.output_root))
    objective = Objective(space, data, Path(args.output_root), metric=args.metric, train_fn=train_fn, wandb=wandb,
                          progress=not args.quiet, keep_top=None if args.keep_checkpoints else args.keep_top)
    # Under accelerate launch a failed trial ends the worker: the other ranks may be inside a collective
    # that no message reaches, and the launcher ends them when rank 0 exits with an error.
    catch = (Exception,) if world_size() == 1 else ()
    try:
        with HeldInterrupt().installed() as interrupt:
            run_trials(study, objective, args.trials, interrupt, timeout=args.timeout, catch=catch,
                       asking=functools.partial(one_asker, args.storage, study.study_name),
                       before_trial=reseed(args, space),
                       callbacks=[*([] if args.keep_checkpoints else [keep_top_checkpoints(args.keep_top)]),
                                  progress])
    except KeyboardInterrupt:
        fail_own_trials(study)  # a second Ctrl-C stops at once, maybe before the trial was recorded
        raise
    if wandb and wandb.upload_hint():
        print(wandb.upload_hint())
    return study


def study_eta(seconds: float, finished_since: int, left: int) -> str:
    """The study's time to go at its pace since this process started (every worker's trials count)."""
    if left <= 0 or finished_since <= 0:
        return ""
    minutes, secs = divmod(round(seconds / finished_since * left), 60)
    return f"eta {minutes // 60}:{minutes % 60:02d}:{secs:02d}  " if minutes >= 60 else f"eta {minutes}:{secs:02d}  "


def search(args, spaces: list[Space]) -> int:
    """Each space's study in turn, its trials trained in this process: the command without --gpus, one of
    its workers (search/workers.py), or one process of a worker under accelerate launch."""
    quiet_libraries(args.verbose)
    if args.worker:
        wait_for_the_study()
    prepared = [(space, *prepare(args, space)) for space in spaces]  # every family's input checked before any study
    if rank() > 0:  # one of a worker's processes under accelerate launch: it trains what rank 0 shares
        for space, data, _ in prepared:
            Objective(space, data, Path(args.output_root), metric=args.metric).follow()
        close_process_group()
        return 0
    for space, data, name in prepared:
        study = run_study(args, space, data, name)
        share(None)  # the study is over: the other ranks stop following
        if not args.worker:
            print_report(study, study_folder(Path(args.output_root), name))
    close_process_group()
    return 0


def wait_for_the_study() -> None:
    """A worker starts before its parent has checked the input and created the study (search/workers.py):
    rank 0 waits for the parent's word, and the other processes of an accelerate launch wait for rank 0."""
    if rank() == 0 and not wait_to_go():
        raise SystemExit("the search that started this worker ended before its study was ready")
    wait_for_everyone()
