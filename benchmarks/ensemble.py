"""Do ensembles of a study's best trials beat its best trial? MBR voting over the top 3 and top 5, and the greedy soup.

A study of `--trials` trials (spaces/bart.yaml as shipped, method full, ROUGE on whitespace tokens) on the demo
data (1,000 train / 200 dev rows) from one random-init bart-base-sized checkpoint, keeping the 5 best
checkpoints (`--keep-top 5`); then `search.ensemble` as a user runs it: `--top 3 --how mbr` and
`--top 5 --how both`. Every figure is dev ROUGE on the same 200 rows, against the best single trial's; the
soup's members were chosen on those rows too (as the trials were).

    python3 benchmarks/ensemble.py --out benchmarks/results/ensemble.json                 # GPU, bart-base size
    python3 benchmarks/ensemble.py --tiny --trials 3 --tops 2 --set training.max_steps=20 --out /tmp/e.json  # CPU toy
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def run(module: str, *args: str) -> float:
    """`python -m module args` from the repository, as a user runs it; its seconds."""
    started = time.time()
    subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, check=True)
    return time.time() - started


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--tops", type=int, nargs="+", default=[3, 5], help="MBR over each; the soup over the last")
    parser.add_argument("--beams", type=int, default=1, help="MBR candidates per model")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="passed to search.run")
    parser.add_argument("--tiny", action="store_true", help="the tiny demo checkpoint, for a CPU toy run")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    from benchmarks.methods import stamp, write_json
    from benchmarks.vs_hf_search import checkpoint, study_space
    from models.demo import demo_assets

    work = Path(tempfile.mkdtemp(prefix="ensemble."))
    space, ckpt, assets = study_space(work), checkpoint(work, args.tiny), demo_assets("bart")
    url, outputs = f"sqlite:///{work / 'studies.db'}", work / "outputs"
    common = ["--study", "bench", "--storage", url, "--output-root", str(outputs)]
    search_seconds = run("search.run", "--space", str(space), "--train-data", str(assets.train), "--val-data",
                         str(assets.dev), "--checkpoint", str(ckpt), "--method", "full", "--trials", str(args.trials),
                         "--seed", str(args.seed), "--keep-top", str(max(args.tops)), "--no-wandb", *common,
                         *[word for pair in args.set for word in ("--set", pair)])
    body = {"settings": {"trials": args.trials, "tops": args.tops, "beams": args.beams, "seed": args.seed,
                         "space": "spaces/bart.yaml, rouge_tokenize whitespace, method full", "tiny": args.tiny,
                         "overrides": args.set, "dev_rows": 200},
            "search_seconds": search_seconds, "ensembles": {}}
    for top in args.tops:
        how = "both" if top == args.tops[-1] else "mbr"
        seconds = run("search.ensemble", *common, "--top", str(top), "--how", how, "--beams", str(args.beams),
                      "--val-data", str(assets.dev))
        record = json.loads((outputs / "bench" / "ensemble.json").read_text(encoding="utf-8"))
        body["ensembles"][f"top{top}"] = {"seconds": seconds, **record}
    import optuna

    study = optuna.load_study(study_name="bench", storage=url)
    body["trials"] = [{"number": t.number, "state": t.state.name, "value": t.value} for t in study.trials]
    last = body["ensembles"][f"top{args.tops[-1]}"]
    body["summary"] = {"best_single": last["best_single"]["mean"],
                       **{f"mbr_top{top}": body["ensembles"][f"top{top}"]["mbr"]["mean"] for top in args.tops},
                       "soup": last["soup"].get("mean"), "soup_members": last["soup"].get("members"),
                       "soup_refused": last["soup"].get("refused")}
    write_json(Path(args.out), stamp(body))
    print(json.dumps(body["summary"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
