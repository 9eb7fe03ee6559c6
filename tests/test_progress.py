"""What a person watching a run reads: lines in a log file, a bar on a terminal, nothing when asked for quiet."""
import io
import re
import sys

from models.progress import LONG_EVAL_ROWS, Progress
from models.trainer import train
from test_llm import first_rows

STEP_LINE = re.compile(r"^tiny-t5  step (\d+)/4  loss \d+\.\d{3}  samples/s \d+\.\d  ETA \d\d:\d\d$", re.M)


def test_off_a_terminal_training_prints_step_lines_and_none_when_progress_is_off(tiny_config, tmp_path, capsys):
    config, assets = tiny_config("t5", training__max_steps=4, training__eval_steps=4, training__eval_subset=0)
    dev = first_rows(assets.dev, tmp_path / "dev.csv", 8)  # evaluated whole at every eval: no final pass
    train(config, assets.train, dev, tmp_path / "on", progress=True, progress_seconds=0)
    err = capsys.readouterr().err  # captured: not a terminal, as under nohup or a cluster job
    assert [int(step) for step in STEP_LINE.findall(err)] == [1, 2, 3, 4]
    assert re.search(r"^tiny-t5  step 4/4  loss \S+  eval_loss \S+  mean \S+  \(eval \S+s\)$", err, re.M)
    assert "tiny-t5: " not in err  # no bar

    train(config, assets.train, dev, tmp_path / "off", progress=False, progress_seconds=0)
    assert "tiny-t5  step" not in capsys.readouterr().err


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_long_eval_is_announced_in_a_log_and_shown_as_a_bar_on_a_terminal(capsys, monkeypatch):
    progress = Progress("run", total_steps=10, interval=0)
    with progress.evaluating(LONG_EVAL_ROWS - 1) as on_rows:
        assert on_rows is None
    with progress.evaluating(LONG_EVAL_ROWS):
        pass
    assert capsys.readouterr().err == f"run  evaluating {LONG_EVAL_ROWS} rows\n"

    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    progress = Progress("run", total_steps=10, interval=0)
    progress.stepped(1, samples=8, loss=lambda: 1.0)
    with progress.evaluating(LONG_EVAL_ROWS) as on_rows:
        on_rows(LONG_EVAL_ROWS)
    progress.close()
    shown = terminal.getvalue()
    assert "\rrun eval: " in shown and "\rrun: " in shown  # the bars
    assert "evaluating" not in shown and "samples/s" not in shown  # no lines
