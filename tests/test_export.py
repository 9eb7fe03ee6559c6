"""search.export as a user meets it: a finished demo study's best trial as a Hugging Face folder with a model
card, which models.predict loads like any other folder; and every way it refuses, in one line."""
import csv
import hashlib
import json
import socket
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState, create_trial

from models import predict
from models.cli import run_cli
from models.config import TrainConfig
from search import export
from search.run import main as search
from search.storage import open_storage

# One trial of a few seconds.
TINY = ["--set", "training.max_steps=2", "--set", "training.eval_steps=1", "--set", "training.eval_subset=4",
        "--set", "training.num_beams=1", "--set", "training.generation_max_length=8",
        "--set", "training.rouge_tokenize=whitespace"]  # no morpheme analyser to load


def first_rows(source: Path, target: Path, rows: int) -> Path:
    with source.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        kept = [row for _, row in zip(range(rows), reader)]
    with target.open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=reader.fieldnames)
        writer.writeheader()
        writer.writerows(kept)
    return target


@pytest.fixture(scope="module")
def study(tmp_path_factory, demo_cache):
    """A finished one-trial demo study of the tiny bart, full fine-tuning: (storage URL, name, its best trial)."""
    from models.demo import demo_assets

    root = tmp_path_factory.mktemp("export-study")
    dev = first_rows(demo_assets("bart").dev, root / "dev.csv", 8)  # the trial's final eval scores all of it
    url = f"sqlite:///{root / 'studies.db'}"
    assert search(["--family", "bart", "--demo", "--val-data", str(dev), "--trials", "1", "--study", "tiny-bart",
                   "--method", "full", "--storage", url, "--output-root", str(root / "outputs"), "--no-wandb",
                   *TINY]) == 0
    trial = optuna.load_study(study_name="tiny-bart", storage=open_storage(url)).best_trial
    return url, "tiny-bart", trial


def run(main, argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_cli(lambda: main(argv))
    out, err = capsys.readouterr()
    return exit_info.value.code, out, err


def exported(study, tmp_path, capsys, *extra) -> Path:
    url, name, _ = study
    out = tmp_path / "tiny-bart-export"
    code, stdout, err = run(export.main, ["--study", name, "--out", str(out), "--storage", url, *extra], capsys)
    assert code == 0, err
    assert f"to {out}" in stdout
    return out


def predictions(capsys, tmp_path, checkpoint, *extra) -> list[dict]:
    from models.demo import demo_assets

    target = tmp_path / f"pred-{hashlib.sha256(str(checkpoint).encode()).hexdigest()[:8]}.csv"
    test = first_rows(demo_assets("bart").test, tmp_path / "test.csv", 4)
    # Greedy, the tiny models end every summary at once; two beams write some words.
    code, _, err = run(predict.main, ["--checkpoint", str(checkpoint), "--test-data", str(test), "--output",
                                      str(target), "--num-beams", "2", *extra], capsys)
    assert code == 0, err
    with target.open(encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_the_export_is_a_hugging_face_folder_that_predict_loads_by_family(study, tmp_path, capsys):
    out = exported(study, tmp_path, capsys)
    assert {"config.json", "model.safetensors", "tokenizer.json", "README.md"} <= {p.name for p in out.iterdir()}
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    assert AutoModelForSeq2SeqLM.from_pretrained(out) is not None and AutoTokenizer.from_pretrained(out) is not None
    rows = predictions(capsys, tmp_path, out, "--family", "bart")
    assert len(rows) == 4 and all(row["summary"] for row in rows)
    # the same summaries as the trial's own checkpoint: the weights and tokenizer are the trial's
    assert rows == predictions(capsys, tmp_path, study[2].user_attrs["checkpoint"])
    assert not list(tmp_path.glob(".tiny-bart-export*"))  # no temporary folder left beside it


def test_the_model_card_names_the_trial_its_rouge_data_and_how_to_train_it_again(study, tmp_path, capsys):
    _, name, trial = study
    card = (exported(study, tmp_path, capsys) / "README.md").read_text(encoding="utf-8")
    assert card.startswith("---\n") and "pipeline_tag: summarization" in card
    assert f"# {name}: trial #{trial.number}" in card and "| family | bart (seq2seq) |" in card
    assert f"`{trial.user_attrs['config']['model.checkpoint']}`" in card and "full fine-tuning" in card
    assert f"**{trial.value:.4f}**" in card and f"rouge2 {trial.user_attrs['rouge2']:.4f}" in card
    assert trial.params and all(f"`{key}`" in card for key in trial.params)
    for split in ("train_data", "val_data"):
        path = Path(trial.user_attrs[split])
        assert f"`{path}` | `{hashlib.sha256(path.read_bytes()).hexdigest()}`" in card
    assert (f"python -m models.train --config sumsweep.json --train-data {trial.user_attrs['train_data']} "
            f"--val-data {trial.user_attrs['val_data']}") in card
    # the config that command trains is the trial's, whole
    config = TrainConfig.from_yaml(tmp_path / "tiny-bart-export" / "sumsweep.json")
    assert config.to_flat() == trial.user_attrs["config"]


def test_predict_takes_a_plain_hugging_face_folder_given_its_family(tmp_path, capsys):
    from models.demo import demo_assets

    plain = demo_assets("bart").checkpoint  # save_pretrained's folder, no sumsweep.json
    rows = predictions(capsys, tmp_path, plain, "--family", "bart")
    assert len(rows) == 4 and all(row["summary"] for row in rows)
    code, _, err = run(predict.main, ["--checkpoint", str(plain), "--test-data", str(tmp_path / "test.csv")], capsys)
    assert code == 2 and err.count("\n") == 1 and "pass --family" in err


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again on return: nothing answers there


def test_push_to_hub_says_at_once_in_one_line_that_the_hub_is_out_of_reach(study, tmp_path, capsys, monkeypatch):
    from huggingface_hub import constants

    from models.hub import hub_reachable

    # Whatever this machine reaches, the hub here is a port nobody listens on.
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    hub_reachable.cache_clear()
    try:
        url, name, _ = study
        out = tmp_path / "pushed"
        code, stdout, err = run(export.main, ["--study", name, "--out", str(out), "--storage", url,
                                              "--push-to-hub", "someone/tiny-bart"], capsys)
    finally:
        hub_reachable.cache_clear()
    assert code == 2 and err.count("\n") == 1, err
    assert "hub cannot be reached" in err and f"hf upload someone/tiny-bart {out}" in err
    assert f"to {out}" in stdout and (out / "README.md").is_file() and (out / "model.safetensors").is_file()


def add_trial(url: str, name: str, **trial) -> None:
    study = optuna.create_study(study_name=name, storage=open_storage(url), direction="maximize",
                                load_if_exists=True)
    study.add_trial(create_trial(**trial))


ERRORS = {
    "no storage file": (lambda url, tmp: "tiny-bart", "does not exist"),
    "no such study": (lambda url, tmp: add_trial(url, "other", value=0.5) or "no-such-study",
                      "no study 'no-such-study' in sqlite:///"),  # and names the ones there: "(it holds other)"
    "no completed trial": (lambda url, tmp: add_trial(url, "pruned-only", state=TrialState.PRUNED) or "pruned-only",
                           "has no completed trial yet (1 pruned)"),
    "checkpoint deleted": (lambda url, tmp: add_trial(url, "gone", value=0.5, user_attrs={
        "checkpoint": str(tmp / "outputs" / "gone" / "trial-0000" / "best")}) or "gone", "is gone"),
    "bad hub repo": (lambda url, tmp: "tiny-bart", "--push-to-hub 'not a repo'"),
}


@pytest.mark.parametrize("case", ERRORS, ids=list(ERRORS))
def test_what_cannot_be_exported_is_one_line_and_writes_nothing(case, study, tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'studies.db'}" if case != "bad hub repo" else study[0]
    name_for, expected = ERRORS[case]
    name = name_for(url, tmp_path)
    push = ["--push-to-hub", "not a repo"] if case == "bad hub repo" else []
    code, _, err = run(export.main, ["--study", name, "--out", str(tmp_path / "out"), "--storage", url, *push],
                       capsys)
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and expected in err, err
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))
    assert case != "no storage file" or not (tmp_path / "studies.db").exists()


def test_a_folder_with_files_is_replaced_only_with_force_and_whole(study, tmp_path, capsys, monkeypatch):
    url, name, _ = study
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine", encoding="utf-8")
    argv = ["--study", name, "--out", str(out), "--storage", url]
    code, _, err = run(export.main, argv, capsys)
    assert code == 2 and err.count("\n") == 1 and "--force" in err
    assert [p.name for p in out.iterdir()] == ["notes.txt"]

    import models.export

    def fails_half_way(checkpoint, folder, merge_lora=False):
        (Path(folder) / "config.json").write_text("{}", encoding="utf-8")
        raise KeyboardInterrupt  # Ctrl-C while the weights are copied

    with monkeypatch.context() as patched:
        patched.setattr(models.export, "export_checkpoint", fails_half_way)
        code, _, _ = run(export.main, [*argv, "--force"], capsys)
    assert code == 130 and [p.name for p in out.iterdir()] == ["notes.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]

    code, _, err = run(export.main, [*argv, "--force"], capsys)
    assert code == 0, err
    assert not (out / "notes.txt").exists() and (out / "README.md").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_merge_lora_writes_a_plain_model_that_generates_as_the_adapter_does(tiny_config, tmp_path, capsys):
    from models.export import export_checkpoint
    from models.trainer import train

    config, assets = tiny_config("bart", method="lora", training__max_steps=2, training__eval_steps=1,
                                 training__learning_rate=1e-2, training__generation_max_length=8)
    adapter = Path(train(config, assets.train, first_rows(assets.dev, tmp_path / "dev.csv", 4), tmp_path / "run",
                         progress=False).checkpoint)
    assert export_checkpoint(adapter, tmp_path / "adapter") == "adapter"
    assert (tmp_path / "adapter" / "adapter_config.json").is_file()
    merged = tmp_path / "merged"
    assert export_checkpoint(adapter, merged, merge_lora=True) == "merged"
    assert not (merged / "adapter_config.json").exists()
    assert json.loads((merged / "config.json").read_text())["model_type"] == "bart"
    assert predictions(capsys, tmp_path, merged, "--family", "bart") == predictions(capsys, tmp_path, adapter)


def test_the_cards_command_trains_the_trial_again(study, tmp_path, capsys, monkeypatch):
    import shlex

    from models import train

    folder = exported(study, tmp_path, capsys)
    card = (folder / "README.md").read_text(encoding="utf-8")
    command = next(line for line in card.splitlines() if line.startswith("python -m models.train "))
    monkeypatch.chdir(folder)  # "from this folder"
    code, _, err = run(train.main, shlex.split(command)[3:], capsys)
    assert code == 0, err
    metrics = json.loads((folder / "retrained" / "results" / "metrics.json").read_text())["metrics"]
    assert metrics["eval_loss"] == pytest.approx(study[2].user_attrs["eval_loss"], rel=1e-5)


def test_a_data_folder_is_recorded_by_one_digest_of_its_files(tmp_path):
    from search.objective import StudyData, sha256_of

    folder = tmp_path / "train"  # as `datasets` save_to_disk writes one
    (folder / "part").mkdir(parents=True)
    (folder / "dataset_info.json").write_text("{}", encoding="utf-8")
    (folder / "part" / "data-00000.arrow").write_bytes(b"rows")
    before = sha256_of(folder)
    (folder / "part" / "data-00000.arrow").write_bytes(b"other rows")
    assert before and sha256_of(folder) != before
    described = StudyData(folder, tmp_path / "gone.csv").described()
    assert described["train_data"] == str(folder.resolve()) and described["train_sha256"] == sha256_of(folder)
    assert described["val_sha256"] is None  # nothing local to read: recorded as such, the trial goes on
