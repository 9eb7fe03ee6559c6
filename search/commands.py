"""sumsweep COMMAND [options]: one console command over the `python -m` entry points.

`sumsweep search --trials 10 --demo` is `python -m search.run --trials 10 --demo`; every command keeps
its own options and help (`sumsweep search --help`).
"""
from __future__ import annotations

import argparse
import importlib
import sys

from models import run_cli

# name -> (module whose main(argv) runs it, one line for the list). Modules are imported only when
# chosen: `sumsweep --help` should not wait for torch.
COMMANDS = {
    "search": ("search.run", "an Optuna study over a family's space file"),
    "train": ("models.train", "one training run with a config file"),
    "predict": ("models.predict", "fname,summary for every row of a test CSV"),
    "score": ("models.score", "ROUGE-1/2/L F1 of predictions against references"),
    "sweep": ("search.sweep", "a W&B sweep file from a space"),
    "agent": ("search.agent", "the program a W&B sweep's agent runs"),
    "collect": ("search.collect", "every trial of every study as one CSV row"),
    "ensemble": ("search.ensemble", "MBR voting and a weight soup over a study's best trials"),
    "refit": ("search.refit", "the best trial's config trained again on train + dev"),
    "export": ("search.export", "a study's best trial as a Hugging Face model folder with a model card"),
}


def build_parser() -> argparse.ArgumentParser:
    modules = ", ".join(f"{name} = {module}" for name, (module, _) in COMMANDS.items())
    parser = argparse.ArgumentParser(prog="sumsweep", description="One command over sumsweep's programs.",
                                     epilog=f"`sumsweep COMMAND --help` shows a command's options. Each is also "
                                            f"`python -m MODULE`: {modules}.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (_, summary) in COMMANDS.items():
        commands.add_parser(name, help=summary, add_help=False)  # the command's own parser shows its help
    return parser


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        build_parser().print_help(sys.stdout if argv else sys.stderr)
        raise SystemExit(0 if argv else 2)
    command, rest = argv[0], argv[1:]  # the rest is the command's own options
    if command not in COMMANDS:
        print(f"error: unknown command '{command}'; use one of {', '.join(COMMANDS)} (sumsweep --help)",
              file=sys.stderr)
        raise SystemExit(2)
    module = importlib.import_module(COMMANDS[command][0])
    run_cli(lambda: module.main(rest))


if __name__ == "__main__":
    main()
