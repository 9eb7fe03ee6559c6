"""A trial whose loss turns nan or inf fails with the step as its reason; it is never the best trial."""
import pytest
from optuna.trial import TrialState

from models.demo import demo_assets
from search.objective import StudyData
from search.run import build_parser
from search.space import Space
from search.study import run_study


def test_a_diverged_trial_fails_with_its_reason(storage_url, tmp_path, study_name):
    assets = demo_assets("gpt2")
    space = Space.for_family("gpt2")
    for key, value in {"model.checkpoint": str(assets.checkpoint), "method": "full", "training.max_steps": 20,
                       "training.eval_steps": 10, "training.eval_subset": 8, "training.num_beams": 1,
                       "training.learning_rate": 1e30}.items():
        space.fix(key, value)
    args = build_parser().parse_args(["--family", "gpt2", "--storage", storage_url, "--trials", "1", "--no-wandb",
                                      "--output-root", str(tmp_path / "outputs")])
    study = run_study(args, space, StudyData(assets.train, assets.dev), study_name)
    trials = study.get_trials()  # a failed trial is made up, up to the search's limit of failures
    assert trials and all(t.state == TrialState.FAIL for t in trials)
    assert all("loss diverged at step" in t.user_attrs["fail_reason"] for t in trials)
    with pytest.raises(ValueError):  # Optuna's word for "no completed trial": none of them is the best
        study.best_trial
