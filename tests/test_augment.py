"""Data augmentation: training rows only, speaker tags whole and consistent, the same rows for the same seed."""
import csv
import re
from collections import Counter

import pytest

from models import trainer
from models.augment import TAG, Augment, main, swap_speakers
from models.config import AugmentConfig, TrainConfig
from models.errors import ConfigError, DataError
from models.families import get_family
from models.methods import load_tokenizer

NOISY = AugmentConfig(ratio=2.0, turn_drop=0.3, turn_swap=0.3, token_delete=0.2, token_repeat=0.2, speaker_swap=0.5)


def demo_rows(count=None):
    from models.demo import demo_assets

    with demo_assets("t5").train.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))[:count]


def speaker_tags(dialogue: str) -> set[str]:
    return {line.split(":")[0] for line in dialogue.split("\n")}


# Tags inside turns, which the demo dialogues lack.
TAGGED = [{"fname": f"tagged_{i}", "summary": "#Person1#은 #Person2#에게 #PhoneNumber#로 연락하라고 한다.",
           "dialogue": "#Person1#: #Person2#씨, 제 번호는 #PhoneNumber# 이에요. 주소는 #Address# 입니다.\n"
                       "#Person2#: 네, #Person1#씨. 내일 #Address# 로 갈게요. 꼭 연락 드릴게요.\n"
                       "#Person1#: 좋아요. #Person2#씨 번호도 알려 주세요.\n"
                       "#Person2#: 제 번호는 #PhoneNumber# 입니다. 그럼 내일 봬요."} for i in range(40)]


def test_copies_keep_every_tag_whole_and_every_speaker_and_the_originals():
    rows = demo_rows(200) + TAGGED
    before = [dict(r) for r in rows]
    out = Augment(NOISY, seed=3)(rows)
    assert out[:len(rows)] == before  # the original rows come first, untouched
    copies = out[len(rows):]
    assert len(copies) == 2 * len(rows)
    originals = {r["fname"]: r for r in before}
    kinds = Counter(kind for c in copies for kind in c["augmented"].split(",") if kind)
    assert set(kinds) == set(AugmentConfig.RATES)  # every kind was drawn somewhere
    for copy in copies:
        original = originals[copy["fname"].rpartition("+aug")[0]]
        swapped = "speaker_swap" in copy["augmented"]
        expected = swap_speakers(original["summary"]) if swapped else original["summary"]
        assert copy["summary"] == expected  # the summary changes only by the relabelling, as the dialogue does
        # Every speaker still speaks (turns are dropped only while their speaker has another), as the same person.
        assert speaker_tags(copy["dialogue"]) == speaker_tags(swap_speakers(original["dialogue"]) if swapped
                                                              else original["dialogue"])
        # No tag is cut: every #...# in the copy is one the (relabelled) original holds.
        source = swap_speakers(original["dialogue"]) if swapped else original["dialogue"]
        assert set(TAG.findall(copy["dialogue"])) <= set(TAG.findall(source))
        if "turn_drop" not in copy["augmented"]:  # words are deleted and repeated around the tags, never a tag
            assert Counter(TAG.findall(copy["dialogue"])) == Counter(TAG.findall(source))
        assert not re.search(r"#Person\d(?!#)|(?<!#)Person\d#", copy["dialogue"])


def test_speaker_swap_relabels_both_ways_with_the_particle_that_fits():
    text = "#Person1#은 #Person2#에게 책을 빌려 주고, #Person2#는 #Person1#을 돕는다. #Person3#이 본다."
    assert swap_speakers(text) == "#Person2#는 #Person1#에게 책을 빌려 주고, #Person1#은 #Person2#를 돕는다. #Person3#이 본다."
    assert swap_speakers(swap_speakers(text)) == text


def test_the_same_seed_gives_the_same_rows_and_another_seed_others():
    rows = demo_rows(50)
    assert Augment(NOISY, seed=7)(rows) == Augment(NOISY, seed=7)(rows)
    assert Augment(NOISY, seed=7)(rows) != Augment(NOISY, seed=8)(rows)
    assert Augment(NOISY, seed=7).key != Augment(NOISY, seed=8).key


def write_csv(path, rows):
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def paraphrase_file(path, rows, unchanged=0):
    """A file as python -m models.paraphrase writes it; its first `unchanged` rows kept their own dialogue (the
    model lost their tags)."""
    return write_csv(path, [{**r, "dialogue": r["dialogue"] if i < unchanged else r["dialogue"].replace(".", "!")}
                            for i, r in enumerate(rows)])


def test_paraphrases_add_a_seeded_share_of_the_training_rows_with_their_summaries(tmp_path):
    rows = demo_rows(40)
    before = [dict(r) for r in rows]
    path = str(paraphrase_file(tmp_path / "train.paraphrased.csv", rows, unchanged=10))
    half = AugmentConfig(paraphrase_file=path, paraphrase_ratio=0.5)
    out = Augment(half, seed=1)(rows)
    assert out[:40] == before
    copies = out[40:]
    assert len(copies) == 15  # half of the 30 rows whose paraphrase differs; no noise copies (every rate is 0)
    originals = {r["fname"]: r for r in before}
    for copy in copies:
        original = originals[copy["fname"].removesuffix("+para")]
        assert copy["augmented"] == "paraphrase" and copy["summary"] == original["summary"]
        assert copy["dialogue"] == original["dialogue"].replace(".", "!") != original["dialogue"]
    assert Augment(half, seed=1)(rows) == out
    assert [c["fname"] for c in Augment(half, seed=2)(rows)[40:]] != [c["fname"] for c in copies]
    assert len(Augment(AugmentConfig(paraphrase_file=path, paraphrase_ratio=1.0), seed=1)(rows)) == 40 + 30
    # Turning paraphrases on leaves the noise copies as they were; the cache key tells the settings apart.
    noisy_and_half = AugmentConfig(**{**NOISY.__dict__, "paraphrase_file": path, "paraphrase_ratio": 0.5})
    noise_only = Augment(NOISY, seed=1)(rows)
    assert Augment(noisy_and_half, seed=1)(rows)[:len(noise_only)] == noise_only
    assert len({Augment(NOISY, seed=1).key, Augment(noisy_and_half, seed=1).key, Augment(half, seed=1).key}) == 3


def test_rows_that_share_an_fname_each_get_their_own_paraphrase(tmp_path):
    # Data joined from two sources can repeat an fname; each row's paraphrase keeps the row's own summary.
    rows = [{**r, "fname": "dup"} if i < 2 else r for i, r in enumerate(demo_rows(4))]
    path = str(paraphrase_file(tmp_path / "train.paraphrased.csv", rows))
    copies = Augment(AugmentConfig(paraphrase_file=path, paraphrase_ratio=1.0), seed=1)(rows)[len(rows):]
    assert len(copies) == 4
    for copy, original in zip(copies, rows):
        assert copy["dialogue"] == original["dialogue"].replace(".", "!") and copy["summary"] == original["summary"]


def test_a_missing_or_foreign_paraphrase_file_is_one_line(tmp_path):
    rows = demo_rows(5)
    with pytest.raises(DataError, match="does not exist; write it with python -m models.paraphrase"):
        Augment(AugmentConfig(paraphrase_file=str(tmp_path / "none.csv"), paraphrase_ratio=1.0), seed=1)(rows)
    foreign = paraphrase_file(tmp_path / "other.csv", [{**r, "fname": f"other_{i}"} for i, r in enumerate(rows)])
    with pytest.raises(DataError, match="paraphrases none of the training rows"):
        Augment(AugmentConfig(paraphrase_file=str(foreign), paraphrase_ratio=1.0), seed=1)(rows)
    # Same fnames, made from an earlier version of the data: its dialogues would be trained with other summaries.
    edited = [{**r, "summary": r["summary"] + " 수정"} if i == 3 else r for i, r in enumerate(rows)]
    stale = paraphrase_file(tmp_path / "stale.csv", rows)
    with pytest.raises(DataError, match=rf"made from other data: 1 of its rows \(e.g. {edited[3]['fname']}\) have"):
        Augment(AugmentConfig(paraphrase_file=str(stale), paraphrase_ratio=1.0), seed=1)(edited)
    with pytest.raises(ConfigError, match="data.augment.paraphrase_file"):
        TrainConfig().override({"data.augment.paraphrase_ratio": 0.5})


def test_training_augments_the_training_split_alone(tiny_config, monkeypatch, tmp_path):
    """A real (tiny) training run: the training rows arrive with their copies and paraphrases, cached apart
    from plain ones; the dev rows as they are in the file."""
    loaded = []
    load_split = trainer.load_split

    def spy(path, *args, **kwargs):
        split = load_split(path, *args, **kwargs)
        loaded.append((str(path), kwargs.get("augment"), split))
        return split

    monkeypatch.setattr(trainer, "load_split", spy)
    paraphrases = paraphrase_file(tmp_path / "train.paraphrased.csv", demo_rows())
    config, assets = tiny_config("t5", training__max_steps=2, training__eval_steps=2, training__eval_subset=4,
                                 training__generation_max_length=8, data__augment__turn_drop=0.2,
                                 data__augment__ratio=0.5, data__augment__paraphrase_file=str(paraphrases),
                                 data__augment__paraphrase_ratio=0.25)
    with assets.dev.open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))[:8]
    dev = write_csv(tmp_path / "dev.csv", rows)
    trainer.train(config, assets.train, dev, tmp_path / "run", progress=False)
    (train_path, augment, train_split), (dev_path, dev_augment, dev_split) = loaded[:2]
    assert train_path == str(assets.train) and augment is not None
    assert dev_path == str(dev) and dev_augment is None
    assert dev_split.fnames == [r["fname"] for r in rows] and dev_split.dialogues == [r["dialogue"] for r in rows]
    paraphrased = [f for f in train_split.fnames if f.endswith("+para")]
    copies = [f for f in train_split.fnames if "+aug" in f] + paraphrased
    assert 0.4 < (len(copies) - len(paraphrased)) / (len(train_split) - len(copies)) < 0.6  # ratio 0.5
    assert len(paraphrased) == round(0.25 * (len(train_split) - len(copies)))
    # The tokenization cache tells augmented and plain rows apart, whichever was cached first.
    assert len(train_split.features) == len(train_split)
    t = config.training
    plain = load_split(assets.train, load_tokenizer(str(assets.checkpoint)), get_family("t5"), t.max_source_length,
                       t.max_target_length)
    assert len(plain.features) == len(plain) == len(train_split) - len(copies)


def test_show_prints_pairs_and_off_is_one_line(capsys):
    from search.space import SPACES_DIR

    assert main(["--config", str(SPACES_DIR / "t5.yaml"), "--demo", "--set", "data.augment.token_delete=0.1",
                 "--show", "3"]) == 0
    out = capsys.readouterr().out
    assert out.count("original:") == 3 and out.count("augmented:") == 3 and "token_delete" in out
    from models.errors import ConfigError

    with pytest.raises(ConfigError, match="data.augment is off"):
        main(["--config", str(SPACES_DIR / "t5.yaml"), "--demo"])
