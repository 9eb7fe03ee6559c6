"""The single-run commands as a user types them: train --demo, predict, score."""
import csv
import json

import pytest

from models import predict, score, train


def run(main, args, capsys):
    with pytest.raises(SystemExit) as exit_info:
        from models.cli import run_cli
        run_cli(lambda: main(args))
    out, err = capsys.readouterr()
    return exit_info.value.code, out, err


SHORT = ["--set", "training.max_steps=40", "--set", "training.eval_steps=20", "--set", "training.eval_subset=16",
         "--set", "training.num_beams=1", "--set", "training.learning_rate=3e-3",
         "--set", "training.generation_max_length=48"]


def test_train_predict_score_round_trip(tmp_path, capsys):
    from models.demo import demo_assets

    out = tmp_path / "run"
    code, stdout, _ = run(train.main, ["--config", "spaces/t5.yaml", "--demo", "--output-dir", str(out), *SHORT],
                          capsys)
    assert code == 0 and "Best Metrics" in stdout
    assert (out / "results" / "summary.txt").is_file() and list((out / "logs").glob("events.out.tfevents.*"))
    reported = json.loads((out / "results" / "metrics.json").read_text())["metrics"]

    assets = demo_assets("t5")
    for split, target in (("dev", tmp_path / "dev_pred.csv"), ("test", tmp_path / "submission.csv")):
        code, _, _ = run(predict.main, ["--checkpoint", str(out / "best"), "--test-data",
                                        str(getattr(assets, split)), "--output", str(target)], capsys)
        assert code == 0
    with open(tmp_path / "submission.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    with open(assets.test, encoding="utf-8") as f:
        assert [r["fname"] for r in rows] == [r["fname"] for r in csv.DictReader(f)]

    code, stdout, _ = run(score.main, ["--pred", str(tmp_path / "dev_pred.csv"), "--gold", str(assets.dev),
                                       "--json"], capsys)
    assert code == 0
    # what training reported is the best checkpoint scored on the whole dev set, as predict + score see it
    assert json.loads(stdout)["mean"] == pytest.approx(reported["mean"], abs=1e-6)


def test_train_without_data_or_demo_is_a_one_line_error(tmp_path, capsys):
    code, _, err = run(train.main, ["--config", "spaces/t5.yaml"], capsys)
    assert code == 2 and err.strip().count("\n") == 0 and "--demo" in err


def test_unreachable_checkpoint_names_the_fix(tmp_path, capsys):
    data = tmp_path / "d.csv"
    data.write_text("fname,dialogue,summary\na,#Person1#: 안녕,인사한다\n", encoding="utf-8")
    code, _, err = run(train.main, ["--config", "spaces/bart.yaml", "--train-data", str(data),
                                    "--val-data", str(data)], capsys)
    assert code == 2
    assert "facebook/bart-base" in err and "local folder" in err and "--demo" in err


def test_train_predict_score_on_your_columns_in_other_formats(tmp_path, capsys):
    """Data in a CNN/DailyMail-like schema (doc_id, text, highlights): training reads a TSV through --columns,
    the checkpoint remembers the mapping, so predict reads JSON Lines of the same schema without the flag, and
    score reads the gold TSV with it. The submission's identifier column is fname, holding the doc_ids."""
    from models.demo import demo_assets

    with open(demo_assets("t5").dev, encoding="utf-8") as f:
        demo = [{"doc_id": r["fname"], "text": r["dialogue"], "highlights": r["summary"]} for r in csv.DictReader(f)]
    train_tsv, dev_tsv, dev_jsonl = tmp_path / "train.tsv", tmp_path / "dev.tsv", tmp_path / "dev.jsonl"
    for path, rows in ((train_tsv, demo[:48]), (dev_tsv, demo[48:64])):
        with path.open("w", encoding="utf-8", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=["doc_id", "text", "highlights"], delimiter="\t")
            writer.writeheader()
            writer.writerows(rows)
    dev_jsonl.write_text("".join(json.dumps({"doc_id": r["doc_id"], "text": r["text"]}, ensure_ascii=False) + "\n"
                                 for r in demo[48:64]), encoding="utf-8")
    columns = "dialogue=text,summary=highlights,fname=doc_id"

    out = tmp_path / "run"
    code, _, err = run(train.main, ["--config", "spaces/t5.yaml", "--demo", "--train-data", str(train_tsv),
                                    "--val-data", str(dev_tsv), "--columns", columns, "--output-dir", str(out),
                                    *SHORT, "--set", "training.max_steps=4", "--set", "training.eval_steps=4",
                                    "--set", "training.rouge_tokenize=whitespace"],
                       capsys)
    assert code == 0, err
    reported = json.loads((out / "results" / "metrics.json").read_text())["metrics"]

    submission = tmp_path / "submission.csv"
    code, _, err = run(predict.main, ["--checkpoint", str(out / "best"), "--test-data", str(dev_jsonl),
                                      "--output", str(submission)], capsys)
    assert code == 0, err
    with open(submission, encoding="utf-8") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == ["fname", "summary"]
        assert [r["fname"] for r in reader] == [r["doc_id"] for r in demo[48:64]]

    code, stdout, err = run(score.main, ["--pred", str(submission), "--gold", str(dev_tsv), "--columns", columns,
                                         "--json", "--tokenize", "whitespace"], capsys)
    assert code == 0, err
    assert json.loads(stdout)["mean"] == pytest.approx(reported["mean"], abs=1e-6)

    code, _, err = run(score.main, ["--pred", str(submission), "--gold", str(dev_tsv)], capsys)
    assert code == 2 and err == (f"error: {dev_tsv} has no column 'fname' or 'id', 'summary'; its columns are "
                                 "doc_id, text, highlights; map yours with --columns fname=COLUMN,summary=COLUMN "
                                 "(config key data.columns)\n")


PREDICT_BAD_INPUTS = {
    "output is a folder": (lambda p: ["--output", str(p)], "is a folder; give a file name"),
    "output under a file": (lambda p: ["--output", str(p / "test.csv" / "s.csv")], "is a file, not a folder"),
    "no batch": (lambda p: ["--batch-size", "0"], "--batch-size 0: use 1 or more"),
    "no beams": (lambda p: ["--num-beams", "0"], "--num-beams 0: use 1 or more"),
}


@pytest.mark.parametrize("case", PREDICT_BAD_INPUTS, ids=list(PREDICT_BAD_INPUTS))
def test_predict_refuses_an_output_or_setting_it_cannot_use_before_it_generates(case, tmp_path, capsys):
    from models.demo import demo_assets

    test_csv = tmp_path / "test.csv"
    test_csv.write_text("fname,dialogue\nt1,#Person1#: 안녕하세요.\n", encoding="utf-8")
    checkpoint = demo_assets("bart").checkpoint
    capsys.readouterr()  # what building the demo checkpoint printed, the first time
    extra, expected = PREDICT_BAD_INPUTS[case]
    code, out, err = run(predict.main, ["--checkpoint", str(checkpoint), "--family", "bart",
                                        "--test-data", str(test_csv), "--output", str(tmp_path / "s.csv"),
                                        *extra(tmp_path)], capsys)
    assert code == 2 and err.startswith("error: ") and err.strip().count("\n") == 0 and expected in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["test.csv"]  # nothing written, not even a temporary file
