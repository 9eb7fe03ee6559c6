import csv
import json

import pytest

from models.metrics import rouge
from models.score import main

GOLD = [
    {"fname": "dev_1", "dialogue": "#Person1#: 안녕", "summary": "친구가 학교에 갔다", "summary2": "친구는 학교로 갔다"},
    {"fname": "dev_2", "dialogue": "#Person1#: 뭐해", "summary": "두 사람이 저녁 메뉴를 정한다", "summary2": ""},
]
PRED = [
    {"fname": "dev_2", "summary": "두 사람이 저녁을 정했다"},
    {"fname": "dev_1", "summary": "친구가 학교로 갔다"},
]


def write_csv(path, rows, fieldnames=None):
    fieldnames = fieldnames or list(rows[0])
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fieldnames, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return str(path)


@pytest.fixture
def files(tmp_path):
    return write_csv(tmp_path / "pred.csv", PRED), write_csv(tmp_path / "gold.csv", GOLD)


def test_table_output(files, capsys):
    pred, gold = files
    assert main(["--pred", pred, "--gold", gold]) == 0
    out = capsys.readouterr().out
    for name in ("ROUGE-1", "ROUGE-2", "ROUGE-L", "mean"):
        assert name in out


@pytest.mark.parametrize("mode", ["morpheme", "whitespace"])
def test_json_matches_rouge_matched_by_fname(files, capsys, mode):
    pred, gold = files
    assert main(["--pred", pred, "--gold", gold, "--json", "--tokenize", mode]) == 0
    got = json.loads(capsys.readouterr().out)
    expected = rouge(
        ["친구가 학교로 갔다", "두 사람이 저녁을 정했다"],
        [["친구가 학교에 갔다", "친구는 학교로 갔다"], ["두 사람이 저녁 메뉴를 정한다"]],
        tokenize=mode,
    )
    assert got == pytest.approx(expected)
    assert set(got) == {"rouge1", "rouge2", "rougeL", "mean"}


def test_missing_fname_in_pred(tmp_path, capsys):
    pred = write_csv(tmp_path / "pred.csv", PRED[:1])
    gold = write_csv(tmp_path / "gold.csv", GOLD)
    assert main(["--pred", pred, "--gold", gold]) == 2
    err = capsys.readouterr().err
    assert "'dev_1'" in err and err.startswith("error: ")


def test_missing_column(tmp_path, capsys):
    pred = write_csv(tmp_path / "pred.csv", PRED, fieldnames=["fname"])
    gold = write_csv(tmp_path / "gold.csv", GOLD)
    assert main(["--pred", pred, "--gold", gold]) == 2
    assert "'summary'" in capsys.readouterr().err


def test_missing_file(tmp_path, capsys):
    gold = write_csv(tmp_path / "gold.csv", GOLD)
    assert main(["--pred", str(tmp_path / "nope.csv"), "--gold", gold]) == 2
    err = capsys.readouterr().err
    assert "nope.csv" in err and "Traceback" not in err


def test_duplicate_fname_and_empty_file(tmp_path, capsys):
    gold = write_csv(tmp_path / "gold.csv", GOLD)
    dup = write_csv(tmp_path / "dup.csv", PRED + PRED[:1])
    assert main(["--pred", dup, "--gold", gold]) == 2
    assert "more than once" in capsys.readouterr().err
    empty = tmp_path / "empty.csv"
    empty.write_text("", encoding="utf-8")
    assert main(["--pred", str(empty), "--gold", gold]) == 2
    assert "empty" in capsys.readouterr().err


def test_non_utf8_file(tmp_path, capsys):
    gold = write_csv(tmp_path / "gold.csv", GOLD)
    bad = tmp_path / "cp949.csv"
    bad.write_bytes("fname,summary\ndev_1,친구\n".encode("cp949"))
    assert main(["--pred", str(bad), "--gold", gold]) == 2
    assert "UTF-8" in capsys.readouterr().err


def test_gold_with_a_dialogue_past_csvs_field_limit_is_scored(tmp_path, capsys, csv_default_limit):
    gold = [{**GOLD[0], "dialogue": "#Person1#: 안녕 " * 20_000}, GOLD[1]]
    assert len(gold[0]["dialogue"]) > csv_default_limit
    pred, gold_path = write_csv(tmp_path / "pred.csv", PRED), write_csv(tmp_path / "gold.csv", gold)
    assert main(["--pred", pred, "--gold", gold_path]) == 0
    assert "ROUGE-1" in capsys.readouterr().out


def test_dialogsum_parquet_gold_needs_no_flags_and_rouge_scores_english(tmp_path, capsys):
    """DialogSum's schema (id, dialogue, summary, topic) as gold: predictions' fname matches its id."""
    import datasets
    from rouge_score import rouge_scorer

    gold = [{"id": "test_0_1", "dialogue": "#Person1#: Hi, Mr. Smith.", "summary": "Ms. Dawson helps #Person1#.",
             "topic": "office"},
            {"id": "test_1_1", "dialogue": "#Person1#: Let's eat.", "summary": "They'll eat lunch, then walk.",
             "topic": "food"}]
    datasets.Dataset.from_list(gold).to_parquet(str(tmp_path / "test.parquet"))
    pred = write_csv(tmp_path / "pred.csv", [{"fname": "test_1_1", "summary": "They eat lunch and walk!"},
                                             {"fname": "test_0_1", "summary": "Ms. Dawson helped #Person1#."}])
    assert main(["--pred", pred, "--gold", str(tmp_path / "test.parquet"), "--json", "--tokenize", "rouge-stem"]) == 0
    got = json.loads(capsys.readouterr().out)
    scorer = rouge_scorer.RougeScorer(["rouge1"], use_stemmer=True)
    expected = (scorer.score(gold[0]["summary"], "Ms. Dawson helped #Person1#.")["rouge1"].fmeasure
                + scorer.score(gold[1]["summary"], "They eat lunch and walk!")["rouge1"].fmeasure) / 2
    assert got["rouge1"] == expected


def test_gold_columns_are_mapped_and_a_missing_one_shows_the_flag(tmp_path, capsys):
    rows = [{"doc_id": r["fname"], "article": r["dialogue"], "highlights": r["summary"]} for r in GOLD]
    gold = write_csv(tmp_path / "gold.csv", rows)
    pred = write_csv(tmp_path / "pred.csv", PRED)
    assert main(["--pred", pred, "--gold", gold, "--columns", "fname=doc_id,summary=highlights", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["mean"] > 0
    assert main(["--pred", pred, "--gold", gold]) == 2
    assert capsys.readouterr().err == (f"error: {gold} has no column 'fname' or 'id', 'summary'; its columns are "
                                       "doc_id, article, highlights; map yours with --columns "
                                       "fname=COLUMN,summary=COLUMN (config key data.columns)\n")
