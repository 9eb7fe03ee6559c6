"""Behaviour of the synthetic demo dataset that training, benchmarks and tests rely on."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest

from models.demo_data import generate_rows, write_demo_data

ROWS = {"train": 300, "dev": 60, "test": 40}
SIZES = {f"n_{split}": n for split, n in ROWS.items()}

# Numbers with their counter (3시, 30분, 45,000원, 4명, 2박, 143번...) and full clock times.
NUMBER = re.compile(r"\d[\d,]*(?:[시분원명일년주박번])?")
CLOCK = re.compile(r"(?:오전|오후|낮|저녁) \d+시(?: \d+분)?")

# A phrase that only the summaries of one topic use.
TOPIC_MARKERS = {
    "appointment": "만나",
    "restaurant": "예약한다",
    "shopping": "사기로",
    "doctor": "처방",
    "travel": "여행",
    "interview": "면접",
    "refund": "반품",
    "exchange": "교환한다",
    "directions": "가는 길",
    "birthday": "생일 파티",
    "homework": "도와 달라고",
}


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo")
    write_demo_data(out, seed=0, **SIZES)
    return out


@pytest.fixture(scope="module")
def rows() -> list[dict[str, str]]:
    return generate_rows(500, seed=0)


def test_same_seed_gives_byte_identical_files(tmp_path, data_dir):
    write_demo_data(tmp_path, seed=0, **SIZES)
    for name in ("train.csv", "dev.csv", "test.csv"):
        assert (tmp_path / name).read_bytes() == (data_dir / name).read_bytes()


def test_different_seed_gives_different_files(tmp_path, data_dir):
    write_demo_data(tmp_path, seed=1, **SIZES)
    for name in ("train.csv", "dev.csv", "test.csv"):
        assert (tmp_path / name).read_bytes() != (data_dir / name).read_bytes()


def test_returns_paths_and_leaves_no_temp_files(tmp_path):
    paths = write_demo_data(tmp_path / "new" / "dir", seed=0, **SIZES)
    assert set(paths) == {"train", "dev", "test"}
    assert sorted(p.name for p in paths["train"].parent.iterdir()) == ["dev.csv", "test.csv", "train.csv"]


def test_schema_matches_competition_csvs(data_dir):
    for split in ("train", "dev", "test"):
        columns, records = read_csv(data_dir / f"{split}.csv")
        expected = ["fname", "dialogue"] if split == "test" else ["fname", "dialogue", "summary"]
        assert columns == expected
        assert len(records) == ROWS[split]
        assert [r["fname"] for r in records] == [f"{split}_{i}" for i in range(len(records))]
        for r in records:
            assert all(r[c] for c in expected)


def test_dialogues_are_speaker_turns_on_separate_lines(rows):
    for row in rows:
        turns = row["dialogue"].split("\n")
        assert turns[0].startswith("#Person1#: ")
        assert all(re.fullmatch(r"#Person[12]#: \S.*", t) for t in turns)
        assert 4 <= len(turns) <= 10
    lengths = {row["dialogue"].count("\n") + 1 for row in rows}
    assert len(lengths) >= 5  # varied lengths, so padding waste is realistic


def test_summaries_are_one_or_two_sentences_about_the_speakers(rows):
    for row in rows:
        summary = row["summary"]
        assert "#Person" in summary
        assert summary.endswith("다.")
        assert 1 <= summary.count("다.") <= 2


def test_summary_numbers_and_times_occur_in_dialogue(rows):
    for row in rows:
        for pattern in (NUMBER, CLOCK):
            for token in pattern.findall(row["summary"]):
                assert token in row["dialogue"], (token, row)


def test_splits_share_no_dialogue(data_dir):
    dialogues = {split: {r["dialogue"] for r in read_csv(data_dir / f"{split}.csv")[1]} for split in ROWS}
    assert not dialogues["train"] & dialogues["dev"]
    assert not (dialogues["train"] | dialogues["dev"]) & dialogues["test"]
    assert sum(len(d) for d in dialogues.values()) == sum(ROWS.values())  # no repeats within a split


def test_variety(rows):
    assert len({r["summary"] for r in rows}) >= 0.5 * len(rows)
    topics = {topic for r in rows for topic, marker in TOPIC_MARKERS.items() if marker in r["summary"]}
    assert len(topics) >= 8


def test_cli_writes_the_three_files(tmp_path, capsys):
    import importlib.util

    script = Path(__file__).resolve().parents[1] / "scripts" / "make_demo_data.py"
    spec = importlib.util.spec_from_file_location("make_demo_data", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(["--out", str(tmp_path), "--train", "5", "--dev", "2", "--test", "1", "--seed", "3"])
    printed = capsys.readouterr().out
    assert "train" in printed and "(5 rows)" in printed
    assert len(read_csv(tmp_path / "train.csv")[1]) == 5
