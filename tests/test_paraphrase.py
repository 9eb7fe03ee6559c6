"""Paraphrasing the training data with a local model: made once, every turn and speaker kept, one-line errors."""
import csv

import pytest

from models import paraphrase
from models.cli import run_cli
from models.demo import demo_assets


def run(args, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_cli(lambda: paraphrase.main(args))
    out, err = capsys.readouterr()
    return exit_info.value.code, out, err


def read(path):
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def first_rows(tmp_path, count):
    rows = read(demo_assets("t5").train)[:count]
    path = tmp_path / "train.csv"
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path, rows


def speakers(dialogue):
    return [paraphrase.split_turn(line)[0] for line in dialogue.split("\n")]


def test_a_second_run_reuses_the_file_and_generates_nothing(tmp_path, capsys, monkeypatch):
    train, rows = first_rows(tmp_path, 3)
    args = ["--model", str(demo_assets("llm").checkpoint), "--train-data", str(train), "--max-new-tokens", "6"]
    code, out, _ = run(args, capsys)
    assert code == 0 and "paraphrased 3 dialogues with tiny-llm" in out
    made, = tmp_path.glob("train.paraphrased-*.csv")  # beside the training file
    assert f"wrote {made}" in out and f"data.augment.paraphrase_file={made}" in out
    written = read(made)
    assert [r["fname"] for r in written] == [r["fname"] for r in rows]
    assert [r["summary"] for r in written] == [r["summary"] for r in rows]
    assert all(speakers(w["dialogue"]) == speakers(r["dialogue"]) for w, r in zip(written, rows))
    assert any(w["dialogue"] != r["dialogue"] for w, r in zip(written, rows))
    stamp = made.stat().st_mtime_ns

    def no_generation(*args, **kwargs):
        raise AssertionError("generated again")

    monkeypatch.setattr(paraphrase.Rewriter, "__init__", no_generation)
    code, out, _ = run(args, capsys)
    assert code == 0 and f"reused {made}" in out and "nothing generated" in out
    assert made.stat().st_mtime_ns == stamp and list(tmp_path.glob("train.paraphrased-*.csv")) == [made]


def test_translated_out_and_back_through_two_seq2seq_models(tmp_path, capsys):
    train, rows = first_rows(tmp_path, 2)
    out_dir = tmp_path / "para"
    out_and_back = ["--model", str(demo_assets("t5").checkpoint), "--back-model", str(demo_assets("bart").checkpoint)]
    code, out, _ = run([*out_and_back, "--train-data", str(train), "--max-new-tokens", "6", "--out-dir", str(out_dir)],
                       capsys)
    assert code == 0 and "with tiny-t5 then tiny-bart" in out
    made, = out_dir.glob("train.paraphrased-*.csv")
    written = read(made)
    assert all(speakers(w["dialogue"]) == speakers(r["dialogue"]) for w, r in zip(written, rows))


def test_a_rewrite_that_loses_a_tag_changes_language_or_says_nothing_keeps_the_turns_own_text():
    dialogue = ("#Person1#: 제 번호는 #PhoneNumber# 이에요.\n"
                "#Person2#: 네, 알겠어요.\n"
                "#Person1#: 내일 #Address# 로 오세요.\n"
                "#Person2#: 좋아요.\n"
                "#Person1#: 그럼 내일 봬요.")
    rewrites = {"제 번호는 #PhoneNumber# 이에요.": "제 전화번호예요.",  # the placeholder is gone
                "네, 알겠어요.": "#Person2#: 네, 잘 알겠습니다.\n#Person1#: 그럼",  # a tag echoed, a line more
                "내일 #Address# 로 오세요.": "내일 #Address# 로 와 주세요.",
                "좋아요.": "  ",  # nothing
                "그럼 내일 봬요.": "See you tomorrow."}  # a small LM asked in English answers in English
    rambling = {"네, 알겠어요.": "네, 알겠습니다 " * 20,  # on and on, to its token limit
                "내일 #Address# 로 오세요.": "내일 #Address# 로 \ufffd세요.",  # a character's bytes decoded apart
                "좋아요.": "좋습니다."}
    assert paraphrase.rewritten(dialogue, rambling) == (dialogue.replace("좋아요.", "좋습니다."), 4)
    new, kept = paraphrase.rewritten(dialogue, rewrites)
    assert new == ("#Person1#: 제 번호는 #PhoneNumber# 이에요.\n"
                   "#Person2#: 네, 잘 알겠습니다.\n"
                   "#Person1#: 내일 #Address# 로 와 주세요.\n"
                   "#Person2#: 좋아요.\n"
                   "#Person1#: 그럼 내일 봬요.")
    assert kept == 3


def test_a_bad_model_folder_or_data_file_is_one_line_and_writes_nothing(tmp_path, capsys):
    train, _ = first_rows(tmp_path, 2)
    (tmp_path / "empty").mkdir()
    for model, data, says in ((tmp_path / "nothing", train, "does not exist"),
                              (tmp_path / "empty", train, "holds no model (no config.json)"),
                              (demo_assets("llm").checkpoint, tmp_path / "missing.csv", "missing.csv")):
        code, _, err = run(["--model", str(model), "--train-data", str(data)], capsys)
        assert code == 2 and err.startswith("error: ") and err.strip().count("\n") == 0 and says in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "train.csv"]


def test_a_rewrite_that_drops_what_the_summary_says_keeps_the_turns_own_text():
    # Seen from Gemma 3 270M: the place and the deadline the summary names were rewritten away.
    dialogue = ("#Person1#: 잠실역 2번 출구에서 만나요.\n"
                "#Person2#: 과제는 내일까지 내야 돼요.\n"
                "#Person1#: 네, 알겠어요.")
    summary = "#Person1#과 #Person2#는 잠실역에서 만나기로 하고, 과제를 내일까지 내야 한다."
    rewrites = {"잠실역 2번 출구에서 만나요.": "2번 출구에서 봐요.",  # the place is gone
                "과제는 내일까지 내야 돼요.": "과제는 내일까지 꼭 내야 해요.",  # what the summary says kept
                "네, 알겠어요.": "네, 잘 알겠습니다."}
    assert paraphrase.lost_summary_word("2번 출구에서 봐요.", "잠실역 2번 출구에서 만나요.", summary) == "잠실역"
    new, kept = paraphrase.rewritten(dialogue, rewrites, summary)
    assert new == ("#Person1#: 잠실역 2번 출구에서 만나요.\n"
                   "#Person2#: 과제는 내일까지 꼭 내야 해요.\n"
                   "#Person1#: 네, 잘 알겠습니다.")
    assert kept == 1
    assert paraphrase.rewritten(dialogue, rewrites)[1] == 0  # without a summary nothing is asked of it
