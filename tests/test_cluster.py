"""scripts/cluster/: the SLURM array script and the Kubernetes Indexed Job, each run here as two tasks at once
on one study in the test PostgreSQL, with the variables their scheduler would set."""
import os
import subprocess
import sys
from pathlib import Path

import optuna
import yaml
from optuna.trial import TrialState

from search.storage import open_storage
from test_export import TINY, first_rows

from conftest import SECRET

CLUSTER = Path(__file__).resolve().parents[1] / "scripts" / "cluster"
TRIALS = 2


def search_args(tmp_path: Path, study: str) -> list[str]:
    from models.demo import demo_assets

    dev = first_rows(demo_assets("bart").dev, tmp_path / "dev.csv", 8)
    return ["--family", "bart", "--demo", "--val-data", str(dev), "--method", "full", "--trials", str(TRIALS),
            "--study", study, "--no-wandb", "--output-root", str(tmp_path / "outputs"), *TINY]


def run_together(commands: list[tuple[list[str], dict[str, str]]], storage: str, tmp_path: Path) -> list[str]:
    """Each (command, scheduler variables) started at once, as a scheduler starts its tasks; their outputs."""
    env = {**os.environ, "SUMSWEEP_STORAGE": storage, "OMP_NUM_THREADS": "1",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}  # `python3` is this Python
    procs = [subprocess.Popen(command, env={**env, **variables}, cwd=tmp_path, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for command, variables in commands]
    outputs = [proc.communicate(timeout=300)[0] for proc in procs]
    assert [proc.returncode for proc in procs] == [0] * len(procs), outputs
    assert not any(SECRET in output for output in outputs)
    return outputs


def assert_one_study_of_exactly(storage: str, study: str, workers: set[str]) -> None:
    trials = optuna.load_study(study_name=study, storage=open_storage(storage)).trials
    assert sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials) == TRIALS
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    assert {t.user_attrs["worker"] for t in trials} <= workers  # each trial names the task that ran it


def test_the_slurm_array_script_as_two_tasks_finishes_one_study(password_url, study_name, tmp_path):
    script = [str(CLUSTER / "search.sbatch"), *search_args(tmp_path, study_name)]
    outputs = run_together([(["bash", *script], {"SLURM_ARRAY_TASK_ID": str(task), "SLURM_ARRAY_TASK_COUNT": "2",
                                                 "SLURM_ARRAY_JOB_ID": "77"}) for task in (0, 1)],
                           password_url, tmp_path)
    assert outputs[1].startswith("task 1 of 2 on ")
    assert_one_study_of_exactly(password_url, study_name, {"task 0", "task 1"})


def test_the_kubernetes_indexed_job_as_two_pods_finishes_one_study(password_url, study_name, tmp_path):
    job = yaml.safe_load((CLUSTER / "search-job.yaml").read_text(encoding="utf-8"))
    assert job["kind"] == "Job" and job["spec"]["completionMode"] == "Indexed"
    container = job["spec"]["template"]["spec"]["containers"][0]
    storage_env = next(e for e in container["env"] if e["name"] == "SUMSWEEP_STORAGE")
    assert "secretKeyRef" in storage_env["valueFrom"]  # the URL, password and all, never in the manifest
    assert container["args"][:2] == ["--family", "t5"]  # what a user edits; here the test's own options
    command = [*container["command"], *search_args(tmp_path, study_name)]
    run_together([(command, {"JOB_COMPLETION_INDEX": str(index)}) for index in (0, 1)], password_url, tmp_path)
    assert_one_study_of_exactly(password_url, study_name, {"pod 0", "pod 1"})


def test_the_slurm_script_refuses_a_storage_that_machines_cannot_share(tmp_path):
    for storage, said in (("", "set SUMSWEEP_STORAGE"), (f"sqlite:///{tmp_path}/s.db", "must be a postgresql://")):
        env = {**os.environ, "SUMSWEEP_STORAGE": storage}
        done = subprocess.run(["bash", str(CLUSTER / "search.sbatch"), "--demo"], env=env, capture_output=True,
                              text=True, timeout=30)
        assert done.returncode != 0 and done.stderr.count("\n") == 1 and said in done.stderr, done.stderr
