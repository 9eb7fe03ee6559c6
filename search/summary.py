"""What a finished study leaves behind: outputs/{study}/summary.txt and optuna's plots as HTML and PNG."""
from __future__ import annotations

import logging
import sys
import warnings
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from models import OutputError

log = logging.getLogger(__name__)

# Each plot as plotly HTML (interactive) and as a matplotlib PNG (for reports, viewers without a browser).
PLOTS = ("optimization_history", "param_importances", "intermediate_values")
# Not plotted: importances need two completed trials, intermediate values a reported eval.
SKIPPED = (ValueError, RuntimeError, ImportError)


def completed(study: optuna.Study) -> list[FrozenTrial]:
    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))


def baseline_trial(study: optuna.Study) -> FrozenTrial | None:
    """Trial 0: the space's defaults, the document's recommended configuration."""
    trials = study.get_trials(deepcopy=False)
    return trials[0] if trials and trials[0].state == TrialState.COMPLETE else None


def params_line(params: dict) -> str:
    """A trial's parameters on one line, by their last names: `learning_rate=0.0003 batch_size=8`."""
    return " ".join(f"{k.rpartition('.')[2]}={v:.3g}" if isinstance(v, float) else f"{k.rpartition('.')[2]}={v}"
                    for k, v in params.items())


def best_lines(study: optuna.Study, top: int = 5) -> list[str]:
    trials = sorted(completed(study), key=lambda t: t.value, reverse=True)
    if not trials:
        return ["no completed trial yet"]
    best, base = trials[0], baseline_trial(study)
    metric = study.user_attrs.get("metric", "value")
    lines = [f"best trial: #{best.number}  {metric} = {best.value:.4f}",
             f"  parameters: {params_line(best.params)}",
             f"  checkpoint: {best.user_attrs.get('checkpoint')}"]
    if base is not None:
        gain = best.value - base.value
        lines.append(f"  vs. trial 0 (the recommended config, {base.value:.4f}): "
                     f"{gain:+.4f} ({100 * gain / base.value:+.1f}%)" if base.value else
                     f"  vs. trial 0 (the recommended config): {gain:+.4f}")
    lines += ["", f"top {min(top, len(trials))} of {len(trials)} completed trials:"]
    lines += [f"  #{t.number:<4} {t.value:.4f}  {t.user_attrs.get('train_seconds', 0):6.1f}s  "
              f"{params_line(t.params)}"
              for t in trials[:top]]
    return lines


def write_report(study: optuna.Study, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    states = {s.name: 0 for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)}
    for t in study.get_trials(deepcopy=False):
        if t.state.name in states:
            states[t.state.name] += 1
    header = [f"study: {study.study_name}", "trials: " + ", ".join(f"{n} {s.lower()}" for s, n in states.items()), ""]
    (folder / "summary.txt").write_text("\n".join(header + best_lines(study)) + "\n", encoding="utf-8")
    with warnings.catch_warnings():  # importances warn of parameters tried once: every small study has them
        warnings.filterwarnings("ignore", message="Some regimes for parameter", category=UserWarning)
        for name in PLOTS:
            try:
                write_html_plot(study, name, folder / f"{name}.html")
                write_png_plot(study, name, folder / f"{name}.png")
            except SKIPPED as err:
                log.debug("skipped %s: %s", name, err)


def write_html_plot(study: optuna.Study, name: str, path: Path) -> None:
    """plotly's JavaScript goes inside the file (~4 MB): a plot that loads it from a CDN is blank offline."""
    figure = getattr(optuna.visualization, f"plot_{name}")(study)
    figure.write_html(path, include_plotlyjs=True)


def write_png_plot(study: optuna.Study, name: str, path: Path) -> None:
    import matplotlib

    if "matplotlib.pyplot" not in sys.modules:  # a command writes files: no window, no display needed
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with warnings.catch_warnings():  # optuna marks its matplotlib plots experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        axes = getattr(optuna.visualization.matplotlib, f"plot_{name}")(study)
    figure = axes.figure
    try:
        figure.savefig(path, dpi=100, bbox_inches="tight")
    finally:
        plt.close(figure)


def print_report(study: optuna.Study, folder: Path) -> None:
    """The best lines shown and the report written: what a user sees when a study's command ends."""
    print("\n".join(best_lines(study)))
    try:
        write_report(study, folder)
    except OSError as err:  # the folder went away or became read-only during the study
        raise OutputError(f"cannot write the report in {folder} ({why_not_written(folder, err)}); make it a "
                          "writable folder (or give another --output-root) and run the same command again: "
                          "the trials are kept in the storage") from None
    print(f"report: {folder}/summary.txt")


def why_not_written(folder: Path, err: OSError) -> str:
    """The OS's reason, or the file that stands where a folder should be (the OS says only "File exists")."""
    blocking = next((p for p in (folder, *folder.parents) if p.exists()), None)
    if blocking is not None and not blocking.is_dir():
        return "it is a file, not a folder" if blocking == folder else f"{blocking} is a file, not a folder"
    return err.strerror or str(err)


def fail_reason(trial: FrozenTrial) -> str:
    """Why a trial failed, in one short line for its progress line."""
    reason = " ".join(trial.user_attrs.get("fail_reason", "no reason recorded").split())
    return reason if len(reason) <= 200 else reason[:199] + "…"
