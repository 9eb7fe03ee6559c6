"""One training run: train(config, data, report) -> Result, read top to bottom.

`Recipe` runs it in three named steps: `setup` (model, data, optimizer, schedule), `train` (the loop:
each `optimizer_step`, and every `eval_steps` an `evaluate` and `keep_best`), `finish` (save the best
checkpoint, free the model, score that checkpoint on the whole dev set). After every evaluation the
loop calls `report(step, metrics)`; when it returns True the loop stops early (that is how the search
prunes), and this package never hears of Optuna. What a person sees meanwhile: models/progress.py.
"""
from __future__ import annotations

import functools
import gc
import json
import logging
import math
import resource
import time
import traceback
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch
from accelerate import Accelerator, DataLoaderConfiguration
from accelerate.utils import extract_model_from_parallel, set_seed
from torch.utils.data import DataLoader
from torch.utils.tensorboard import SummaryWriter

from models.augment import augmenter
from models.compiling import compiled_loss, gradients_of_their_own, should_compile, without_layerdrop
from models.config import TrainConfig
from models.data import LengthGroupedBatches, RandomBatches, load_split
from models.distributed import share, world_size
from models.errors import Diverged
from models.evaluation import BestWeights, eval_loss, score_checkpoint
from models.families import Family, get_family
from models.generate import generate, save_checkpoint
from models.methods import build_model
from models.metrics import rouge
from models.micro_batches import memory_probe, rows_per_pass
from models.progress import LINE_SECONDS, Progress
from models.schedules import lr_schedule
from models.steps import accumulation_windows, batch_maker, forward_loss, scored_tokens

log = logging.getLogger(__name__)
Report = Callable[[int, dict[str, float]], bool]  # (optimizer step, metrics) -> stop now?
KeepCheckpoint = Callable[[float, bool], bool]  # (best eval's value, stopped early) -> write its checkpoint?
LOG_EVERY = 10  # optimizer steps between loss readings: each reading waits for the GPU to catch up


@dataclass
class Result:
    metrics: dict[str, float]  # of the best checkpoint, on the whole dev set (unless stopped early)
    best_step: int
    steps: int
    stopped_early: bool
    train_seconds: float
    eval_seconds: float  # evaluating, keeping each new best's weights and reporting
    peak_memory_gb: float  # GPU memory allocated at peak; on CPU the process's peak resident size
    checkpoint: str | None
    samples_per_second: float = 0.0  # training rows per second once warmed up (compiled), evals left out
    setup_seconds: float = 0.0  # model, data, optimizer and `accelerator.prepare`, before the first step
    save_seconds: float = 0.0  # writing the best checkpoint and freeing the model, after the last step
    first_step_seconds: float = 0.0  # the first optimizer step: compiling, when `compiled`, happens here
    compiled: bool = False
    rows_per_pass: int = 0  # rows in each forward pass: the config's batch_size, or its step's micro-batches merged
    evals: list[dict[str, float]] = field(default_factory=list)
    oom_retries: list[str] = field(default_factory=list)  # what ran out of memory before this run fitted

    def value(self, metric: str) -> float:
        return self.metrics[metric]


def model_name(checkpoint: str) -> str:
    return Path(checkpoint.rstrip("/")).name


def precision_for(config: TrainConfig, family: Family, has_cuda: bool) -> str:
    """Accelerate's mixed_precision: "bf16", "fp16" or "no"."""
    wanted = config.training.precision
    if wanted == "auto":
        if not has_cuda:
            return "no"
        wanted = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if wanted == "fp16" and family.name in ("t5", "mt5", "flan-t5"):
        # T5's activations overflow fp16 (its pre-training was bf16): the loss goes to NaN/0,
        # under QLoRA most of all. bf16 has fp32's range; fp32 is the safe fallback.
        return "bf16" if has_cuda and torch.cuda.is_bf16_supported() else "no"
    return {"fp32": "no"}.get(wanted, wanted)


def train(config: TrainConfig, train_path: str | Path, val_path: str | Path, output_dir: str | Path,
          report: Report | None = None, progress: bool = True, label: str | None = None,
          progress_seconds: float = LINE_SECONDS, keep_checkpoint: KeepCheckpoint | None = None) -> Result:
    """Train once; on CUDA out-of-memory, again with the per-device batch halved and accumulation doubled.

    The effective batch stays the same (the design document's own advice for a smaller GPU), down to
    a batch of 1; past that, `OutOfMemory` says so. `progress`: a bar on a terminal, elsewhere a line
    at least every `progress_seconds` of training, and one line per eval (models/progress.py); `label`
    names the run in them. `keep_checkpoint`, where the best eval's value is final (its eval saw the whole
    dev set, or the run was stopped), is asked before that checkpoint is written: False writes none (the
    search would only delete it), and `Result.checkpoint` is None.
    """
    freeze_what_is_alive_before_the_first_run()
    retries: list[str] = []
    while True:
        try:
            result = _train_once(config, train_path, val_path, output_dir, report, progress, label, progress_seconds,
                                 keep_checkpoint)
        except torch.OutOfMemoryError as err:
            reason, rows = str(err).splitlines()[0], getattr(err, "rows_per_pass", config.training.batch_size)
        except BaseException as err:
            # The traceback's frames hold the model, optimizer and batches, and the caller may keep
            # the exception (Optuna keeps a failed trial's): free them now, not after the next trial.
            traceback.clear_frames(err.__traceback__)
            release_memory()
            raise
        else:
            result.oom_retries = retries
            return result
        release_memory()  # only now: the failed attempt's frames lived as long as its exception
        t = config.training
        if world_size() > 1:  # the other processes are inside a collective and cannot follow a retry
            raise OutOfMemory(f"out of memory in one of {world_size()} processes of a data-parallel trial ({reason}); "
                              "it is not retried with a smaller batch there: lower training.batch_size")
        if rows == 1:
            raise OutOfMemory(f"out of memory at per-device batch 1 after {len(retries)} retries ({reason}); "
                              "use a smaller model, QLoRA, gradient checkpointing or shorter max lengths")
        step_rows = t.batch_size * t.gradient_accumulation_steps
        retries.append(f"batch {rows} x accumulation {step_rows // rows} ran out of memory ({reason}); "
                       f"retrying with batch {rows // 2}")
        log.warning(retries[-1])
        # Half the rows that ran out, not merged again: the step keeps its rows (up to rounding of odd sizes).
        config = config.override({"training.batch_size": rows // 2,
                                  "training.gradient_accumulation_steps": 2 * step_rows // rows,
                                  "training.merge_micro_batches": "never"})


class OutOfMemory(RuntimeError):
    pass


def warmup_steps(ratio: float, total_steps: int) -> int:
    return math.ceil(ratio * total_steps)  # as transformers' Trainer rounds it


def release_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


@functools.cache  # once a process
def freeze_what_is_alive_before_the_first_run() -> None:
    """Moves the objects alive before any model is built (the imported libraries: half a million of them)
    out of the garbage collector's sight. Each full collection (the trainer's between runs, and Python's own
    during training) then skips them: 0.35 s a collection with them, under 1 ms without, on a CPU. Models
    and batches come later, so they are collected as before."""
    gc.collect()  # garbage first: a frozen object is never collected
    gc.freeze()


def _train_once(config: TrainConfig, train_path: str | Path, val_path: str | Path, output_dir: str | Path,
                report: Report | None, progress: bool, label: str | None, progress_seconds: float,
                keep_checkpoint: KeepCheckpoint | None = None) -> Result:
    recipe = Recipe(config, Path(output_dir))
    try:
        recipe.setup(train_path, val_path)
        shown = Progress(label or model_name(config.model.checkpoint), recipe.total_steps,
                         enabled=progress and recipe.accelerator.is_main_process, interval=progress_seconds)
        recipe.train(report, shown)
    except torch.OutOfMemoryError as err:
        err.rows_per_pass = recipe.rows_per_pass  # what the retry halves: the config's batch, or a merged one
        raise
    return recipe.finish(shown, keep_checkpoint)


class Recipe:
    """One attempt at training, in the order it runs: `setup`, `train`, `finish`."""

    def __init__(self, config: TrainConfig, output_dir: Path):
        self.config, self.output_dir, self.family = config, output_dir, get_family(config.model.architecture)
        # What the loop has done: its steps, its evals and the best of them, whether the search stopped it.
        self.step, self.evals, self.best_value, self.best_step, self.stopped = 0, [], -math.inf, 0, False
        self.rows_per_pass = config.training.batch_size  # until `setup` merges the step's micro-batches
        self.eval_seconds = self.first_step_seconds = 0.0

    def setup(self, train_path: str | Path, val_path: str | Path) -> None:
        """Model, data, optimizer and learning-rate schedule, prepared by Accelerate; the compiled step."""
        started, config, t, family = time.perf_counter(), self.config, self.config.training, self.family
        set_seed(t.seed)
        # Batches go to the GPU from pinned memory without blocking: a blocking copy waits for every
        # queued kernel, so the GPU would idle while Python launches the next step.
        # Accumulation is done here, by windows (`accumulation_windows`), not by Accelerate's counter.
        self.accelerator = accelerator = Accelerator(
            mixed_precision=precision_for(config, family, torch.cuda.is_available()),
            dataloader_config=DataLoaderConfiguration(non_blocking=True))
        self.device = device = accelerator.device
        compute_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(accelerator.mixed_precision, torch.float32)
        model, self.tokenizer, _ = build_model(config, family, device, compute_dtype)
        lengths = (t.max_source_length, t.max_target_length)
        train_split = load_split(train_path, self.tokenizer, family, *lengths, columns=config.data.columns,
                                 augment=augmenter(config))  # the training rows only, never dev
        self.dev = load_split(val_path, self.tokenizer, family, *lengths, columns=config.data.columns)
        self.eval_rows = min(len(self.dev), t.eval_subset) if t.eval_subset > 0 else len(self.dev)
        varied_lengths = len({(len(f["input_ids"]), len(f["labels"])) for f in train_split.features}) > 1
        if varied_lengths and device.type == "cuda":
            # torch sends a padded batch's attention to cuDNN first, and cuDNN builds a plan for every new
            # batch shape, so a worker's first trial crawled (benchmarks/README.md). Off for the rest of the
            # process: a worker trains one dataset.
            torch.backends.cuda.enable_cudnn_sdp(False)

        self.make_batch = batch_maker(model, family, self.tokenizer.pad_token_id)
        decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]  # not biases or norms
        no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
        optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": t.weight_decay},
                                       {"params": no_decay, "weight_decay": 0.0}],
                                      lr=t.learning_rate, fused=device.type == "cuda")
        self.model, self.optimizer = accelerator.prepare(model, optimizer)
        self.unwrapped = without_autocast_wrapper(self.model)
        # The step's rows in fewer, larger batches where the GPU has room; rank 0's choice binds every rank.
        fits = memory_probe(self.unwrapped, train_split.features, self.make_batch, forward_loss, family.is_causal,
                            t.label_smoothing, device, accelerator.autocast)
        self.rows_per_pass = share(rows_per_pass(config, device, fits))
        self.accumulation = t.batch_size * t.gradient_accumulation_steps // self.rows_per_pass
        batches = (LengthGroupedBatches([len(f["input_ids"]) for f in train_split.features], self.rows_per_pass,
                                        t.seed)
                   if t.group_by_length else RandomBatches(len(train_split), self.rows_per_pass, t.seed))
        self.loader = accelerator.prepare(DataLoader(train_split.features, batch_sampler=batches,
                                                     pin_memory=torch.cuda.is_available(), collate_fn=self.make_batch))
        self.total_steps = config.optimizer_steps(len(train_split), accelerator.num_processes)
        # A prepared scheduler steps once per process at every optimizer step, hence the factor.
        self.scheduler = accelerator.prepare(lr_schedule(
            t.scheduler, self.optimizer, warmup_steps(t.warmup_ratio, self.total_steps) * accelerator.num_processes,
            self.total_steps * accelerator.num_processes))
        self.writer = SummaryWriter(str(self.output_dir / "logs")) if accelerator.is_main_process else None
        if self.writer:
            self.writer.add_text("config", json.dumps(config.to_flat(), indent=1))
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()

        self.compiled = should_compile(config, device, self.total_steps * self.accumulation)
        self.train_loss, self.smoothing, self.cuda_graphs = forward_loss, t.label_smoothing, False
        if self.compiled:
            without_layerdrop(self.unwrapped)
            self.train_loss, self.smoothing, self.cuda_graphs = compiled_loss(
                config, device, accelerator.num_processes, varied_lengths)
            if self.cuda_graphs:
                gradients_of_their_own(self.unwrapped)
        self.best_weights = BestWeights(self.unwrapped)  # filled on rank 0 only: it alone saves
        self.setup_seconds = time.perf_counter() - started

    def train(self, report: Report | None, progress: Progress) -> None:
        """Optimizer steps up to `total_steps`, evaluating every `eval_steps`; `report` may stop it sooner."""
        t = self.config.training
        throughput = Throughput(steady_from=min(self.total_steps, max(3, self.total_steps // 10)))
        started = time.perf_counter()
        self.model.train()
        while self.step < self.total_steps and not self.stopped:
            for micro_batches in accumulation_windows(self.loader, self.accumulation):
                loss = self.optimizer_step(micro_batches)
                self.step += 1
                samples = sum(len(b["input_ids"]) for b in micro_batches) * self.accelerator.num_processes
                if self.step == 1:
                    self.synchronize()
                    self.first_step_seconds = time.perf_counter() - started
                throughput.stepped(self.step, samples, self.eval_seconds, self.synchronize)
                progress.stepped(self.step, samples, loss.item)
                # A periodic eval just before the final one would tell the pruner nothing new: it is skipped.
                evaluating = self.step == self.total_steps or (
                    self.step % t.eval_steps == 0 and self.total_steps - self.step >= t.eval_steps // 4)
                if self.step % LOG_EVERY == 0 or evaluating:
                    loss_value = self.read_loss(loss, progress)  # raises Diverged on a nan or inf loss
                if evaluating:
                    eval_started = time.perf_counter()
                    metrics = self.evaluate(loss_value, progress)
                    self.keep_best(metrics)
                    # The search's pruner answers here: True stops training.
                    if report is not None and report(self.step, {k: v for k, v in metrics.items()
                                                                 if k != "eval_seconds"}):
                        self.stopped = True
                    self.eval_seconds += time.perf_counter() - eval_started
                if self.step >= self.total_steps or self.stopped:
                    break
        progress.close()
        self.synchronize()
        ended = time.perf_counter()
        self.train_seconds = ended - started - self.eval_seconds
        self.samples_per_second = throughput.per_second(ended, self.eval_seconds)
        self.peak_memory_gb = peak_memory_gb()

    def optimizer_step(self, micro_batches: list[dict]) -> torch.Tensor:
        """Forward and backward over an accumulation window, then the optimizer's step. Returns the last
        micro-batch's loss, still on the device: reading it waits for the GPU."""
        t, causal, accelerator = self.config.training, self.family.is_causal, self.accelerator
        # Every summary token of the window weighs the same, as in HF's Trainer: a micro-batch's mean
        # loss is scaled by its share of the window's tokens (no sync: the counts stay on the device).
        counts = [scored_tokens(batch, causal) for batch in micro_batches]
        window_tokens = sum(counts)
        for i, (batch, count) in enumerate(zip(micro_batches, counts)):
            last = i == len(micro_batches) - 1
            with nullcontext() if last else accelerator.no_sync(self.model):  # DDP all-reduces at the last only
                with accelerator.autocast():
                    loss = self.train_loss(self.model, batch, causal, self.smoothing)
                accelerator.backward(loss * (count / window_tokens))
        if t.max_grad_norm > 0:
            accelerator.clip_grad_norm_(self.model.parameters(), t.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=not self.cuda_graphs)  # CUDA graphs add into kept buffers
        return loss

    def read_loss(self, loss: torch.Tensor, progress: Progress) -> float:
        value = loss.item()
        if not math.isfinite(value):
            raise Diverged(f"loss diverged at step {self.step} ({value}); lower training.learning_rate "
                           "or its search range")
        progress.loss_read(value)
        if self.writer:
            self.writer.add_scalar("train/loss", value, self.step)
            self.writer.add_scalar("train/lr", self.scheduler.get_last_lr()[0], self.step)
        return value

    @torch.compiler.set_stance("force_eager")  # see models/compiling.py
    def evaluate(self, train_loss: float, progress: Progress) -> dict[str, float]:
        """The eval loss and ROUGE of generated summaries on the dev set's first `eval_rows` rows."""
        t, model, started = self.config.training, self.unwrapped, time.perf_counter()
        features, references = self.dev.features[:self.eval_rows], self.dev.references[:self.eval_rows]
        model.eval()
        # The loss takes the training pass's rows: on Gemma's 262,144-word vocabulary, 64 rows' fp32 logits
        # were one 12 GiB allocation, more than a training step's, and four trials sharing a GPU ran out.
        metrics = {"eval_loss": eval_loss(model, features, self.make_batch, self.family.is_causal,
                                          self.rows_per_pass, self.device, self.accelerator.autocast)}
        with progress.evaluating(len(features)) as on_rows:
            summaries = generate(model, self.tokenizer, self.family, features, num_beams=t.num_beams,
                                 max_new_tokens=t.generation_max_length, batch_size=t.eval_batch_size,
                                 device=self.device, on_rows=on_rows)
        model.train()
        if self.device.type == "cuda":  # the eval's peak goes back to the GPU, for trials that share it
            torch.cuda.empty_cache()
        metrics.update(rouge(summaries, references, t.rouge_tokenize))
        metrics["eval_seconds"] = time.perf_counter() - started
        # Under `accelerate launch` every rank evaluates; rank 0's figures decide for all, so no rank
        # waits alone at the barrier in `finish` if its generations differ in the last bit.
        metrics = share(metrics)
        self.evals.append({"step": self.step, **metrics})
        progress.evaluated(self.step, train_loss, metrics, t.metric)
        if self.writer:
            for name, value in metrics.items():
                self.writer.add_scalar(f"eval/{name}", value, self.step)
        return metrics

    def keep_best(self, metrics: dict[str, float]) -> None:
        """A new best eval's weights are copied to host memory, to be saved once training is over."""
        if metrics[self.config.training.metric] > self.best_value:
            self.best_value, self.best_step = metrics[self.config.training.metric], self.step
            if self.accelerator.is_main_process:
                self.best_weights.keep()

    def finish(self, progress: Progress, keep_checkpoint: KeepCheckpoint | None = None) -> Result:
        """Save the best eval's weights as the checkpoint and free the model; then score that checkpoint
        on the whole dev set, unless the evals saw all of it or the search stopped the run."""
        started, best_dir = time.perf_counter(), self.output_dir / "best"
        scoring = not self.stopped and self.eval_rows < len(self.dev)  # the checkpoint's value is not known yet
        if (self.accelerator.is_main_process and self.best_step
                and (scoring or keep_checkpoint is None or keep_checkpoint(self.best_value, self.stopped))):
            self.best_weights.restore()
            save_checkpoint(self.unwrapped, self.tokenizer, self.config, best_dir)
        self.accelerator.wait_for_everyone()  # under `accelerate launch`, no rank reads best/ before it is written
        del self.model, self.unwrapped, self.optimizer, self.scheduler, self.loader, self.make_batch, self.best_weights
        self.accelerator.free_memory()  # collects the garbage and empties the CUDA cache, as release_memory does
        save_seconds = time.perf_counter() - started
        best = next(e for e in self.evals if e["step"] == self.best_step)
        metrics = {k: v for k, v in best.items() if k not in ("step", "eval_seconds")}
        if scoring:
            with progress.evaluating(len(self.dev)) as on_rows:
                metrics.update(score_checkpoint(best_dir, self.dev, self.device, self.config, on_rows))
        result = Result(metrics=metrics, best_step=self.best_step, steps=self.step, stopped_early=self.stopped,
                        train_seconds=self.train_seconds, eval_seconds=self.eval_seconds,
                        peak_memory_gb=self.peak_memory_gb, checkpoint=str(best_dir) if best_dir.is_dir() else None,
                        samples_per_second=self.samples_per_second, setup_seconds=self.setup_seconds,
                        save_seconds=save_seconds,
                        first_step_seconds=self.first_step_seconds, compiled=self.compiled,
                        rows_per_pass=self.rows_per_pass, evals=self.evals)
        if self.writer:
            self.writer.close()
            write_results(result, self.config, self.output_dir / "results")
        return result

    def synchronize(self) -> None:  # before reading a clock, so queued GPU work is counted
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


@dataclass
class Throughput:
    """Training rows per second from optimizer step `steady_from` on, once compiling (if any) is done,
    with the evals' time left out."""
    steady_from: int
    samples: int = 0
    started: tuple[float, float] | None = None  # the clock and the evals' seconds so far at `steady_from`

    def stepped(self, step: int, samples: int, eval_seconds: float, synchronize: Callable[[], None]) -> None:
        if self.started:
            self.samples += samples
        if step == self.steady_from:
            synchronize()
            self.started = (time.perf_counter(), eval_seconds)

    def per_second(self, ended: float, eval_seconds: float) -> float:
        if not self.started:
            return 0.0
        clock, evals_before = self.started
        return self.samples / max(ended - clock - (eval_seconds - evals_before), 1e-9)


def peak_memory_gb() -> float:
    """GPU memory allocated at peak; on CPU the process's peak resident size."""
    return (torch.cuda.max_memory_allocated() if torch.cuda.is_available()
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024) / 2 ** 30


def without_autocast_wrapper(model):
    """`model` out of its data-parallel wrapper and without the autocast wrapper that `accelerator.prepare`
    puts on its forward under mixed precision (what `accelerator.unwrap_model(model, keep_fp32_wrapper=False)`
    does): the trainer autocasts its training step and eval loss itself, and generates without it.

    The wrapper is a new closure for every model, and a compiled step guards on it: each trial of a
    worker compiled again, and from the ninth trial on dynamo gave up (its recompile limit) and ran the
    step eager. Generating under it recast every weight at every token: on an H200 at bart-base size,
    500 dialogues took 11.9 s under bf16 autocast and 3.2 s in fp32 (benchmarks/reliability.md), which
    is also how the final evaluation and `predict` score. Accelerate (1.15) unwraps the forward past
    transformers' `return_dict` handling too, so the model is never called here with return_dict=False.
    """
    return extract_model_from_parallel(model, keep_fp32_wrapper=False)


def write_results(result: Result, config: TrainConfig, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metrics.json").write_text(json.dumps({**asdict(result), "config": config.to_flat()}, indent=2,
                                                    ensure_ascii=False), encoding="utf-8")
    m = result.metrics
    lines = [
        f"model: {config.model.checkpoint} ({config.model.architecture}, {config.method})",
        f"steps trained: {result.steps}{' (stopped early)' if result.stopped_early else ''}",
        f"train seconds: {result.train_seconds:.1f}   eval seconds: {result.eval_seconds:.1f}   "
        f"setup seconds: {result.setup_seconds:.1f}",
        f"throughput: {result.samples_per_second:.1f} samples/s{' (compiled)' if result.compiled else ''}, "
        f"{result.rows_per_pass} rows a forward pass",
        f"peak memory: {result.peak_memory_gb:.2f} GiB",
        "",
        "Best Metrics",
        "============",
        f"step:     {result.best_step}",
        *(f"{name + ':':9} {m[name]:.4f}" for name in ("rouge1", "rouge2", "rougeL", "mean", "eval_loss") if name in m),
        f"checkpoint: {result.checkpoint}",
    ]
    (folder / "summary.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
