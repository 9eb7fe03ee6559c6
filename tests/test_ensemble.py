"""Ensembles of a study's best trials: MBR voting, weight soups, and the ensemble and refit commands end to end."""
import csv
import json
from pathlib import Path

import optuna
import pytest
import torch
import yaml
from optuna.trial import TrialState, create_trial

from models.config import TrainConfig
from models.ensemble import greedy_soup, mbr_select, rouge_agreement, soup_problem
from models.errors import ConfigError
from models.generate import METADATA, save_checkpoint
from models.methods import load_tokenizer
from search.space import SPACES_DIR
from search.storage import open_storage


def write_rows(path: Path, rows: list[dict]) -> Path:
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def first_rows(path: Path, count: int, out: Path) -> Path:
    with path.open(encoding="utf-8", newline="") as f:
        return write_rows(out, list(csv.DictReader(f))[:count])


def test_mbr_picks_the_candidate_the_others_agree_with():
    row = ["stock prices fell sharply today",  # the best model's, and an outlier
           "the meeting moved to friday",  # inside both of the others: the consensus
           "the meeting moved to friday afternoon",
           "the meeting was moved to friday"]
    same = ["a b c", "a b c", "a b c", "a b c"]
    assert mbr_select([row, same], [0.5, 0.3, 0.3, 0.3], rouge_agreement("whitespace")) == [1, 0]
    # Two models that disagree: the better one's candidate, wherever it is listed.
    assert mbr_select([["x y z", "a b c"]], [0.3, 0.5], rouge_agreement("whitespace")) == [1]


def test_soup_of_two_identical_checkpoints_is_that_checkpoint(tiny_config, tmp_path):
    from transformers import AutoModelForSeq2SeqLM

    config, assets = tiny_config("t5", training__generation_max_length=8, training__rouge_tokenize="whitespace")
    model = AutoModelForSeq2SeqLM.from_pretrained(assets.checkpoint)
    tokenizer = load_tokenizer(str(assets.checkpoint))
    for name in ("a", "b"):
        save_checkpoint(model, tokenizer, config, tmp_path / name)
    dev = first_rows(assets.dev, 6, tmp_path / "dev.csv")
    soup = greedy_soup([tmp_path / "a", tmp_path / "b"], dev, metric="mean", batch_size=8)
    assert soup.members == [0, 1]  # the same dev score: kept
    souped = soup.model.state_dict()
    assert all(torch.equal(souped[k].cpu(), v) for k, v in model.state_dict().items())


def test_trials_of_other_bases_or_methods_cannot_be_averaged():
    t5 = TrainConfig.from_yaml(SPACES_DIR / "t5.yaml")
    assert soup_problem(t5, t5.override({"training.learning_rate": 1e-3})) is None
    assert "facebook/bart-base" in soup_problem(t5, TrainConfig.from_yaml(SPACES_DIR / "bart.yaml"))
    assert soup_problem(t5, t5.override({"method": "lora"})) == "lora rank 16, not full fine-tuning"
    lora = t5.override({"method": "lora"})
    assert soup_problem(lora, lora.override({"method": "qlora"})) is None  # both adapters of rank 16, merged
    assert soup_problem(lora, lora.override({"qlora.lora_rank": 8})) == "lora rank 8, not lora rank 16"


def test_ensemble_refuses_a_soup_of_mismatched_trials_in_one_line(storage_url, tmp_path, study_name, capsys):
    from search.ensemble import main

    t5 = TrainConfig.from_yaml(SPACES_DIR / "t5.yaml")
    study = optuna.create_study(study_name=study_name, storage=open_storage(storage_url), direction="maximize")
    for number, config in enumerate([t5, t5.override({"method": "lora"})]):
        folder = tmp_path / f"trial-{number}" / "best"
        folder.mkdir(parents=True)
        (folder / METADATA).write_text(json.dumps(config.to_dict()), encoding="utf-8")
        study.add_trial(create_trial(value=0.5 - number / 10, state=TrialState.COMPLETE,
                                     user_attrs={"checkpoint": str(folder)}))
    argv = ["--study", study_name, "--storage", storage_url, "--top", "2", "--how", "soup",
            "--val-data", str(tmp_path / "dev.csv"), "--output-root", str(tmp_path / "outputs")]
    with pytest.raises(ConfigError, match=r"no trial of the best 2 can be averaged with #0 \(#1 lora rank 16, "
                                          r"not full fine-tuning\); use --how mbr"):
        main(argv)
    assert not (tmp_path / "outputs").exists()


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory):
    """A search of 2 tiny T5 trials on SQLite, both checkpoints kept (--keep-top 2)."""
    from models.demo import demo_assets
    from search.run import main

    root = tmp_path_factory.mktemp("ensemble")
    assets = demo_assets("t5")
    raw = yaml.safe_load((SPACES_DIR / "t5.yaml").read_text(encoding="utf-8"))
    raw["training"].update(learning_rate=3e-3, max_steps=4, eval_steps=2, eval_subset=4, num_beams=1,
                           generation_max_length=12, rouge_tokenize="whitespace")
    raw["search"] = {"training.learning_rate": {"low": 1.0e-3, "high": 1.0e-2, "log": True}}
    space = root / "quick.yaml"
    space.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    dev = first_rows(assets.dev, 8, root / "dev.csv")
    url = f"sqlite:///{root / 'studies.db'}"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("search.study.print_report", lambda study, folder: None)  # its plots take seconds
        assert main(["--space", str(space), "--trials", "2", "--keep-top", "2", "--storage", url, "--study", "tiny",
                     "--train-data", str(assets.train), "--val-data", str(dev), "--checkpoint",
                     str(assets.checkpoint), "--output-root", str(root / "outputs"), "--seed", "0", "--no-wandb"]) == 0
    return root, url, assets, dev


def test_ensemble_command_scores_both_ways_and_records_them(tiny_study, capsys):
    from search.ensemble import main

    root, url, assets, dev = tiny_study
    test = first_rows(assets.test, 5, root / "test.csv")
    submission = root / "submission.csv"
    capsys.readouterr()
    assert main(["--study", "tiny", "--storage", url, "--top", "2", "--test-data", str(test),  # dev: the trials'
                 "--output", str(submission), "--output-root", str(root / "outputs")]) == 0
    out = capsys.readouterr().out
    assert "best single trial #" in out and "MBR over 2 trials" in out and "greedy soup #" in out
    assert "dev ROUGE (mean) on 8 rows" in out
    record = json.loads((root / "outputs" / "tiny" / "ensemble.json").read_text(encoding="utf-8"))
    study = optuna.load_study(study_name="tiny", storage=open_storage(url))
    assert study.user_attrs["ensemble"] == record
    best = record["best_single"]
    assert best["trial"] == study.best_trial.number
    for how in ("mbr", "soup"):
        assert record[how]["gain"] == pytest.approx(record[how]["mean"] - best["mean"])
        assert f"{record[how]['mean']:.4f}" in out
    with submission.open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["fname"] for r in rows] == [f"test_{i}" for i in range(5)]
    assert record["submission"]["from"] in ("mbr", "soup")
    assert (Path(record["soup"]["checkpoint"]) / METADATA).is_file()  # models.predict loads it


def test_ensemble_refuses_a_submission_path_it_cannot_write_before_any_model_generates(tiny_study, capsys):
    from models.cli import run_cli
    from search.ensemble import main

    root, url, assets, dev = tiny_study
    test = first_rows(assets.test, 5, root / "test.csv")
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        run_cli(lambda: main(["--study", "tiny", "--storage", url, "--top", "2", "--test-data", str(test),
                              "--output", str(root), "--output-root", str(root / "outputs")]))
    out, err = capsys.readouterr()
    assert exit_info.value.code == 2 and err.strip() == (f"error: --output {root} is a folder; give a file name, "
                                                         f"e.g. {root / 'submission.csv'}")
    assert "MBR" not in out


def test_refit_trains_the_best_config_on_train_and_dev(tiny_study, capsys):
    from search.refit import main

    root, url, assets, dev = tiny_study
    capsys.readouterr()
    # The data is the best trial's, as it recorded it.
    assert main(["--study", "tiny", "--storage", url, "--output-root", str(root / "outputs")]) == 0
    out = capsys.readouterr().out
    assert "NOT a held-out score" in out
    study = optuna.load_study(study_name="tiny", storage=open_storage(url))
    refit = study.user_attrs["refit"]
    assert refit["trial"] == study.best_trial.number and Path(refit["checkpoint"]).is_dir()
    assert refit["steps"] == 5  # 4 steps over 1000 rows, scaled to 1008
