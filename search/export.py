"""python -m search.export --study NAME --out DIR [--merge-lora] [--push-to-hub REPO]

The best trial of a study as a Hugging Face model folder (tokenizer included) with a model card, README.md.
The folder appears whole or not at all: it is written beside DIR and renamed into place.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import warnings
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from models import CheckpointError, ConfigError, OutputError, quiet_libraries, run_cli
from search.storage import (DEFAULT_URL, STORAGE_ENV, check_url, default_url, hide_passwords, open_storage, redact,
                            study_names)


CONTENTS = {"model": "the model", "adapter": "the LoRA adapter", "merged": "the model with its LoRA merged in"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m search.export", description=__doc__.splitlines()[2])
    parser.add_argument("--study", required=True, help="the study whose best trial is exported")
    parser.add_argument("--out", required=True, help="the folder to write (new or empty, or any with --force)")
    parser.add_argument("--storage", default=default_url(), help=f"storage URL (default ${STORAGE_ENV}, else {DEFAULT_URL})")
    parser.add_argument("--merge-lora", action="store_true",
                        help="merge a LoRA adapter into the base weights (default: the adapter folder as trained)")
    parser.add_argument("--force", action="store_true", help="replace --out if it holds files")
    parser.add_argument("--push-to-hub", metavar="REPO", help="then upload the folder to this Hugging Face repo")
    return parser


def best_trial(storage_url: str, name: str) -> tuple[optuna.Study, FrozenTrial]:
    if storage_url.startswith("sqlite:///") and not Path(storage_url.removeprefix("sqlite:///")).is_file():
        raise ConfigError(f"storage file {storage_url.removeprefix('sqlite:///')} does not exist; pass the --storage "
                          "your search wrote to")  # opening it would create an empty one
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with warnings.catch_warnings():  # the heartbeat is marked experimental; a reader has no use for the warning
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        storage = open_storage(storage_url)
    names = study_names(storage)
    if name not in names:
        held = f"it holds {', '.join(sorted(names)[:10])}{' ...' * (len(names) > 10)}" if names else "it holds no study"
        raise ConfigError(f"no study '{name}' in {redact(storage_url)} ({held}); check --study and --storage")
    study = optuna.load_study(study_name=name, storage=storage)
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        counts = Counter(trial.state.name.lower() for trial in study.get_trials(deepcopy=False))
        held = ", ".join(f"{n} {state}" for state, n in counts.items()) or "no trial"
        raise ConfigError(f"study '{name}' has no completed trial yet ({held}); run its search until one completes")
    return study, study.best_trial


def checkpoint_of(trial: FrozenTrial) -> Path:
    path = trial.user_attrs.get("checkpoint")
    if not path:
        raise CheckpointError(f"trial #{trial.number} recorded no checkpoint, so there is nothing to export; "
                              "run its config again with models.train")
    if not Path(path, "config.json").is_file() and not Path(path, "adapter_config.json").is_file():
        raise CheckpointError(f"trial #{trial.number}'s checkpoint {path} is gone; export on the machine whose "
                              "--output-root holds it, or run the trial's config again with models.train")
    return Path(path)


def check_out(out: Path, force: bool, checkpoint: Path | None = None) -> None:
    if out.exists() and not out.is_dir():
        raise OutputError(f"--out {out} is a file; give a folder path")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise OutputError(f"--out {out} is not empty; pass --force to replace it, or give a new folder")
    if checkpoint is not None and (out.resolve() == checkpoint.resolve() or out.resolve() in checkpoint.resolve().parents):
        raise OutputError(f"--out {out} holds the trial's checkpoint {checkpoint}; give a folder outside it")


def check_repo(repo: str | None) -> None:
    if repo is None:
        return
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo)
    except HFValidationError as err:
        raise ConfigError(f"--push-to-hub '{repo}' is no repo id ({str(err).splitlines()[0]}); "
                          "write it as USER/NAME") from None


def write_folder(out: Path, fill: Callable[[Path], str]) -> str:
    """`fill(folder)` writes into a temporary folder beside `out`, which then replaces `out`: a failure or
    Ctrl-C on the way leaves `out` as it was. Returns what `fill` returns."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.export-"))
    try:
        filled = fill(tmp)
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it private; a model folder is read like any other
        if out.is_dir() and any(out.iterdir()):  # --force: the old one goes only once the new one is whole
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            os.rename(out, old)
            os.rename(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)  # over an empty folder too
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return filled


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def push(folder: Path, repo: str) -> str:
    """Upload the folder to a Hugging Face model repo (created if missing); its URL. An unreachable hub is
    said at once: huggingface_hub would retry for a long while first."""
    from models import hub_reachable

    again = f"push it from a machine that reaches the hub with: hf upload {repo} {folder}"
    if not hub_reachable():
        raise OutputError(f"{folder} is written but not pushed: the Hugging Face hub cannot be reached from here; "
                          f"{again}")
    from huggingface_hub import HfApi

    api = HfApi()
    try:
        url = api.create_repo(repo, exist_ok=True).url
        api.upload_folder(repo_id=repo, folder_path=folder, commit_message="sumsweep export")
    except Exception as err:  # no login, no right to the repo, the hub's own errors: one line, the folder kept
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise OutputError(f"{folder} is written but not pushed to {repo} ({reason[:200]}); {again}") from None
    return str(url)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    hide_passwords(sys.argv)
    check_url(args.storage)
    out = Path(args.out)
    check_out(out, args.force)
    check_repo(args.push_to_hub)
    study, trial = best_trial(args.storage, args.study)
    checkpoint = checkpoint_of(trial)
    check_out(out, args.force, checkpoint)
    quiet_libraries()

    from models import export_checkpoint
    from search.card import model_card

    def fill(folder: Path) -> str:
        written = export_checkpoint(checkpoint, folder, merge_lora=args.merge_lora)
        (folder / "README.md").write_text(model_card(study, trial, written), encoding="utf-8")
        return written

    written = write_folder(out, fill)
    method = trial.user_attrs.get("method", "?")
    note = " (fully fine-tuned: nothing to merge)" if args.merge_lora and method == "full" else ""
    print(f"exported trial #{trial.number} of study {args.study} ({method}, "
          f"{study.user_attrs.get('metric', 'value')} {trial.value:.4f}) to {out}: {CONTENTS[written]}, "
          f"its tokenizer and README.md{note}")
    if args.push_to_hub:
        print(f"pushed to {push(out, args.push_to_hub)}")
    return 0


if __name__ == "__main__":
    run_cli(main)
