"""Whole trials sharing one GPU: aggregate trials/hour for N = 1, 2, 4 workers on one study.

    python benchmarks/trials_per_gpu.py [--workers 1 2 4] [--trials 8] [--mps] [--out results/]

Each setting runs the real `python -m search.run --gpus 0 --trials-per-gpu N` on the demo data with
a bart-base-sized model (random weights: the compute is a real bart-base's) and times the whole
study, process start-up included; "steady" figures count from the first trial's start to the last
one's end. With --mps, N > 1 is also run under CUDA MPS. Writes trials_per_gpu.json
({"speedup_at_4": ..., "runs": [...]}) and parallel.json (the N = 2 figure).
"""
from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
BATCH = 16
sys.path.insert(0, str(REPO))


def bart_base_checkpoint(folder: Path) -> Path:
    from transformers import BartConfig, BartForConditionalGeneration

    from models.demo import demo_assets
    from models.methods import load_tokenizer

    if (folder / "config.json").is_file():
        return folder
    tokenizer = load_tokenizer(str(demo_assets("bart").checkpoint))
    config = BartConfig(vocab_size=50265, d_model=768, encoder_layers=6, decoder_layers=6,
                        encoder_attention_heads=12, decoder_attention_heads=12, encoder_ffn_dim=3072,
                        decoder_ffn_dim=3072, pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                        eos_token_id=tokenizer.eos_token_id, decoder_start_token_id=tokenizer.eos_token_id)
    BartForConditionalGeneration(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def space_file(folder: Path, steps: int) -> Path:
    raw = yaml.safe_load((REPO / "spaces" / "bart.yaml").read_text(encoding="utf-8"))
    raw["training"].update(batch_size=BATCH, gradient_accumulation_steps=1, max_steps=steps, eval_steps=steps // 2,
                           eval_subset=64, num_beams=1, generation_max_length=64, rouge_tokenize="whitespace")
    raw["search"] = {"training.learning_rate": {"low": 1.0e-5, "high": 1.0e-3, "log": True}}
    path = folder / "bart-bench.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


def search_command(space: Path, checkpoint: Path, trials: int, gpus: str, db: Path, outputs: Path) -> list[str]:
    """The benchmarks' `python -m search.run`: the demo data, a fresh SQLite study "bench", no W&B,
    no pruning, seed 0 (so two runs draw the same parameters)."""
    from models.demo import demo_assets

    assets = demo_assets("bart")
    return [sys.executable, "-m", "search.run", "--space", str(space), "--trials", str(trials), "--gpus", gpus,
            "--storage", f"sqlite:///{db}", "--study", "bench", "--no-wandb", "--train-data", str(assets.train),
            "--val-data", str(assets.dev), "--checkpoint", str(checkpoint), "--output-root", str(outputs),
            "--pruner", "none", "--seed", "0"]


def run(n: int, trials: int, space: Path, checkpoint: Path, work: Path, mps: bool, gpus: str = "0") -> dict:
    db = work / f"n{n}{'-mps' if mps else ''}-gpus{gpus.replace(',', '')}.db"
    db.unlink(missing_ok=True)
    cmd = search_command(space, checkpoint, trials, gpus, db, work / "outputs") + ["--trials-per-gpu", str(n)]
    cmd += ["--mps"] if mps else []
    log = db.with_suffix(".log")  # written as it runs, so a setting cut short by a time limit still says where it was
    launched, started = datetime.datetime.now(), time.perf_counter()  # optuna stamps trials with now()
    with log.open("w") as out:
        done = subprocess.run(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - started
    if done.returncode:
        raise SystemExit(f"N={n} failed (exit {done.returncode}), {log} ends:\n{log.read_text()[-4000:]}")
    import optuna

    study = optuna.load_study(study_name="bench", storage=f"sqlite:///{db}")
    finished = [t for t in study.trials if t.state.is_finished()]
    train_s = sum(t.user_attrs.get("train_seconds", 0) for t in finished)
    # What a trial spends outside its training steps and evals: model build, data, the final
    # re-scoring of the best checkpoint, the study's bookkeeping.
    fixed_s = [(t.datetime_complete - t.datetime_start).total_seconds() - t.user_attrs.get("train_seconds", 0)
               - t.user_attrs.get("eval_seconds", 0) for t in finished if t.datetime_complete]
    # A trial's eval_seconds also holds keeping each new best's weights and reporting to the study; its
    # evals' own eval_seconds (in results/metrics.json) are the eval loss, generating and ROUGE alone.
    generate_s = [sum(e["eval_seconds"] for e in trial_evals(work / "outputs" / "bench", t.number)) for t in finished]
    # The study's steady pace: from the first trial's start to the last one's end, the workers' start-up
    # (imports, CUDA, the study's checks) and the idle tail left out.
    first_start = min(t.datetime_start for t in finished)
    last_end = max(t.datetime_complete for t in finished)
    busy = (last_end - first_start).total_seconds()
    return {"gpus": gpus, "workers": n * len(gpus.split(",")), "mps": mps, "trials": len(finished), "wall_seconds": seconds,
            "trials_per_hour": len(finished) / seconds * 3600,
            "steady_trials_per_hour": len(finished) / busy * 3600,
            "startup_seconds": (first_start - launched).total_seconds(),
            "mean_trial_seconds": sum((t.datetime_complete - t.datetime_start).total_seconds()
                                      for t in finished) / len(finished),
            "mean_trial_train_seconds": train_s / max(len(finished), 1),
            "mean_trial_fixed_seconds": sum(fixed_s) / max(len(fixed_s), 1),
            "mean_trial_eval_seconds": sum(t.user_attrs.get("eval_seconds", 0) for t in finished) / max(len(finished), 1),
            "mean_trial_generate_seconds": sum(generate_s) / max(len(generate_s), 1),
            "mean_trial_setup_seconds": sum(t.user_attrs.get("setup_seconds", 0) for t in finished) / max(len(finished), 1),
            "peak_memory_gb_per_trial": max(t.user_attrs.get("peak_memory_gb", 0) for t in finished)}


def trial_evals(study_folder: Path, number: int) -> list[dict]:
    metrics = study_folder / f"trial-{number:04d}" / "results" / "metrics.json"
    return json.loads(metrics.read_text())["evals"] if metrics.is_file() else []


def write_results(runs: list[dict], args) -> None:
    """Written after every setting, so a run cut short by its time limit keeps what finished."""
    base = next(r for r in runs if r["workers"] == 1)
    for r in runs:
        r["speedup"] = r["trials_per_hour"] / base["trials_per_hour"]
        r["steady_speedup"] = r["steady_trials_per_hour"] / base["steady_trials_per_hour"]
        r["samples_per_second"] = r["trials"] * args.steps * BATCH / r["wall_seconds"]  # training samples, all workers
    import torch

    meta = {"command": " ".join(["python3", *sys.argv]), "date": datetime.date.today().isoformat(),
            "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
            "versions": {"torch": torch.__version__}, "model": "bart-base size, random weights",
            "batch_size": BATCH, "steps_per_trial": args.steps}
    one_gpu = [r for r in runs if r["gpus"] == "0"]
    best_at = {n: max((r["speedup"] for r in one_gpu if r["workers"] == n), default=None) for n in (2, 4)}
    steady_at_4 = max((r["steady_speedup"] for r in one_gpu if r["workers"] == 4), default=None)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "trials_per_gpu.json").write_text(json.dumps(
        {"speedup_at_2": best_at[2], "speedup_at_4": best_at[4], "steady_speedup_at_4": steady_at_4, "runs": runs,
         **meta}, indent=2))
    shared = next((r for r in one_gpu if r["workers"] == 2 and not r["mps"]), None)
    spread = next((r for r in runs if r["gpus"] != "0"), None)
    if shared or spread:
        (args.out / "parallel.json").write_text(json.dumps(
            {"gpus": len(spread["gpus"].split(",")) if spread else 1, "speedup": (spread or shared)["speedup"],
             "two_workers_one_gpu_speedup": shared["speedup"] if shared else None, "runs": runs, **meta}, indent=2))
    print(f"{'gpus':>5} {'workers':>7} {'mps':>5} {'trials/h':>9} {'samples/s':>9} {'speedup':>8} {'steady':>7}")
    for r in runs:
        print(f"{r['gpus']:>5} {r['workers']:>7} {str(r['mps']):>5} {r['trials_per_hour']:>9.1f} "
              f"{r['samples_per_second']:>9.1f} {r['speedup']:>8.2f} {r['steady_speedup']:>7.2f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--mps", action="store_true", help="also run N > 1 under CUDA MPS")
    parser.add_argument("--mps-only", action="store_true", help="with --mps, N > 1 under CUDA MPS alone")
    parser.add_argument("--multi-gpu", help="also one worker per GPU on these ids, e.g. 0,1")
    parser.add_argument("--work", type=Path, default=Path("/tmp/sumsweep-bench"))
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    checkpoint = bart_base_checkpoint(args.work / "bart-base-random")
    space = space_file(args.work, args.steps)
    runs = []
    for n in [n for n in args.workers if n == 1 or not args.mps_only]:
        runs.append(run(n, args.trials, space, checkpoint, args.work, mps=False))
        print(json.dumps(runs[-1]), flush=True)
        write_results(runs, args)
    if args.mps:  # search.run --mps starts the daemon and stops it after
        for n in [n for n in args.workers if n > 1]:
            runs.append(run(n, args.trials, space, checkpoint, args.work, mps=True))
            print(json.dumps(runs[-1]), flush=True)
            write_results(runs, args)
    if args.multi_gpu:
        runs.append(run(1, args.trials, space, checkpoint, args.work, mps=False, gpus=args.multi_gpu))
        print(json.dumps(runs[-1]), flush=True)
        write_results(runs, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
