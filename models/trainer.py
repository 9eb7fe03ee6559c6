"""One training run: train(config, data, report) -> Result. The Accelerate loop, read top to bottom.

setup (model, data, optimizer) -> train, evaluating every `eval_steps` optimizer steps and keeping
the best weights -> save the best checkpoint -> final evaluation of it on the whole dev set -> cleanup.
`report(step, metrics)` is called after every evaluation; when it returns True the run stops
early (that is how the search prunes), and this package never hears of Optuna.
"""
from __future__ import annotations

import gc
import inspect
import itertools
import json
import logging
import math
import resource
import sys
import time
import traceback
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from accelerate import Accelerator, DataLoaderConfiguration
from accelerate.utils import send_to_device, set_seed
from torch.utils.data import DataLoader
from torch.utils.tensorboard import SummaryWriter
from tqdm.auto import tqdm

from models.augment import augmenter
from models.compiling import inductor_options, should_compile, with_constant_floats, without_layerdrop
from models.config import TrainConfig
from models.data import LengthGroupedBatches, RandomBatches, Split, collate, load_split
from models.distributed import share, world_size
from models.errors import Diverged
from models.families import Family, get_family
from models.generate import generate, load_checkpoint, save_checkpoint
from models.methods import build_model
from models.metrics import rouge
from models.schedules import lr_schedule

log = logging.getLogger(__name__)
Report = Callable[[int, dict[str, float]], bool]  # (optimizer step, metrics) -> stop now?
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
    first_step_seconds: float = 0.0  # the first optimizer step: compiling, when `compiled`, happens here
    compiled: bool = False
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


def batch_maker(model, family: Family, pad_id: int) -> Callable[[list[dict]], dict[str, torch.Tensor | int]]:
    """A collate_fn: rows padded into what `model`'s forward takes, plus the labels (built on the CPU)."""
    hf_model = model.get_base_model() if hasattr(model, "get_base_model") else model  # under a PEFT wrapper
    # The dialogue's own tokens are never scored, so a causal model's logits (a vocabulary-wide row
    # per token: at gpt2 size a third of the step) are computed from the batch's first summary on.
    keep_logits = family.is_causal and "logits_to_keep" in inspect.signature(hf_model.forward).parameters

    def make(rows: list[dict[str, list[int]]]) -> dict[str, torch.Tensor | int]:
        # Lengths in multiples of 8 suit the tensor cores, and keep true the alignment guards that
        # inductor puts on a compiled graph's symbolic lengths (`length % 8 == 0`, seen on the H200),
        # which would otherwise retrace it at the first batch of another length.
        batch = collate(rows, pad_id, multiple_of=8)
        if keep_logits:  # rounded up to a multiple of 8 too: each count is one more shape to compile or record
            length, prompt = batch["input_ids"].size(1), min(len(r["prompt_ids"]) for r in rows)
            batch["logits_to_keep"] = min(length, math.ceil((length - prompt + 1) / 8) * 8)
        if not family.is_causal:
            batch["decoder_input_ids"] = hf_model.prepare_decoder_input_ids_from_labels(labels=batch["labels"])
        return batch

    return make


def forward_loss(model, batch: dict, causal: bool, smoothing: float | torch.Tensor) -> torch.Tensor:
    # use_cache=False: T5 would build a cache object at every step, which also breaks a compiled graph.
    logits = model(**{k: v for k, v in batch.items() if k != "labels"}, use_cache=False).logits
    labels = batch["labels"][:, -logits.size(1):]  # the positions whose logits were kept
    if causal:  # position t predicts token t + 1
        logits, labels = logits[:, :-1], labels[:, 1:]
    return smoothed_cross_entropy(logits.reshape(-1, logits.size(-1)).float(), labels.reshape(-1), smoothing)


def smoothed_cross_entropy(logits: torch.Tensor, labels: torch.Tensor,
                           smoothing: float | torch.Tensor) -> torch.Tensor:
    """`F.cross_entropy(logits, labels, ignore_index=-100, label_smoothing=smoothing)`; for a tensor
    `smoothing`, written out. A compiled step takes it as a tensor and so serves every trial's
    label_smoothing: that op's float would be a constant of the graph, and each value a new compile.
    Eager, torch's own fused op is used."""
    if not isinstance(smoothing, torch.Tensor):
        return F.cross_entropy(logits, labels, ignore_index=-100, label_smoothing=smoothing)
    scored = labels != -100
    log_total = logits.logsumexp(-1)
    nll = log_total - logits.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)  # -log p(label)
    uniform = log_total - logits.mean(-1)  # -mean over the vocabulary of log p
    return (((1 - smoothing) * nll + smoothing * uniform) * scored).sum() / scored.sum()


def train(config: TrainConfig, train_path: str | Path, val_path: str | Path, output_dir: str | Path,
          report: Report | None = None, progress: bool = True, label: str | None = None) -> Result:
    """Train once; on CUDA out-of-memory, again with the per-device batch halved and accumulation doubled.

    The effective batch stays the same (the design document's own advice for a smaller GPU), down to
    a batch of 1; past that, `OutOfMemory` says so. `progress`: a bar on a terminal and one line per
    eval (in logs too); `label` names the run in them.
    """
    retries: list[str] = []
    while True:
        try:
            result = _train_once(config, train_path, val_path, output_dir, report, progress, label)
        except torch.OutOfMemoryError as err:
            reason = str(err).splitlines()[0]
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
        if t.batch_size == 1:
            raise OutOfMemory(f"out of memory at per-device batch 1 after {len(retries)} retries ({reason}); "
                              "use a smaller model, QLoRA, gradient checkpointing or shorter max lengths")
        retries.append(f"batch {t.batch_size} x accumulation {t.gradient_accumulation_steps} ran out of memory "
                       f"({reason}); retrying with batch {t.batch_size // 2}")
        log.warning(retries[-1])
        config = config.override({"training.batch_size": t.batch_size // 2,
                                  "training.gradient_accumulation_steps": t.gradient_accumulation_steps * 2})


class OutOfMemory(RuntimeError):
    pass


def accumulation_windows(loader, steps: int):
    """The micro-batches of each optimizer step: `steps` at a time, the last of an epoch maybe fewer."""
    batches = iter(loader)
    while window := list(itertools.islice(batches, steps)):
        yield window


def scored_tokens(batch: dict, causal: bool) -> torch.Tensor:
    """How many label tokens the loss averages over (a causal model's first position predicts nothing)."""
    labels = batch["labels"][:, 1:] if causal else batch["labels"]
    return (labels != -100).sum()


def warmup_steps(ratio: float, total_steps: int) -> int:
    return math.ceil(ratio * total_steps)  # as transformers' Trainer rounds it


def release_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _train_once(config: TrainConfig, train_path: str | Path, val_path: str | Path, output_dir: str | Path,
                report: Report | None, progress: bool, label: str | None) -> Result:
    setup_started = time.perf_counter()
    t = config.training
    output_dir = Path(output_dir)
    family = get_family(config.model.architecture)
    set_seed(t.seed)

    # -- setup ---------------------------------------------------------------------------
    # Batches go to the GPU from pinned memory without blocking: a blocking copy waits for every
    # queued kernel, so the GPU would idle while Python launches the next step.
    # Accumulation is done here, by windows (`accumulation_windows`), not by Accelerate's counter.
    accelerator = Accelerator(mixed_precision=precision_for(config, family, torch.cuda.is_available()),
                              dataloader_config=DataLoaderConfiguration(non_blocking=True))
    device = accelerator.device
    compute_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(accelerator.mixed_precision, torch.float32)
    model, tokenizer, _ = build_model(config, family, device, compute_dtype)
    lengths = (t.max_source_length, t.max_target_length)
    train_split = load_split(train_path, tokenizer, family, *lengths, columns=config.data.columns,
                             augment=augmenter(config))
    dev_split = load_split(val_path, tokenizer, family, *lengths, columns=config.data.columns)
    eval_rows = list(range(min(len(dev_split), t.eval_subset) if t.eval_subset > 0 else len(dev_split)))
    varied_lengths = len({(len(f["input_ids"]), len(f["labels"])) for f in train_split.features}) > 1
    if varied_lengths and device.type == "cuda":
        # torch sends a padded batch's attention to cuDNN first on an H200, and cuDNN builds a plan for
        # every new batch shape: a worker's first trial on the demo data trained at 57 samples/s, its
        # second (same shapes, plans kept) at 271 (benchmarks/results/multi_gpu.json). Off for the rest
        # of the process: a worker trains one dataset.
        torch.backends.cuda.enable_cudnn_sdp(False)

    model_batch = batch_maker(model, family, tokenizer.pad_token_id)
    batches = (LengthGroupedBatches([len(f["input_ids"]) for f in train_split.features], t.batch_size, t.seed)
               if t.group_by_length else RandomBatches(len(train_split), t.batch_size, t.seed))
    loader = DataLoader(train_split.features, batch_sampler=batches, pin_memory=torch.cuda.is_available(),
                        collate_fn=model_batch)
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]  # not biases or norms
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": t.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}],
                                  lr=t.learning_rate, fused=device.type == "cuda")
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    total_steps = config.optimizer_steps(len(train_split), accelerator.num_processes)
    # A prepared scheduler steps once per process at every optimizer step, hence the factor.
    scheduler = accelerator.prepare(lr_schedule(
        t.scheduler, optimizer, warmup_steps(t.warmup_ratio, total_steps) * accelerator.num_processes,
        total_steps * accelerator.num_processes))
    unwrapped = accelerator.unwrap_model(model)
    without_autocast_wrapper(unwrapped)
    compiled = should_compile(config, device, total_steps * t.gradient_accumulation_steps)
    if compiled:
        without_layerdrop(unwrapped)
    writer = SummaryWriter(str(output_dir / "logs")) if accelerator.is_main_process else None
    if writer:
        writer.add_text("config", json.dumps(config.to_flat(), indent=1))
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()

    # One graph for the forward and its loss: the vocabulary-wide logits are not copied to fp32. Where
    # lengths vary, its shapes are symbolic from the first step: by default torch.compile retraces at
    # each new kind of change (5 graphs, 250 s at gpt2 size on the demo data, on an H200).
    train_loss, smoothing, options = forward_loss, t.label_smoothing, {}
    if compiled:
        options = inductor_options(config, device, accelerator.num_processes, varied_lengths)
        train_loss = with_constant_floats(torch.compile(forward_loss, dynamic=varied_lengths or None,
                                                        options=options or None))
        smoothing = torch.tensor(smoothing, device=device)  # searched: an input of the graph, not a constant
    # A CUDA graph's outputs live in memory the next replay writes over: the backward's gradients too,
    # which a second accumulated micro-batch would then overwrite. So they add into buffers of their own,
    # zeroed rather than freed at each step.
    keep_grads = "triton.cudagraphs" in options
    if keep_grads:
        for p in unwrapped.parameters():
            if p.requires_grad:
                p.grad = torch.zeros_like(p)

    @torch.compiler.set_stance("force_eager")  # see models/compiling.py
    def evaluate() -> dict[str, float]:
        started = time.perf_counter()
        subset = [dev_split.features[i] for i in eval_rows]
        unwrapped.eval()
        metrics = {"eval_loss": eval_loss(subset)}
        summaries = generate(unwrapped, tokenizer, family, subset, num_beams=t.num_beams,
                             max_new_tokens=t.generation_max_length, batch_size=t.eval_batch_size, device=device)
        unwrapped.train()
        metrics.update(rouge(summaries, [dev_split.references[i] for i in eval_rows], t.rouge_tokenize))
        metrics["eval_seconds"] = time.perf_counter() - started
        return metrics

    @torch.inference_mode()
    def eval_loss(features) -> float:
        losses = []
        for start in range(0, len(features), t.eval_batch_size):
            batch = send_to_device(model_batch(features[start: start + t.eval_batch_size]), device)
            with accelerator.autocast():
                losses.append(forward_loss(unwrapped, batch, family.is_causal, smoothing=0.0).item())
        return sum(losses) / len(losses)

    def synchronize() -> None:  # before reading a clock, so queued GPU work is counted
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    # The best eval's weights are copied to host memory and written to disk once, after training, not at
    # every new best (most evals of a climbing run are one): a bart-base checkpoint took 0.5 to 0.9 s to
    # write in our runs, the copy next to nothing. Only rank 0 saves, so only it keeps them.
    best_weights = BestWeights(unwrapped)

    # -- train ---------------------------------------------------------------------------
    best_dir = output_dir / "best"
    best_value, best_step, step, evals, stopped = -math.inf, 0, 0, [], False
    # Throughput is measured from `steady_from` on, once compiling (if any) is done.
    steady_from = min(total_steps, max(3, total_steps // 10))
    pace_from, samples, first_step_seconds = None, 0, 0.0  # pace_from: (clock, eval_seconds) at its start
    eval_seconds, started = 0.0, time.perf_counter()
    setup_seconds = started - setup_started
    label = label or model_name(config.model.checkpoint)
    bar = tqdm(total=total_steps, desc=label, disable=not (progress and sys.stderr.isatty()),
               dynamic_ncols=True, leave=False)
    model.train()
    while step < total_steps and not stopped:
        for micro_batches in accumulation_windows(loader, t.gradient_accumulation_steps):
            # Every summary token of the window weighs the same, as in HF's Trainer: a micro-batch's mean
            # loss is scaled by its share of the window's tokens (no sync: the counts stay on the device).
            counts = [scored_tokens(batch, family.is_causal) for batch in micro_batches]
            window_tokens = sum(counts)
            for i, (batch, count) in enumerate(zip(micro_batches, counts)):
                last = i == len(micro_batches) - 1
                with nullcontext() if last else accelerator.no_sync(model):  # DDP all-reduces at the last only
                    with accelerator.autocast():
                        loss = train_loss(model, batch, family.is_causal, smoothing)
                    accelerator.backward(loss * (count / window_tokens))
            if t.max_grad_norm > 0:
                accelerator.clip_grad_norm_(model.parameters(), t.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=not keep_grads)
            if pace_from:
                samples += sum(len(b["input_ids"]) for b in micro_batches) * accelerator.num_processes
            step += 1
            bar.update(1)
            if step == 1:
                synchronize()
                first_step_seconds = time.perf_counter() - started
            if step == steady_from:
                synchronize()
                pace_from = (time.perf_counter(), eval_seconds)
            # A periodic eval just before the final one would tell the pruner nothing new: it is skipped.
            evaluating = step == total_steps or (step % t.eval_steps == 0 and total_steps - step >= t.eval_steps // 4)
            if step % LOG_EVERY == 0 or evaluating:
                loss_value = loss.item()
                if not math.isfinite(loss_value):
                    raise Diverged(f"loss diverged at step {step} ({loss_value}); lower training.learning_rate "
                                   "or its search range")
                bar.set_postfix(loss=f"{loss_value:.3f}", refresh=False)
                if writer:
                    writer.add_scalar("train/loss", loss_value, step)
                    writer.add_scalar("train/lr", scheduler.get_last_lr()[0], step)
            if evaluating:
                eval_started = time.perf_counter()
                # Under `accelerate launch` every rank evaluates; rank 0's figures decide for all, so no
                # rank waits alone at the barrier below if its generations differ in the last bit.
                metrics = share(evaluate())
                evals.append({"step": step, **metrics})
                bar.set_postfix(loss=f"{loss_value:.3f}", **{t.metric: f"{metrics[t.metric]:.4f}"})
                if progress and accelerator.is_main_process:
                    tqdm.write(f"{label}  step {step}/{total_steps}  loss {loss_value:.3f}  "
                               f"eval_loss {metrics['eval_loss']:.3f}  {t.metric} {metrics[t.metric]:.4f}  "
                               f"(eval {metrics['eval_seconds']:.1f}s)", file=sys.stderr)
                if writer:
                    for name, value in metrics.items():
                        writer.add_scalar(f"eval/{name}", value, step)
                if metrics[t.metric] > best_value:
                    best_value, best_step = metrics[t.metric], step
                    if accelerator.is_main_process:
                        best_weights.keep()
                if report is not None and report(step, {k: v for k, v in metrics.items() if k != "eval_seconds"}):
                    stopped = True
                eval_seconds += time.perf_counter() - eval_started
            if step >= total_steps or stopped:
                break
    bar.close()
    synchronize()
    ended = time.perf_counter()
    train_seconds = ended - started - eval_seconds
    samples_per_second = samples / max(ended - pace_from[0] - (eval_seconds - pace_from[1]), 1e-9) if pace_from else 0.0
    peak = (torch.cuda.max_memory_allocated() if torch.cuda.is_available()
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024) / 2 ** 30

    # -- save the best checkpoint, clean up, then the final evaluation of what was kept -----
    if accelerator.is_main_process and best_step:
        best_weights.restore()
        save_checkpoint(unwrapped, tokenizer, config, best_dir)
    accelerator.wait_for_everyone()  # under `accelerate launch`, no rank reads best/ before it is written
    del model, unwrapped, optimizer, scheduler, loader, model_batch, best_weights
    accelerator.free_memory()
    release_memory()
    best = next(e for e in evals if e["step"] == best_step)
    metrics = {k: v for k, v in best.items() if k not in ("step", "eval_seconds")}
    if not stopped and len(eval_rows) < len(dev_split):
        metrics.update(score_checkpoint(best_dir, dev_split, device, config))
    result = Result(metrics=metrics, best_step=best_step, steps=step, stopped_early=stopped,
                    train_seconds=train_seconds, eval_seconds=eval_seconds, peak_memory_gb=peak,
                    checkpoint=str(best_dir) if best_dir.is_dir() else None, samples_per_second=samples_per_second,
                    setup_seconds=setup_seconds, first_step_seconds=first_step_seconds, compiled=compiled,
                    evals=evals)
    if writer:
        writer.close()
        write_results(result, config, output_dir / "results")
    return result


class BestWeights:
    """A copy, in host memory, of a model's trainable weights (all of them, or a PEFT model's adapters)."""

    def __init__(self, model: torch.nn.Module):
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.kept: list[torch.Tensor] = []

    def keep(self) -> None:
        # Into pinned buffers allocated once, without waiting: the copies queue on the stream before the
        # next step's updates, and `restore` reads them back through the same stream.
        if not self.kept:
            self.kept = [torch.empty(p.shape, dtype=p.dtype, pin_memory=p.is_cuda) for p in self.params]
        for kept, param in zip(self.kept, self.params):
            kept.copy_(param.detach(), non_blocking=True)

    def restore(self) -> None:
        with torch.no_grad():
            for param, kept in zip(self.params, self.kept, strict=True):
                param.copy_(kept)


def without_autocast_wrapper(model) -> None:
    """Take off the autocast wrapper that `accelerator.prepare` puts on the model's forward under mixed
    precision: the trainer autocasts its training step and eval loss itself, and generates without it.

    The wrapper is a new closure for every model, and a compiled step guards on it: each trial of a
    worker compiled again, and from the ninth trial on dynamo gave up (its recompile limit) and ran the
    step eager. Generating under it recast every weight at every token: on an H200 at bart-base size,
    500 dialogues took 11.9 s under bf16 autocast and 3.2 s in fp32 (benchmarks/reliability.md), which
    is also how the final evaluation and `predict` score.
    """
    if "_original_forward" in model.__dict__:  # where accelerate keeps the forward it wrapped
        model.forward = model.__dict__.pop("_original_forward")


def score_checkpoint(folder: Path, split: Split, device: torch.device, config: TrainConfig) -> dict[str, float]:
    """ROUGE of a saved checkpoint on a whole split, loaded as `models.predict` loads it."""
    t = config.training
    model, tokenizer, family, _ = load_checkpoint(folder, device)
    summaries = generate(model, tokenizer, family, split.features, num_beams=t.num_beams,
                         max_new_tokens=t.generation_max_length, batch_size=t.eval_batch_size, device=device)
    del model
    return rouge(summaries, split.references, t.rouge_tokenize)


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
        f"throughput: {result.samples_per_second:.1f} samples/s{' (compiled)' if result.compiled else ''}",
        f"peak memory: {result.peak_memory_gb:.2f} GiB",
        "",
        "Best Metrics",
        "============",
        f"step:     {result.best_step}",
        *(f"{name + ':':9} {m[name]:.4f}" for name in ("rouge1", "rouge2", "rougeL", "mean", "eval_loss") if name in m),
        f"checkpoint: {result.checkpoint}",
    ]
    (folder / "summary.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
