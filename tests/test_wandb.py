"""W&B as it runs offline, for real: a run per trial, the sweep file, and the sweep agent's program."""
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from search.space import Space
from search.storage import open_storage
from search.study import run_study
from test_search import args_for, data, fake_train, quick_space
from wandb_log import read_run

REPO = Path(__file__).resolve().parents[1]
SECRET = "wandb-key-that-must-never-be-written-0123456789"


@pytest.fixture
def offline_wandb(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no ~/.netrc login: offline by default
    monkeypatch.delenv("WANDB_API_KEY", raising=False)


def offline_runs(root: Path) -> list[dict]:
    return [read_run(p) for p in sorted(root.glob("wandb/offline-run-*/run-*.wandb"))]


def test_every_trial_is_an_offline_wandb_run(offline_wandb, tmp_path, study_name, capsys):
    args = args_for(f"sqlite:///{tmp_path / 'studies.db'}", tmp_path, "--trials", "4", "--pruner", "median")
    args.no_wandb = False
    study = run_study(args, Space.for_family("t5"), data(tmp_path), study_name, train_fn=fake_train)
    runs = offline_runs(tmp_path / "outputs")
    assert len(runs) == 4
    by_name = {r["run"].display_name: r for r in runs}
    for trial in study.trials:
        run = by_name[f"{study_name}-trial-{trial.number:04d}"]
        assert run["run"].run_group == study_name and run["run"].project == "sumsweep"
        assert run["config"]["training.learning_rate"] == trial.params["training.learning_rate"]
        steps = [h["_step"] for h in run["history"]]
        assert steps == sorted(trial.intermediate_values)
        state = {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned"}[trial.state]
        assert run["summary"]["state"] == state and run["exit_code"] == 0
    assert "wandb sync" in capsys.readouterr().out
    listed = subprocess.run(["wandb", "sync", "--dry-run", str(tmp_path / "outputs" / "wandb")],
                            capture_output=True, text=True, timeout=120)
    assert listed.stdout.count(".wandb") + listed.stderr.count(".wandb") == 4


def test_sweep_file_is_valid_and_mirrors_the_space(tmp_path):
    import sweeps

    from search.sweep import main

    out = tmp_path / "t5.yaml"
    assert main(["--family", "t5", "--demo", "--output", str(out), "--storage", "sqlite:///studies.db"]) == 0
    config = yaml.safe_load(out.read_text(encoding="utf-8"))
    assert sweeps.schema_violations_from_proposed_config(config) == []
    space = Space.for_family("t5")
    assert list(config["parameters"]) == [p.name for p in space.params]
    assert config["parameters"]["training.learning_rate"] == {
        "distribution": "log_uniform_values", "min": 3e-5, "max": 3e-3}
    assert config["parameters"]["method"] == {"values": ["full", "lora", "qlora"]}
    assert config["metric"] == {"name": "mean", "goal": "maximize"}
    assert config["early_terminate"]["type"] == "hyperband"
    assert config["command"][2:4] == ["-m", "search.agent"] and config["command"][-1] == "${args}"


def test_agent_program_adds_its_run_to_the_study(offline_wandb, tmp_path):
    """Run as `wandb agent` runs it: the sweep file's command with ${args} expanded."""
    from models.demo import demo_assets

    assets = demo_assets("t5")
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    common = ["--space", str(quick_space(tmp_path)), "--storage", url, "--study", "swept",
              "--train-data", str(assets.train), "--val-data", str(assets.dev), "--checkpoint",
              str(assets.checkpoint), "--output-root", str(tmp_path / "outputs")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_API_KEY": SECRET, "WANDB_MODE": "offline"}
    sweep_args = ["--method=lora", "--training.learning_rate=0.003"]
    done = subprocess.run([sys.executable, "-m", "search.agent", *common, *sweep_args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    study = optuna.load_study(study_name="swept", storage=open_storage(url))
    trial = study.trials[-1]
    assert trial.state == TrialState.COMPLETE and trial.user_attrs["source"] == "wandb-sweep"
    assert trial.params == {"method": "lora", "training.learning_rate": 0.003}
    assert set(trial.distributions) == {"method", "training.learning_rate"}
    assert sorted(trial.intermediate_values) == [10, 20, 30] and trial.value == trial.user_attrs["mean"]
    run, = offline_runs(tmp_path / "outputs")
    assert run["summary"]["state"] == "complete" and run["run"].run_group == "swept"
    # the key in the environment is never written to the study, the outputs or the W&B files
    for path in [tmp_path / "studies.db", *tmp_path.rglob("*")]:
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path

    bad = subprocess.run([sys.executable, "-m", "search.agent", *common, "--training.learning_rate=5"],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "outside its range" in bad.stderr


def test_agent_stopped_by_the_sweep_is_a_pruned_trial(offline_wandb, tmp_path):
    """W&B's hyperband ends a run with SIGTERM; the study records it as pruned, with what it reported."""
    import signal
    import time

    from models.demo import demo_assets

    assets = demo_assets("t5")
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    space = quick_space(tmp_path)
    raw = yaml.safe_load(space.read_text(encoding="utf-8"))
    raw["training"]["max_steps"] = 2000  # long enough to be stopped
    space.write_text(yaml.safe_dump(raw), encoding="utf-8")
    cmd = [sys.executable, "-m", "search.agent", "--space", str(space), "--storage", url, "--study", "cut",
           "--train-data", str(assets.train), "--val-data", str(assets.dev), "--checkpoint", str(assets.checkpoint),
           "--output-root", str(tmp_path / "outputs"), "--no-wandb", "--training.learning_rate=0.001"]
    proc = subprocess.Popen(cmd, cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 180
    while "step 20/" not in (line := proc.stderr.readline()):  # the step-10 report is in by then
        assert line or proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    trial, = optuna.load_study(study_name="cut", storage=open_storage(url)).trials
    assert trial.state == TrialState.PRUNED and 10 in trial.intermediate_values


def test_agent_reads_the_numbers_wandb_writes():
    from search.agent import split_argv

    # W&B writes a float as Python prints it: 5e-05 has no dot, which YAML 1.1 reads as a string.
    options, given = split_argv(["--family", "bart", "--training.learning_rate=5e-05", "--method=lora",
                                 "--qlora.lora_rank=16"])
    assert options == ["--family", "bart"]
    assert given == {"training.learning_rate": 5e-05, "method": "lora", "qlora.lora_rank": 16}


def test_sweep_command_names_absolute_paths_for_agents_started_elsewhere(tmp_path, monkeypatch):
    from models.demo import demo_assets
    from search.sweep import main

    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    checkpoint = os.path.relpath(demo_assets("t5").checkpoint, here)
    assert main(["--family", "t5", "--demo", "--output", "t5.yaml", "--storage", "sqlite:///studies.db",
                 "--output-root", "outs", "--checkpoint", checkpoint]) == 0
    command = yaml.safe_load((here / "t5.yaml").read_text(encoding="utf-8"))["command"]
    option = {flag: command[i + 1] for i, flag in enumerate(command[:-1]) if flag.startswith("--")}
    assert option["--storage"] == f"sqlite:///{here / 'studies.db'}"
    assert option["--output-root"] == str(here / "outs")
    assert option["--checkpoint"] == str(demo_assets("t5").checkpoint.resolve())


def test_sweep_agents_read_the_data_with_its_columns(tmp_path, monkeypatch):
    import datasets

    from search.sweep import main

    monkeypatch.chdir(tmp_path)
    datasets.Dataset.from_list([{"doc_id": "d1", "text": "#Person1#: 안녕하세요.", "highlights": "인사한다."}]
                               ).to_parquet("cnn.parquet")
    columns = "dialogue=text,summary=highlights,fname=doc_id"
    assert main(["--family", "t5", "--demo", "--output", "t5.yaml", "--storage", "sqlite:///studies.db",
                 "--train-data", "cnn.parquet", "--val-data", "cnn.parquet", "--columns", columns]) == 0
    command = yaml.safe_load((tmp_path / "t5.yaml").read_text(encoding="utf-8"))["command"]
    option = {flag: command[i + 1] for i, flag in enumerate(command[:-1]) if flag.startswith("--")}
    assert option["--columns"] == columns and option["--train-data"] == str(tmp_path / "cnn.parquet")


def test_sweep_agents_train_with_the_set_options(tmp_path, monkeypatch):
    from search.sweep import main

    monkeypatch.chdir(tmp_path)
    assert main(["--family", "t5", "--demo", "--output", "t5.yaml", "--storage", "sqlite:///studies.db",
                 "--set", "training.num_beams=1"]) == 0
    config = yaml.safe_load((tmp_path / "t5.yaml").read_text(encoding="utf-8"))
    command = config["command"]
    assert command[command.index("--set") + 1] == "training.num_beams=1"
    assert "training.num_beams" not in config["parameters"]  # fixed, so no longer searched


def test_sweep_agents_keep_the_top_k_checkpoints_asked_for(tmp_path, monkeypatch):
    from search.sweep import main

    monkeypatch.chdir(tmp_path)
    assert main(["--family", "t5", "--demo", "--output", "t5.yaml", "--storage", "sqlite:///studies.db",
                 "--keep-top", "3"]) == 0
    command = yaml.safe_load((tmp_path / "t5.yaml").read_text(encoding="utf-8"))["command"]
    assert command[command.index("--keep-top") + 1] == "3"


@pytest.mark.parametrize("gpus, expected", [("0,2", "error: GPU 2: this machine has 2 GPU(s), 0 to 1"),
                                            ("0,,1", "error: GPU_IDS '0,,1' has an empty entry"),
                                            ("1,0", None)])
def test_launch_agents_refuses_gpus_the_machine_does_not_have(gpus, expected, tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "nvidia-smi").write_text("#!/bin/sh\necho 'GPU 0: NVIDIA H200'\necho 'GPU 1: NVIDIA H200'\n")
    (bin_dir / "wandb").write_text(f"#!/bin/sh\ntouch {tmp_path}/agent-started\n")  # must never be reached
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "SUMSWEEP_AGENT_STAGGER": "0"}
    done = subprocess.run(["bash", str(REPO / "scripts" / "launch_agents.sh"), "me/sumsweep/abc123", gpus],
                          env=env, capture_output=True, text=True, timeout=60)
    if expected is None:  # GPUs it has: an agent each
        assert done.returncode == 0 and (tmp_path / "agent-started").exists(), done.stderr
        return
    assert done.returncode == 2 and done.stderr.startswith(expected) and done.stderr.count("\n") == 1
    assert not (tmp_path / "agent-started").exists()
