"""What a person watching a training run sees, on stderr.

On a terminal: a bar of optimizer steps, and one of rows while an eval generates. Elsewhere (a log
file under nohup, a cluster job, CI) a bar is a jumble of carriage returns, so instead a line at least
every `interval` seconds of training, `LABEL  step k/N  loss x  samples/s y  ETA mm:ss`, and one when
a long eval starts. Every eval's figures get a line of their own in both.
"""
from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from typing import Callable, Iterator

from tqdm.auto import tqdm

LINE_SECONDS = 30.0
LONG_EVAL_ROWS = 100  # an eval generating this many rows is announced off a terminal: it may take minutes


class Progress:
    def __init__(self, label: str, total_steps: int, enabled: bool = True, interval: float = LINE_SECONDS):
        terminal = sys.stderr.isatty()
        self.label, self.total_steps, self.interval = label, total_steps, interval
        self.enabled, self.bars, self.lines = enabled, enabled and terminal, enabled and not terminal
        self.bar = tqdm(total=total_steps, desc=label, disable=not self.bars, dynamic_ncols=True, leave=False)
        self._restart(0)

    def _restart(self, step: int) -> None:
        """Start the window that the next line's samples/s and ETA are measured over."""
        self._since, self._since_step, self._samples = time.perf_counter(), step, 0

    def stepped(self, step: int, samples: int, loss: Callable[[], float]) -> None:
        """After an optimizer step that trained `samples` rows. `loss` is called only when a line is due,
        as reading it waits for the GPU."""
        self.bar.update(1)
        self._samples += samples
        seconds = time.perf_counter() - self._since
        if not self.lines or seconds < self.interval:
            return
        eta = (self.total_steps - step) * seconds / (step - self._since_step)
        self.write(f"{self.label}  step {step}/{self.total_steps}  loss {loss():.3f}  "
                   f"samples/s {self._samples / max(seconds, 1e-9):.1f}  ETA {tqdm.format_interval(eta)}")
        self._restart(step)

    def loss_read(self, loss: float) -> None:
        self.bar.set_postfix(loss=f"{loss:.3f}", refresh=False)

    @contextmanager
    def evaluating(self, rows: int) -> Iterator[Callable[[int], object] | None]:
        """Around an eval's generation; gives what to call with each batch's row count (None: nothing to show)."""
        if self.lines and rows >= LONG_EVAL_ROWS:
            self.write(f"{self.label}  evaluating {rows} rows")
        with tqdm(total=rows, desc=f"{self.label} eval", disable=not self.bars, dynamic_ncols=True,
                  leave=False) as bar:
            yield bar.update if self.bars else None

    def evaluated(self, step: int, loss: float, metrics: dict[str, float], metric: str) -> None:
        self.bar.set_postfix(loss=f"{loss:.3f}", **{metric: f"{metrics[metric]:.4f}"})
        if self.enabled:
            self.write(f"{self.label}  step {step}/{self.total_steps}  loss {loss:.3f}  "
                       f"eval_loss {metrics['eval_loss']:.3f}  {metric} {metrics[metric]:.4f}  "
                       f"(eval {metrics['eval_seconds']:.1f}s)")
        self._restart(step)  # the eval's time is not training's: out of the next line's figures

    def write(self, line: str) -> None:
        tqdm.write(line, file=sys.stderr)

    def close(self) -> None:
        self.bar.close()


class Counting:
    """A long job over many items that is not training (paraphrasing a file): a bar on a terminal; elsewhere
    a line at least every `interval` seconds, `LABEL  k/N UNIT  ETA mm:ss`."""

    def __init__(self, label: str, total: int, unit: str, interval: float = LINE_SECONDS):
        self.label, self.total, self.unit, self.interval = label, total, unit, interval
        self.lines = not sys.stderr.isatty()
        self.bar = tqdm(total=total, desc=label, unit=f" {unit}", disable=self.lines, dynamic_ncols=True,
                        leave=False)
        self.done, self._started = 0, time.perf_counter()
        self._last = self._started

    def update(self, count: int) -> None:
        self.bar.update(count)
        self.done += count
        now = time.perf_counter()
        if self.lines and (now - self._last >= self.interval or self.done == self.total):
            eta = (self.total - self.done) * (now - self._started) / max(self.done, 1)
            tqdm.write(f"{self.label}  {self.done}/{self.total} {self.unit}  ETA {tqdm.format_interval(eta)}",
                       file=sys.stderr)
            self._last = now

    def close(self) -> None:
        self.bar.close()
