"""The pruner on the study's real step counts: small data gets evals to judge trials at, and a study whose
pruner cannot act says so. Scenarios driven through ask/report/tell, over every storage."""
import optuna
from optuna.trial import TrialState

from search.space import Space
from search.study import make_pruner, pruning_plan


def test_small_data_is_evaluated_often_enough_to_judge_trials():
    space = Space.for_family("bart")  # eval_steps 200 in the file: tuned for large data
    space.schedule_evals(train_rows=1000)  # the demo's size: 8 x 2 rows a step, 3 epochs
    assert space.trial_0_steps == 189
    assert space.config(space.baseline()).training.eval_steps == 31  # six evals of trial 0, not none
    assert "judges trials from step 62" in pruning_plan("hyperband", space)

    pinned = Space.for_family("bart")
    pinned.fix("training.eval_steps", 100)  # as --set training.eval_steps=100 does
    pinned.schedule_evals(train_rows=1000)
    assert pinned.config(pinned.baseline()).training.eval_steps == 100

    for rows in (3200, 100_000):  # trial 0 evaluated 3 times, and 93 times: the file's own choice stands
        enough = Space.for_family("bart")
        enough.schedule_evals(train_rows=rows)
        assert enough.config(enough.baseline()).training.eval_steps == 200, rows


def test_a_pruner_that_cannot_act_says_so():
    space = Space.for_family("bart")
    space.fix("training.max_steps", 2)
    space.schedule_evals(train_rows=1000)
    assert "pruner hyperband cannot act" in pruning_plan("hyperband", space)
    assert "cannot act" not in pruning_plan("none", space)


def test_hyperband_prunes_the_weak_trials_of_a_small_data_study(storage_url):
    space = Space.for_family("bart")
    space.schedule_evals(train_rows=1000)
    every, steps = space.defaults.training.eval_steps, space.trial_0_steps
    # Hyperband puts a trial in a bracket by a hash of the study's name and the trial's number: one name, one
    # scenario (with a random name, about one in sixty put too few weak trials beside a strong one).
    study = optuna.create_study(study_name="small-data", storage=storage_url, direction="maximize",
                                pruner=make_pruner("hyperband", every, steps))
    judged_at = []
    for k in range(16):
        strong = k % 2 == 0  # alternating, so most of hyperband's brackets see both kinds
        trial = study.ask()
        for step in range(every, steps + 1, every):
            trial.report((0.8 + 0.001 * k if strong else 0.05) * step / steps, step)
            if trial.should_prune():
                judged_at.append((strong, step))
                study.tell(trial, state=TrialState.PRUNED)
                break
        else:
            study.tell(trial, (0.8 if strong else 0.05))
    weak_pruned = [step for strong, step in judged_at if not strong]
    assert len(weak_pruned) >= 5, judged_at  # of 8 weak trials, the first in each bracket has no rival yet
    assert all(not strong for strong, _ in judged_at), judged_at
    assert all(2 * every <= step < steps for step in weak_pruned)
