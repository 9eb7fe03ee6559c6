"""models/datafiles.py: every form of data a user may have, read into the same rows; the column mapping; hub:."""
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import models.data
from models.config import TrainConfig
from models.data import load_split
from models.datafiles import parse_columns, read_rows, read_table
from models.errors import ConfigError, DataError
from models.families import FAMILIES

ROWS = [
    {"fname": "007", "dialogue": "#Person1#: 내일 회의는 몇 시에 해요?\n#Person2#: 오후 3시요.", "summary": "NA"},
    {"fname": "train_1", "dialogue": "#Person1#: 점심 먹었어요?\n#Person2#: 아직이요.", "summary": "점심을 묻는다."},
    {"fname": "train_2", "dialogue": "", "summary": "빈 대화는 건너뛴다."},
]
REPO = Path(__file__).resolve().parents[1]
EXPECTED = ROWS[:2]  # "007" stays text and "NA" stays a summary; the empty dialogue is skipped


def write(path, rows, kind=None):
    """`rows` in the format `kind` (default: the file's suffix)."""
    import datasets

    kind = kind or path.suffix
    if kind in (".csv", ".tsv"):
        with path.open("w", encoding="utf-8", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]), delimiter="\t" if kind == ".tsv" else ",")
            writer.writeheader()
            writer.writerows(rows)
    elif kind == ".jsonl":
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    elif kind == ".json":
        path.write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    elif kind == ".parquet":
        datasets.Dataset.from_list(rows).to_parquet(str(path))
    elif kind == "save_to_disk":
        datasets.Dataset.from_list(rows).save_to_disk(str(path))
    return path


@pytest.fixture(scope="module")
def bart_tokenizer(demo_cache):
    from models.demo import demo_assets
    from models.methods import load_tokenizer

    return load_tokenizer(str(demo_assets("bart").checkpoint))


# -- every format ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["train.csv", "train.tsv", "train.jsonl", "train.json", "train.parquet", "saved"])
def test_every_format_gives_the_same_rows(tmp_path, name):
    path = write(tmp_path / name, ROWS, "save_to_disk" if name == "saved" else None)
    rows, skipped = read_rows(path, need_summary=True)
    assert rows == EXPECTED and skipped == 1


def test_the_same_rows_in_another_format_hit_the_tokenized_cache(tmp_path, bart_tokenizer, monkeypatch):
    csv_path, parquet_path = write(tmp_path / "train.csv", ROWS), write(tmp_path / "train.parquet", ROWS)
    first = load_split(csv_path, bart_tokenizer, FAMILIES["bart"], 64, 32, cache_dir=tmp_path / "cache")

    def no_tokenizing(*args, **kwargs):
        raise AssertionError("tokenized again although the cache holds these rows")

    monkeypatch.setattr(models.data, "tokenize", no_tokenizing)
    again = load_split(parquet_path, bart_tokenizer, FAMILIES["bart"], 64, 32, cache_dir=tmp_path / "cache")
    assert again.features == first.features and again.fnames == ["007", "train_1"]


def test_a_datasetdict_folder_names_its_splits(tmp_path):
    import datasets

    datasets.DatasetDict({"train": datasets.Dataset.from_list(ROWS),
                          "validation": datasets.Dataset.from_list(ROWS)}).save_to_disk(str(tmp_path / "dsum"))
    with pytest.raises(DataError, match="holds the splits train, validation") as err:
        read_rows(tmp_path / "dsum", need_summary=True)
    assert str(tmp_path / "dsum" / "train") in str(err.value)
    assert read_rows(tmp_path / "dsum" / "validation", need_summary=True)[0] == EXPECTED


@pytest.mark.parametrize("name, content, expected", [
    ("train.csv", b"fname,dialogue,summary\na,\"#Person1#: hi, summary\n", r"not a readable CSV file \(.*\); check"),
    ("train.csv", b"fname,dialogue,summary\na,\"hi\"there,s\n", r"not a readable CSV file \(.*\); check its quoting"),
    ("train.csv", b"fname,dialogue,summary\na,hi,s\nb,hi,s,extra\n", r"line 3 has 4 fields, the header 3"),
    ("train.csv", b"fname,dialogue,summary,dialogue\na,hi,s,t\n", "names the column 'dialogue' twice"),
    ("train.jsonl", b"", "is empty; it needs one JSON object a line"),
    ("train.parquet", b"", "is empty"),
    ("train.jsonl", "{\"fname\": \"친구\"}\n".encode("cp949"), "is not UTF-8 text"),
    ("train.jsonl", b"{\"fname\": \"a\"}\n{broken\n", "is not a readable JSON Lines file"),
    ("train.parquet", b"not parquet", "is not a readable Parquet file"),
    ("train.xlsx", b"PK", "save it as .csv, .tsv, .jsonl, .json, .parquet"),
])
def test_a_bad_file_in_any_format_is_one_line_naming_it(tmp_path, name, content, expected):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DataError, match=expected) as err:
        read_rows(path, need_summary=True)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_an_empty_file_names_the_columns_its_reader_needs(tmp_path):
    empty = tmp_path / "submission.csv"
    empty.write_bytes(b"")
    with pytest.raises(DataError, match="it needs a header row fname,dialogue,summary and data rows"):
        read_rows(empty, need_summary=True)  # training data
    with pytest.raises(DataError, match="it needs a header row fname,dialogue and data rows"):
        read_rows(empty, need_summary=False)  # test data
    with pytest.raises(DataError, match="it needs a header row fname,summary and data rows"):
        read_table(empty, ("fname", "summary"))  # predictions, as models.score reads them


def test_a_missing_parquet_file_is_named(tmp_path):
    with pytest.raises(DataError, match="does not exist") as err:
        read_rows(tmp_path / "nope.parquet", need_summary=True)
    assert "nope.parquet" in str(err.value)


# -- column names ---------------------------------------------------------------------------------


DIALOGSUM = [{"id": f"train_{i}", "dialogue": f"#Person1#: Hello, this is call {i}.\n#Person2#: Hi.",
              "summary": f"#Person1# makes call {i}.", "topic": "greeting"} for i in range(3)]
SAMSUM = [{"id": str(13818513 + i), "dialogue": f"Amanda: I baked cookies {i}.\nJerry: Sure!",
           "summary": f"Amanda baked cookies {i}."} for i in range(3)]


def test_dialogsum_parquet_and_samsum_jsonl_need_no_flags(tmp_path, bart_tokenizer):
    for name, rows in (("dialogsum.parquet", DIALOGSUM), ("samsum.jsonl", SAMSUM)):
        path = write(tmp_path / name, rows)
        split = load_split(path, bart_tokenizer, FAMILIES["bart"], 64, 32, cache_dir=tmp_path / "cache")
        assert split.fnames == [r["id"] for r in rows]
        assert split.dialogues == [r["dialogue"] for r in rows]
        assert split.references == [[r["summary"]] for r in rows]


def test_a_numeric_id_is_read_as_text(tmp_path):
    path = write(tmp_path / "samsum.jsonl", [{**SAMSUM[0], "id": 13818513}])
    assert read_rows(path, need_summary=True)[0][0]["fname"] == "13818513"


CNN = [{"doc_id": "a1", "text": "The mayor opened the bridge.", "highlights": "Bridge opened.",
        "highlights_2": "x"}]


def test_the_mapping_names_any_columns(tmp_path):
    path = write(tmp_path / "cnn.tsv", CNN)
    rows, _ = read_rows(path, need_summary=True, columns="dialogue=text, summary=highlights, fname=doc_id")
    assert rows == [{"fname": "a1", "dialogue": "The mayor opened the bridge.", "summary": "Bridge opened."}]
    # a test file needs no summary: a mapping for one is not held against it
    test = write(tmp_path / "test.tsv", [{"doc_id": "b2", "text": "The bridge closed."}])
    rows, _ = read_rows(test, need_summary=False, columns="dialogue=text,summary=highlights,fname=doc_id")
    assert rows == [{"fname": "b2", "dialogue": "The bridge closed."}]


def test_a_missing_column_lists_the_columns_found_and_shows_the_flag(tmp_path):
    path = write(tmp_path / "cnn.parquet", CNN)
    with pytest.raises(DataError) as err:
        read_rows(path, need_summary=True)
    assert str(err.value) == (f"{path} has no column 'fname' or 'id', 'dialogue', 'summary'; its columns are "
                              "doc_id, text, highlights, highlights_2; map yours with --columns "
                              "fname=COLUMN,dialogue=COLUMN,summary=COLUMN (config key data.columns)")
    with pytest.raises(DataError) as err:
        read_rows(path, need_summary=True, columns="dialogue=text,summary=highlight,fname=doc_id")
    assert str(err.value) == (f"{path} has no column 'highlight' (--columns summary=highlight); its columns are "
                              "doc_id, text, highlights, highlights_2; map summary to one of them with --columns")


@pytest.mark.parametrize("text, expected", [
    ("dialogue", "'dialogue' is not NAME=COLUMN"),
    ("text=dialogue", "'text' is not a column sumsweep reads; .* e.g. --columns dialogue=text"),
    ("dialogue=a,dialogue=b", "dialogue is mapped twice"),
])
def test_a_bad_mapping_names_the_fix(text, expected):
    with pytest.raises(ConfigError, match=expected):
        parse_columns(text)
    with pytest.raises(ConfigError, match="data.columns"):
        TrainConfig().override({"data.columns": text})


def test_summary2_and_on_keep_their_names(tmp_path):
    path = write(tmp_path / "gold.jsonl", [{"id": "a", "summary": "one", "summary2": "two", "summary_x": "no"}])
    assert read_table(path, ("fname", "summary")) == [{"fname": "a", "summary": "one", "summary2": "two"}]


# -- hub:NAME[:CONFIG]:SPLIT ----------------------------------------------------------------------


@pytest.mark.parametrize("env, expected", [
    ({"HF_HUB_OFFLINE": "1"}, "the hub is not used (HF_HUB_OFFLINE) and the dataset is not in the local cache"),
    ({"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": "http://127.0.0.1:9"},  # nothing listens there
     "the Hugging Face hub cannot be reached from this machine"),
])
def test_the_hub_out_of_reach_is_one_line_at_once(tmp_path, env, expected):
    """As a user meets it: a command whose data is on a hub it cannot use (offline, or unreachable) says so in
    one line, where `datasets` alone would retry for 20 seconds."""
    pred = write(tmp_path / "pred.csv", [{"fname": "train_0", "summary": "a"}])
    done = subprocess.run([sys.executable, "-m", "models.score", "--pred", str(pred), "--gold",
                           "hub:knkarthick/dialogsum:test"], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, **env}, timeout=120)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith(f"error: hub:knkarthick/dialogsum:test cannot be read: {expected}; ")
    assert done.stderr.count("\n") == 1 and "save_to_disk" in done.stderr


def test_a_malformed_hub_source_shows_the_form():
    with pytest.raises(DataError, match=r"is not hub:NAME\[:CONFIG\]:SPLIT"):
        read_rows("hub:knkarthick/dialogsum", need_summary=True)


def test_a_hub_layout_folder_reads_through_the_hub_path(tmp_path):
    """What `hub:` does after parsing the source, on a folder laid out as a hub dataset (data files per split,
    a README naming its configs), since the hub itself cannot be reached here."""
    root = tmp_path / "dialogsum"
    (root / "data").mkdir(parents=True)
    write(root / "data" / "train.jsonl", DIALOGSUM)
    write(root / "data" / "validation.jsonl", DIALOGSUM[:2])
    write(root / "data" / "samsum.jsonl", SAMSUM)
    (root / "README.md").write_text(
        "---\nconfigs:\n- config_name: default\n  data_files:\n  - split: train\n    path: data/train.jsonl\n"
        "  - split: validation\n    path: data/validation.jsonl\n"
        "- config_name: samsum\n  data_files:\n  - split: train\n    path: data/samsum.jsonl\n---\n",
        encoding="utf-8")
    assert [r["fname"] for r in read_rows(f"hub:{root}:validation", need_summary=True)[0]] == ["train_0", "train_1"]
    assert [r["fname"] for r in read_rows(f"hub:{root}:train[:1]", need_summary=True)[0]] == ["train_0"]
    assert read_rows(f"hub:{root}:samsum:train", need_summary=True)[0][0]["dialogue"] == SAMSUM[0]["dialogue"]
    with pytest.raises(DataError, match="check NAME, CONFIG and SPLIT"):
        read_rows(f"hub:{root}:test", need_summary=True)


def test_a_csv_reads_as_written_quoted_newlines_windows_line_ends_short_rows_and_blank_lines(tmp_path):
    path = tmp_path / "train.csv"
    path.write_bytes('fname,dialogue,summary\r\n007,"#Person1#: 안녕, 잘 지내?\r\n#Person2#: ""응""",NA\r\n'
                     '\r\nb,#Person1#: 끝\r\n'.encode())
    rows, skipped = read_rows(path, need_summary=False)
    assert rows == [{"fname": "007", "dialogue": '#Person1#: 안녕, 잘 지내?\r\n#Person2#: "응"', "summary": "NA"},
                    {"fname": "b", "dialogue": "#Person1#: 끝", "summary": ""}]
    assert skipped == 0
