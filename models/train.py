"""python -m models.train --config spaces/bart.yaml --train-data data/train.csv --val-data data/dev.csv

One training run with a config file's settings (a space file's `search:` block is ignored).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from models.cli import parse_overrides, quiet_libraries, run_cli
from models.config import METHODS, TrainConfig
from models.errors import ConfigError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m models.train", description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="a YAML config or space file, e.g. spaces/t5.yaml")
    parser.add_argument("--train-data", help="training data with fname (or id), dialogue, summary: CSV, TSV, JSON "
                        "Lines, Parquet, a save_to_disk folder, or hub:NAME[:CONFIG]:SPLIT")
    parser.add_argument("--val-data", help="dev data, in any of the same forms")
    parser.add_argument("--columns", metavar="OURS=THEIRS,...",
                        help="your data's column names, e.g. dialogue=text,summary=highlights,fname=doc_id "
                             "(overrides data.columns)")
    parser.add_argument("--demo", action="store_true",
                        help="use the bundled Korean demo data and the family's tiny checkpoint (built on first use)")
    parser.add_argument("--checkpoint", help="hub id or local folder; overrides model.checkpoint")
    parser.add_argument("--method", choices=METHODS, help="overrides the qlora.use_* keys")
    parser.add_argument("--output-dir", help="default outputs/{model_name}")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override any config key, e.g. --set training.num_epochs=1 (repeatable)")
    args = parser.parse_args(argv)
    quiet_libraries()

    from models.datafiles import read_rows

    config = TrainConfig.from_yaml(args.config)
    overrides = parse_overrides(args.set)
    if args.method:
        overrides["method"] = args.method
    if args.columns is not None:
        overrides["data.columns"] = args.columns
    train_path, val_path = args.train_data, args.val_data
    if args.demo:
        from models.demo import DEMO_OVERRIDES, demo_assets

        assets = demo_assets(config.model.architecture)
        overrides = {**DEMO_OVERRIDES, "model.checkpoint": str(assets.checkpoint), **overrides}
        train_path, val_path = train_path or assets.train, val_path or assets.dev
    if args.checkpoint:
        overrides["model.checkpoint"] = args.checkpoint
    if not (train_path and val_path):
        raise ConfigError("no data given; pass --train-data and --val-data, or --demo")
    config = config.override(overrides, source="command line")
    for path in (train_path, val_path):  # data that cannot be read fails here, before a model loads
        read_rows(path, need_summary=True, columns=config.data.columns)
    from models import trainer  # torch and transformers: seconds to import

    output_dir = Path(args.output_dir or Path("outputs") / trainer.model_name(config.model.checkpoint))

    trainer.train(config, train_path, val_path, output_dir)
    print((output_dir / "results" / "summary.txt").read_text(encoding="utf-8"), end="")
    return 0


if __name__ == "__main__":
    run_cli(main)
