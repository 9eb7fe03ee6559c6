"""Our trainer against the bare compiled loop of shared/GPU-NOTES.md, in one process; then a profile of ours.

The tight loop: the model compiled whole, bf16 autocast, the loss from `labels` inside the model, fused
AdamW, one fixed batch, nothing else. Ours: `models.trainer.train` (compile always) through
`trainer_vs_hf.run_ours`, on the same fixed-length rows; a first run compiles, a second runs under
torch.profiler, whose tables (by GPU time, by CPU time) are printed.

    python3 benchmarks/tight_loop.py --family t5 --profile
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.methods import MODELS, make_base_checkpoint  # noqa: E402
from benchmarks.trainer_vs_hf import BATCH, SOURCE, TARGET, datasets, run_ours  # noqa: E402
from models.data import collate, load_split  # noqa: E402
from models.families import get_family  # noqa: E402
from models.methods import load_tokenizer  # noqa: E402


def tight_loop(family: str, checkpoint: Path, train_csv: Path, steps: int) -> float:
    """samples/s of the bare compiled loop, after 5 steps that compile."""
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    fam = get_family(family)
    tokenizer = load_tokenizer(str(checkpoint))
    rows = load_split(train_csv, tokenizer, fam, SOURCE, TARGET).features[:BATCH]
    batch = {k: v.cuda() for k, v in collate(rows, tokenizer.pad_token_id).items()}
    cls = AutoModelForCausalLM if fam.is_causal else AutoModelForSeq2SeqLM
    model = cls.from_pretrained(str(checkpoint), attn_implementation="sdpa").cuda().train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    compiled = torch.compile(model)

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = compiled(**batch, use_cache=False).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    started = time.perf_counter()
    for _ in range(5):
        step()
    torch.cuda.synchronize()
    print(f"tight loop: compile and 5 steps {time.perf_counter() - started:.1f} s", flush=True)
    started = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    return steps * BATCH / (time.perf_counter() - started)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", default="t5", choices=MODELS)
    parser.add_argument("--steps", type=int, default=30, help="timed steps of the tight loop")
    parser.add_argument("--profile", action="store_true", help="also profile 20 steps of ours")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="tight_loop."))
    data = datasets(work, rows=BATCH * 60)["fixed"]
    checkpoint = make_base_checkpoint(args.family, work, tiny=False)
    print(f"tight loop samples/s {tight_loop(args.family, checkpoint, data[0], args.steps):.1f}", flush=True)
    torch.cuda.empty_cache()
    print("ours", run_ours(args.family, checkpoint, data, 40, "always", work), flush=True)
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            print("ours, profiled", run_ours(args.family, checkpoint, data, 20, "always", work), flush=True)
        averages = prof.key_averages()
        print(averages.table(sort_by="self_cuda_time_total", row_limit=30, max_name_column_width=70))
        print(averages.table(sort_by="cpu_time_total", row_limit=40, max_name_column_width=70))
    return 0


if __name__ == "__main__":
    sys.exit(main())
