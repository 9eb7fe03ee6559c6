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
