"""Reliability figures for the README's "nothing is lost" claims, measured through our own code.

Three parts, chosen with --parts (run in the order given), all written to one JSON file (--out),
rewritten after every part and after every trial of `memory`, so a run cut short keeps what finished:

* memory: N trials in ONE process through the real search path: `search.objective.Objective`
  (wandb=None) driven by a real Optuna study in a temporary SQLite file opened by
  `search.study.open_study` (trial 0 = the space's defaults, TPE after it), with the same
  `study.optimize(..., catch=(Exception,))` and `keep_top_checkpoints(1)` callback as `search.run`.
  bart-base-sized model (random weights), demo data, batch 16, 24 steps, an eval every 8 steps.
  Pruned trials: a successive-halving pruner judged from the first eval (min_resource = eval_steps),
  plus a forced prune of a few fixed trial numbers at their second eval, in case ties let every
  trial through. Failed trials: fixed trial numbers whose report callback raises at their second
  eval, i.e. mid-training with the model, optimizer state and gradients on the GPU. After every
  trial: CUDA memory_allocated / memory_reserved / max_memory_allocated, the process RSS and the
  number of live transformers models, as the search leaves them (no gc.collect() of ours between
  trials unless --gc-between-trials), and once more after a gc.collect() at the end.
  Figure: growth from after the first trial to after the last, in MiB. Stops starting trials after
  --memory-timeout seconds (120 by default on a GPU), so the whole run stays within a few minutes.
* oom: forced CUDA out-of-memory via torch.cuda.set_per_process_memory_fraction. A calibration run
  at batch 8 measures the memory a batch of 8 needs; the cap is set a little above it, so the
  configured batch 64 (source 512) cannot fit and the trainer must halve to 8 (3 retries). Then a
  cap too small even for batch 1 (about 2.7x the fp32 weights: weights and gradients fit, AdamW's
  state does not), which must end in models.trainer.OutOfMemory. Memory allocated before and after
  each case is recorded. Skipped without CUDA.
* eval: ROUGE evaluation of 500 dev dialogues at bart-base size, as the trainer does it:
  `models.generate.generate` (batched by length, batch 64, 64 new tokens), greedy and 4 beams, in
  bf16 autocast (the trainer's intermediate evals: accelerate patches the model's forward) and in
  fp32 (the final score of the best checkpoint and models.predict load a plain fp32 model), then
  `models.metrics.rouge` with whitespace tokens. Generation, ROUGE and the teacher-forced eval loss
  are timed apart. Target: under 5 s for 500 dialogues.

    python3 benchmarks/reliability.py --tiny --parts memory,oom,eval --trials 4 --out /tmp/rel.json  # CPU smoke
    python3 benchmarks/reliability.py --parts eval,oom,memory --trials 20 --out reliability.json     # GPU

The GPU command ran within its 300 s limit on an H200 (figures and timings: reliability.md); the CPU
smoke test takes about 1.5 min.
"""
from __future__ import annotations

import argparse
import csv
import gc
import math
import os
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch

from benchmarks.methods import (
    device_name,
    document,
    make_base_checkpoint,
    read_scalars,
    versions,
    write_json,
)

MiB = 2 ** 20
PARTS = ("memory", "oom", "eval")
EVAL_TARGET_S = 5.0


# -- sizes -------------------------------------------------------------------------------------
def sizes(tiny: bool) -> dict:
    """Everything that differs between the GPU run and the CPU smoke test."""
    if tiny:
        return {"batch": 4, "source": 64, "target": 16, "steps": 6, "eval_steps": 2, "eval_subset": 4,
                "memory_dev_rows": 16, "gen_choices": [8, 16], "eval_rows": 128, "eval_new_tokens": 8,
                "eval_batch": 64, "oom_batch": 16, "oom_fit_batch": 2, "oom_steps": 2}
    return {"batch": 16, "source": 512, "target": 128, "steps": 24, "eval_steps": 8, "eval_subset": 32,
            "memory_dev_rows": 64, "gen_choices": [16, 32], "eval_rows": 500, "eval_new_tokens": 64,
            "eval_batch": 64, "oom_batch": 64, "oom_fit_batch": 8, "oom_steps": 3}


# -- small helpers -------------------------------------------------------------------------------
def rss_bytes() -> int:
    try:
        import psutil

        return psutil.Process().memory_info().rss
    except ImportError:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def live_models() -> int:
    """Whole transformers models (not their BartModel/encoder/decoder parts) still reachable or waiting
    for the cycle collector: gc.get_objects() sees both."""
    import warnings

    from transformers import PreTrainedModel

    heads = ("ForConditionalGeneration", "ForCausalLM", "LMHeadModel")
    with warnings.catch_warnings():  # isinstance on some torch module objects warns of deprecated names
        warnings.simplefilter("ignore")
        return sum(1 for o in gc.get_objects() if isinstance(o, PreTrainedModel) and type(o).__name__.endswith(heads))


def snapshot(cuda: bool) -> dict:
    out = {"rss_mib": round(rss_bytes() / MiB, 1)}
    if cuda:
        out.update(allocated_mib=round(torch.cuda.memory_allocated() / MiB, 1),
                   reserved_mib=round(torch.cuda.memory_reserved() / MiB, 1),
                   max_allocated_mib=round(torch.cuda.max_memory_allocated() / MiB, 1))
    return out


def sync(cuda: bool) -> None:
    if cuda:
        torch.cuda.synchronize()


def write_rows(src: Path, dst: Path, rows: int) -> Path:
    """The first `rows` rows of a CSV (all its columns)."""
    with src.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        fields, data = reader.fieldnames, [r for _, r in zip(range(rows), reader)]
    dst.parent.mkdir(parents=True, exist_ok=True)
    with dst.open("w", encoding="utf-8", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(data)
    return dst


def write_long_rows(src: Path, dst: Path, rows: int, joined: int) -> Path:
    """Rows whose dialogue is `joined` demo dialogues in a row: long enough to fill source 512."""
    with src.open(encoding="utf-8", newline="") as f:
        data = list(csv.DictReader(f))
    dst.parent.mkdir(parents=True, exist_ok=True)
    with dst.open("w", encoding="utf-8", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["fname", "dialogue", "summary"])
        w.writeheader()
        for i in range(rows):
            parts = [data[(i * joined + k) % len(data)] for k in range(joined)]
            w.writerow({"fname": f"long_{i}", "dialogue": "\n".join(p["dialogue"] for p in parts),
                        "summary": parts[0]["summary"]})
    return dst


def growth(rows: list[dict], key: str) -> float | None:
    vals = [r[key] for r in rows if r.get(key) is not None]
    return round(vals[-1] - vals[0], 1) if len(vals) >= 2 else None


# -- part 1: memory across trials ------------------------------------------------------------------
class InjectedFailure(RuntimeError):
    """Raised on purpose from a trial's report callback."""


def memory_space(folder: Path, checkpoint: Path, s: dict) -> Path:
    """spaces/bart.yaml with short-trial settings and a search over what changes the memory path."""
    import yaml

    from search.space import SPACES_DIR

    raw = yaml.safe_load((SPACES_DIR / "bart.yaml").read_text(encoding="utf-8"))
    raw["model"]["checkpoint"] = str(checkpoint)
    raw["training"].update(batch_size=s["batch"], gradient_accumulation_steps=1, max_steps=s["steps"],
                           eval_steps=s["eval_steps"], eval_subset=s["eval_subset"], eval_batch_size=64,
                           num_beams=1, generation_max_length=s["gen_choices"][-1], rouge_tokenize="whitespace",
                           max_source_length=s["source"], max_target_length=s["target"])
    raw["search"] = {
        "training.learning_rate": {"low": 1.0e-5, "high": 1.0e-3, "log": True},
        "training.scheduler": {"choices": ["linear", "cosine"]},
        "training.warmup_ratio": {"low": 0.0, "high": 0.2},
        "training.weight_decay": {"low": 0.0, "high": 0.1},
        "training.label_smoothing": {"low": 0.0, "high": 0.2},
        "training.gradient_checkpointing": {"choices": [False, True]},
        "method": {"choices": ["full", "lora"]},
        "qlora.lora_rank": {"choices": [8, 16, 32], "when": {"method": ["lora"]}},
        "qlora.lora_alpha": {"choices": [16, 32, 64], "when": {"method": ["lora"]}},
        "training.num_beams": {"choices": [1, 2]},
        "training.generation_max_length": {"choices": s["gen_choices"]},
    }
    path = folder / "bart-reliability.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    return path


def open_memory_study(space, folder: Path, seed: int):
    """search.study.open_study on a temporary SQLite file (WAL, heartbeats, trial 0 = the defaults queued).

    search.storage needs sqlalchemy; without it, Optuna's in-memory storage with search.run's TPE settings.
    """
    import optuna

    try:
        from search.study import open_study
        from search.storage import GRACE_SECONDS, HEARTBEAT_SECONDS
    except ImportError as err:
        print(f"memory: the search's storage cannot be imported ({err}); using Optuna's in-memory storage",
              flush=True)
        study = optuna.create_study(direction="maximize", study_name="reliability", sampler=optuna.samplers.TPESampler(
            seed=seed, n_startup_trials=5, multivariate=True, group=True))
        study.enqueue_trial(space.baseline(), user_attrs={"baseline": True})
        return study, f"in-memory (no SQLite: {err})"
    url = f"sqlite:///{folder / 'reliability.db'}"
    args = SimpleNamespace(storage=url, heartbeat=HEARTBEAT_SECONDS, grace_period=GRACE_SECONDS, sampler="tpe",
                           seed=seed, pruner="none", metric="mean")
    return open_study(args, space, "reliability"), url


def make_pruner(eval_steps: int, forced: set[int], forced_after: int):
    """Successive halving judged from the first eval, plus forced prunes of fixed trial numbers."""
    import optuna

    class SHAPlusForced(optuna.pruners.BasePruner):
        def __init__(self):
            self.sha = optuna.pruners.SuccessiveHalvingPruner(min_resource=eval_steps, reduction_factor=3)
            self.by = {}  # trial number -> "sha" | "forced"

        def prune(self, study, trial) -> bool:
            if self.sha.prune(study, trial):
                self.by[trial.number] = "sha"
                return True
            if trial.number in forced and len(trial.intermediate_values) >= forced_after:
                self.by[trial.number] = "forced"
                return True
            return False

    return SHAPlusForced()


def part_memory(args, device: torch.device, s: dict, publish) -> dict:
    from models.demo import demo_assets
    from models.trainer import train
    from search.objective import Objective, StudyData as Data, keep_top_checkpoints
    from search.space import Space

    cuda = device.type == "cuda"
    work = Path(args.workdir)
    checkpoint = make_base_checkpoint("bart", work, args.tiny)
    folder = Path(tempfile.mkdtemp(dir=work, prefix="memory-"))
    assets = demo_assets("bart")
    dev = write_rows(assets.dev, folder / "dev.csv", s["memory_dev_rows"]) if s["memory_dev_rows"] else assets.dev
    space = Space.load(memory_space(folder, checkpoint, s))
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # failed trials are printed below, without tracebacks
    study, storage = open_memory_study(space, folder, args.seed)
    n = args.trials
    fail_trials = {t for t in (2, 11) if t < n}
    forced_prunes = {t for t in (1, 7, 13, 19) if t < n}
    study.pruner = pruner = make_pruner(s["eval_steps"], forced_prunes, 2)

    walls: dict[int, float] = {}

    def harness(config, train_path, val_path, output_dir, report=None, progress=True, label=None, keep_checkpoint=None):
        """models.trainer.train, timed; for the chosen trials the report callback raises at its 2nd call."""
        number = int(str(label).rsplit("-", 1)[-1])
        calls = {"n": 0}

        def maybe_fail(step, metrics):
            calls["n"] += 1
            if calls["n"] >= 2:
                raise InjectedFailure(f"injected failure in trial {number}'s report callback at step {step}")
            return report(step, metrics)

        t0 = time.perf_counter()
        try:
            return train(config, train_path, val_path, output_dir, report=maybe_fail if number in fail_trials
                         else report, progress=progress, label=label, keep_checkpoint=keep_checkpoint)
        finally:
            walls[number] = time.perf_counter() - t0

    objective = Objective(space, Data(Path(assets.train), Path(dev)), folder / "outputs", metric="mean",
                          train_fn=harness, progress=args.verbose, wandb=None)
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    before = snapshot(cuda)
    before["live_models"] = live_models()
    rows: list[dict] = []
    result = {"what": "N trials in one process: search.objective.Objective (wandb=None) driven by study.optimize "
                      "(catch=(Exception,), keep_top_checkpoints(1)) on a study opened by search.study.open_study",
              "storage": storage, "trials_asked": n,
              "model": f"bart-{'tiny' if args.tiny else 'base'} size, random weights ({checkpoint.name})",
              "data": {"train": str(assets.train), "dev": str(dev)},
              "settings": {"batch": s["batch"], "accumulation": 1, "max_steps": s["steps"],
                           "eval_steps": s["eval_steps"], "eval_subset": s["eval_subset"],
                           "source": s["source"], "target": s["target"], "space": str(space.path),
                           "searched": [p.name for p in space.params]},
              "pruning": f"SuccessiveHalvingPruner(min_resource={s['eval_steps']}, reduction_factor=3), plus a forced "
                         f"prune at the 2nd eval of trials {sorted(forced_prunes)} when SHA let them through",
              "failures": f"trials {sorted(fail_trials)}: the report callback raises InjectedFailure at the 2nd eval "
                          "(mid-training: model, optimizer state and gradients allocated)",
              "measured": "after each trial, in a study callback, as the search left it (search.run collects no "
                          "garbage between trials; with --gc-between-trials also after gc.collect()); once more "
                          "after a gc.collect() at the end. live_models: whole transformers models the gc still sees",
              "before_first_trial": before, "trials": rows}
    started = time.perf_counter()

    def measure(study_, frozen) -> None:
        from optuna.trial import TrialState

        raw = snapshot(cuda)  # as the search leaves it: search.run collects no garbage between trials
        raw["live_models"] = live_models()
        a = frozen.user_attrs
        row = {"number": frozen.number, "state": frozen.state.name.lower(),
               "pruned_by": pruner.by.get(frozen.number) if frozen.state == TrialState.PRUNED else None,
               "fail_reason": a.get("fail_reason"), "method": a.get("method"),
               "params": {k.split(".")[-1]: (round(v, 6) if isinstance(v, float) else v)
                          for k, v in frozen.params.items()},
               "steps": a.get("steps", max(frozen.intermediate_values, default=0)),
               "train_seconds": round(a["train_seconds"], 2) if "train_seconds" in a else None,
               "eval_seconds": round(a["eval_seconds"], 2) if "eval_seconds" in a else None,
               "wall_seconds": round(walls[frozen.number], 2) if frozen.number in walls else None,
               "value": frozen.value, "raw": raw}
        extra = ""
        if args.gc_between_trials:
            gc.collect()
            row["after_gc"] = collected = snapshot(cuda)
            collected["live_models"] = live_models()
            alloc = f"alloc {collected['allocated_mib']:.0f}  " if cuda else ""
            extra = f"  | after gc: {alloc}rss {collected['rss_mib']:.0f}  models {collected['live_models']}"
        rows.append(row)
        mem = (f"alloc {raw['allocated_mib']:6.0f} MiB  reserved {raw['reserved_mib']:6.0f}  "
               f"peak {raw['max_allocated_mib']:6.0f}  " if cuda else "")
        print(f"memory trial {frozen.number:2d} {row['state']:8} {row['pruned_by'] or '':6} {row['method'] or '':4} "
              f"steps {row['steps']:>3}  wall {row['wall_seconds'] or 0:5.1f}s  {mem}rss {raw['rss_mib']:.0f} MiB  "
              f"live models {raw['live_models']}{extra}"
              + (f"  [{row['fail_reason'][:100]}]" if row["fail_reason"] else ""), flush=True)
        result["seconds"] = round(time.perf_counter() - started, 1)
        keys = ("allocated_mib", "reserved_mib", "rss_mib") if cuda else ("rss_mib",)
        result["growth_so_far_mib"] = {k: growth([r["raw"] for r in rows], k) for k in keys}  # if the run is cut short
        publish(result)

    study.optimize(objective, n_trials=n, timeout=args.memory_timeout, catch=(Exception,),
                   callbacks=[keep_top_checkpoints(1), measure])
    result["seconds"] = round(time.perf_counter() - started, 1)
    gc.collect()
    final = snapshot(cuda)
    final["live_models"] = live_models()
    result["after_final_gc"] = final
    states = [r["state"] for r in rows]
    result["counts"] = {st: states.count(st) for st in ("complete", "pruned", "fail")}
    keys = ("allocated_mib", "reserved_mib", "rss_mib") if cuda else ("rss_mib",)
    raw = [r["raw"] for r in rows]
    figure: dict = {"from_to": f"after trial {rows[0]['number']} to after trial {rows[-1]['number']}" if rows else None,
                    "as_left": {k: growth(raw, k) for k in keys},
                    "first_trial_to_final_gc": {k: round(final[k] - raw[0][k], 1) for k in keys} if rows else None,
                    "live_models_after_last_trial": raw[-1]["live_models"] if raw else None}
    if args.gc_between_trials:
        figure["after_gc_each_trial"] = {k: growth([r["after_gc"] for r in rows], k) for k in keys}
    if cuda and rows:
        figure["max_allocated_mib_first_last"] = [raw[0]["max_allocated_mib"], raw[-1]["max_allocated_mib"]]
        after_fail = []
        for i, r in enumerate(rows[:-1]):
            if r["state"] != "fail":
                continue
            nxt = rows[i + 1]
            same = sorted(x["raw"]["max_allocated_mib"] for x in rows
                          if x["method"] == nxt["method"] and x is not nxt and x["state"] != "fail")
            after_fail.append({"failed_trial": r["number"], "allocated_after_failure_mib": r["raw"]["allocated_mib"],
                               "live_models_after_failure": r["raw"]["live_models"], "next_trial": nxt["number"],
                               "next_method": nxt["method"], "next_peak_mib": nxt["raw"]["max_allocated_mib"],
                               "median_peak_same_method_mib": same[len(same) // 2] if same else None})
        figure["after_failures"] = after_fail
    result["growth_mib"] = figure
    done = [r for r in rows if r["train_seconds"] is not None]
    if done:
        tr, ev = sum(r["train_seconds"] for r in done), sum(r["eval_seconds"] for r in done)
        wall = sum(r["wall_seconds"] for r in done)
        result["time_share"] = {"trials": len(done), "train_s": round(tr, 1), "eval_s": round(ev, 1),
                                "wall_s": round(wall, 1), "eval_share_of_train_plus_eval": round(ev / (tr + ev), 3),
                                "other_s": round(wall - tr - ev, 1),
                                "note": "Result.eval_seconds counts the intermediate evals only; 'other' is model "
                                        "load, tokenization, checkpoint saves and the final whole-dev score"}
    print(f"memory: {len(rows)} trials {result['counts']} in {result['seconds']:.0f}s; growth {figure['from_to']}: "
          + ", ".join(f"{k} {v:+.1f}" for k, v in figure["as_left"].items() if v is not None)
          + " MiB (as the search left it); to after a final gc.collect(): "
          + ", ".join(f"{k} {v:+.1f}" for k, v in (figure["first_trial_to_final_gc"] or {}).items()) + " MiB",
          flush=True)
    for f in figure.get("after_failures", []):
        print(f"memory: after failed trial {f['failed_trial']}: {f['allocated_after_failure_mib']:.0f} MiB still "
              f"allocated, {f['live_models_after_failure']} model(s) alive; trial {f['next_trial']} "
              f"({f['next_method']}) then peaked at {f['next_peak_mib']:.0f} MiB (median of its method: "
              f"{f['median_peak_same_method_mib']})", flush=True)
    shutil.rmtree(folder / "outputs", ignore_errors=True)
    return result


# -- part 2: forced out-of-memory ----------------------------------------------------------------
def part_oom(args, device: torch.device, s: dict, publish) -> dict:
    if device.type != "cuda":
        print("oom: skipped (no CUDA)", flush=True)
        return {"skipped": "no CUDA"}
    from models.config import TrainConfig
    from models.demo import demo_assets
    from models.trainer import OutOfMemory, train
    from search.space import SPACES_DIR

    work = Path(args.workdir)
    checkpoint = make_base_checkpoint("bart", work, args.tiny)
    folder = Path(tempfile.mkdtemp(dir=work, prefix="oom-"))
    assets = demo_assets("bart")
    train_csv = write_long_rows(assets.train, folder / "long-train.csv", rows=4 * s["oom_batch"], joined=6)
    dev_csv = write_rows(assets.dev, folder / "dev.csv", 16)
    total = torch.cuda.get_device_properties(0).total_memory
    from safetensors import safe_open

    with safe_open(str(checkpoint / "model.safetensors"), "pt") as f:
        n_params = sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())  # noqa: SIM118  (safe_open is no dict)
    base = TrainConfig.from_yaml(SPACES_DIR / "bart.yaml").override({
        "model.checkpoint": str(checkpoint), "method": "full", "training.learning_rate": 1e-4,
        "training.max_source_length": s["source"], "training.max_target_length": s["target"],
        "training.eval_subset": 8, "training.eval_batch_size": 8, "training.num_beams": 1,
        "training.generation_max_length": 16, "training.rouge_tokenize": "whitespace"})

    def run(batch: int, accum: int, steps: int, name: str):
        config = base.override({"training.batch_size": batch, "training.gradient_accumulation_steps": accum,
                                "training.max_steps": steps, "training.eval_steps": steps})
        return train(config, train_csv, dev_csv, folder / name, progress=args.verbose, label=f"oom-{name}")

    def settle() -> dict:
        gc.collect()
        torch.cuda.empty_cache()
        return snapshot(True)

    result: dict = {"total_memory_gib": round(total / 2 ** 30, 2), "params": n_params,
                    "fp32_weights_mib": round(4 * n_params / MiB, 1),
                    "data": f"{4 * s['oom_batch']} rows of 6 demo dialogues joined (truncated to source "
                            f"{s['source']}), target {s['target']}; dev 16 rows, eval batch 8, greedy"}
    # calibration: what a batch of oom_fit_batch needs, without any cap
    torch.cuda.set_per_process_memory_fraction(1.0, 0)
    t0 = time.perf_counter()
    calib = run(s["oom_fit_batch"], 1, 2, "calibrate")
    peak_reserved = torch.cuda.max_memory_reserved()
    result["calibration"] = {"batch": s["oom_fit_batch"], "peak_allocated_mib": round(calib.peak_memory_gb * 1024, 1),
                             "peak_reserved_mib": round(peak_reserved / MiB, 1),
                             "seconds": round(time.perf_counter() - t0, 1)}
    cap = max(1.3 * peak_reserved, 1.45 * calib.peak_memory_gb * 2 ** 30)
    static = 16 * n_params  # fp32 weights + gradients + AdamW's two moments
    per_sample = max(calib.peak_memory_gb * 2 ** 30 - static, 0) / s["oom_fit_batch"]
    fraction = cap / total
    print(f"oom: calibration batch {s['oom_fit_batch']}: peak allocated {calib.peak_memory_gb:.2f} GiB, reserved "
          f"{peak_reserved / 2 ** 30:.2f} GiB -> cap {cap / 2 ** 30:.2f} GiB = fraction {fraction:.4f} of "
          f"{total / 2 ** 30:.1f} GiB", flush=True)
    publish(result)

    # case A: the configured batch does not fit, a smaller one does
    baseline = settle()
    torch.cuda.set_per_process_memory_fraction(fraction, 0)
    t0 = time.perf_counter()
    case = {"fraction": round(fraction, 5), "cap_gib": round(cap / 2 ** 30, 3),
            "why": f"cap = max(1.3 x peak reserved, 1.45 x peak allocated) of an uncapped batch-{s['oom_fit_batch']} "
                   f"run; the estimate for batch {s['oom_batch']} is static {static / 2 ** 30:.2f} GiB (fp32 weights, "
                   f"grads, AdamW moments) + {s['oom_batch']} x {per_sample / MiB:.0f} MiB per sample = "
                   f"{(static + s['oom_batch'] * per_sample) / 2 ** 30:.2f} GiB, far above the cap",
            "configured": {"batch": s["oom_batch"], "accumulation": 1}, "allocated_before_mib": baseline["allocated_mib"]}
    try:
        r = run(s["oom_batch"], 1, s["oom_steps"], "halves")
        final_batch = s["oom_batch"] >> len(r.oom_retries)
        losses = read_scalars(folder / "halves" / "logs", "train/loss")
        case.update(oom_retries=r.oom_retries, retries=len(r.oom_retries),
                    final={"batch": final_batch, "accumulation": s["oom_batch"] // final_batch},
                    steps=r.steps, train_losses_logged=[v for _, v in losses],
                    eval_loss=round(r.metrics["eval_loss"], 4),
                    finite_loss=bool(losses) and all(math.isfinite(v) for _, v in losses)
                    and math.isfinite(r.metrics["eval_loss"]),
                    peak_allocated_mib=round(r.peak_memory_gb * 1024, 1))
        case["allocated_after_train_returned_mib"] = round(torch.cuda.memory_allocated() / MiB, 1)
        print(f"oom case A: batch {s['oom_batch']} -> {final_batch} after {len(r.oom_retries)} retries; "
              f"logged train losses {case['train_losses_logged']}, eval loss {case['eval_loss']}, finite {case['finite_loss']}", flush=True)
    except Exception as err:  # noqa: BLE001  (a failed case is a result too)
        case.update(error=f"{type(err).__name__}: {str(err)[:600]}", traceback=traceback.format_exc()[-2000:])
        print(f"oom case A FAILED: {case['error']}", flush=True)
    after = settle()
    case.update(allocated_after_mib=after["allocated_mib"], reserved_after_mib=after["reserved_mib"],
                seconds=round(time.perf_counter() - t0, 1))
    print(f"oom case A: allocated {case['allocated_before_mib']:.0f} MiB before, {after['allocated_mib']:.0f} after "
          f"({case['seconds']:.0f}s)", flush=True)
    result["fits_smaller"] = case
    publish(result)

    # case B: not even batch 1 fits
    cap_b = 2.7 * 4 * n_params
    fraction_b = cap_b / total
    baseline = settle()
    torch.cuda.set_per_process_memory_fraction(fraction_b, 0)
    start_batch = s["oom_fit_batch"]
    case = {"fraction": round(fraction_b, 5), "cap_gib": round(cap_b / 2 ** 30, 3),
            "why": "cap = 2.7 x the fp32 weights: the weights and their gradients fit, AdamW's two moments "
                   "(2 x the weights) do not, at any batch",
            "configured": {"batch": start_batch, "accumulation": s["oom_batch"] // start_batch},
            "allocated_before_mib": baseline["allocated_mib"]}
    t0 = time.perf_counter()
    try:
        r = run(start_batch, s["oom_batch"] // start_batch, s["oom_steps"], "never")
        case.update(raised=None, unexpected=f"trained at batch {start_batch >> len(r.oom_retries)}")
    except OutOfMemory as err:
        case.update(raised="models.trainer.OutOfMemory", message=str(err))
    except Exception as err:  # noqa: BLE001
        case.update(raised=f"{type(err).__name__}", message=str(err)[:600], traceback=traceback.format_exc()[-2000:])
    after = settle()
    torch.cuda.set_per_process_memory_fraction(1.0, 0)
    case.update(allocated_after_mib=after["allocated_mib"], reserved_after_mib=after["reserved_mib"],
                back_to_baseline=abs(after["allocated_mib"] - case["allocated_before_mib"]) < 64,
                seconds=round(time.perf_counter() - t0, 1))
    print(f"oom case B: {case['raised']}: {case.get('message', case.get('unexpected', ''))[:160]}", flush=True)
    print(f"oom case B: allocated {case['allocated_before_mib']:.0f} MiB before, {after['allocated_mib']:.0f} after "
          f"({case['seconds']:.0f}s)", flush=True)
    result["never_fits"] = case
    shutil.rmtree(folder, ignore_errors=True)
    return result


# -- part 3: eval speed ----------------------------------------------------------------------------
class GenerateProbe:
    """Stands in for model.generate: counts the new tokens of each batch and can force every row to the cap.

    The demo tokenizer spells 3,000 ids of the 50,265 the model can emit, so a random model's output
    decodes to little text and may end at any step; forcing min_new_tokens = max_new_tokens makes every
    batch decode exactly the configured number of tokens (the worst case the eval settings allow).
    """

    def __init__(self, model, force: bool):
        self.model, self.orig, self.force, self.new_tokens = model, model.generate, force, []

    def __call__(self, **kwargs):
        if self.force:
            kwargs["min_new_tokens"] = kwargs["max_new_tokens"]
        out = self.orig(**kwargs)
        self.new_tokens.append(out.shape[1] - 1)  # minus the decoder start token
        return out

    def __enter__(self):
        self.model.generate = self
        return self

    def __exit__(self, *exc):
        del self.model.generate  # the class's method again


def part_eval(args, device: torch.device, s: dict, publish) -> dict:
    from accelerate import Accelerator
    from transformers import AutoModelForSeq2SeqLM

    from models.config import TrainConfig
    from models.data import collate, load_split
    from models.demo_data import write_demo_data
    from models.families import get_family
    from models.generate import generate
    from models.methods import load_pretrained, load_tokenizer
    from models.metrics import rouge
    from models.steps import forward_loss
    from models.trainer import precision_for

    cuda = device.type == "cuda"
    work = Path(args.workdir)
    checkpoint = make_base_checkpoint("bart", work, args.tiny)
    family = get_family("bart")
    data = work / f"eval-data-{s['eval_rows']}"
    if not (data / "dev.csv").is_file():  # models.demo_data: 500 dev rows of its own (seed 1), no train rows needed
        write_demo_data(data, n_train=1, n_dev=s["eval_rows"], n_test=1, seed=1)
    tokenizer = load_tokenizer(str(checkpoint))
    split = load_split(data / "dev.csv", tokenizer, family, s["source"], s["target"])
    features, references = split.features, split.references
    # Summary-like predictions for timing ROUGE: each row scored against another row's reference.
    stand_ins = [refs[0] for refs in references[1:] + references[:1]]
    src_lens = [len(f["input_ids"]) for f in features]
    trainer_precision = precision_for(TrainConfig().override({"model.architecture": "bart"}), family, cuda)
    modes = ([(f"autocast-{trainer_precision}", trainer_precision)] if trainer_precision != "no" else []) + \
        [("fp32", "no")]
    result = {"rows": len(features), "source_tokens_mean": round(sum(src_lens) / len(src_lens), 1),
              "source_tokens_max": max(src_lens), "max_new_tokens": s["eval_new_tokens"], "batch": s["eval_batch"],
              "rouge_tokenize": "whitespace", "target_s": EVAL_TARGET_S,
              "model": f"bart-{'tiny' if args.tiny else 'base'} size, random weights, vocab 50265",
              "data": f"{data / 'dev.csv'} (models.demo_data.write_demo_data, n_dev={s['eval_rows']}, seed 1)",
              "how": "models.generate.generate over all rows (sorted by length, batch 64), each batch forced to "
                     "max_new_tokens (min_new_tokens = max_new_tokens, through a wrapper on model.generate): the "
                     "worst case of these settings. ROUGE (models.metrics.rouge, whitespace) is timed twice: on "
                     "the generated text, which decodes to little (the demo tokenizer spells 3,000 of the model's "
                     "50,265 ids), and on summary-like text (each row's reference scored against another row's); "
                     "total_s = generate_s + rouge_realistic_s. eval_loss_s: the trainer's teacher-forced dev "
                     "loss pass over the same rows, which its evaluate() also runs",
              "precision": ({"trainer's intermediate evals": f"accelerate mixed_precision={trainer_precision!r}: "
                             "prepare() patches the model's forward with autocast, and generate() runs on the "
                             "unwrapped model, which keeps that forward",
                             "final score and models.predict": "load_checkpoint: a plain fp32 model, no autocast"}
                            if trainer_precision != "no" else {"all": "fp32 (no CUDA: the trainer uses no mixed precision)"}),
              "runs": []}
    for mode, precision in modes:
        torch.manual_seed(0)
        model = load_pretrained(AutoModelForSeq2SeqLM, str(checkpoint))
        accelerator = None
        if precision != "no":  # the trainer's path: prepare (autocast-patched forward), then unwrap
            accelerator = Accelerator(mixed_precision=precision)
            model = accelerator.unwrap_model(accelerator.prepare_model(model))
        else:
            model = model.to(device)
        model.eval()
        with GenerateProbe(model, force=True):  # warm-up, not timed
            generate(model, tokenizer, family, features[: s["eval_batch"]], num_beams=1, max_new_tokens=8,
                     batch_size=s["eval_batch"], device=device)
        sync(cuda)
        t0 = time.perf_counter()
        with torch.inference_mode():
            for start in range(0, len(features), s["eval_batch"]):
                batch = {k: v.to(device) for k, v in collate(features[start: start + s["eval_batch"]],
                                                             tokenizer.pad_token_id).items()}
                batch["decoder_input_ids"] = model.prepare_decoder_input_ids_from_labels(labels=batch["labels"])
                forward_loss(model, batch, False, 0.0).item()
        sync(cuda)
        loss_s = time.perf_counter() - t0
        for beams in (1, 4):
            with GenerateProbe(model, force=True) as probe:
                sync(cuda)
                t0 = time.perf_counter()
                summaries = generate(model, tokenizer, family, features, num_beams=beams,
                                     max_new_tokens=s["eval_new_tokens"], batch_size=s["eval_batch"], device=device)
                sync(cuda)
                gen_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            rouge(summaries, references, "whitespace")
            rouge_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            realistic = rouge(stand_ins, references, "whitespace")
            rouge_real_s = time.perf_counter() - t0
            total = gen_s + rouge_real_s
            run = {"precision": mode, "num_beams": beams, "generate_s": round(gen_s, 2),
                   "rouge_generated_s": round(rouge_s, 3), "rouge_realistic_s": round(rouge_real_s, 3),
                   "total_s": round(total, 2), "eval_loss_s": round(loss_s, 2),
                   "total_with_eval_loss_s": round(total + loss_s, 2),
                   "ms_per_dialogue": round(1000 * total / len(features), 2), "meets_target": None if args.tiny else total < EVAL_TARGET_S,
                   "ms_per_decode_step": round(1000 * gen_s / max(sum(probe.new_tokens), 1), 2),
                   "batches": len(probe.new_tokens), "new_tokens_per_batch": sorted(set(probe.new_tokens)),
                   "generated_chars_mean": round(sum(map(len, summaries)) / len(summaries), 1),
                   "realistic_rouge_mean": round(realistic["mean"], 4)}
            result["runs"].append(run)
            print(f"eval {mode:14} beams {beams}: generate {gen_s:6.2f}s  rouge {rouge_real_s:5.3f}s  "
                  f"= {total:6.2f}s for {len(features)} dialogues ({run['new_tokens_per_batch']} new tokens/row)  "
                  + ("(tiny: no target)" if args.tiny else
                     f"{'meets' if run['meets_target'] else 'misses'} the {EVAL_TARGET_S:.0f}s target")
                  + f";  + eval loss pass {loss_s:.2f}s", flush=True)
            publish(result)
        del model
        if accelerator is not None:
            accelerator.free_memory()
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()
    return result


# -- summary ---------------------------------------------------------------------------------------
def headline(parts: dict) -> dict:
    """The figures a reader wants first, from whatever parts finished."""
    out: dict = {}
    m = parts.get("memory") or {}
    if "growth_mib" in m:
        g = m["growth_mib"]
        out["memory"] = {"trials": len(m["trials"]), "counts": m["counts"], "from_to": g["from_to"],
                         "growth_as_left_mib": g["as_left"], "growth_to_final_gc_mib": g["first_trial_to_final_gc"],
                         "after_failures": g.get("after_failures")}
    o = parts.get("oom") or {}
    if "skipped" in o:
        out["oom"] = {"skipped": o["skipped"]}
    elif "fits_smaller" in o:
        a, b = o["fits_smaller"], o.get("never_fits", {})
        out["oom"] = {"fits_smaller": {k: a.get(k) for k in ("cap_gib", "retries", "final", "finite_loss",
                                                             "allocated_before_mib", "allocated_after_mib", "error")},
                      "never_fits": {k: b.get(k) for k in ("cap_gib", "raised", "allocated_before_mib",
                                                           "allocated_after_mib", "back_to_baseline")}}
    e = parts.get("eval") or {}
    if e.get("runs"):
        out["eval"] = {f"{r['precision']} beams {r['num_beams']}": {"total_s": r["total_s"], "generate_s": r["generate_s"],
                                                                    "rouge_s": r["rouge_realistic_s"],
                                                                    "meets_target": r["meets_target"]}
                       for r in e["runs"]}
        out["eval"]["rows"] = e["rows"]
    return out


# -- main ------------------------------------------------------------------------------------------
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma list of {', '.join(PARTS)}, run in this order")
    p.add_argument("--tiny", action="store_true", help="tiny model and sizes: a CPU smoke test")
    p.add_argument("--trials", type=int, default=20, help="trials in the memory part (default 20)")
    p.add_argument("--memory-timeout", type=float,
                   help="memory part: start no trial after this many seconds (study.optimize's timeout); "
                        "default 120 on a GPU, none with --tiny")
    p.add_argument("--gc-between-trials", action="store_true",
                   help="memory part: also gc.collect() and measure again after each trial (changes what the "
                        "next trial starts from)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", default=str(Path(tempfile.gettempdir()) / "sumsweep-reliability"),
                   help="checkpoints and data are built here once and reused")
    p.add_argument("--out", help="the JSON file to write (after every part)")
    p.add_argument("--verbose", action="store_true", help="the trainer's own lines (one per eval)")
    args = p.parse_args(argv)
    if args.memory_timeout is None and not args.tiny:
        args.memory_timeout = 120.0
    parts = [x.strip() for x in args.parts.split(",") if x.strip()]
    unknown = [x for x in parts if x not in PARTS]
    if unknown:
        p.error(f"unknown part(s): {', '.join(unknown)}; use {', '.join(PARTS)}")

    from models.cli import quiet_libraries

    quiet_libraries()
    Path(args.workdir).mkdir(parents=True, exist_ok=True)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    s = sizes(args.tiny)
    body: dict = {"parts": {}, "parts_order": parts}

    current = {"part": None}

    def publish(partial: dict | None = None) -> None:
        """The running part's results so far (or none), then the whole file rewritten."""
        if partial is not None and current["part"]:
            body["parts"][current["part"]] = partial
        if not args.out:
            return
        # document() is methods.py's envelope (command, versions, date, device); its settings block
        # describes methods.py's bench, so it is replaced by this script's own.
        shim = SimpleNamespace(batch=s["batch"], source=s["source"], target=s["target"], warmup=0, steps=s["steps"],
                               batches=0, tiny=args.tiny, e2e_steps=0, e2e_eval_steps=0)
        doc = document(shim, body)
        doc["settings"] = {"tiny": args.tiny, **s, "trials": args.trials, "seed": args.seed,
                           "memory_timeout": args.memory_timeout, "workdir": args.workdir}
        import importlib.metadata as md

        doc["versions"] = versions()
        for name in ("optuna", "sqlalchemy", "rouge_score", "psutil", "tensorboard"):
            try:
                doc["versions"][name] = md.version(name)
            except md.PackageNotFoundError:
                doc["versions"][name] = None
        write_json(Path(args.out), doc)

    print(f"device: {device_name()}  parts: {', '.join(parts)}  {'(tiny)' if args.tiny else ''}", flush=True)
    runners = {"memory": part_memory, "oom": part_oom, "eval": part_eval}
    for part in parts:
        t0 = time.perf_counter()
        print(f"== {part} ==", flush=True)
        body["parts"][part] = {"running": True}
        current["part"] = part
        try:
            body["parts"][part] = runners[part](args, device, s, publish)
        except Exception as err:  # noqa: BLE001  (the other parts still run; what the part published stays)
            partial = body["parts"].get(part) or {}
            partial.pop("running", None)
            partial.update(error=f"{type(err).__name__}: {err}", traceback=traceback.format_exc()[-4000:])
            body["parts"][part] = partial
            print(f"{part} FAILED: {partial['error']}\n{partial['traceback']}", flush=True)
        if device.type == "cuda":
            torch.cuda.set_per_process_memory_fraction(1.0, 0)
        body["parts"][part]["part_seconds"] = round(time.perf_counter() - t0, 1)
        print(f"== {part} done in {body['parts'][part]['part_seconds']:.0f}s ==", flush=True)
        body["summary"] = headline(body["parts"])
        publish()
    import json

    print("summary: " + json.dumps(body["summary"], ensure_ascii=False), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
