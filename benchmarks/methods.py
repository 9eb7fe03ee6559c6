"""Every training method through our own `models.methods.build_model`, timed on base-sized models.

Two parts, both written to one JSON file:

* bench: bart-base / t5-base / gpt2 sized models with random weights (built from configs, saved
  to a local folder with the demo's tiny tokenizer), each built by `build_model` for a variant
  (full, lora, qlora, qlora-nockpt, unsloth, ...), trained for warm-up + timed steps on a small
  fixed set of random token batches in a tight bf16-autocast AdamW loop. Records samples/s,
  tokens/s, peak GPU memory and the loss at the first and last step (it must fall).
* end_to_end: `models.trainer.train` on the demo data and a family's tiny demo checkpoint, once
  per FAMILY:METHOD, each in its own process; records the train loss (first/last logged step),
  eval loss at each evaluation and the final ROUGE (whitespace tokens).

Variants that use unsloth run in a separate process from the others: unsloth patches transformers
when imported, which would change what the plain variants measure.

    python3 benchmarks/methods.py --tiny                     # CPU smoke test, seconds
    python3 benchmarks/methods.py --out methods.json        # GPU: all models, all variants
    python3 benchmarks/methods.py --bench-methods none --e2e t5:full,gpt2:qlora --out e2e.json
    python3 benchmarks/methods.py --merge a.json b.json --out methods.json
"""
from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

# name -> (build_model's method, gradient checkpointing)
VARIANTS = {
    "full": ("full", False),
    "full-ckpt": ("full", True),
    "lora": ("lora", False),
    "lora-ckpt": ("lora", True),
    "qlora": ("qlora", True),
    "qlora-nockpt": ("qlora", False),
    "unsloth": ("unsloth", True),  # 4-bit + unsloth's own checkpointing
    "unsloth-nockpt": ("unsloth", False),
}
DEFAULT_METHODS = "full,lora,qlora,qlora-nockpt,unsloth"
MODELS = ("bart", "t5", "gpt2")
REAL_VOCAB = {"bart": 50265, "t5": 32128, "gpt2": 50257}
LR = {"full": 1e-4, "lora": 1e-3, "qlora": 1e-3, "unsloth": 1e-3}


# -- models -----------------------------------------------------------------------------------
def base_config(family: str, tok, tiny: bool):
    """bart-base / t5-base / gpt2 sizes (or a tiny stand-in), with the real vocabulary sizes."""
    from transformers import BartConfig, GPT2Config, T5Config

    vocab = REAL_VOCAB[family]
    assert len(tok) <= vocab, (family, len(tok), vocab)
    if family == "bart":
        sizes = (dict(d_model=64, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
                      decoder_attention_heads=4, encoder_ffn_dim=256, decoder_ffn_dim=256) if tiny else
                 dict(d_model=768, encoder_layers=6, decoder_layers=6, encoder_attention_heads=12,
                      decoder_attention_heads=12, encoder_ffn_dim=3072, decoder_ffn_dim=3072))
        return BartConfig(vocab_size=vocab, max_position_embeddings=1024, pad_token_id=tok.pad_token_id,
                          bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                          decoder_start_token_id=tok.eos_token_id, forced_eos_token_id=None, **sizes)
    if family == "t5":  # t5 v1.0: ReLU MLP, tied embeddings
        sizes = (dict(d_model=64, d_kv=16, d_ff=256, num_layers=2, num_heads=4) if tiny else
                 dict(d_model=768, d_kv=64, d_ff=3072, num_layers=12, num_heads=12))
        return T5Config(vocab_size=vocab, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                        decoder_start_token_id=tok.pad_token_id, feed_forward_proj="relu",
                        tie_word_embeddings=True, **sizes)
    sizes = dict(n_embd=64, n_layer=2, n_head=4) if tiny else dict(n_embd=768, n_layer=12, n_head=12)
    return GPT2Config(vocab_size=vocab, n_positions=1024, bos_token_id=tok.bos_token_id,
                      eos_token_id=tok.eos_token_id, **sizes)


def make_base_checkpoint(family: str, workdir: Path, tiny: bool) -> Path:
    from transformers import AutoTokenizer, BartForConditionalGeneration, GPT2LMHeadModel, T5ForConditionalGeneration

    from models.demo import demo_assets

    out = workdir / f"{family}-{'tiny' if tiny else 'base'}"
    if (out / "config.json").is_file():
        return out
    tok = AutoTokenizer.from_pretrained(str(demo_assets(family).checkpoint))
    cls = {"bart": BartForConditionalGeneration, "t5": T5ForConditionalGeneration, "gpt2": GPT2LMHeadModel}[family]
    torch.manual_seed(0)
    model = cls(base_config(family, tok, tiny))  # float32 weights: full fine-tuning trains fp32 master weights
    model.save_pretrained(out)
    tok.save_pretrained(out)
    del model
    return out


# -- one timed run ------------------------------------------------------------------------------
def random_batches(family: str, vocab: int, n: int, batch: int, source: int, target: int, seed: int):
    """A fixed set of batches from a narrow id range: the marginal is learnable, so the loss must fall."""
    g = torch.Generator().manual_seed(seed)
    low, span = 10, min(1000, vocab - 10)
    out = []
    for _ in range(n):
        src = torch.randint(low, low + span, (batch, source), generator=g)
        tgt = torch.randint(low, low + span, (batch, target), generator=g)
        if family == "gpt2":  # dialogue + summary joined, loss on the summary only
            ids = torch.cat([src, tgt], 1)
            labels = torch.cat([torch.full_like(src, -100), tgt], 1)
            out.append({"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels})
        else:
            out.append({"input_ids": src, "attention_mask": torch.ones_like(src), "labels": tgt})
    return out


def checkpointing_active(model) -> bool:
    return any(getattr(m, "gradient_checkpointing", False) is True for m in model.modules())


def bench_one(family: str, variant: str, checkpoint: Path, args, device: torch.device) -> dict:
    from models.config import TrainConfig
    from models.families import get_family
    from models.methods import build_model
    from models.steps import forward_loss

    method, ckpt = VARIANTS[variant]
    fam = get_family(family)
    config = TrainConfig().override({
        "model.architecture": family, "model.checkpoint": str(checkpoint), "method": method,
        "training.gradient_checkpointing": ckpt, "training.max_source_length": args.source,
        "training.max_target_length": args.target})
    cuda = device.type == "cuda"
    if cuda:
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    model, tokenizer, wrapped = build_model(config, fam, device, torch.bfloat16)
    if method in ("full", "lora"):  # loaded on the CPU; the trainer leaves the move to accelerate.prepare
        model.to(device)
    build_s = time.perf_counter() - started
    model.train()
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    vocab = base.config.get_text_config().vocab_size if hasattr(base.config, "get_text_config") else base.config.vocab_size
    batches = [{k: v.to(device) for k, v in b.items()}
               for b in random_batches(family, vocab, args.batches, args.batch, args.source, args.target, args.seed)]
    if not fam.is_causal:
        start_id = base.config.decoder_start_token_id
        for b in batches:
            b["decoder_input_ids"] = torch.cat([torch.full_like(b["labels"][:, :1], start_id), b["labels"][:, :-1]], 1)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=LR[method], fused=cuda)
    trainable = sum(p.numel() for p in params)
    total = sum(p.numel() for p in model.parameters())

    def step(b) -> torch.Tensor:
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss = forward_loss(model, b, fam.is_causal, 0.0)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    def sync():
        if cuda:
            torch.cuda.synchronize()

    losses = []
    t0 = time.perf_counter()
    losses.append(step(batches[0]))
    sync()
    first_step_s = time.perf_counter() - t0
    for i in range(1, args.warmup):
        losses.append(step(batches[i % len(batches)]))
    sync()
    warmup_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    for i in range(args.warmup, args.warmup + args.steps):
        losses.append(step(batches[i % len(batches)]))
    sync()
    timed_s = time.perf_counter() - t1
    losses = torch.stack(losses).float().tolist()
    per_step = timed_s / args.steps
    tokens_per_sample = args.source + args.target
    # Mean over the last pass through the fixed batches against the first pass: robust to batch-to-batch spread.
    k = min(args.batches, len(losses) // 2)
    result = {
        "method": method, "gradient_checkpointing": ckpt, "checkpointing_active": checkpointing_active(model),
        "lora_modules": wrapped, "trainable_params": trainable, "params": total,
        "model_class": type(model).__name__, "lr": LR[method],
        "build_s": round(build_s, 2), "first_step_s": round(first_step_s, 2), "warmup_s": round(warmup_s, 2),
        "timed_steps": args.steps, "timed_s": round(timed_s, 3), "step_ms": round(per_step * 1e3, 2),
        "samples_per_s": round(args.batch / per_step, 1),
        "tokens_per_s": round(args.batch * tokens_per_sample / per_step),
        "peak_gib": round(torch.cuda.max_memory_allocated() / 2 ** 30, 2) if cuda else None,
        "loss_first": round(losses[0], 4), "loss_last": round(losses[-1], 4),
        "loss_first_pass": round(sum(losses[:k]) / k, 4), "loss_last_pass": round(sum(losses[-k:]) / k, 4),
        "losses": [round(x, 4) for x in losses],
    }
    result["loss_fell"] = result["loss_last_pass"] < result["loss_first_pass"]
    del model, optimizer, params, batches
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    return result


def run_bench(models: list[str], variants: list[str], args, device: torch.device) -> dict:
    results: dict[str, dict] = {m: {} for m in models}
    if not variants:
        return results
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    if any(VARIANTS[v][0] == "unsloth" for v in variants) and device.type == "cuda":
        from models.methods import check_method_possible
        try:
            check_method_possible("unsloth", True)  # imports unsloth before any model is built
        except Exception as err:  # noqa: BLE001
            print(f"unsloth unavailable: {err}", flush=True)
    for family in models:
        checkpoint = make_base_checkpoint(family, workdir, args.tiny)
        for variant in variants:
            if VARIANTS[variant][0] == "unsloth":
                reason = unsloth_unavailable(device)
                if reason:
                    results[family][variant] = {"skipped": reason}
                    print(f"{family:5} {variant:15} skipped: {reason}", flush=True)
                    continue
            print(f"{family:5} {variant:15} ...", flush=True)
            try:
                r = bench_one(family, variant, checkpoint, args, device)
                print(f"{family:5} {variant:15} {r['samples_per_s']:8.1f} samples/s  peak {r['peak_gib']} GiB  "
                      f"loss {r['loss_first']:.3f} -> {r['loss_last']:.3f}  first step {r['first_step_s']} s  "
                      f"ckpt {r['checkpointing_active']}", flush=True)
            except Exception as err:  # noqa: BLE001  (a failed variant is a result too)
                r = {"error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc()[-3000:]}
                print(f"{family:5} {variant:15} FAILED {r['error']}\n{r['traceback']}", flush=True)
                gc.collect()
                if device.type == "cuda":
                    torch.cuda.empty_cache()
            results[family][variant] = r
            if args.out:  # partial results survive a timeout
                write_json(Path(args.out), document(args, {"models": results}))
    return results


def unsloth_unavailable(device: torch.device) -> str | None:
    if device.type != "cuda":
        return "no CUDA device"
    try:
        import unsloth  # noqa: F401
    except Exception as err:  # noqa: BLE001
        return f"unsloth not importable ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})"
    return None


# -- end to end through models.trainer.train -----------------------------------------------------------
def e2e_one(family: str, method: str, args) -> dict:
    """One `models.trainer.train` run on the demo data; in its own process (see run_e2e)."""
    from models.config import TrainConfig
    from models.demo import demo_assets
    from models.trainer import train

    assets = demo_assets(family)
    overrides = {
        "model.architecture": family, "model.checkpoint": str(assets.checkpoint), "method": method,
        "training.max_steps": args.e2e_steps, "training.eval_steps": args.e2e_eval_steps,
        "training.learning_rate": 1e-3, "training.rouge_tokenize": "whitespace",
        "training.eval_subset": 100, "training.eval_batch_size": 64,
    }
    if args.tiny:
        overrides.update({"training.eval_subset": 4, "training.num_beams": 1, "training.generation_max_length": 8,
                          "training.max_source_length": 64, "training.max_target_length": 16})
    config = TrainConfig().override(overrides)
    out = Path(args.workdir) / "e2e" / f"{family}-{method}"
    started = time.perf_counter()
    result = train(config, assets.train, assets.dev, out, progress=True, label=f"{family}-{method}")
    wall = time.perf_counter() - started
    train_losses = read_scalars(out / "logs", "train/loss")
    return {
        "checkpoint": f"tiny-{family} (demo)", "steps": result.steps, "best_step": result.best_step,
        "train_loss_first": train_losses[0][1] if train_losses else None,
        "train_loss_last": train_losses[-1][1] if train_losses else None,
        "train_loss_fell": bool(train_losses) and train_losses[-1][1] < train_losses[0][1],
        "eval_loss": {str(e["step"]): round(e["eval_loss"], 4) for e in result.evals},
        "eval_mean_rouge": {str(e["step"]): round(e["mean"], 4) for e in result.evals},
        "final": {k: round(v, 4) for k, v in result.metrics.items()},
        "train_seconds": round(result.train_seconds, 1), "eval_seconds": round(result.eval_seconds, 1),
        "wall_seconds": round(wall, 1), "peak_memory_gb": round(result.peak_memory_gb, 3),
        "saved_checkpoint": bool(result.checkpoint),
    }


def read_scalars(logdir: Path, tag: str) -> list[tuple[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(logdir))
    acc.Reload()
    if tag not in acc.Tags().get("scalars", []):
        return []
    return [(e.step, round(e.value, 4)) for e in acc.Scalars(tag)]


def run_e2e(specs: list[str], args, log) -> dict:
    """Each FAMILY:METHOD in its own process (unsloth's patches stay in its own), `--jobs` at a time."""
    results, running, queue = {}, [], list(specs)
    workdir = Path(args.workdir)
    (workdir / "e2e").mkdir(parents=True, exist_ok=True)
    from models.demo import demo_assets
    for family in dict.fromkeys(s.split(":")[0] for s in specs):
        demo_assets(family)  # build once, before parallel workers race for it
    while queue or running:
        while queue and len(running) < args.jobs:
            spec = queue.pop(0)
            family, method = spec.split(":")
            rundir = workdir / "e2e" / f"{family}-{method}"
            rundir.mkdir(parents=True, exist_ok=True)  # also the cwd: unsloth writes its compile cache there
            cmd = [sys.executable, str(Path(__file__).resolve()), "--e2e-worker", spec,
                   "--out", str(rundir / "result.json"), "--workdir", str(workdir),
                   "--e2e-steps", str(args.e2e_steps), "--e2e-eval-steps", str(args.e2e_eval_steps)]
            if args.tiny:
                cmd.append("--tiny")
            env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
            logf = open(rundir / "log.txt", "w")
            proc = subprocess.Popen(cmd, cwd=rundir, env=env, stdout=logf, stderr=subprocess.STDOUT)
            running.append((spec, proc, logf, rundir, time.perf_counter()))
            print(f"e2e {spec} started", flush=True)
        time.sleep(0.5)
        for item in list(running):
            spec, proc, logf, rundir, t0 = item
            if proc.poll() is None and time.perf_counter() - t0 < args.e2e_timeout:
                continue
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            logf.close()
            running.remove(item)
            text = (rundir / "log.txt").read_text(errors="replace")
            log.write(f"\n===== e2e {spec} (exit {proc.returncode}) =====\n{text}")
            log.flush()
            try:
                r = json.loads((rundir / "result.json").read_text())
            except (OSError, ValueError):
                r = {"error": f"worker exited {proc.returncode} without a result"
                              f"{' (timed out)' if proc.returncode in (-9, 137) else ''}", "log_tail": text[-3000:]}
            family, method = spec.split(":")
            results.setdefault(family, {})[method] = r
            summary = (f"loss {r['train_loss_first']} -> {r['train_loss_last']}, mean ROUGE {r['final'].get('mean')}"
                       if "final" in r else r.get("error"))
            print(f"e2e {spec} done in {time.perf_counter() - t0:.0f} s: {summary}", flush=True)
    return results


def e2e_worker(spec: str, args) -> None:
    family, method = spec.split(":")
    if method == "unsloth":
        from models.methods import check_method_possible
        try:
            check_method_possible("unsloth")  # import unsloth first, as the trainer's path would
        except Exception:  # noqa: BLE001  (train() raises the same error, recorded below)
            pass
    try:
        r = e2e_one(family, method, args)
    except Exception as err:  # noqa: BLE001
        r = {"error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc()[-3000:]}
        print(r["traceback"], flush=True)
    write_json(Path(args.out), r)


# -- output --------------------------------------------------------------------------------------
def versions() -> dict:
    import importlib.metadata as md

    out = {"python": platform.python_version(), "torch": torch.__version__,
           "cuda": torch.version.cuda}
    for name in ("transformers", "peft", "accelerate", "bitsandbytes", "unsloth", "unsloth_zoo", "trl", "triton"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = None
    return out


def device_name() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


def stamp(body: dict) -> dict:
    """A result with what made it: the command, versions, date, commit and device."""
    return {**body, "command": " ".join([Path(sys.executable).name, *sys.argv]), "versions": versions(),
            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "commit": commit(),
            "device": device_name()}


def commit() -> str:
    """The checkout's commit, with "+changes" where the working tree differs from it."""
    import subprocess

    repo = Path(__file__).resolve().parents[1]
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=repo, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo, capture_output=True,
                           text=True)
    return (head.stdout.strip() or "unknown") + ("+changes" if dirty.stdout.strip() else "")


def document(args, body: dict) -> dict:
    return stamp({**body, "settings": {"batch": args.batch, "source": args.source, "target": args.target,
                                 "causal_joined": args.source + args.target, "warmup": args.warmup,
                                 "steps": args.steps, "fixed_batches": args.batches, "tiny": args.tiny,
                                 "precision": "bf16 autocast", "optimizer": "AdamW (fused on CUDA)", "lr": LR,
                                 "tokens_per_s": "batch x (source + target) per timed step",
                                 "e2e": {"max_steps": args.e2e_steps, "eval_steps": args.e2e_eval_steps,
                                         "learning_rate": 1e-3, "rouge_tokenize": "whitespace",
                                         "eval_subset": 4 if args.tiny else 100,
                                         "checkpoint": "the family's tiny demo checkpoint"}}})


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1, ensure_ascii=False))
    os.replace(tmp, path)


def merge(paths: list[str]) -> dict:
    """Several runs' files into one: models and end_to_end merged key by key, their commands listed."""
    merged: dict = {"models": {}, "end_to_end": {}, "parts": []}
    for p in paths:  # a later file's entry replaces an earlier one's
        d = json.loads(Path(p).read_text())
        for section in ("models", "end_to_end"):
            for family, methods in d.get(section, {}).items():
                merged[section].setdefault(family, {}).update(methods)
        merged["parts"].append({"file": Path(p).name, "command": d.get("command"), "date": d.get("date")})
        for key in ("settings", "versions", "date", "device"):
            if d.get(key) and (key not in merged or key == "versions" and d[key].get("unsloth")):
                merged[key] = d[key]
    merged["command"] = " && ".join(part["command"] for part in merged["parts"] if part["command"])
    return merged


def table(data: dict) -> str:
    lines = [f"{'model':5} {'variant':15} {'samples/s':>9} {'tokens/s':>9} {'peak GiB':>8} {'loss first->last':>18} "
             f"{'1st step s':>10}"]
    for family, variants in data.get("models", {}).items():
        for variant, r in variants.items():
            if "samples_per_s" in r:
                peak = f"{r['peak_gib']:.2f}" if r.get("peak_gib") is not None else "-"
                lines.append(f"{family:5} {variant:15} {r['samples_per_s']:9.1f} {r['tokens_per_s']:9d} {peak:>8} "
                             f"{r['loss_first']:8.3f}->{r['loss_last']:<8.3f} {r['first_step_s']:10.1f}")
            else:
                lines.append(f"{family:5} {variant:15} {r.get('skipped') or r.get('error', '?')[:90]}")
    for family, methods in data.get("end_to_end", {}).items():
        for method, r in methods.items():
            if "final" in r:
                lines.append(f"e2e {family:7} {method:8} train loss {r['train_loss_first']} -> {r['train_loss_last']}  "
                             f"eval loss {r['eval_loss']}  final mean ROUGE {r['final'].get('mean')}")
            else:
                lines.append(f"e2e {family:7} {method:8} {r.get('error', '?')[:120]}")
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tiny", action="store_true", help="tiny models and sizes: a CPU smoke test in seconds")
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--bench-methods", "--methods", dest="methods", default=DEFAULT_METHODS,
                   help=f"comma list of {', '.join(VARIANTS)}; 'none' for no bench")
    p.add_argument("--batch", type=int)
    p.add_argument("--source", type=int)
    p.add_argument("--target", type=int)
    p.add_argument("--warmup", type=int)
    p.add_argument("--steps", type=int)
    p.add_argument("--batches", type=int, default=4, help="fixed random batches cycled through")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--e2e", default="", help="comma list of FAMILY:METHOD for models.trainer.train on the demo")
    p.add_argument("--e2e-steps", type=int, default=60)
    p.add_argument("--e2e-eval-steps", type=int, default=30)
    p.add_argument("--e2e-timeout", type=float, default=420)
    p.add_argument("--jobs", type=int, default=1, help="end-to-end runs at a time")
    p.add_argument("--workdir", default=str(Path(tempfile.gettempdir()) / "sumsweep-bench"))
    p.add_argument("--out", help="the JSON file to write")
    p.add_argument("--log", help="end-to-end workers' logs are appended here")
    p.add_argument("--merge", nargs="+", metavar="JSON", help="merge these result files into --out")
    p.add_argument("--e2e-worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    small = dict(batch=2, source=32, target=8, warmup=1, steps=3) if args.tiny else \
        dict(batch=16, source=512, target=128, warmup=5, steps=20)
    for key, value in small.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.tiny:
        args.e2e_steps, args.e2e_eval_steps = min(args.e2e_steps, 4), min(args.e2e_eval_steps, 2)

    if args.e2e_worker:
        e2e_worker(args.e2e_worker, args)
        return
    if args.merge:
        data = merge(args.merge)
        if args.out:
            write_json(Path(args.out), data)
        print(table(data))
        return

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    models = [m for m in args.models.split(",") if m]
    variants = [] if args.methods == "none" else [v for v in args.methods.split(",") if v]
    unknown = [v for v in variants if v not in VARIANTS] + [m for m in models if m not in MODELS]
    if unknown:
        p.error(f"unknown variant or model: {', '.join(unknown)}")
    plain = [v for v in variants if VARIANTS[v][0] != "unsloth"]
    with_unsloth = [v for v in variants if VARIANTS[v][0] == "unsloth"]
    if plain and with_unsloth and device.type == "cuda":
        # unsloth's import patches transformers: measure it in a process of its own, after the others.
        results = run_bench(models, plain, args, device)
        part = Path(args.workdir) / "unsloth-bench.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--methods", ",".join(with_unsloth),
               "--models", args.models, "--out", str(part), "--workdir", args.workdir,
               *(f"--{k}={getattr(args, k)}" for k in ("batch", "source", "target", "warmup", "steps", "batches", "seed"))]
        print("unsloth variants in their own process:", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=False)
        if part.is_file():
            for family, r in json.loads(part.read_text()).get("models", {}).items():
                results.setdefault(family, {}).update(r)
    else:
        results = run_bench(models, variants, args, device)
    body = {"models": results}
    if args.e2e:
        specs = [s for s in args.e2e.split(",") if s]
        with open(args.log or os.devnull, "a") as log:
            body["end_to_end"] = run_e2e(specs, args, log)
    data = document(args, body)
    if args.out:
        write_json(Path(args.out), data)
    print(table(data))


if __name__ == "__main__":
    main()
