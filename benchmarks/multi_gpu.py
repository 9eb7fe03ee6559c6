"""Several GPUs on one study: one trial data parallel over the GPUs, and W&B sweep agents one per GPU.

    python3 benchmarks/multi_gpu.py --out DIR [--gpus 0,1] [--trials 2] [--steps 100] [--work /tmp/sumsweep-multi] [--tiny]
    python3 benchmarks/multi_gpu.py --tiny --trials 1 --steps 10 --out /tmp/mg     # CPU smoke run (two gloo processes)

Part A (--gpus-per-trial): the real `python -m search.run` twice on one space file (trials_per_gpu.py's:
bart-base size with random weights, batch 16 per process, only the learning rate searched), the demo
data, --pruner none --seed 0 --no-wandb and a fresh SQLite study each: `--gpus 0` (one GPU, one
worker), then `--gpus 0,1 --gpus-per-trial 2` (one trial over both GPUs, NCCL under accelerate launch,
NCCL_NVLS_ENABLE=0). Each trial's state, parameters and recorded attributes are kept; every rank's
"trial-NNNN: rank R of N trains config DIGEST" line is checked against the digest of the config the
study recorded. speedup = mean samples/s of the multi-GPU trials / mean of the one-GPU trials (the
trainer's samples/s already counts every process's rows).

Part B (W&B sweep agents, offline): `python -m search.sweep` writes the sweep file; its `command` is
expanded the way `wandb agent` expands it, with a hand-picked learning rate per GPU, and one program
per GPU is started the way scripts/launch_agents.sh starts agents (CUDA_VISIBLE_DEVICES, staggered),
with WANDB_MODE=offline, all into one shared study. Kept: exit codes, the study's trials (source
wandb-sweep) and their values, and the offline W&B run folders.

Writes DIR/multi_gpu.json after every study, so a run cut short keeps what finished; each command's
output goes to DIR/multi_gpu_logs/.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.trials_per_gpu import bart_base_checkpoint, search_command, space_file  # noqa: E402

STUDY = "bench"  # what search_command names the study
SWEEP_STUDY = "sweep"
BATCH_SIZE = 16  # space_file's per-process batch
# One learning rate per sweep agent, inside the bench space's 1e-5..1e-3.
SWEEP_LEARNING_RATES = (1e-4, 3e-4, 2e-4, 6e-4, 1.5e-4, 4e-4, 8e-4, 2.5e-4)
STAGGER_SECONDS = 2  # launch_agents.sh waits between agents: ones that start together may get the same config
RANK_LINE = re.compile(r"trial-(\d+): rank (\d+) of (\d+) trains config ([0-9a-f]+)")
ATTRS = ("samples_per_second", "train_seconds", "eval_seconds", "peak_memory_gb", "steps", "ranks", "worker",
         "setup_seconds", "first_step_seconds", "compiled", "method", "oom_retries", "fail_reason", "source",
         "run_name", "baseline")


# -- processes -----------------------------------------------------------------------------

def child_env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.setdefault("HF_HUB_OFFLINE", "1")  # every checkpoint is local: no hub look-ups on a machine without internet
    env.update(extra)
    return env


def descendants(pid: int) -> list[int]:
    """Every process below `pid`, by parent id: search.workers starts its workers in sessions of their own,
    so a process-group kill would miss them."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def stop_tree(proc: subprocess.Popen) -> None:
    """A command past its time (a hung collective): Ctrl-C first, which search.run passes to its workers
    so they record their trials as failed, then SIGKILL for whatever is still there."""
    tree = descendants(proc.pid)  # listed now: once their parent exits they no longer point back to it
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pass
    for pid in [proc.pid, *tree, *descendants(proc.pid)]:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    proc.wait()


def start(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as out:  # the child holds its own copy of the file
        return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, text=True)


def finish(proc: subprocess.Popen, deadline: float) -> tuple[int, bool]:
    """(exit code, timed out)."""
    try:
        return proc.wait(timeout=max(deadline - time.monotonic(), 0.1)), False
    except subprocess.TimeoutExpired:
        stop_tree(proc)
        return proc.returncode, True


def tail(log: Path, chars: int = 3000) -> str:
    return log.read_text(errors="replace")[-chars:]


# -- the study ------------------------------------------------------------------------------

def trial_record(trial) -> dict:
    from search.objective import config_digest

    config = trial.user_attrs.get("config")
    return {"number": trial.number, "state": trial.state.name, "value": trial.value, "params": trial.params,
            **{key: trial.user_attrs[key] for key in ATTRS if key in trial.user_attrs},
            "config_digest": config_digest(config) if config else None}


def study_trials(db: Path, name: str) -> list[dict]:
    import optuna

    if not db.is_file():
        return []
    try:
        study = optuna.load_study(study_name=name, storage=f"sqlite:///{db}")
    except KeyError:  # the command failed before it created the study
        return []
    return [trial_record(t) for t in study.trials]


def mean_samples_per_second(trials: list[dict]) -> float | None:
    rates = [t["samples_per_second"] for t in trials if t["state"] == "COMPLETE" and t.get("samples_per_second")]
    return sum(rates) / len(rates) if rates else None


# -- part A: search.run on one GPU, then one trial over all of them ---------------------------

def ranks_said(output: str) -> dict[int, dict[int, str]]:
    """trial number -> rank -> digest of the config that rank says it trains."""
    said: dict[int, dict[int, str]] = {}
    for trial, rank, _, digest in RANK_LINE.findall(output):
        said.setdefault(int(trial), {})[int(rank)] = digest
    return said


def search_run(label: str, gpus: str, per_trial: int, args) -> dict:
    folder = args.work / "part-a" / label
    shutil.rmtree(folder, ignore_errors=True)  # a fresh study: a leftover one would be resumed, not rerun
    folder.mkdir(parents=True)
    db = folder / "study.db"
    cmd = search_command(args.space, args.checkpoint, args.trials, gpus, db, folder / "outputs")
    extra = {}
    if per_trial > 1:
        cmd += ["--gpus-per-trial", str(per_trial)]
        extra["NCCL_NVLS_ENABLE"] = "0"  # NVLink multicast stays off on the lent machines
    log = args.out / "multi_gpu_logs" / f"part-a-{label}.log"
    started = time.monotonic()
    code, timed_out = finish(start(cmd, child_env(**extra), log), started + args.run_timeout)
    seconds = time.monotonic() - started
    trials = study_trials(db, STUDY)
    said = ranks_said(log.read_text(errors="replace"))
    for t in trials:
        t["digest_by_rank"] = said.get(t["number"], {})
    run = {"label": label, "gpus": gpus, "gpus_per_trial": per_trial, "command": cmd, "env": extra,
           "returncode": code, "timed_out": timed_out, "wall_seconds": round(seconds, 1), "log": str(log),
           "trials": trials, "mean_samples_per_second": mean_samples_per_second(trials)}
    if per_trial > 1:
        run["same_config_on_every_rank"] = same_config_on_every_rank(trials, per_trial)
    if code:
        run["output_tail"] = tail(log)
    return run


def same_config_on_every_rank(trials: list[dict], ranks: int) -> bool | None:
    """Every trial's every rank said the digest of the config the study recorded (rank 0's)."""
    checked = [t for t in trials if t["config_digest"]]
    if not checked:
        return None
    return all(t["digest_by_rank"] == {r: t["config_digest"] for r in range(ranks)} and t.get("ranks") == ranks
               for t in checked)


def compare(runs: list[dict]) -> dict:
    one = next((r for r in runs if r["gpus_per_trial"] == 1), None)
    many = next((r for r in runs if r["gpus_per_trial"] > 1), None)
    if not (one and many and one["mean_samples_per_second"] and many["mean_samples_per_second"]):
        return {"speedup": None}
    speedup = many["mean_samples_per_second"] / one["mean_samples_per_second"]
    return {"speedup": speedup, "scaling_efficiency": speedup / many["gpus_per_trial"],
            # --seed 0 on both: the same sampler draws, so the runs train the same learning rates
            "same_params_in_both_runs": [t["params"] for t in one["trials"]] == [t["params"] for t in many["trials"]]}


# -- part B: W&B sweep agents, one per GPU, into one study ------------------------------------

def write_sweep(folder: Path, db: Path, args, assets) -> tuple[Path, dict]:
    sweep = folder / "sweep.yaml"
    cmd = [sys.executable, "-m", "search.sweep", "--space", str(args.space), "--train-data", str(assets.train),
           "--val-data", str(assets.dev), "--checkpoint", str(args.checkpoint), "--storage", f"sqlite:///{db}",
           "--study", SWEEP_STUDY, "--output-root", str(folder / "outputs"), "--output", str(sweep)]
    log = args.out / "multi_gpu_logs" / "part-b-sweep-file.log"
    code, _ = finish(start(cmd, child_env(), log), time.monotonic() + args.run_timeout)
    if code:
        raise RuntimeError(f"python -m search.sweep exited {code}:\n{tail(log)}")
    return sweep, yaml.safe_load(sweep.read_text(encoding="utf-8"))


def interpreter_path() -> tuple[str, str]:
    """(PATH for the agents, what `python` is on it). wandb agent writes `python` for ${interpreter}; the
    shell that starts agents has this interpreter's folder first (an activated environment)."""
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    return path, shutil.which("python", path=path) or ""


def expand(command: list[str], program: str, params: dict, python: str) -> list[str]:
    """The sweep's command as wandb agent (wandb_agent.py, _command_run) turns it into a process: ${env} is
    /usr/bin/env except on Windows, ${interpreter} `python`, ${args} one `--name=value` word per
    parameter, the value as Python's str() writes it."""
    macros = {"env": ["/usr/bin/env"], "interpreter": [python], "program": [program],
              "args": [f"--{name}={value}" for name, value in params.items()]}
    out = []
    for word in command:
        word = str(word)
        if word.startswith("${") and word.endswith("}"):
            if word[2:-1] not in macros:
                raise ValueError(f"sweep command has {word}, which this benchmark does not expand")
            out += macros[word[2:-1]]
        else:
            out.append(word)
    return out


def agent_env(gpu: str, run_id: str, params: dict, folder: Path, path: str) -> dict[str, str]:
    """What wandb agent sets for the program it starts: the run id (search.agent names its run after it),
    the sweep id and the file with the run's parameters; WANDB_MODE=offline as there is no W&B server."""
    param_file = folder / "wandb" / "sweep-offline" / f"config-{run_id}.yaml"
    param_file.parent.mkdir(parents=True, exist_ok=True)
    param_file.write_text("wandb_version: 1\n\n" + yaml.safe_dump({k: {"value": v} for k, v in params.items()},
                                                                 sort_keys=False))
    return child_env(CUDA_VISIBLE_DEVICES=gpu, WANDB_MODE="offline", WANDB_RUN_ID=run_id,
                     WANDB_SWEEP_ID="offline", WANDB_SWEEP_PARAM_PATH=str(param_file), PATH=path)


def offline_runs(output_root: Path, run_id: str) -> list[dict]:
    """WandbRuns passes --output-root as wandb.init's dir: runs go to OUTPUT_ROOT/wandb/offline-run-*-RUNID."""
    return [{"folder": str(d), "wandb_file_bytes": (d / f"run-{run_id}.wandb").stat().st_size
             if (d / f"run-{run_id}.wandb").is_file() else None}
            for d in sorted((output_root / "wandb").glob(f"offline-run-*-{run_id}"))]


def sweep_agents(gpus: list[str], args, assets) -> dict:
    folder = args.work / "part-b"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    db = folder / "study.db"
    sweep, config = write_sweep(folder, db, args, assets)
    path, python = interpreter_path()
    result = {"sweep_file": str(sweep), "sweep_command": config["command"], "parameters": config["parameters"],
              "python_on_path": python or None, "agents": []}
    if not python:  # a real agent would fail to start its program here; run it with this interpreter instead
        result["note"] = "no `python` on PATH: wandb agent's ${interpreter} would not start; used " + sys.executable
    procs = []
    for i, gpu in enumerate(gpus):
        if i:
            time.sleep(STAGGER_SECONDS)
        run_id = uuid.uuid4().hex[:8]  # W&B's run ids are 8 lower-case letters and digits
        params = {"training.learning_rate": SWEEP_LEARNING_RATES[i % len(SWEEP_LEARNING_RATES)]}
        cmd = expand(config["command"], config["program"], params, "python" if python else sys.executable)
        log = args.out / "multi_gpu_logs" / f"part-b-agent-gpu{gpu}.log"
        procs.append((start(cmd, agent_env(gpu, run_id, params, folder, path), log), log))
        result["agents"].append({"gpu": gpu, "run_id": run_id, "params": params, "command": cmd, "log": str(log)})
    deadline = time.monotonic() + args.run_timeout
    for agent, (proc, log) in zip(result["agents"], procs):
        agent["returncode"], agent["timed_out"] = finish(proc, deadline)
        if agent["returncode"]:
            agent["output_tail"] = tail(log)
        agent["offline_runs"] = offline_runs(folder / "outputs", agent["run_id"])
    trials = study_trials(db, SWEEP_STUDY)
    by_run = {t.get("run_name"): t for t in trials}
    for agent in result["agents"]:
        trial = by_run.get(f"sweep-{agent['run_id']}")
        agent["trial"], agent["state"], agent["value"] = ((trial["number"], trial["state"], trial["value"]) if trial
                                                          else (None, None, None))
    result.update(trials=trials, all_from_sweep=bool(trials) and all(t.get("source") == "wandb-sweep" for t in trials),
                  every_agent_added_its_trial=all(a["state"] == "COMPLETE" for a in result["agents"]) and
                  len(trials) == len(gpus),
                  every_agent_wrote_an_offline_run=all(any(r["wandb_file_bytes"] for r in a["offline_runs"])
                                                       for a in result["agents"]))
    return result


# -- results ----------------------------------------------------------------------------------

def versions() -> dict:
    from importlib import metadata

    found = {}
    for package in ("torch", "transformers", "accelerate", "optuna", "wandb"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = None
    return found


def device() -> tuple[str, int]:
    import torch

    if not torch.cuda.is_available():
        return "cpu", 0
    return torch.cuda.get_device_name(0), torch.cuda.device_count()


def write_json(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1, ensure_ascii=False))
    os.replace(tmp, path)  # a run killed mid-write leaves the previous complete file


def summary(results: dict) -> str:
    lines = []
    a = results.get("part_a")
    if a:
        lines.append(f"part A: search.run, {results['model']}, {results['steps_per_trial']} steps, "
                     f"batch {BATCH_SIZE} per process")
        lines.append(f"  {'gpus':<6} {'per trial':>9} {'exit':>4} {'trials':>6} {'samples/s':>9} {'train s':>8} "
                     f"{'peak GiB':>8}  ranks agree")
        for r in a["runs"]:
            done = [t for t in r["trials"] if t["state"] == "COMPLETE"]
            train_s = sum(t.get("train_seconds", 0) for t in done) / max(len(done), 1)
            peak = max((t.get("peak_memory_gb", 0) for t in done), default=0)
            sps = f"{r['mean_samples_per_second']:.1f}" if r["mean_samples_per_second"] else "-"
            agree = {True: "yes", False: "NO", None: "-"}[r.get("same_config_on_every_rank")]
            lines.append(f"  {r['gpus']:<6} {r['gpus_per_trial']:>9} {r['returncode']:>4} {len(done):>6} {sps:>9} "
                         f"{train_s:>8.1f} {peak:>8.2f}  {agree if r['gpus_per_trial'] > 1 else ''}"
                         f"{'  (timed out)' if r['timed_out'] else ''}")
        if a.get("speedup"):
            lines.append(f"  speedup {a['speedup']:.2f}x over one GPU (efficiency {a['scaling_efficiency']:.2f}); "
                         f"same parameters in both runs: {a['same_params_in_both_runs']}")
    b = results.get("part_b")
    if b and "error" in b:
        lines.append(f"part B: failed: {b['error'].splitlines()[0]}")
    elif b:
        lines.append(f"part B: {len(b['agents'])} sweep agents, one per GPU, one study, W&B offline")
        for agent in b["agents"]:
            value = f"{agent['value']:.4f}" if agent["value"] is not None else "-"
            lines.append(f"  gpu {agent['gpu']}  lr {agent['params']['training.learning_rate']:g}  "
                         f"exit {agent['returncode']}  trial #{agent['trial']}  value {value}  "
                         f"offline runs {len(agent['offline_runs'])}{'  (timed out)' if agent['timed_out'] else ''}")
        lines.append(f"  study: {len(b['trials'])} trials, all source wandb-sweep: {b['all_from_sweep']}, "
                     f"every agent's trial there: {b['every_agent_added_its_trial']}, "
                     f"offline run files: {b['every_agent_wrote_an_offline_run']}")
    return "\n".join(lines)


def succeeded(results: dict) -> bool:
    a, b = results.get("part_a") or {}, results.get("part_b") or {}
    return (bool(a.get("runs")) and all(r["returncode"] == 0 and not r["timed_out"] for r in a["runs"])
            and all(r.get("same_config_on_every_rank", True) for r in a["runs"])
            and "error" not in b and all(x["returncode"] == 0 and not x["timed_out"] for x in b.get("agents", []))
            and bool(b.get("all_from_sweep")) and bool(b.get("every_agent_added_its_trial")))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="where multi_gpu.json and the logs go")
    parser.add_argument("--gpus", default="0,1", help="GPU ids: part A's first run uses the first alone")
    parser.add_argument("--trials", type=int, default=2, help="trials per part A study")
    parser.add_argument("--steps", type=int, help="optimizer steps per trial (default 100, 20 with --tiny)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/sumsweep-multi"))
    parser.add_argument("--tiny", action="store_true", help="the tiny demo bart checkpoint: a CPU smoke run")
    parser.add_argument("--run-timeout", type=float, default=900, help="seconds before one command is stopped")
    args = parser.parse_args()
    args.steps = args.steps or (20 if args.tiny else 100)
    if args.steps < 2:
        parser.error("--steps must be at least 2 (the space evaluates every steps // 2)")
    gpus = [g.strip() for g in args.gpus.split(",") if g.strip()]
    if len(gpus) < 2:
        parser.error("--gpus needs at least two ids")
    args.out, args.work = args.out.resolve(), args.work.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    args.work.mkdir(parents=True, exist_ok=True)
    from models.demo import demo_assets

    assets = demo_assets("bart")
    args.checkpoint = assets.checkpoint if args.tiny else bart_base_checkpoint(args.work / "bart-base-random")
    args.space = space_file(args.work, args.steps)
    name, count = device()
    results = {"command": " ".join(["python3", *sys.argv]),
               "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
               "device": name, "device_count": count, "versions": versions(),
               "model": "tiny demo bart" if args.tiny else "bart-base size, random weights",
               "checkpoint": str(args.checkpoint), "space": str(args.space), "steps_per_trial": args.steps,
               "batch_size_per_process": BATCH_SIZE, "trials": args.trials, "gpus": gpus,
               "part_a": None, "part_b": None}
    json_path = args.out / "multi_gpu.json"
    write_json(json_path, results)

    results["part_a"] = {"runs": []}
    for label, run_gpus, per_trial in (("one-gpu", gpus[0], 1), (f"{len(gpus)}-gpus-per-trial", ",".join(gpus),
                                                                  len(gpus))):
        results["part_a"]["runs"].append(search_run(label, run_gpus, per_trial, args))
        results["part_a"].update(compare(results["part_a"]["runs"]))
        write_json(json_path, results)

    try:
        results["part_b"] = sweep_agents(gpus, args, assets)
    except (RuntimeError, ValueError, KeyError) as err:  # the sweep file could not be written or read
        results["part_b"] = {"error": str(err)}
    write_json(json_path, results)
    print(summary(results))
    print(f"wrote {json_path}")
    return 0 if succeeded(results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
