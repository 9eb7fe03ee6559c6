"""python -m search.run --family t5 --trials 50 [--demo]

An Optuna study over a family's space file, stored in studies.db (or --storage URL). Running
the same command again resumes the study until it holds --trials finished trials.
"""
from __future__ import annotations

import argparse
import sys
from contextlib import nullcontext
from pathlib import Path

from models import METHODS, METRICS, ConfigError, quiet_libraries, run_cli
from search.interrupts import TrialInterrupted
from search.names import check_study_name, study_folder
from search.space import SPACES_DIR, Space
from search.storage import (DEFAULT_URL, GRACE_SECONDS, HEARTBEAT_SECONDS, STORAGE_ENV, check_url, default_url,
                            hide_passwords)
from search.summary import print_report
from search.workers import Workers, check_gpus, check_mps, cuda_mps

# This module imports nothing that imports torch: search/study.py does, and it is imported only once any
# worker processes have started (search_with_workers says why).

SAMPLERS = ("tpe", "random", "grid", "cmaes", "qmc")
PRUNERS = ("hyperband", "median", "sha", "wilcoxon", "none")


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


def load_spaces(args) -> list[Space]:
    """--space's file, or the space file of each --family."""
    return [Space.load(args.space)] if args.space else [Space.for_family(f) for f in parse_families(args.family)]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m search.run", description=__doc__.splitlines()[0])
    parser.add_argument("--family", default="t5", help="a family, a comma-separated list, or all (default t5)")
    parser.add_argument("--space", help=f"your own space file (a copy of FAMILY.yaml from {SPACES_DIR})")
    parser.add_argument("--trials", type=int, default=20, help="finished trials the study should hold")
    parser.add_argument("--train-data", help="training data with fname (or id), dialogue, summary: CSV, TSV, JSON "
                        "Lines, Parquet, a save_to_disk folder, or hub:NAME[:CONFIG]:SPLIT")
    parser.add_argument("--val-data", help="dev data, in any of the same forms")
    parser.add_argument("--columns", metavar="OURS=THEIRS,...",
                        help="your data's column names, e.g. dialogue=text,summary=highlights (fixes data.columns)")
    parser.add_argument("--demo", action="store_true", help="bundled Korean demo data and tiny checkpoints")
    parser.add_argument("--storage", default=default_url(),
                        help=f"storage URL (default ${STORAGE_ENV}, else {DEFAULT_URL}); a PostgreSQL password "
                             "may also come from PGPASSWORD or ~/.pgpass")
    parser.add_argument("--study", help="study name (default FAMILY-CHECKPOINT, FAMILY-demo with --demo)")
    parser.add_argument("--sampler", choices=SAMPLERS, default="tpe")
    parser.add_argument("--pruner", choices=PRUNERS, default="hyperband")
    parser.add_argument("--timeout", type=float, help="stop starting trials after this many seconds")
    parser.add_argument("--checkpoint", help="hub id or local folder; fixes model.checkpoint")
    parser.add_argument("--method", choices=METHODS, help="fixes the training method")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="fixes a config key for every trial, e.g. --set training.num_epochs=1 (repeatable)")
    parser.add_argument("--seed", type=int, help="sampler seed, for a repeatable search")
    parser.add_argument("--metric", choices=METRICS, default="mean", help="maximized (default: mean of R1/R2/RL F1)")
    parser.add_argument("--output-root", default="outputs", help="where trials and reports are written")
    parser.add_argument("--keep-top", type=int, default=1, metavar="K",
                        help="keep the checkpoints of the K best trials (default 1), for search.ensemble")
    parser.add_argument("--keep-checkpoints", action="store_true", help="keep every trial's checkpoint, not the best")
    parser.add_argument("--wandb-project", default="sumsweep", help="W&B project (a run per trial, grouped by study)")
    parser.add_argument("--no-wandb", action="store_true", help="no W&B runs")
    parser.add_argument("--gpus", help="one worker per GPU on the same study, e.g. 0,1,2,3")
    parser.add_argument("--trials-per-gpu", type=int, default=1, help="workers sharing each GPU (with --gpus)")
    parser.add_argument("--gpus-per-trial", type=int, default=1,
                        help="GPUs per worker, one trial data-parallel over them under accelerate launch (with --gpus)")
    parser.add_argument("--mps", action="store_true",
                        help="run the workers under CUDA MPS, started for the search and stopped after (with --gpus)")
    loudness = parser.add_mutually_exclusive_group()
    loudness.add_argument("-q", "--quiet", action="store_true", help="print only a line per trial and the summary")
    loudness.add_argument("-v", "--verbose", action="store_true", help="also show the libraries' own logs")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--heartbeat", type=int, default=HEARTBEAT_SECONDS,
                        help="seconds between a running trial's heartbeats")
    parser.add_argument("--grace-period", type=int, default=GRACE_SECONDS,
                        help="a trial silent this long is failed and re-queued with the same parameters")
    return parser


# Options this process keeps for itself: which GPUs and how many workers, which families (a worker gets
# one space file), and the storage URL (it may hold a password: it goes through the environment).
PARENT_ONLY = ("gpus", "trials_per_gpu", "gpus_per_trial", "mps", "family", "space", "worker", "storage")


def worker_argv(argv: list[str], space: Space) -> list[str]:
    """This command for one worker: one family's space, without the options in PARENT_ONLY. The worker
    names the study from the same options as this process, so both open the same one. The storage URL
    goes through the environment instead (worker_env), out of every process listing."""
    out = []
    for dest, value in vars(build_parser().parse_args(argv)).items():
        if dest in PARENT_ONLY or value is None or value is False:
            continue
        flag = "--" + dest.replace("_", "-")  # every option's flag is its name with dashes
        if value is True:
            out.append(flag)
        elif isinstance(value, list):  # a repeatable option: the flag once per value
            out += [word for item in value for word in (flag, item)]
        else:
            out += [flag, str(value)]
    return out + ["--space", str(space.path)]


def worker_env(args) -> dict[str, str]:
    return {STORAGE_ENV: args.storage}


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


def check_options(args) -> list[str]:
    """The options' own mistakes, found before anything starts; returns the --gpus list."""
    if args.trials < 1:
        raise ConfigError(f"--trials {args.trials} asks for no trial; use 1 or more")
    if args.keep_top < 1:
        raise ConfigError(f"--keep-top {args.keep_top} keeps no checkpoint, not even the best; use 1 or more")
    if args.seed is not None and args.seed < 0:
        raise ConfigError(f"--seed {args.seed} is negative; use 0 or more")
    if args.timeout is not None and args.timeout <= 0:
        raise ConfigError(f"--timeout {args.timeout:g} leaves no time for a trial; give the seconds after which "
                          "no new trial starts, e.g. --timeout 3600")
    for option, value in (("--heartbeat", args.heartbeat), ("--grace-period", args.grace_period)):
        if value < 1:
            raise ConfigError(f"{option} {value} is no time; give whole seconds, 1 or more")
    check_url(args.storage)
    check_study_name(args.study)
    if args.space and "," in args.family:
        raise ConfigError("--space takes one family's file; run one --family with it")
    gpus = [gpu.strip() for gpu in args.gpus.split(",")] if args.gpus is not None else []
    check_gpus(gpus, args.gpus)
    if args.trials_per_gpu < 1:
        raise ConfigError(f"--trials-per-gpu {args.trials_per_gpu} starts no worker; use 1 or more")
    if args.trials_per_gpu > 1 and not gpus:
        raise ConfigError(f"--trials-per-gpu {args.trials_per_gpu} shares GPUs between workers, so it needs --gpus, "
                          "e.g. --gpus 0")
    check_gpus_per_trial(gpus, args.gpus_per_trial, args.trials_per_gpu)
    if args.mps:
        if not gpus:
            raise ConfigError("--mps shares a GPU between workers, so it needs --gpus (and --trials-per-gpu 2 or more)")
        check_mps()
    return gpus


def search_with_workers(args, argv: list[str], gpus: list[str], spaces: list[Space]) -> int:
    """Each study's trials trained by worker processes (search/workers.py), on one study in the storage.

    A process's start-up is mostly importing torch and transformers (seconds, even on a fast host). This process
    needs them too, to check the input before it creates the study. So the first study's workers start
    before this process imports them, and open the study once it exists: the imports happen side by side.
    """
    def start(space: Space) -> Workers:
        return Workers(worker_argv(argv, space), gpus, args.trials_per_gpu, args.gpus_per_trial, worker_env(args))

    first = start(spaces[0])
    with first:
        from search.study import open_study, prepare

        quiet_libraries(args.verbose)
        names = [prepare(args, space)[1] for space in spaces]  # every family's input checked before any study
        # MPS starts after the checks, which may initialise CUDA here (a process that does so while the daemon
        # runs joins it, and the workers then stalled); before any study opens, so a failed start writes nothing.
        with cuda_mps() if args.mps else nullcontext():
            for space, name in zip(spaces, names):
                open_study(args, space, name)  # created once here, so trial 0 is queued once
                code = (first if space is spaces[0] else start(space)).run()
                if code:
                    return code
                print_report(open_study(args, space, name), study_folder(Path(args.output_root), name))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    hide_passwords(sys.argv)
    gpus = check_options(args)
    spaces = load_spaces(args)
    try:
        if gpus:
            code = search_with_workers(args, argv, gpus, spaces)
        else:
            from search.study import search

            code = search(args, spaces)
    except KeyboardInterrupt as stop:
        # Only a Ctrl-C that stopped a trial (here or in a worker) has recorded one as failed.
        said = "a running trial is recorded as failed; " if isinstance(stop, TrialInterrupted) else ""
        print(f"\ninterrupted: {said}run the same command to go on", file=sys.stderr)
        return 130
    if code == 0 and not args.worker and args.storage.startswith("sqlite:///"):
        print(f"look at it: optuna-dashboard {args.storage}")
    return code


if __name__ == "__main__":
    run_cli(main)
