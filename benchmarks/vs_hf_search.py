"""A whole study against Hugging Face's own search: time to the peer's best dev ROUGE, from launch.

Both sides search the same space (spaces/bart.yaml as shipped, method full, ROUGE on whitespace
tokens) over the same data (the demo's 1,000 train / 200 dev rows) from the same random-init
bart-base-sized checkpoint, with the same sampler (TPE, as `search.run` sets it up), the same seed
and the design document's config queued as trial 0:
- `ours`: `python -m search.run` (its pruner and defaults as shipped), timed from the launch;
- `hf`: `Seq2SeqTrainer.hyperparameter_search(backend="optuna")`, evaluating at every epoch with
  generation, bf16 and fused AdamW, and three things its Trainer gets wrong in a search fixed for it:
  the warmup ratio passed as a float (an int default truncates it to 0), label smoothing rebuilt for
  each trial (its smoother is built once), and BART's loss divided by the accumulation steps.
Both score generations with the same function (`models.metrics.rouge`, whitespace tokens). Each
side's trials are read back from its Optuna storage: values and completion times since its launch.

    python3 benchmarks/vs_hf_search.py --side hf --out hf.json          # one GPU each, side by side
    python3 benchmarks/vs_hf_search.py --side ours --out ours.json
    python3 benchmarks/vs_hf_search.py --side ours --label ours_4 --ours-args="--gpus 0 --trials-per-gpu 4" --out o4.json
    python3 benchmarks/vs_hf_search.py --merge hf.json ours.json o4.json --out benchmarks/results/vs_hf_search.json
    python3 benchmarks/vs_hf_search.py --side both --tiny --trials 3 --out /tmp/v.json   # CPU smoke run
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

HF_NAMES = {  # our space's keys -> Seq2SeqTrainingArguments' fields
    "training.learning_rate": "learning_rate", "training.scheduler": "lr_scheduler_type",
    "training.warmup_ratio": "warmup_steps", "training.weight_decay": "weight_decay",
    "training.num_epochs": "num_train_epochs", "training.label_smoothing": "label_smoothing_factor",
    "training.gradient_accumulation_steps": "gradient_accumulation_steps",
    "training.num_beams": "generation_num_beams", "training.generation_max_length": "generation_max_length",
    "training.batch_size": "per_device_train_batch_size",
}


def study_space(work: Path) -> Path:
    """spaces/bart.yaml as shipped, but for ROUGE on whitespace tokens (the one scorer of both sides)."""
    import yaml

    raw = yaml.safe_load((REPO / "spaces" / "bart.yaml").read_text(encoding="utf-8"))
    raw["training"]["rouge_tokenize"] = "whitespace"
    path = work / "bart-whitespace.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return path


def checkpoint(work: Path, tiny: bool) -> Path:
    from benchmarks.methods import make_base_checkpoint
    from models.demo import demo_assets

    return demo_assets("bart").checkpoint if tiny else make_base_checkpoint("bart", work, tiny=False)


# -- the two sides ---------------------------------------------------------------------------------------
def run_ours(space: Path, ckpt: Path, trials: int, seed: int, work: Path, extra: list[str],
             timeout: float | None) -> tuple[str, float]:
    from models.demo import demo_assets

    assets, url = demo_assets("bart"), f"sqlite:///{work / 'ours.db'}"
    command = [sys.executable, "-m", "search.run", "--space", str(space), "--train-data", str(assets.train),
               "--val-data", str(assets.dev), "--checkpoint", str(ckpt), "--method", "full", "--trials", str(trials),
               "--seed", str(seed), "--storage", url, "--study", "ours", "--output-root", str(work / "outputs"),
               "--no-wandb", *extra]
    launched = time.time()
    study = subprocess.Popen(command, cwd=REPO)
    try:
        study.wait(timeout=timeout)
    except subprocess.TimeoutExpired:  # stopped as a user would (Ctrl-C), so its trials so far are kept
        study.send_signal(signal.SIGINT)
        study.wait(timeout=120)
    if study.returncode not in (0, 130):
        raise SystemExit(f"search.run exited {study.returncode}")
    return url, launched


def run_hf(space_path: Path, ckpt: Path, trials: int, seed: int, work: Path) -> tuple[str, float]:
    import optuna
    import torch
    from transformers import (AutoModelForSeq2SeqLM, DataCollatorForSeq2Seq, Seq2SeqTrainer, Seq2SeqTrainingArguments)
    from transformers.trainer_pt_utils import LabelSmoother

    from models.data import load_split
    from models.demo import demo_assets
    from models.families import get_family
    from models.methods import load_tokenizer
    from models.metrics import rouge
    from search.space import Space
    from search.study import make_sampler

    launched = time.time()
    space, family, assets = Space.load(space_path), get_family("bart"), demo_assets("bart")
    space.fix("method", "full")
    t = space.defaults.training
    tokenizer = load_tokenizer(str(ckpt))
    train_rows, dev = (load_split(path, tokenizer, family, t.max_source_length, t.max_target_length)
                       for path in (assets.train, assets.dev))
    keep = ("input_ids", "labels")
    url = f"sqlite:///{work / 'hf.db'}"
    study = optuna.create_study(study_name="hf", storage=url, direction="maximize")
    study.enqueue_trial(space.baseline())  # trial 0: the design document's config, as ours queues it

    class FairTrainer(Seq2SeqTrainer):
        def compute_loss(self, model, inputs, *args, **kwargs):
            epsilon = self.args.label_smoothing_factor  # the trial's, not the first trial's
            if epsilon != getattr(self.label_smoother, "epsilon", 0):
                self.label_smoother = LabelSmoother(epsilon=epsilon) if epsilon else None
            return super().compute_loss(model, inputs, *args, **kwargs)

    def metrics(prediction) -> dict[str, float]:
        ids = prediction.predictions
        ids[ids < 0] = tokenizer.pad_token_id
        summaries = [s.strip() for s in tokenizer.batch_decode(ids, skip_special_tokens=True)]
        return rouge(summaries, dev.references, t.rouge_tokenize)

    args = Seq2SeqTrainingArguments(
        output_dir=str(work / "hf"), per_device_train_batch_size=t.batch_size, per_device_eval_batch_size=32,
        gradient_accumulation_steps=t.gradient_accumulation_steps, learning_rate=t.learning_rate,
        lr_scheduler_type=t.scheduler, warmup_steps=float(t.warmup_ratio), weight_decay=t.weight_decay,
        num_train_epochs=t.num_epochs, label_smoothing_factor=t.label_smoothing, max_grad_norm=t.max_grad_norm,
        bf16=torch.cuda.is_available(), optim="adamw_torch_fused" if torch.cuda.is_available() else "adamw_torch",
        eval_strategy="epoch", save_strategy="no", logging_strategy="epoch", report_to="none", disable_tqdm=True,
        predict_with_generate=True, generation_num_beams=t.num_beams, generation_max_length=t.generation_max_length,
        seed=t.seed, dataloader_num_workers=0)
    trainer = FairTrainer(
        model_init=lambda trial=None: AutoModelForSeq2SeqLM.from_pretrained(str(ckpt)), args=args,
        train_dataset=[{k: f[k] for k in keep} for f in train_rows.features],
        eval_dataset=[{k: f[k] for k in keep} for f in dev.features], processing_class=tokenizer,
        # The collator builds decoder inputs from the labels with a model's help: a label smoother takes
        # the labels away before the forward, which would otherwise make them from the dialogue.
        data_collator=DataCollatorForSeq2Seq(tokenizer, model=AutoModelForSeq2SeqLM.from_pretrained(str(ckpt)),
                                             label_pad_token_id=-100, pad_to_multiple_of=8),
        compute_metrics=metrics)
    trainer.model_accepts_loss_kwargs = False  # BART's loss ignores the token count: divide by accumulation

    def hp_space(trial) -> dict:
        chosen = {**space.baseline(), **space.suggest(trial)}  # every key the space searches, in its names
        return {HF_NAMES[k]: v for k, v in chosen.items() if k in HF_NAMES}

    trainer.hyperparameter_search(
        hp_space=hp_space, compute_objective=lambda m: m[f"eval_{t.metric}"], n_trials=trials, direction="maximize",
        backend="optuna", study_name="hf", storage=url, load_if_exists=True,
        sampler=make_sampler("tpe", space, seed), pruner=optuna.pruners.NopPruner())
    return url, launched


# -- reading and comparing -----------------------------------------------------------------------------
def read_trials(url: str, name: str, launched: float) -> list[dict]:
    import optuna

    study = optuna.load_study(study_name=name, storage=url)
    out = []
    for trial in study.get_trials(deepcopy=False):
        done, start = trial.datetime_complete, trial.datetime_start
        attrs = {k: trial.user_attrs[k] for k in ("train_seconds", "eval_seconds", "setup_seconds", "save_seconds")
                 if k in trial.user_attrs}
        out.append({"number": trial.number, "state": trial.state.name, "value": trial.value,
                    "params": trial.params, **attrs,
                    "started": start.timestamp() - launched if start else None,
                    "seconds": done.timestamp() - launched if done else None})
    return out


def best_curve(trials: list[dict]) -> list[tuple[float, float]]:
    """(seconds since launch, best value so far) at each completed trial, in time order."""
    points, best = [], float("-inf")
    for t in sorted((t for t in trials if t["state"] == "COMPLETE"), key=lambda t: t["seconds"]):
        best = max(best, t["value"])
        points.append((t["seconds"], best))
    return points


def time_to(curve: list[tuple[float, float]], target: float) -> float | None:
    return next((s for s, best in curve if best >= target - 1e-9), None)


def compare(ours: dict, hf: dict) -> dict:
    ours_curve, hf_curve = best_curve(ours["trials"]), best_curve(hf["trials"])
    hf_best, ours_best = hf_curve[-1][1], ours_curve[-1][1]
    reach_ours, reach_hf = time_to(ours_curve, hf_best), time_to(hf_curve, hf_best)
    paired = [(o, h) for o in ours["trials"] for h in hf["trials"] if o["params"] and same_params(o["params"], h["params"])]
    # A pruned trial has no final value to compare: such pairs are counted apart.
    pairs = [(o["value"], h["value"]) for o, h in paired if o["state"] == h["state"] == "COMPLETE"]
    return {"time_to_peer_best_ratio": reach_ours / reach_hf if reach_ours is not None else None,
            "seconds_to_hf_best": {"ours": reach_ours, "hf": reach_hf},
            "best": {"ours": ours_best, "hf": hf_best},
            "wall_seconds": {"ours": ours["wall_seconds"], "hf": hf["wall_seconds"]},
            "paired": len(pairs), "paired_worse_share": (sum(o < h for o, h in pairs) / len(pairs)) if pairs else None,
            "paired_pruned": len(paired) - len(pairs),
            "ours_costs": costs(ours["trials"]),
            "pruned": {"ours": sum(t["state"] == "PRUNED" for t in ours["trials"]),
                       "hf": sum(t["state"] == "PRUNED" for t in hf["trials"])}}


def costs(trials: list[dict]) -> dict:
    """Start-up (launch to the first trial's start) and each trial's seconds that were not training or eval."""
    timed = [t for t in trials if t.get("started") is not None and t["seconds"] is not None and "train_seconds" in t]
    fixed = [t["seconds"] - t["started"] - t["train_seconds"] - t.get("eval_seconds", 0.0) for t in timed]

    def mean(key: str) -> float | None:
        values = [t[key] for t in timed if key in t]
        return sum(values) / len(values) if values else None

    # The fixed cost, split: the trainer's setup (model, data, optimizer), writing the checkpoint, and the
    # rest (the search's own bookkeeping, a full-dev score of the best checkpoint where evals saw a subset).
    return {"startup_seconds": min((t["started"] for t in trials if t.get("started") is not None), default=None),
            "fixed_seconds_per_trial": sum(fixed) / len(fixed) if fixed else None,
            "setup_seconds_per_trial": mean("setup_seconds"), "save_seconds_per_trial": mean("save_seconds"),
            "fixed_seconds": fixed}


def plot(sides: dict, path: Path) -> None:
    """Best dev ROUGE so far against seconds since launch, one line a side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = {"ours": "sumsweep, 1 worker", "ours_4": "sumsweep, 4 workers on one GPU",
             "hf": "Seq2SeqTrainer.hyperparameter_search"}
    fig, ax = plt.subplots(figsize=(7, 4))
    for label, side in sides.items():
        points = best_curve(side["trials"])
        if points:
            xs, ys = zip(*points)
            ax.step(xs, ys, where="post", marker="o", markersize=3, label=names.get(label, label))
    ax.set(xlabel="seconds since launch", ylabel="best dev ROUGE (mean F1)",
           title="bart-base size, demo data, one H200 each")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def same_params(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        abs(a[k] - b[k]) <= 1e-9 * max(1.0, abs(a[k])) if isinstance(a[k], float) else a[k] == b[k] for k in a)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", choices=("ours", "hf", "both"), default="both")
    parser.add_argument("--label", help="the side's name in the result (default: the side)")
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ours-args", default="", help="more search.run options, e.g. '--gpus 0 --trials-per-gpu 4'")
    parser.add_argument("--ours-timeout", type=float, help="stop our study (as Ctrl-C does) after this many seconds")
    parser.add_argument("--tiny", action="store_true", help="the tiny demo checkpoint, for a CPU smoke run")
    parser.add_argument("--merge", nargs="+", metavar="JSON", help="join side files into --out, with the comparison")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    from benchmarks.methods import stamp, write_json

    if args.merge:
        sides = {}
        for path in args.merge:
            sides.update(json.loads(Path(path).read_text())["sides"])
        body = {"sides": sides, **compare(sides["ours"], sides["hf"])}
        for label in sorted(set(sides) - {"ours", "hf"}):
            body[f"{label}_vs_hf"] = compare(sides[label], sides["hf"])
        write_json(Path(args.out), body)
        plot(sides, Path(args.out).with_suffix(".png"))
        print(json.dumps({k: v for k, v in body.items() if k != "sides"}, indent=1))
        return 0
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    work = Path(tempfile.mkdtemp(prefix="vs_hf_search."))
    space, ckpt = study_space(work), checkpoint(work, args.tiny)
    body = {"sides": {}, "settings": {"trials": args.trials, "seed": args.seed, "space": "spaces/bart.yaml, "
                                      "rouge_tokenize whitespace, method full", "tiny": args.tiny}}
    for side in (("hf", "ours") if args.side == "both" else (args.side,)):
        started = time.time()
        if side == "ours":
            url, launched = run_ours(space, ckpt, args.trials, args.seed, work, shlex.split(args.ours_args),
                                     args.ours_timeout)
        else:
            url, launched = run_hf(space, ckpt, args.trials, args.seed, work)
        body["sides"][args.label or side] = {"trials": read_trials(url, side, launched),
                                             "wall_seconds": time.time() - started,
                                             "launched": dt.datetime.fromtimestamp(launched).isoformat()}
        write_json(Path(args.out), stamp(body))
    if args.side == "both":
        body.update(compare(body["sides"]["ours"], body["sides"]["hf"]))
        write_json(Path(args.out), stamp(body))
        print(json.dumps({k: v for k, v in body.items() if k != "sides"}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
