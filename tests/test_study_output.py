"""What a study prints: by default its plan, the trainer's eval lines and a line per trial with the study's
time to go; with -q only the trial lines and the summary."""
import pytest

from search.run import main
from search.study import study_eta
from test_search import quick_space


def run(tmp_path, capsys, *flags):
    db = tmp_path / f"studies{len(flags)}.db"
    assert main(["--demo", "--space", str(quick_space(tmp_path)), "--trials", "2", "--no-wandb", "--seed", "0",
                 "--storage", f"sqlite:///{db}", "--output-root", str(tmp_path / "outputs"), *flags]) == 0
    out, err = capsys.readouterr()
    return out.splitlines(), err


def test_quiet_prints_only_trial_lines_and_the_summary(tmp_path, capsys):
    lines, err = run(tmp_path, capsys)
    assert lines[0].startswith("study ") and any(line.startswith("evaluating every") for line in lines)
    assert "step 30/30  loss" in err  # the trainer's eval lines
    trial_lines = [line for line in lines if line.startswith("[")]
    assert len(trial_lines) == 2
    assert " eta " in trial_lines[0] and " eta " not in trial_lines[1]  # nothing left to time at the end

    quiet, err = run(tmp_path, capsys, "-q")
    assert "step 30/30" not in err
    assert not any(line.startswith(("study ", "evaluating every")) for line in quiet)
    assert [line.startswith("[") for line in quiet[:2]] == [True, True]
    assert any(line.startswith("report: ") for line in quiet)


def test_quiet_and_verbose_together_are_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--demo", "-q", "-v", "--storage", f"sqlite:///{tmp_path / 'x.db'}"])
    assert stop.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err
    assert not (tmp_path / "x.db").exists()


@pytest.mark.parametrize("seconds,finished,left,shown", [
    (60.0, 2, 4, "eta 2:00  "), (10.0, 1, 0, ""), (5.0, 0, 3, ""), (3600.0, 1, 2, "eta 2:00:00  ")])
def test_study_eta_is_the_pace_so_far_times_the_trials_left(seconds, finished, left, shown):
    assert study_eta(seconds, finished, left) == shown
