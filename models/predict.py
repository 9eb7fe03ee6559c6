"""python -m models.predict --checkpoint outputs/t5-small/best --test-data data/test.csv --output submission.csv

Writes `fname,summary` for every test row with a checkpoint saved by training or by the search, or with
any Hugging Face checkpoint folder given its family (`--family bart`). The test data may be in any form
training reads; its identifier (fname, id, or the column --columns maps fname to) fills the `fname` column,
the header a competition's submission has.
"""
from __future__ import annotations

import argparse
import csv
import os
from pathlib import Path

from models.cli import quiet_libraries, run_cli
from models.errors import ConfigError, OutputError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m models.predict", description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True,
                        help="a best/ folder written by training, or a Hugging Face model or LoRA adapter folder")
    parser.add_argument("--family", help="the family of a folder not written by this project (bart, t5, gpt2, ...)")
    parser.add_argument("--test-data", required=True,
                        help="fname (or id), dialogue: CSV, TSV, JSON Lines, Parquet, a save_to_disk folder, or "
                             "hub:NAME[:CONFIG]:SPLIT (a summary column is ignored)")
    parser.add_argument("--columns", metavar="OURS=THEIRS,...",
                        help="the test data's column names, e.g. dialogue=text,fname=doc_id (default: the "
                             "checkpoint's data.columns)")
    parser.add_argument("--output", default="submission.csv")
    parser.add_argument("--num-beams", type=int, help="default: what the checkpoint was evaluated with")
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args(argv)
    check_positive({"--batch-size": args.batch_size, "--num-beams": args.num_beams})
    output = Path(args.output)
    check_output_file(output)  # before the model generates for minutes
    quiet_libraries()

    import torch

    from models.data import load_split
    from models.generate import generate, load_checkpoint

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model, tokenizer, family, config = load_checkpoint(args.checkpoint, device, args.family)
    t = config.training
    columns = config.data.columns if args.columns is None else args.columns
    split = load_split(args.test_data, tokenizer, family, t.max_source_length, t.max_target_length,
                       need_summary=False, columns=columns)
    summaries = generate(model, tokenizer, family, split.features, num_beams=args.num_beams or t.num_beams,
                         max_new_tokens=t.generation_max_length, batch_size=args.batch_size, device=device)
    write_submission(output, split.fnames, summaries)
    skipped = f" ({split.skipped} rows with an empty dialogue skipped)" if split.skipped else ""
    print(f"wrote {len(summaries)} summaries to {output}{skipped}")
    return 0


def check_positive(options: dict[str, int | None]) -> None:
    for option, value in options.items():
        if value is not None and value < 1:
            raise ConfigError(f"{option} {value}: use 1 or more")


def check_output_file(output: Path, option: str = "--output") -> None:
    """A submission path that cannot take the file, refused before any work is done."""
    if output.is_dir():
        raise OutputError(f"{option} {output} is a folder; give a file name, e.g. {output / 'submission.csv'}")
    folder = next(p for p in output.absolute().parents if p.exists())  # the nearest that exists
    if not folder.is_dir():
        raise OutputError(f"{option} {output}: {folder} is a file, not a folder; give a path in a folder")
    if not os.access(folder, os.W_OK):
        raise OutputError(f"{option} {output}: {folder} cannot be written in; give a path in a folder you can write")


def write_submission(output: Path, fnames: list[str], summaries: list[str]) -> None:
    """`fname,summary` rows, written whole or not at all."""
    tmp = output.with_name(f".{output.name}.{os.getpid()}")
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        with tmp.open("w", encoding="utf-8", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["fname", "summary"])
            writer.writerows(zip(fnames, summaries))
        tmp.replace(output)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"cannot write {output} ({err.strerror}); give a path in a folder you can write") from None


if __name__ == "__main__":
    run_cli(main)
