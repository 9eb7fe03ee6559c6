"""Where a study writes: any study name stays one folder inside the output root, and an output folder that
goes away mid-study fails its trials with the reason shown and ends the command in one line."""
import shutil
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from models.cli import run_cli
from search.names import study_folder
from search.objective import Objective
from search.run import main
from search.storage import open_storage
from test_search import quick_space
from test_wandb import offline_wandb  # noqa: F401 (a fixture)

LONG_NAME = ("a-long-study-name-" * 30)[:500]  # the storage keeps it; no file system takes it as a folder name


def test_a_500_character_study_name_trains_in_a_folder_of_its_own(storage_url, offline_wandb,  # noqa: F811
                                                                    tmp_path):
    outputs = tmp_path / "outputs"
    assert main(["--demo", "--space", str(quick_space(tmp_path)), "--trials", "1", "--storage", storage_url,
                 "--study", LONG_NAME, "--output-root", str(outputs)]) == 0
    trial, = optuna.load_study(study_name=LONG_NAME, storage=open_storage(storage_url)).trials
    assert trial.state == TrialState.COMPLETE
    folder = study_folder(outputs, LONG_NAME)
    assert folder.parent == outputs and len(folder.name.encode()) <= 100
    assert Path(trial.user_attrs["checkpoint"]).parent.parent == folder
    assert f"study: {LONG_NAME}\n" in (folder / "summary.txt").read_text(encoding="utf-8")


def test_a_study_named_dot_dot_writes_inside_the_output_root(tmp_path):
    outputs, db = tmp_path / "a" / "b" / "outputs", tmp_path / "db"
    db.mkdir()
    assert main(["--demo", "--space", str(quick_space(tmp_path)), "--trials", "1", "--no-wandb",
                 "--storage", f"sqlite:///{db / 'studies.db'}", "--study", "../../x",
                 "--output-root", str(outputs)]) == 0
    written = {p.relative_to(tmp_path).parts[0] for p in tmp_path.rglob("*") if p.is_file()}
    assert written == {"a", "db", "my-t5.yaml"}, written
    assert not (tmp_path / "a" / "x").exists()
    assert (study_folder(outputs, "../../x") / "summary.txt").is_file()
    assert study_folder(outputs, "../../x").parent == outputs


def test_an_output_folder_gone_mid_study_fails_trials_with_the_reason_and_ends_in_one_line(
        storage_url, tmp_path, capsys, monkeypatch):
    outputs, real_run = tmp_path / "outputs", Objective.run

    def run_with_the_folder_gone_from_trial_1(self, params, study, name, report, record, *rest):
        folder = study_folder(outputs, study)
        if name == "trial-0001":  # as a disk unmounted or a folder removed by hand: a file where it was
            shutil.rmtree(folder)
            folder.write_text("not a folder any more", encoding="utf-8")
        return real_run(self, params, study, name, report, record, *rest)

    monkeypatch.setattr(Objective, "run", run_with_the_folder_gone_from_trial_1)
    with pytest.raises(SystemExit) as exit_info:
        run_cli(lambda: main(["--demo", "--space", str(quick_space(tmp_path)), "--trials", "3", "--no-wandb",
                              "--storage", storage_url, "--study", "gone", "--output-root", str(outputs)]))
    out, err = capsys.readouterr()
    assert exit_info.value.code == 2
    assert err.splitlines()[-1].startswith("error: cannot write the report in "), err
    assert "is a file, not a folder" in err and "Traceback" not in out + err
    trials = optuna.load_study(study_name="gone", storage=open_storage(storage_url)).trials
    # Trial 0 completes; every later one fails (failed trials are made up, up to the search's limit).
    assert trials[0].state == TrialState.COMPLETE and len(trials) >= 3
    assert all(t.state == TrialState.FAIL for t in trials[1:])
    for trial in trials[1:]:  # its progress line says why, in one line
        line, = [s for s in out.splitlines() if f"trial #{trial.number} fail" in s]
        assert trial.user_attrs["fail_reason"].split(":")[0] in line and "Error" in line, line
