"""models/data.py and models/datafiles.py: CSV validation, the tokenized-data cache, per-family tokenization,
padding and batching (the other formats and the column mapping: tests/test_datafiles.py)."""
import csv
import json
import random
import statistics

import pytest
import torch

import models.data
from models.data import LengthGroupedBatches, collate, load_split, tokenizer_digest
from models.datafiles import read_rows
from models.errors import DataError
from models.families import FAMILIES

DIALOGUE = "#Person1#: 내일 회의는 몇 시에 해요?\n#Person2#: 오후 3시에 3층 회의실에서 해요."
SUMMARY = "#Person1#과 #Person2#는 내일 오후 3시에 3층 회의실에서 회의를 한다."


def write_csv(path, rows, columns=("fname", "dialogue", "summary"), encoding="utf-8"):
    with path.open("w", encoding=encoding, newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns))
        writer.writeheader()
        writer.writerows(rows)
    return path


def row(i, dialogue=DIALOGUE, summary=SUMMARY):
    return {"fname": f"train_{i}", "dialogue": dialogue, "summary": summary}


@pytest.fixture(scope="module")
def tokenizers(demo_cache):
    """The tiny demo tokenizers, loaded once: {family: (tokenizer, DemoAssets)}."""
    from models.demo import demo_assets
    from models.methods import load_tokenizer

    out = {}
    for family in ("bart", "t5", "gpt2", "kogpt2"):
        assets = demo_assets(family)
        out[family] = (load_tokenizer(str(assets.checkpoint)), assets)
    return out


# -- bad input ---------------------------------------------------------------------------------


def test_missing_file_names_the_file(tmp_path):
    path = tmp_path / "nope.csv"
    with pytest.raises(DataError, match="does not exist") as err:
        read_rows(path, need_summary=True)
    assert str(path) in str(err.value)


def test_directory_is_named_as_a_directory(tmp_path):
    with pytest.raises(DataError, match="is a directory, not a data file") as err:
        read_rows(tmp_path, need_summary=True)
    assert str(tmp_path) in str(err.value)


def test_dialogue_longer_than_csvs_field_limit_is_read_and_truncated(tmp_path, tokenizers, csv_default_limit):
    long_dialogue = "#Person1#: 내일 회의는 몇 시에 해요? " * 8000  # 200,000+ characters
    assert len(long_dialogue) > csv_default_limit
    path = write_csv(tmp_path / "train.csv", [row(0, dialogue=long_dialogue), row(1)])
    usable, skipped = read_rows(path, need_summary=True)
    assert usable[0]["dialogue"] == long_dialogue and skipped == 0
    tokenizer, _ = tokenizers["t5"]
    split = load_split(path, tokenizer, FAMILIES["t5"], 64, 32, cache_dir=tmp_path / "cache")
    assert len(split.features[0]["input_ids"]) == 64 and len(split) == 2


def test_missing_columns_are_named(tmp_path):
    path = write_csv(tmp_path / "train.csv", [{"fname": "a", "text": DIALOGUE}], columns=("fname", "text"))
    with pytest.raises(DataError) as err:
        read_rows(path, need_summary=True)
    message = str(err.value)
    assert str(path) in message
    assert "dialogue" in message and "summary" in message
    assert "no column" in message


def test_missing_summary_column_is_an_error_only_where_summaries_are_needed(tmp_path):
    path = write_csv(tmp_path / "test.csv", [{"fname": "test_0", "dialogue": DIALOGUE}], columns=("fname", "dialogue"))
    with pytest.raises(DataError, match="summary") as err:
        read_rows(path, need_summary=True)
    assert str(path) in str(err.value)
    rows, skipped = read_rows(path, need_summary=False)
    assert [r["fname"] for r in rows] == ["test_0"] and skipped == 0


def test_test_file_without_summary_loads(tmp_path, tokenizers):
    tokenizer, _ = tokenizers["bart"]
    path = write_csv(tmp_path / "test.csv", [{"fname": f"test_{i}", "dialogue": DIALOGUE} for i in range(3)],
                     columns=("fname", "dialogue"))
    split = load_split(path, tokenizer, FAMILIES["bart"], 64, 32, need_summary=False, cache_dir=tmp_path / "cache")
    assert split.fnames == ["test_0", "test_1", "test_2"]
    assert split.references == []
    assert all(set(f) == {"input_ids"} for f in split.features)


def test_empty_file_is_an_error(tmp_path):
    path = tmp_path / "train.csv"
    path.write_bytes(b"")
    with pytest.raises(DataError, match="empty") as err:
        read_rows(path, need_summary=True)
    assert str(path) in str(err.value)


def test_header_only_is_an_error(tmp_path):
    path = write_csv(tmp_path / "train.csv", [])
    with pytest.raises(DataError, match="no row with a non-empty dialogue") as err:
        read_rows(path, need_summary=True)
    assert str(path) in str(err.value)


def test_all_dialogues_empty_is_an_error(tmp_path):
    path = write_csv(tmp_path / "train.csv", [row(0, dialogue=""), row(1, dialogue="   \n ")])
    with pytest.raises(DataError, match="no row with a non-empty dialogue") as err:
        read_rows(path, need_summary=True)
    assert str(path) in str(err.value)


def test_rows_with_empty_dialogue_are_skipped_and_counted(tmp_path, tokenizers):
    rows = [row(0), row(1, dialogue=""), row(2), row(3, dialogue="  "), row(4)]
    path = write_csv(tmp_path / "train.csv", rows)
    usable, skipped = read_rows(path, need_summary=True)
    assert [r["fname"] for r in usable] == ["train_0", "train_2", "train_4"]
    assert skipped == 2

    tokenizer, _ = tokenizers["bart"]
    split = load_split(path, tokenizer, FAMILIES["bart"], 64, 32, cache_dir=tmp_path / "cache")
    assert split.skipped == 2
    assert split.fnames == ["train_0", "train_2", "train_4"]
    assert len(split) == len(split.features) == len(split.references) == 3


def test_non_utf8_file_is_an_error_mentioning_utf8(tmp_path):
    path = write_csv(tmp_path / "train.csv", [row(0)], encoding="cp949")
    with pytest.raises(DataError, match="UTF-8") as err:
        read_rows(path, need_summary=True)
    assert str(path) in str(err.value)


def test_utf8_with_bom_is_read(tmp_path):
    """Excel's "CSV UTF-8" starts with a byte-order mark; the first column must still be `fname`."""
    path = write_csv(tmp_path / "train.csv", [row(0)], encoding="utf-8-sig")
    rows, skipped = read_rows(path, need_summary=True)
    assert rows[0]["fname"] == "train_0" and skipped == 0


# -- the tokenized-data cache -------------------------------------------------------------------


def counting_tokenize(monkeypatch):
    calls = []
    real = models.data.tokenize

    def tokenize(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(models.data, "tokenize", tokenize)
    return calls


def test_second_load_reads_the_cache(tmp_path, tokenizers, monkeypatch):
    tokenizer, _ = tokenizers["bart"]
    path = write_csv(tmp_path / "train.csv", [row(i) for i in range(4)])
    first = load_split(path, tokenizer, FAMILIES["bart"], 64, 32, cache_dir=tmp_path / "cache")
    assert list((tmp_path / "cache").rglob("*.json"))

    def no_tokenizing(*args, **kwargs):
        raise AssertionError("tokenized again although the cache holds this file")

    monkeypatch.setattr(models.data, "tokenize", no_tokenizing)
    second = load_split(path, tokenizer, FAMILIES["bart"], 64, 32, cache_dir=tmp_path / "cache")
    assert second.features == first.features
    assert second.fnames == first.fnames and second.references == first.references


def test_a_damaged_cache_file_is_tokenized_again(tmp_path, tokenizers):
    tokenizer, _ = tokenizers["bart"]
    path = write_csv(tmp_path / "train.csv", [row(i) for i in range(4)])
    first = load_split(path, tokenizer, FAMILIES["bart"], 64, 32, cache_dir=tmp_path / "cache")
    cached, = (tmp_path / "cache").rglob("*.json")
    cached.write_text('[{"input_ids": [0, 5', encoding="utf-8")  # cut short, as a full disk leaves it
    again = load_split(path, tokenizer, FAMILIES["bart"], 64, 32, cache_dir=tmp_path / "cache")
    assert again.features == first.features
    assert json.loads(cached.read_text(encoding="utf-8")) == first.features


def test_the_tokenizer_key_ignores_the_truncation_a_call_leaves_and_keeps_it(tokenizers):
    tokenizer, _ = tokenizers["bart"]
    before = tokenizer_digest(tokenizer)
    tokenizer(["#Person1#: 안녕하세요."] * 2, truncation=True, max_length=4, padding=True)
    left = tokenizer.backend_tokenizer.truncation, tokenizer.backend_tokenizer.padding
    assert tokenizer_digest(tokenizer) == before
    assert (tokenizer.backend_tokenizer.truncation, tokenizer.backend_tokenizer.padding) == left


def test_changed_file_or_length_makes_a_new_cache_entry(tmp_path, tokenizers, monkeypatch):
    tokenizer, _ = tokenizers["bart"]
    cache = tmp_path / "cache"
    path = write_csv(tmp_path / "train.csv", [row(i) for i in range(4)])
    calls = counting_tokenize(monkeypatch)

    first = load_split(path, tokenizer, FAMILIES["bart"], 64, 32, cache_dir=cache)
    load_split(path, tokenizer, FAMILIES["bart"], 64, 32, cache_dir=cache)
    assert len(calls) == 1

    write_csv(path, [row(i, summary="다른 요약이다.") for i in range(4)])  # same path, new content
    changed = load_split(path, tokenizer, FAMILIES["bart"], 64, 32, cache_dir=cache)
    assert len(calls) == 2
    assert changed.features != first.features
    assert changed.references[0] == ["다른 요약이다."]

    shorter = load_split(path, tokenizer, FAMILIES["bart"], 12, 32, cache_dir=cache)
    assert len(calls) == 3
    assert max(len(f["input_ids"]) for f in shorter.features) <= 12
    assert len(list(cache.rglob("*.json"))) == 3


# -- per-family tokenization ----------------------------------------------------------------------


def test_t5_prefix_is_prepended_and_bart_has_none(tmp_path, tokenizers):
    """Checked with the byte-level BART tokenizer, which can spell any text, for both families."""
    tokenizer, _ = tokenizers["bart"]
    path = write_csv(tmp_path / "train.csv", [row(0)])
    t5 = load_split(path, tokenizer, FAMILIES["t5"], 128, 64, cache_dir=tmp_path / "cache")
    bart = load_split(path, tokenizer, FAMILIES["bart"], 128, 64, cache_dir=tmp_path / "cache")
    t5_text = tokenizer.decode(t5.features[0]["input_ids"], skip_special_tokens=True)
    bart_text = tokenizer.decode(bart.features[0]["input_ids"], skip_special_tokens=True)
    assert t5_text.startswith("summarize:")
    assert t5_text == "summarize: " + DIALOGUE
    assert not bart_text.startswith("summarize")
    assert bart_text == DIALOGUE
    # the prefix is on the source only, never on the target
    assert tokenizer.decode(t5.features[0]["labels"], skip_special_tokens=True) == SUMMARY


def test_t5_prefix_tokens_lead_the_input_with_the_demo_t5_tokenizer(tmp_path, tokenizers):
    """t5 and mt5 share the demo's unigram tokenizer; only t5 adds the prefix."""
    tokenizer, assets = tokenizers["t5"]
    t5 = load_split(assets.dev, tokenizer, FAMILIES["t5"], 512, 128, cache_dir=tmp_path)
    mt5 = load_split(assets.dev, tokenizer, FAMILIES["mt5"], 512, 128, cache_dir=tmp_path)
    prefix = tokenizer(FAMILIES["t5"].prefix.strip(), add_special_tokens=False)["input_ids"]
    assert all(a["input_ids"][: len(prefix)] == prefix for a in t5.features)
    assert all(b["input_ids"][: len(prefix)] != prefix for b in mt5.features)
    assert all(len(a["input_ids"]) > len(b["input_ids"]) for a, b in zip(t5.features, mt5.features))
    assert [a["labels"] for a in t5.features] == [b["labels"] for b in mt5.features]


def test_t5_prefix_decodes_with_the_demo_t5_tokenizer(tmp_path, tokenizers):
    tokenizer, _ = tokenizers["t5"]
    path = write_csv(tmp_path / "train.csv", [row(0)])
    split = load_split(path, tokenizer, FAMILIES["t5"], 128, 64, cache_dir=tmp_path / "cache")
    assert tokenizer.decode(split.features[0]["input_ids"], skip_special_tokens=True).startswith("summarize:")


@pytest.mark.parametrize("family", ["gpt2", "kogpt2"])
def test_causal_labels_mask_exactly_the_prompt(tmp_path, tokenizers, family):
    tokenizer, assets = tokenizers[family]
    fam = FAMILIES[family]
    split = load_split(assets.dev, tokenizer, fam, 512, 256, cache_dir=tmp_path)
    sep = tokenizer(fam.separator, add_special_tokens=False)["input_ids"]
    assert sep
    for feature, dialogue, refs in list(zip(split.features, split.dialogues, split.references))[:50]:
        ids, labels, prompt = feature["input_ids"], feature["labels"], feature["prompt_ids"]
        assert len(ids) == len(labels)
        n_masked = next(i for i, label in enumerate(labels) if label != -100)
        # -100 exactly over the prompt, nothing masked after it
        assert labels[:n_masked] == [-100] * n_masked
        assert -100 not in labels[n_masked:]
        assert prompt == ids[:n_masked]
        assert prompt[-len(sep):] == sep
        assert tokenizer.decode(prompt) == dialogue + fam.separator
        # the rest is the summary, then eos, and is learned token for token
        target = labels[n_masked:]
        assert target == ids[n_masked:]
        assert target[-1] == tokenizer.eos_token_id
        assert tokenizer.decode(target[:-1]) == refs[0]


@pytest.mark.parametrize("family", ["gpt2", "kogpt2"])
def test_causal_long_dialogue_is_cut_from_the_front(tmp_path, tokenizers, family):
    tokenizer, _ = tokenizers[family]
    fam = FAMILIES[family]
    long_dialogue = "\n".join(f"#Person{1 + i % 2}#: {i}번째 이야기입니다. 회의 장소를 정해야 해요." for i in range(40))
    long_dialogue += "\n#Person2#: 마지막으로 금요일 오후 2시에 만나기로 해요."
    path = write_csv(tmp_path / "train.csv", [row(0, dialogue=long_dialogue)])
    max_source = 32
    split = load_split(path, tokenizer, fam, max_source, 128, cache_dir=tmp_path / "cache")
    feature = split.features[0]
    body = tokenizer(long_dialogue, add_special_tokens=False)["input_ids"]
    sep = tokenizer(fam.separator, add_special_tokens=False)["input_ids"]
    assert len(body) > 3 * max_source

    prompt = feature["prompt_ids"]
    assert len(prompt) == max_source
    assert prompt == body[-(max_source - len(sep)):] + sep  # the end of the dialogue survives
    assert tokenizer.decode(prompt).endswith("금요일 오후 2시에 만나기로 해요." + fam.separator)
    assert feature["input_ids"][:max_source] == prompt
    assert feature["labels"][:max_source] == [-100] * max_source
    target = feature["labels"][max_source:]
    assert target[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(target[:-1]) == SUMMARY  # the summary is intact


@pytest.mark.parametrize("family", ["gpt2", "kogpt2"])
def test_causal_test_file_gives_prompts_only(tmp_path, tokenizers, family):
    tokenizer, _ = tokenizers[family]
    fam = FAMILIES[family]
    path = write_csv(tmp_path / "test.csv", [{"fname": "test_0", "dialogue": DIALOGUE}], columns=("fname", "dialogue"))
    split = load_split(path, tokenizer, fam, 64, 32, need_summary=False, cache_dir=tmp_path / "cache")
    assert set(split.features[0]) == {"prompt_ids"}
    assert tokenizer.decode(split.features[0]["prompt_ids"]) == DIALOGUE + fam.separator


# -- collate ----------------------------------------------------------------------------------


FEATURES = [
    {"input_ids": [5, 6, 7], "labels": [-100, 6, 7]},
    {"input_ids": [8], "labels": [9]},
    {"input_ids": [1, 2, 3, 4, 5], "labels": [11, 12, 13, 14, 15]},
]


def test_collate_pads_on_the_right():
    batch = collate(FEATURES, pad_id=99)
    assert batch["input_ids"].tolist() == [[5, 6, 7, 99, 99], [8, 99, 99, 99, 99], [1, 2, 3, 4, 5]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0, 0], [1, 0, 0, 0, 0], [1, 1, 1, 1, 1]]
    assert batch["labels"].tolist() == [[-100, 6, 7, -100, -100], [9, -100, -100, -100, -100],
                                        [11, 12, 13, 14, 15]]
    assert all(t.dtype == torch.long for t in batch.values())


def test_collate_left_pads_for_generation():
    prompts = [{"input_ids": f["input_ids"]} for f in FEATURES]
    batch = collate(prompts, pad_id=0, left_pad=True)
    assert set(batch) == {"input_ids", "attention_mask"}
    assert batch["input_ids"].tolist() == [[0, 0, 5, 6, 7], [0, 0, 0, 0, 8], [1, 2, 3, 4, 5]]
    assert batch["attention_mask"].tolist() == [[0, 0, 1, 1, 1], [0, 0, 0, 0, 1], [1, 1, 1, 1, 1]]


def test_collate_of_prompt_ids_has_no_labels():
    features = [{"input_ids": [1, 2, 3], "labels": [-100, 2, 3], "prompt_ids": [1, 2]},
                {"input_ids": [4, 5], "labels": [-100, 5], "prompt_ids": [4]}]
    batch = collate(features, pad_id=0, key="prompt_ids", left_pad=True)
    assert set(batch) == {"input_ids", "attention_mask"}
    assert batch["input_ids"].tolist() == [[1, 2], [0, 4]]
    assert batch["attention_mask"].tolist() == [[1, 1], [0, 1]]


# -- LengthGroupedBatches ------------------------------------------------------------------------


def lengths(n=1200, seed=0):
    rng = random.Random(seed)
    return [rng.randint(20, 400) for _ in range(n)]


def padding(batches, lens):
    return statistics.mean(sum(max(lens[i] for i in b) - lens[i] for i in b) for b in batches)


def test_each_epoch_covers_every_index_once():
    lens = lengths(1003)  # not a multiple of the batch size: the last batch is short
    sampler = LengthGroupedBatches(lens, batch_size=8, seed=3)
    for _ in range(2):
        batches = list(sampler)
        assert len(batches) == len(sampler) == 126
        flat = [i for b in batches for i in b]
        assert sorted(flat) == list(range(len(lens)))
        assert all(1 <= len(b) <= 8 for b in batches)


def test_epochs_differ_but_runs_repeat():
    lens = lengths()
    sampler = LengthGroupedBatches(lens, batch_size=8, seed=3)
    first, second = list(sampler), list(sampler)
    assert first != second
    assert list(LengthGroupedBatches(lens, batch_size=8, seed=3)) == first  # same seed, same first epoch


def test_batches_are_length_homogeneous():
    lens = lengths()
    grouped = list(LengthGroupedBatches(lens, batch_size=8, seed=0))
    order = list(range(len(lens)))
    random.Random(0).shuffle(order)
    shuffled = [order[i: i + 8] for i in range(0, len(order), 8)]
    assert padding(grouped, lens) < 0.5 * padding(shuffled, lens)


# -- edge cases found by review, fixed since -------------------------------------------------


def test_causal_prompt_never_exceeds_max_source(tmp_path, tokenizers):
    tokenizer, _ = tokenizers["gpt2"]
    fam = FAMILIES["gpt2"]
    sep = tokenizer(fam.separator, add_special_tokens=False)["input_ids"]
    path = write_csv(tmp_path / "train.csv", [row(0)])
    split = load_split(path, tokenizer, fam, len(sep), 32, cache_dir=tmp_path / "cache")
    assert len(split.features[0]["prompt_ids"]) <= len(sep)


def test_collate_left_pad_keeps_labels_aligned():
    batch = collate(FEATURES, pad_id=0, left_pad=True)
    assert batch["labels"].tolist()[1] == [-100, -100, -100, -100, 9]


def test_random_batches_are_a_new_permutation_each_epoch_and_repeatable():
    from models.data import RandomBatches

    sampler = RandomBatches(size=50, batch_size=8, seed=3)
    first, second = list(sampler), list(sampler)
    for epoch in (first, second):
        assert sorted(i for batch in epoch for i in batch) == list(range(50))
        assert [len(b) for b in epoch] == [8] * 6 + [2]
    assert first != second
    assert list(RandomBatches(size=50, batch_size=8, seed=3)) == first


def test_a_large_file_says_it_is_tokenized_the_first_time_only(tmp_path, tokenizers, monkeypatch, capsys):
    tokenizer, _ = tokenizers["bart"]
    path = write_csv(tmp_path / "train.csv", [row(i) for i in range(4)])
    monkeypatch.setattr(models.data, "LARGE", 4)  # this file counts as large
    load_split(path, tokenizer, FAMILIES["bart"], 64, 32, cache_dir=tmp_path / "cache")
    assert f"tokenizing 4 rows of {path} (cached for the next run)" in capsys.readouterr().err
    load_split(path, tokenizer, FAMILIES["bart"], 64, 32, cache_dir=tmp_path / "cache")
    assert "tokenizing" not in capsys.readouterr().err
    monkeypatch.setattr(models.data, "LARGE", 5)
    load_split(path, tokenizer, FAMILIES["bart"], 64, 33, cache_dir=tmp_path / "cache")  # new entry, small file
    assert "tokenizing" not in capsys.readouterr().err
