"""The search over every storage backend: scenarios with a stand-in trainer, then the real thing end to end."""
import math
import os
import signal
import weakref
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from models.trainer import Result
from search.run import build_parser, main
from search.space import SPACES_DIR, Space
from search.objective import StudyData
from search.storage import open_storage
from search.study import open_study, run_study


def fake_train(config, train_path, val_path, output_dir, report=None, progress=False, label=None,
               keep_checkpoint=None):
    """Scores peak at lr 1e-3; reports after each of 5 evals like the real trainer; stops when told to; writes
    its checkpoint when `keep_checkpoint` wants it, as the real trainer does."""
    quality = max(0.0, 1 - abs(math.log10(config.training.learning_rate) + 3) / 3)
    every, step, stopped = config.training.eval_steps, 0, False
    for step in range(every, 6 * every, every):
        if report and report(step, {"mean": quality * step / (5 * every), "eval_loss": 1 - quality}):
            stopped = True
            break
    metrics = {"mean": quality * step / (5 * every), "rouge1": quality, "rouge2": quality, "rougeL": quality}
    best = Path(output_dir) / "best"
    if keep_checkpoint is None or keep_checkpoint(metrics["mean"], stopped):
        best.mkdir(parents=True, exist_ok=True)
    return Result(metrics=metrics, best_step=step, steps=step, stopped_early=stopped, train_seconds=0.1,
                  eval_seconds=0.0, peak_memory_gb=0.0, checkpoint=str(best) if best.is_dir() else None)


def args_for(storage_url, tmp_path, *extra):
    return build_parser().parse_args(["--family", "t5", "--storage", storage_url,
                                      "--output-root", str(tmp_path / "outputs"), "--seed", "1", "--no-wandb",
                                      *extra])


def data(tmp_path):
    return StudyData(tmp_path / "train.csv", tmp_path / "dev.csv")


def test_workers_given_one_seed_draw_different_parameters(storage_url, tmp_path, study_name, monkeypatch):
    args, space = args_for(storage_url, tmp_path), Space.for_family("t5")
    drawn = []
    for worker in ("0", "1"):  # as search/workers.py numbers them; both run with --seed 1
        monkeypatch.setenv("SUMSWEEP_WORKER_INDEX", worker)
        study = open_study(args, space, study_name)
        if worker == "0":
            baseline = study.ask()
            space.suggest(baseline)
            study.tell(baseline, 0.1)
        drawn.append(space.suggest(study.ask()))
    assert drawn[0] != drawn[1]


def test_trial_0_is_the_recommended_config_and_a_rerun_resumes(storage_url, tmp_path, study_name):
    space = Space.for_family("t5")
    study = run_study(args_for(storage_url, tmp_path, "--trials", "4"), space, data(tmp_path), study_name,
                      train_fn=fake_train)
    trials = study.get_trials()
    assert len(trials) == 4
    assert trials[0].params == space.baseline() and trials[0].user_attrs["baseline"]
    assert trials[0].user_attrs["config"]["training.learning_rate"] == 3e-4  # the document's t5 value
    assert study.best_value >= trials[0].value

    study = run_study(args_for(storage_url, tmp_path, "--trials", "7"), Space.for_family("t5"), data(tmp_path),
                      study_name, train_fn=fake_train)
    trials = study.get_trials()
    assert len(trials) == 7
    assert sum(t.user_attrs.get("baseline", False) for t in trials) == 1  # no second trial 0


def test_pruner_stops_bad_trials_early(storage_url, tmp_path, study_name):
    space = Space.for_family("t5")
    space.fix("method", "full")
    # Trials far from the best learning rate report low values from their first eval on.
    study = run_study(args_for(storage_url, tmp_path, "--trials", "12", "--pruner", "median", "--sampler", "random"),
                      space, data(tmp_path), study_name, train_fn=fake_train)
    pruned = study.get_trials(states=(TrialState.PRUNED,))
    assert pruned, "the median pruner pruned nothing"
    last = 5 * space.defaults.training.eval_steps
    for trial in pruned:
        assert max(trial.intermediate_values) < last and trial.user_attrs["steps"] < last


def test_a_failed_trial_is_made_up_before_the_search_ends(storage_url, tmp_path, study_name):
    def fails_once(config, *args, label=None, **kwargs):
        if label == "trial-0001":
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return fake_train(config, *args, label=label, **kwargs)

    study = run_study(args_for(storage_url, tmp_path, "--trials", "3"), Space.for_family("t5"), data(tmp_path),
                      study_name, train_fn=fails_once)
    assert [t.state for t in study.trials].count(TrialState.FAIL) == 1
    assert len(study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))) == 3


def test_only_the_best_checkpoint_stays_on_disk(storage_url, tmp_path, study_name):
    study = run_study(args_for(storage_url, tmp_path, "--trials", "5", "--pruner", "none"), Space.for_family("t5"),
                      data(tmp_path), study_name, train_fn=fake_train)
    kept = sorted(p.parent.name for p in (tmp_path / "outputs" / study_name).glob("trial-*/best"))
    assert kept == [f"trial-{study.best_trial.number:04d}"]


def test_keep_top_keeps_exactly_the_k_best_checkpoints(storage_url, tmp_path, study_name):
    args = args_for(storage_url, tmp_path, "--trials", "6", "--pruner", "none", "--keep-top", "3")
    space = Space.for_family("t5")
    elsewhere = open_study(args, space, study_name).ask()  # another worker's trial, its checkpoint being written
    writing = tmp_path / "other-worker" / "best"
    writing.mkdir(parents=True)
    elsewhere.set_user_attr("checkpoint", str(writing))
    study = run_study(args, space, data(tmp_path), study_name, train_fn=fake_train)
    done = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(done) == 5  # the other worker's trial is the sixth
    best_3 = sorted(done, key=lambda t: t.value, reverse=True)[:3]
    kept = sorted(p.parent.name for p in (tmp_path / "outputs" / study_name).glob("trial-*/best"))
    assert kept == sorted(f"trial-{t.number:04d}" for t in best_3)
    assert writing.is_dir()


def test_a_trial_writes_its_checkpoint_only_if_it_enters_the_best_k(storage_url, tmp_path, study_name):
    answers = []

    def spy(config, *args, keep_checkpoint=None, **kwargs):
        def asked(value, stopped_early):
            answers.append((value, keep_checkpoint(value, stopped_early)))
            return answers[-1][1]
        return fake_train(config, *args, keep_checkpoint=asked, **kwargs)

    run_study(args_for(storage_url, tmp_path, "--trials", "6", "--pruner", "none", "--keep-top", "2"),
              Space.for_family("t5"), data(tmp_path), study_name, train_fn=spy)
    assert len(answers) == 6
    for i, (value, written) in enumerate(answers):
        before = sorted((v for v, _ in answers[:i]), reverse=True)
        assert written == (len(before) < 2 or value > before[1])
    assert sum(written for _, written in answers) < 6  # some trial was not worth writing (seed 1's draws)


def ctrl_c() -> None:
    os.kill(os.getpid(), signal.SIGINT)


def test_ctrl_c_while_optuna_creates_a_trial_fails_that_trial(storage_url, tmp_path, study_name, monkeypatch):
    ask = optuna.Study.ask

    def ask_then_ctrl_c(study, *args, **kwargs):
        trial = ask(study, *args, **kwargs)  # RUNNING in the storage from here on
        ctrl_c()
        return trial

    monkeypatch.setattr(optuna.Study, "ask", ask_then_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        run_study(args_for(storage_url, tmp_path, "--trials", "3"), Space.for_family("t5"), data(tmp_path),
                  study_name, train_fn=fake_train)
    study = optuna.load_study(study_name=study_name, storage=open_storage(storage_url))
    assert [t.state for t in study.trials] == [TrialState.FAIL]


def test_ctrl_c_while_optuna_records_a_trial_lets_it_finish_then_stops(storage_url, tmp_path, study_name,
                                                                       monkeypatch):
    record = optuna.storages.RDBStorage.set_trial_state_values

    def ctrl_c_then_record(storage, trial_id, state, values=None):
        if state.is_finished():
            ctrl_c()
        return record(storage, trial_id, state, values)

    monkeypatch.setattr(optuna.storages.RDBStorage, "set_trial_state_values", ctrl_c_then_record)
    with pytest.raises(KeyboardInterrupt):
        run_study(args_for(storage_url, tmp_path, "--trials", "3"), Space.for_family("t5"), data(tmp_path),
                  study_name, train_fn=fake_train)
    study = optuna.load_study(study_name=study_name, storage=open_storage(storage_url))
    assert [t.state for t in study.trials] == [TrialState.COMPLETE]


def ctrl_c_in_a_weakref_callback() -> None:
    """Ctrl-C handled while Python runs a weakref callback, as SQLAlchemy's are: the KeyboardInterrupt raised
    there is printed as "Exception ignored" and dropped."""
    class Thing:
        pass

    thing = Thing()
    ref = weakref.ref(thing, lambda _: (ctrl_c(), [step for step in range(3)]))  # the handler runs inside
    del thing
    assert ref() is None


def test_ctrl_c_lost_in_a_weakref_callback_still_stops_the_search(storage_url, tmp_path, study_name):
    def ctrl_c_after_the_last_eval(config, *args, report=None, **kwargs):
        def report_then_ctrl_c(step, metrics):
            stop = report(step, metrics)
            if step == 5 * config.training.eval_steps:
                ctrl_c_in_a_weakref_callback()
            return stop

        return fake_train(config, *args, report=report_then_ctrl_c, **kwargs)

    with pytest.raises(KeyboardInterrupt):
        run_study(args_for(storage_url, tmp_path, "--trials", "3", "--pruner", "none"), Space.for_family("t5"),
                  data(tmp_path), study_name, train_fn=ctrl_c_after_the_last_eval)
    study = optuna.load_study(study_name=study_name, storage=open_storage(storage_url))
    assert [t.state for t in study.trials] == [TrialState.FAIL]


def test_a_second_ctrl_c_stops_at_once_and_leaves_no_trial_running(storage_url, tmp_path, study_name,
                                                                   monkeypatch):
    record, pressed, reached = optuna.storages.RDBStorage.set_trial_state_values, [], []

    def ctrl_c_twice_then_record(storage, trial_id, state, values=None):
        if state.is_finished() and not pressed:
            pressed.append(True)
            ctrl_c()  # held: Optuna is recording the trial
            ctrl_c()  # the user insists
            reached.append(True)
        return record(storage, trial_id, state, values)

    monkeypatch.setattr(optuna.storages.RDBStorage, "set_trial_state_values", ctrl_c_twice_then_record)
    with pytest.raises(KeyboardInterrupt):
        run_study(args_for(storage_url, tmp_path, "--trials", "3"), Space.for_family("t5"), data(tmp_path),
                  study_name, train_fn=fake_train)
    assert not reached
    study = optuna.load_study(study_name=study_name, storage=open_storage(storage_url))
    assert [t.state for t in study.trials] == [TrialState.FAIL]


def test_ctrl_c_before_any_trial_says_no_trial_was_failed(tmp_path, monkeypatch, capsys):
    import search.study

    def interrupted(args, space):
        ctrl_c()
        raise AssertionError("the Ctrl-C did not stop the check of the input")

    monkeypatch.setattr(search.study, "prepare", interrupted)
    assert main(["--family", "t5", "--demo", "--storage", f"sqlite:///{tmp_path / 'studies.db'}", "--no-wandb"]) == 130
    err = capsys.readouterr().err
    assert "interrupted" in err and "trial" not in err


def test_trials_asked_while_others_run_are_drawn_apart_from_them():
    """Four workers asking at once, after 12 finished trials of a smooth objective: without the constant liar
    TPE proposed four near-identical points (closest pair 0.3-2.3 apart in [-10, 10]^2, seeds 0-7)."""
    from search.study import make_sampler

    def closest_pair(sampler) -> float:
        study = optuna.create_study(direction="maximize", sampler=sampler)
        for _ in range(12):
            trial = study.ask()
            x, y = trial.suggest_float("x", -10, 10), trial.suggest_float("y", -10, 10)
            study.tell(trial, -(x - 3) ** 2 - (y + 2) ** 2)
        points = []
        for _ in range(4):  # four workers' trials in flight, none told yet; each draws as it starts
            trial = study.ask()
            points.append((trial.suggest_float("x", -10, 10), trial.suggest_float("y", -10, 10)))
        return min(math.dist(a, b) for i, a in enumerate(points) for b in points[i + 1:])

    space = Space.for_family("t5")
    ours = [closest_pair(make_sampler("tpe", space, seed)) for seed in range(8)]
    plain = [closest_pair(optuna.samplers.TPESampler(seed=seed, n_startup_trials=5, multivariate=True, group=True,
                                                     constant_liar=False)) for seed in range(8)]
    assert sum(ours) > 2 * sum(plain)


def test_every_sampler_runs_a_study(storage_url, tmp_path, study_name):
    for sampler in ("tpe", "random", "grid", "cmaes", "qmc"):
        study = run_study(args_for(storage_url, tmp_path, "--trials", "3", "--sampler", sampler),
                          Space.for_family("t5"), data(tmp_path), f"{study_name}-{sampler}", train_fn=fake_train)
        assert len(study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))) == 3, sampler


def quick_space(tmp_path: Path) -> Path:
    """A user's copy of spaces/t5.yaml, edited for trials of a few seconds."""
    raw = yaml.safe_load((SPACES_DIR / "t5.yaml").read_text(encoding="utf-8"))
    raw["training"].update(max_steps=30, eval_steps=10, eval_subset=16, num_beams=1, generation_max_length=48)
    raw["search"] = {"training.learning_rate": {"low": 1.0e-4, "high": 1.0e-2, "log": True},
                     "method": {"choices": ["full", "lora"]}}
    path = tmp_path / "my-t5.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    return path


def test_demo_study_end_to_end(storage_url, tmp_path, capsys):
    from models.demo import demo_assets

    assets = demo_assets("t5")
    argv = ["--space", str(quick_space(tmp_path)), "--trials", "3", "--storage", storage_url, "--study", "e2e",
            "--train-data", str(assets.train), "--val-data", str(assets.dev), "--checkpoint", str(assets.checkpoint),
            "--output-root", str(tmp_path / "outputs"), "--seed", "0"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    study = optuna.load_study(study_name="e2e", storage=open_storage(storage_url))
    finished = study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))
    assert len(finished) == 3 and study.best_value >= study.trials[0].value
    best = study.best_trial
    assert Path(best.user_attrs["checkpoint"]).is_dir()
    assert f"best trial: #{best.number}" in out and "vs. trial 0" in out
    report = tmp_path / "outputs" / "e2e"
    assert "best trial" in (report / "summary.txt").read_text(encoding="utf-8")
    assert (report / "optimization_history.html").is_file()

    from search.collect import main as collect

    csv_path = tmp_path / "results.csv"
    assert collect(["--storage", storage_url, "--output", str(csv_path)]) == 0
    import csv

    rows = list(csv.DictReader(csv_path.open(encoding="utf-8")))
    assert [int(r["trial"]) for r in rows] == [t.number for t in finished]
    by_trial = {int(r["trial"]): r for r in rows}
    assert float(by_trial[best.number]["mean"]) == pytest.approx(best.value)
    assert by_trial[0]["family"] == "t5" and by_trial[0]["method"] == "full"

    # The same command again resumes: two more trials, the same study.
    assert main([*argv[:2], "--trials", "5", *argv[4:]]) == 0
    assert len(optuna.load_study(study_name="e2e", storage=open_storage(storage_url)).trials) == 5
