"""python -m search.ensemble --study NAME --top K [--how mbr|soup|both] --val-data dev.csv [--test-data test.csv]

A study's best K trials combined, each way scored on the dev data against the best single trial: MBR voting
over their summaries (any families), and a greedy soup of their weights (one base checkpoint and
architecture). The figures go to outputs/{study}/ensemble.json and to the study's user attribute `ensemble`;
with --test-data, the better ensemble on dev writes the submission.
"""
from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import optuna

from models import ConfigError, check_output_file, quiet_libraries, run_cli
from search.names import study_folder
from search.objective import top_trials
from search.storage import check_url, default_url, hide_passwords, open_storage, redact, study_names

HOW = ("mbr", "soup", "both")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m search.ensemble", description=__doc__.splitlines()[0])
    parser.add_argument("--study", required=True, help="the study whose best trials are combined")
    parser.add_argument("--storage", default=default_url(), help="default $SUMSWEEP_STORAGE, else sqlite:///studies.db")
    parser.add_argument("--top", type=int, default=3, help="how many of the best trials (default 3); the search "
                                                         "must have kept their checkpoints (search.run --keep-top K)")
    parser.add_argument("--how", choices=HOW, default="both", help="MBR voting, a greedy weight soup, or both")
    parser.add_argument("--val-data", help="dev data, every figure is measured on it (default: the best trial's)")
    parser.add_argument("--test-data", help="data with fname,dialogue: the better ensemble on dev summarizes it")
    parser.add_argument("--output", default="submission.csv", help="where --test-data's summaries go")
    parser.add_argument("--beams", type=int, default=1,
                        help="MBR candidates per model: its N best beams (default 1, its own summary)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--output-root", default="outputs", help="where the study's outputs are")
    return parser


def load_study(storage_url: str, name: str) -> optuna.Study:
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # the storage's heartbeat
    storage = open_storage(storage_url)
    if name not in study_names(storage):
        known = ", ".join(study_names(storage)) or "none"
        raise ConfigError(f"no study '{name}' in {redact(storage_url)} (studies there: {known}); "
                          "check --study and --storage")
    return optuna.load_study(study_name=name, storage=storage)


def kept_trials(study: optuna.Study, top: int) -> list[optuna.trial.FrozenTrial]:
    """The study's `top` best completed trials whose checkpoints are on disk (at least 2), best first."""
    best = top_trials(study, top)
    kept = [t for t in best if t.user_attrs.get("checkpoint") and Path(t.user_attrs["checkpoint"]).is_dir()]
    if len(kept) < 2:
        have = f"only #{kept[0].number}'s is" if kept else "none is"
        raise ConfigError(f"--top {top} needs the checkpoints of study {study.study_name}'s {top} best trials, and "
                          f"{have} on disk; run its search with --keep-top {top} (new trials keep theirs)")
    if len(kept) < len(best):
        gone = ", ".join(f"#{t.number}" for t in best if t not in kept)
        print(f"note: the checkpoints of {gone} are gone; combining the {len(kept)} kept")
    return kept


def soup_members(trials: list[optuna.trial.FrozenTrial], configs: list) -> tuple[list[int], dict[int, str]]:
    # configs: each trial's TrainConfig, as its checkpoint records it
    """Which trials can be averaged with the best (indices), and why the others cannot."""
    from models import soup_problem

    members, refused = [0], {}
    for i, config in enumerate(configs[1:], start=1):
        problem = soup_problem(configs[0], config)
        if problem:
            refused[i] = f"#{trials[i].number} {problem}"
        else:
            members.append(i)
    return members, refused


def line(label: str, value: float, note: str = "") -> str:
    return f"  {label:<30} {value:.4f}" + (f"  ({note})" if note else "")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    hide_passwords(sys.argv)
    check_url(args.storage)
    if args.top < 2:
        raise ConfigError(f"--top {args.top} is no ensemble; use 2 or more")
    if args.beams < 1:
        raise ConfigError(f"--beams {args.beams}: use 1 or more candidates per model")
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size {args.batch_size}: use 1 or more")
    if args.test_data:
        check_output_file(Path(args.output))  # before every kept model generates
    quiet_libraries()
    study = load_study(args.storage, args.study)
    metric = study.user_attrs.get("metric", "mean")
    trials = kept_trials(study, args.top)
    val, test = args.val_data or trials[0].user_attrs.get("val_data"), args.test_data
    if not val:
        raise ConfigError(f"trial #{trials[0].number} recorded no dev data; pass --val-data (the figures are "
                          "measured on it)")

    from models import (checkpoint_candidates, greedy_soup, mbr_vote, read_metadata, rouge, rouge_agreement, save_soup,
                        write_submission)

    folders = [Path(t.user_attrs["checkpoint"]) for t in trials]
    configs = [read_metadata(folder) for folder in folders]
    tokenize = configs[0].training.rouge_tokenize
    record: dict = {"study": args.study, "metric": metric, "val_data": str(val), "top": args.top,
                    "trials": [{"number": t.number, "value": t.value, "checkpoint": str(f)}
                               for t, f in zip(trials, folders)]}
    members, refused = soup_members(trials, configs) if args.how != "mbr" else ([], {})
    soup_refusal = None
    if args.how != "mbr" and len(members) < 2:
        soup_refusal = (f"no trial of the best {len(trials)} can be averaged with #{trials[0].number} "
                        f"({'; '.join(refused.values())})")
        if args.how == "soup":
            raise ConfigError(f"{soup_refusal}; use --how mbr, or a study of one base checkpoint and method")
    print(f"study {args.study}: combining trials " + ", ".join(f"#{t.number} ({t.value:.4f})" for t in trials)
          + f"; dev data {val}")

    # Every model's summaries of the dev (and test) rows; MBR votes over all of them, the soup needs the best's.
    datas = [(val, True)] + ([(test, False)] if test else [])
    voters = folders if args.how != "soup" else folders[:1]
    outputs = [checkpoint_candidates(folder, datas, batch_size=args.batch_size,
                                     num_return=args.beams if args.how != "soup" else 1) for folder in voters]
    dev_split = outputs[0][0][0]
    refs = dev_split.references
    # A model's best beam is its own summary where its beam search was at least --beams wide; else generate it.
    if args.beams > configs[0].training.num_beams and args.how != "soup":
        single = checkpoint_candidates(folders[0], [(val, True)], batch_size=args.batch_size)[0][1]
    else:
        single = outputs[0][0][1]
    best = rouge([c[0] for c in single], refs, tokenize)
    record["best_single"] = {"trial": trials[0].number, **best}
    lines = [f"dev ROUGE ({metric}) on {len(refs)} rows:", line(f"best single trial #{trials[0].number}", best[metric])]
    test_summaries: dict[str, list[str]] = {}
    test_fnames = outputs[0][1][0].fnames if test else []

    if args.how != "soup":
        weights = [t.value for t in trials]
        vote = mbr_vote([o[0][1] for o in outputs], weights, rouge_agreement(tokenize))
        scores = rouge(vote.summaries, refs, tokenize)
        picks = {f"#{trials[m].number}": vote.picks.count(m) / len(vote.picks) for m in range(len(trials))}
        record["mbr"] = {"trials": [t.number for t in trials], "beams": args.beams, **scores,
                         "gain": scores[metric] - best[metric], "picked_from": picks}
        share = ", ".join(f"{n} {100 * p:.0f}%" for n, p in picks.items())
        lines.append(line(f"MBR over {len(trials)} trials x {args.beams} beam{'s' * (args.beams > 1)}", scores[metric],
                          f"{scores[metric] - best[metric]:+.4f}; picked from {share}"))
        if test:
            test_summaries["mbr"] = mbr_vote([o[1][1] for o in outputs], weights, rouge_agreement(tokenize)).summaries

    soup_folder = study_folder(Path(args.output_root), args.study) / "soup"
    if soup_refusal:
        record["soup"] = {"refused": soup_refusal}
        lines.append(f"  greedy soup: not made: {soup_refusal}")
    elif args.how != "mbr":
        soup = greedy_soup([folders[i] for i in members], val, metric=metric, batch_size=args.batch_size,
                           first_metrics=best)
        kept = [trials[members[i]].number for i in soup.members]
        dropped = [f"#{trials[members[t['index']]].number} ({t[metric]:.4f} with it)" for t in soup.tried
                   if not t["kept"]]
        record["soup"] = {"members": kept, "left_out": dropped + list(refused.values()), **soup.metrics,
                          "gain": soup.metrics[metric] - best[metric], "checkpoint": str(soup_folder)}
        name = " + ".join(f"#{n}" for n in kept)
        why = "; ".join(filter(None, [f"left out, dev dropped: {', '.join(dropped)}" if dropped else "",
                                      f"cannot be averaged: {'; '.join(refused.values())}" if refused else ""]))
        lines.append(line(f"greedy soup {name}", soup.metrics[metric],
                          f"{soup.metrics[metric] - best[metric]:+.4f}{'; ' + why if why else ''}"))
        if test:
            test_summaries["soup"] = soup.summaries(test, batch_size=args.batch_size)
        save_soup(soup, soup_folder)

    print("\n".join(lines))
    if test:
        winner = max(test_summaries, key=lambda how: record[how][metric])
        write_submission(Path(args.output), test_fnames, test_summaries[winner])
        record["submission"] = {"path": str(args.output), "from": winner}
        print(f"wrote {len(test_fnames)} summaries of {test} to {args.output} ({winner}, the better ensemble on dev)")
    folder = study_folder(Path(args.output_root), args.study)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ensemble.json").write_text(json.dumps(record, indent=2, ensure_ascii=False), encoding="utf-8")
    study.set_user_attr("ensemble", record)
    print(f"recorded in {folder / 'ensemble.json'} and the study's user attribute 'ensemble'"
          + (f"; the soup's checkpoint: {soup_folder}" if "checkpoint" in record.get("soup", {}) else ""))
    return 0


if __name__ == "__main__":
    run_cli(main)
