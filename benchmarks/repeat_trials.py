"""Is a compiled trial slower when it is not the process's first? Trials of one model, in one process, in order.

A search worker runs trial after trial in one process, and `trainer_vs_hf.py` runs the HF Trainer
before ours. This runs `trainer_vs_hf.run_ours` (compile always) and `run_hf` in the order asked, on
the fixed-length rows, and prints each one's samples/s and first-step seconds.

    python3 benchmarks/repeat_trials.py --family bart --order ours,hf,ours,ours --out results/repeat_trials.json
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.methods import MODELS, make_base_checkpoint, stamp, write_json  # noqa: E402
from benchmarks.trainer_vs_hf import BATCH, datasets, run_hf, run_ours  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", default="bart", choices=MODELS)
    parser.add_argument("--order", default="ours,hf,ours,ours", help="ours / hf, comma-separated")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--tiny", action="store_true", help="tiny model, for a CPU smoke run")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="repeat_trials."))
    data = datasets(work, rows=BATCH * args.steps)["fixed"]
    checkpoint = make_base_checkpoint(args.family, work, args.tiny)
    runs = []
    for i, what in enumerate(args.order.split(",")):
        if what == "hf":
            run = run_hf(args.family, checkpoint, data[0], args.steps, min(10, args.steps // 2), work)
        else:
            run = run_ours(args.family, checkpoint, data, args.steps, "always", work / f"trial-{i}")
        runs.append({"run": what, **run})
        print(i, what, f"{run['samples_per_s']:.1f} samples/s", f"first step {run.get('first_step_seconds', 0):.1f} s",
              flush=True)
        write_json(Path(args.out), stamp({"family": args.family, "steps": args.steps, "runs": runs}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
