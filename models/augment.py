"""Augmented copies of training rows: turns dropped or swapped, words deleted or repeated, speakers relabelled.

python -m models.augment --config spaces/bart.yaml --train-data data/train.csv --set data.augment.turn_drop=0.1 --show 5

Only the training split is augmented (the trainer passes an `Augment` to that split's loading alone), and
the copies are added beside the original rows, which stay as they were. Everything is drawn from one
generator seeded by training.seed: the same settings and seed give the same rows, and the tokenization
cache tells them apart by `Augment.key`. Speaker tags (`#Person1#`, `#PhoneNumber#`, ...) are never cut,
deleted or repeated, and a relabelling changes the dialogue and every summary alike.

Paraphrases come from a file that `python -m models.paraphrase` wrote once (a local model is slow): a
seeded `paraphrase_ratio` share of the training rows get their paraphrased dialogue added as `fname+para`,
with the row's summaries as they are.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from models.cli import run_cli
from models.config import AugmentConfig, TrainConfig
from models.errors import ConfigError, DataError

VERSION = 1  # part of the cache key: bump when the same settings would produce other rows
TAG = re.compile(r"#[^#\s]+#")  # #Person1#, #Address#: the dataset's placeholders, never cut
TURN = re.compile(r"^\s*(#[^#\s]+#)\s*:\s?(.*)$", re.S)  # "#Person1#: text"
# Korean particles take one form after a consonant-final word and another after a vowel: "1" (il) and "2" (i)
# differ, so a relabelled tag takes the other form (#Person1#은 -> #Person2#는).
PARTICLES = {"은": "는", "이": "가", "을": "를", "과": "와", "으로": "로"}
_FORMS = {**{c: (c, v) for c, v in PARTICLES.items()}, **{v: (c, v) for c, v in PARTICLES.items()}}
COPY_SUFFIX = re.compile(r"\+(aug\d+|para)$")  # a copy's fname is its original's and this
_SWAPPED_TAG = re.compile(r"#Person([12])#(으로|은|는|을|를|과|와|로|(?:이|가)(?![가-힣]))?")


class Augment:
    """Rows in, the same rows followed by their augmented copies out (copy fnames end in `+augN`, or `+para`)."""

    def __init__(self, settings: AugmentConfig, seed: int):
        self.settings, self.seed = settings, seed

    @property
    def key(self) -> str:
        """What makes the augmented rows what they are, for the tokenization cache."""
        paraphrases = _file_digest(self.settings.paraphrase_file) if self.settings.paraphrasing else ""
        return json.dumps({"version": VERSION, "seed": self.seed, **asdict(self.settings),
                           "paraphrases": paraphrases}, sort_keys=True)

    def __call__(self, rows: list[dict[str, str]]) -> list[dict[str, str]]:
        copies = []
        if self.settings.noising:
            rng = random.Random(self.seed)
            whole, part = divmod(self.settings.ratio, 1)
            for row in rows:
                for n in range(int(whole) + (rng.random() < part)):
                    copies.append(self.copy(row, rng, f"+aug{n + 1}"))
        if self.settings.paraphrasing:
            copies += self.paraphrased(rows)
        return rows + copies

    def paraphrased(self, rows: list[dict[str, str]]) -> list[dict[str, str]]:
        """The paraphrase file's dialogue for a seeded `paraphrase_ratio` share of the rows that have one that
        differs (a row the model could not rewrite kept its own), in the rows' order."""
        path = self.settings.paraphrase_file
        found = read_paraphrases(path)
        fnames = {fname for fname, _ in found}
        if not any(row["fname"] in fnames for row in rows):
            raise DataError(f"{path} paraphrases none of the training rows (no fname in common); make it from "
                            "this training data with python -m models.paraphrase --model FOLDER --train-data FILE")
        # A row's paraphrase is trained with the row's summary: one made from other data would mislabel it.
        stale = [row["fname"] for row in rows if row["fname"] in fnames and paraphrase_key(row) not in found]
        if stale:
            raise DataError(f"{path} was made from other data: {len(stale)} of its rows (e.g. {stale[0]}) have "
                            "another summary than the training row of that fname; make it again from this training "
                            "data with python -m models.paraphrase --model FOLDER --train-data FILE")
        usable = [row for row in rows
                  if found.get(paraphrase_key(row), row["dialogue"]).strip() != row["dialogue"].strip()]
        rng = random.Random(f"{self.seed}:paraphrase")  # apart from the noise's draws: turning one on moves no other
        chosen = sorted(rng.sample(range(len(usable)), round(self.settings.paraphrase_ratio * len(usable))))
        return [{**usable[i], "fname": f"{usable[i]['fname']}+para", "dialogue": found[paraphrase_key(usable[i])],
                 "augmented": "paraphrase"} for i in chosen]

    def copy(self, row: dict[str, str], rng: random.Random, suffix: str) -> dict[str, str]:
        """One augmented copy of a row; its `augmented` field names what changed (empty: nothing did)."""
        s = self.settings
        turns = [Turn.parse(line) for line in row["dialogue"].strip().split("\n")]
        kept = drop_turns(turns, s.turn_drop, rng)
        changed = ["turn_drop"] if len(kept) < len(turns) else []
        turns = kept
        if swap_turns(turns, s.turn_swap, rng):
            changed.append("turn_swap")
        noised = {kind for turn in turns for kind in turn.noise(s.token_delete, s.token_repeat, rng)}
        changed += [kind for kind in ("token_delete", "token_repeat") if kind in noised]
        copy = {**row, "fname": f"{row['fname']}{suffix}", "dialogue": "\n".join(str(t) for t in turns)}
        if s.speaker_swap and rng.random() < s.speaker_swap:
            changed.append("speaker_swap")
            copy = {k: swap_speakers(v) if k == "dialogue" or k.startswith("summary") else v for k, v in copy.items()}
        copy["augmented"] = ",".join(changed)
        return copy


@dataclass
class Turn:
    line: str  # as written, given back where nothing inside the turn changed
    speaker: str  # its tag, or "" for a line without one
    words: list[str]
    noised: bool = False

    @classmethod
    def parse(cls, line: str) -> "Turn":
        match = TURN.match(line)
        speaker, text = (match.group(1), match.group(2)) if match else ("", line)
        return cls(line, speaker, text.split(" "))

    def __str__(self) -> str:
        if not self.noised:
            return self.line
        text = " ".join(self.words)
        return f"{self.speaker}: {text}" if self.speaker else text

    def noise(self, delete: float, repeat: float, rng: random.Random) -> set[str]:
        """Each word deleted with probability `delete` or said twice with `repeat`; words holding a tag are
        left alone, and the turn keeps at least one word. Returns what was done."""
        out, done = [], set()
        for word in self.words:
            draw = rng.random() if (delete or repeat) and word and not TAG.search(word) else 1.0
            if draw < delete:
                done.add("token_delete")
            elif draw < delete + repeat:
                out += [word, word]
                done.add("token_repeat")
            else:
                out.append(word)
        if not any(out):  # every word went: the first stays
            out = [next((w for w in self.words if w), "")]
            if len([w for w in self.words if w]) == 1:
                done.discard("token_delete")
        if done:
            self.words, self.noised = out, True
        return done


def paraphrase_key(row: dict[str, str]) -> tuple[str, str]:
    """A row's fname and summary: what ties a paraphrase to its row, also where fnames repeat."""
    return row["fname"], row.get("summary", "").strip()


def read_paraphrases(path: str) -> dict[tuple[str, str], str]:
    """{paraphrase_key: paraphrased dialogue} of a file python -m models.paraphrase wrote."""
    from models.datafiles import read_table

    if not Path(path).is_file():
        raise DataError(f"paraphrase file {path} does not exist; write it with python -m models.paraphrase "
                        "--model FOLDER --train-data FILE and set data.augment.paraphrase_file to the file it names")
    return {paraphrase_key(row): row["dialogue"] for row in read_table(path, ("fname", "dialogue", "summary"))}


def _file_digest(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest() if Path(path).is_file() else ""


def augmenter(config: TrainConfig) -> Augment | None:
    """The training split's augmentation under `config`, or None where it is off."""
    settings = config.data.augment
    return Augment(settings, config.training.seed) if settings.active else None


def drop_turns(turns: list[Turn], rate: float, rng: random.Random) -> list[Turn]:
    """Each turn but the first and last left out with probability `rate`, unless it is its speaker's last
    one left: everyone the summary may name still speaks."""
    kept = list(range(len(turns)))
    for i in range(1, len(turns) - 1):
        if rate and rng.random() < rate and sum(turns[j].speaker == turns[i].speaker for j in kept) > 1:
            kept.remove(i)
    return [turns[i] for i in kept]


def swap_turns(turns: list[Turn], rate: float, rng: random.Random) -> bool:
    """Adjacent turns swapped with probability `rate` (a turn moves once at most); True if any was."""
    swapped, i = False, 0
    while rate and i < len(turns) - 1:
        if rng.random() < rate:
            turns[i], turns[i + 1] = turns[i + 1], turns[i]
            swapped, i = True, i + 2
        else:
            i += 1
    return swapped


def swap_speakers(text: str) -> str:
    """#Person1# and #Person2# relabelled as each other, with the particle after each tag in the new tag's form."""
    def relabel(match: re.Match) -> str:
        number, particle = 3 - int(match.group(1)), match.group(2) or ""
        if particle:
            particle = _FORMS[particle][number - 1]  # consonant form after 1, vowel form after 2
        return f"#Person{number}#{particle}"

    return _SWAPPED_TAG.sub(relabel, text)


def show(original: dict[str, str], copy: dict[str, str]) -> str:
    lines = [f"--- {original['fname']} ({copy['augmented'] or 'unchanged'})", "original:", original["dialogue"],
             "augmented:", copy["dialogue"]]
    if copy.get("summary") != original.get("summary"):
        lines += ["summary:", original["summary"], "augmented summary:", copy["summary"]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m models.augment",
                                     description="Show what a config's data.augment does to training rows.")
    parser.add_argument("--config", required=True, help="a YAML config or space file, e.g. spaces/bart.yaml")
    parser.add_argument("--train-data", help="training data (CSV, JSONL, Parquet, a datasets folder, hub:NAME:SPLIT)")
    parser.add_argument("--demo", action="store_true", help="the bundled Korean demo training data")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set data.augment.turn_drop=0.1 (repeatable)")
    parser.add_argument("--show", type=int, default=5, help="how many original/augmented pairs to print")
    args = parser.parse_args(argv)

    from models.datafiles import read_rows
    from models.train import parse_overrides

    config = TrainConfig.from_yaml(args.config).override(parse_overrides(args.set), source="command line")
    augment = augmenter(config)
    if augment is None:
        raise ConfigError(f"data.augment is off in {args.config} (every rate is 0, or ratio is, and "
                          "paraphrase_ratio is 0); turn one on, e.g. --set data.augment.turn_drop=0.1")
    if args.demo:
        from models.demo import demo_assets

        train = args.train_data or demo_assets(config.model.architecture).train
    elif args.train_data:
        train = args.train_data
    else:
        raise ConfigError("no data given; pass --train-data, or --demo")
    rows, _ = read_rows(train, need_summary=True, columns=config.data.columns)
    copies = augment(rows)[len(rows):]
    originals = {row["fname"]: row for row in rows}
    changed = [c for c in copies if c["augmented"]]
    settings = ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}"
                         for k, v in asdict(config.data.augment).items() if v)
    print(f"{len(rows)} training rows of {train} + {len(copies)} augmented copies ({len(copies) - len(changed)} "
          f"unchanged): {settings}, seed {config.training.seed}")
    for copy in changed[:args.show]:
        print(show(originals[COPY_SUFFIX.sub("", copy["fname"])], copy))
    return 0


if __name__ == "__main__":
    run_cli(main)
