"""Is a compiled graph reused by the next trial? First-step seconds of compiled trials, against eager.

Runs `models.trainer.train` with `training.compile: always` three times on the same data and shapes
(`--steps` each, 30 by default): trial 1 in a fresh process with an empty inductor cache, trial 2 in
the same process (dynamo's in-memory cache), trial 3 in a new process that finds only inductor's
on-disk cache (as a new worker of the same study does). An eager trial is the baseline. The first
optimizer step is where compiling happens (`Result.first_step_seconds`); each trial also reports
`compile_seconds`, its training seconds less its samples at its steady rate, which also counts any
retrace at a later batch.

    python3 benchmarks/compile_cache.py --family gpt2 --out benchmarks/results/compile_cache.json
    python3 benchmarks/compile_cache.py --family gpt2 --size base --out ...   # gpt2-sized model, on a GPU
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.methods import MODELS, make_base_checkpoint, stamp, write_json  # noqa: E402


def trials(family: str, checkpoint: str, modes: list[str], steps: int, work: Path) -> list[dict]:
    """One process: a trial per mode, in order; their first-step and throughput figures."""
    from models.config import TrainConfig
    from models.demo import demo_assets
    from models.trainer import train
    from search.space import SPACES_DIR

    assets = demo_assets(family)
    out = []
    for i, mode in enumerate(modes):
        config = TrainConfig.from_yaml(SPACES_DIR / f"{family}.yaml").override({
            "model.checkpoint": checkpoint, "training.compile": mode, "training.max_steps": steps,
            "training.eval_steps": steps, "training.eval_subset": 16, "training.num_beams": 1,
            "training.generation_max_length": 16, "training.gradient_accumulation_steps": 1,
            "training.rouge_tokenize": "whitespace"})  # the score is not what is measured
        result = train(config, assets.train, assets.dev, work / f"{os.getpid()}-{i}", progress=False)
        steady_seconds = result.steps * config.training.batch_size / result.samples_per_second
        out.append({"compile": mode, "first_step_seconds": result.first_step_seconds,
                    "compile_seconds": max(result.train_seconds - steady_seconds, 0.0),
                    "train_seconds": result.train_seconds, "samples_per_second": result.samples_per_second,
                    "setup_seconds": result.setup_seconds})
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", default="gpt2", choices=MODELS)
    parser.add_argument("--size", default="tiny", choices=["tiny", "base"],
                        help="the family's tiny demo checkpoint, or a base-sized one with random weights")
    parser.add_argument("--steps", type=int, default=30,
                        help="per trial; samples/s counts the last 90%% (on a GPU, 200 gives a window of seconds)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--child", help=argparse.SUPPRESS)  # modes for one process, comma-separated
    parser.add_argument("--checkpoint", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="compile_cache."))
    if args.child:
        print(json.dumps(trials(args.family, args.checkpoint, args.child.split(","), args.steps, work)))
        return 0
    if args.size == "base":
        checkpoint = str(make_base_checkpoint(args.family, work, tiny=False))
    else:
        from models.demo import demo_assets

        checkpoint = str(demo_assets(args.family).checkpoint)
    # A cache of our own: the first trial must find it empty, the third must find what the first wrote.
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(work / "inductor")}

    def process(modes: str) -> list[dict]:
        done = subprocess.run([sys.executable, __file__, "--family", args.family, "--out", args.out, "--child", modes,
                               "--checkpoint", checkpoint, "--steps", str(args.steps)],
                              env=env, capture_output=True, text=True)
        if done.returncode:
            raise SystemExit(f"the trials {modes} failed (exit {done.returncode}):\n{done.stderr[-4000:]}")
        return json.loads(done.stdout.strip().splitlines()[-1])

    eager, first, second = process("never,always,always")
    third, = process("always")
    runs = {"eager": eager, "first_compiled": first, "same_process": second, "new_process_disk_cache": third}
    for name, run in runs.items():
        print(f"{name:24} first step {run['first_step_seconds']:6.1f} s   compiling {run['compile_seconds']:6.1f} s   "
              f"{run['samples_per_second']:7.1f} samples/s")
    ratios = {name: runs[name]["compile_seconds"] / first["compile_seconds"]
              for name in ("same_process", "new_process_disk_cache")}
    print("compiling against the first compiled trial's:", {k: round(v, 3) for k, v in ratios.items()})
    write_json(Path(args.out), stamp({"family": args.family, "size": args.size, "runs": runs,
                                      "ratio_to_first_compile": ratios}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
