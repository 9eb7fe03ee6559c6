"""search.run as a user meets it: bad input refused before any study is written, Ctrl-C, the dashboard."""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from models.cli import run_cli
from search.run import PARENT_ONLY, build_parser, main, worker_argv
from search.space import SPACES_DIR, Space
from search.study import run_study
from search.storage import open_storage, study_names
from test_search import data, fake_train, quick_space

REPO = Path(__file__).resolve().parents[1]


def run_main(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_cli(lambda: main(argv))
    return exit_info.value.code, capsys.readouterr().err


def write(path: Path, text: str, encoding: str = "utf-8") -> str:
    path.write_text(text, encoding=encoding)
    return str(path)


def space_with(tmp_path: Path, edit) -> str:
    raw = yaml.safe_load((SPACES_DIR / "t5.yaml").read_text(encoding="utf-8"))
    edit(raw)
    return write(tmp_path / "space.yaml", yaml.safe_dump(raw, allow_unicode=True))


GOOD = "fname,dialogue,summary\na,#Person1#: 안녕하세요.,인사한다.\n"
BAD_INPUTS = {
    "unknown family": (lambda p: ["--family", "bart2"], "unknown family 'bart2'"),
    "no trials": (lambda p: ["--trials", "0"], "--trials 0"),
    "negative timeout": (lambda p: ["--demo", "--timeout", "-5"], "--timeout -5 leaves no time for a trial"),
    "no heartbeat": (lambda p: ["--demo", "--heartbeat", "0"], "--heartbeat 0 is no time"),
    "negative grace period": (lambda p: ["--demo", "--grace-period", "-1"], "--grace-period -1 is no time"),
    "a GPU named twice": (lambda p: ["--demo", "--gpus", "0,0"], "--gpus 0 --trials-per-gpu 2"),
    "an empty GPU entry": (lambda p: ["--demo", "--gpus", "0,,1"], "--gpus '0,,1' has an empty entry"),
    "no worker per GPU": (lambda p: ["--demo", "--gpus", "0", "--trials-per-gpu", "0"], "--trials-per-gpu 0"),
    "workers per GPU without GPUs": (lambda p: ["--demo", "--trials-per-gpu", "4"], "needs --gpus, e.g. --gpus 0"),
    "study name too long": (lambda p: ["--demo", "--study", "s" * 513], "--study is 513 characters long"),
    "empty study name": (lambda p: ["--demo", "--study", " "], "--study is empty"),
    "bare sqlite path": (lambda p: ["--storage", "studies.db"], "sqlite:///studies.db"),
    "no data": (lambda p: [], "--demo"),
    "missing file": (lambda p: ["--train-data", str(p / "nope.csv"), "--val-data", str(p / "nope.csv")], "nope.csv"),
    "directory as data": (lambda p: ["--train-data", str(p), "--val-data", write(p / "v.csv", GOOD)],
                          "is a directory, not a data file"),
    "wrong columns": (lambda p: ["--train-data", write(p / "w.csv", "id,text\n1,x\n"),
                                 "--val-data", write(p / "v.csv", GOOD)], "no column 'dialogue', 'summary'; its columns "
                                                                          "are id, text; map yours with --columns"),
    "mapped column missing": (lambda p: ["--train-data", write(p / "w.csv", "id,text,summary\n1,x,y\n"), "--val-data",
                                         write(p / "v.csv", GOOD), "--columns", "dialogue=txt"],
                              "has no column 'txt' (--columns dialogue=txt); its columns are id, text, summary"),
    "bad --columns": (lambda p: ["--demo", "--columns", "dialogue"], "'dialogue' is not NAME=COLUMN"),
    "empty csv": (lambda p: ["--train-data", write(p / "e.csv", ""), "--val-data", write(p / "v.csv", GOOD)],
                  "is empty"),
    "all dialogues empty": (lambda p: ["--train-data", write(p / "x.csv", "fname,dialogue,summary\na,,s\nb, ,s\n"),
                                       "--val-data", write(p / "v.csv", GOOD)], "no row with a non-empty dialogue"),
    "not utf-8": (lambda p: ["--train-data", write(p / "k.csv", GOOD, "cp949"), "--val-data",
                             write(p / "v.csv", GOOD)], "UTF-8"),
    "unknown space key": (lambda p: ["--space", space_with(p, lambda r: r["search"].update(
        {"training.learnig_rate": {"low": 0.1, "high": 0.2}}))], "training.learnig_rate"),
    "empty range": (lambda p: ["--space", space_with(p, lambda r: r["search"].update(
        {"training.warmup_ratio": {"low": 0.2, "high": 0.1}}))], "empty range"),
    "bad yaml": (lambda p: ["--space", write(p / "bad.yaml", "model:\n  architecture: t5\n training: [\n")],
                 "not valid YAML"),
    "unsloth on cpu": (lambda p: ["--demo", "--method", "unsloth"], "use --method full, lora or qlora"),
    "unknown --set key": (lambda p: ["--demo", "--set", "training.learnig_rate=0.1"], "training.learnig_rate"),
    "--set without =": (lambda p: ["--demo", "--set", "training.num_epochs"], "training.num_epochs=1"),
    "unreachable checkpoint": (lambda p: ["--checkpoint", "no-such-org/no-such-model", "--train-data",
                                          write(p / "t.csv", GOOD), "--val-data", write(p / "v.csv", GOOD)],
                               "model hub cannot be reached"),
    "checkpoint of another family": (lambda p: ["--family", "t5", "--checkpoint", str(demo_checkpoint("bart")),
                                                "--train-data", write(p / "t.csv", GOOD), "--val-data",
                                                write(p / "v.csv", GOOD)],
                                     "is a bart model, which family 't5' does not train; set model.architecture (--family) to bart"),
    "llm without its model installed": (lambda p: ["--family", "llm", "--train-data", write(p / "t.csv", GOOD),
                                                   "--val-data", write(p / "v.csv", GOOD)],
                                        "python scripts/install_llm.py gemma3-270m --out checkpoints/gemma3-270m"),
}


def demo_checkpoint(family: str):
    from models.demo import demo_assets

    return demo_assets(family).checkpoint


@pytest.mark.parametrize("case", BAD_INPUTS, ids=list(BAD_INPUTS))
def test_bad_input_is_one_line_and_writes_no_study(case, tmp_path, capsys, monkeypatch):
    if case == "unsloth on cpu" and __import__("torch").cuda.is_available():
        pytest.skip("this machine has CUDA")
    monkeypatch.chdir(tmp_path)
    extra, expected = BAD_INPUTS[case]
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    code, err = run_main(["--storage", url, "--trials", "2", *extra(tmp_path)], capsys)
    assert code == 2
    assert err.startswith("error: ") and err.strip().count("\n") == 0 and expected in err, err
    assert not (tmp_path / "studies.db").exists() or not study_names(open_storage(url))


def test_storage_password_never_printed(capsys):
    code, err = run_main(["--demo", "--storage", "postgresql://user:hunter2@127.0.0.1:1/db"], capsys)
    assert code == 2 and "hunter2" not in err and "user:***@" in err


def test_workers_get_every_set_option():
    argv = ["--family", "t5", "--demo", "--gpus", "0,1", "--set", "training.max_steps=20", "--set", "method=lora"]
    forwarded = build_parser().parse_args(worker_argv(argv, Space.for_family("t5")))
    assert forwarded.set == ["training.max_steps=20", "method=lora"] and forwarded.demo and not forwarded.gpus


def test_workers_get_every_option_but_the_parents_own():
    argv = ["--family", "t5", "--gpus", "0,1", "--trials-per-gpu", "2", "--gpus-per-trial", "1", "--mps",
            "--storage", "sqlite:///elsewhere.db", "--trials", "7", "--train-data", "a.csv", "--val-data", "b.csv",
            "--columns", "dialogue=text", "--demo", "--study", "mine", "--sampler", "random", "--pruner", "median",
            "--timeout", "60", "--checkpoint", "some/model", "--method", "lora", "--set", "training.max_steps=20",
            "--seed", "0", "--metric", "rouge1", "--output-root", "runs", "--keep-checkpoints",
            "--wandb-project", "mine", "--no-wandb", "--heartbeat", "5", "--grace-period", "9", "--keep-top", "3",
            "--quiet"]
    given, defaults = vars(build_parser().parse_args(argv)), vars(build_parser().parse_args([]))
    forwarded = vars(build_parser().parse_args(worker_argv(argv, Space.for_family("t5"))))
    passed_on = [name for name in given if name not in PARENT_ONLY]
    # every such option is tried here; --verbose, which excludes --quiet, just below
    assert [name for name in passed_on if given[name] == defaults[name]] == ["verbose"]
    loud = ["--family", "t5", "--gpus", "0", "--verbose"]
    assert vars(build_parser().parse_args(worker_argv(loud, Space.for_family("t5"))))["verbose"] is True
    assert {name: forwarded[name] for name in passed_on} == {name: given[name] for name in passed_on}
    assert forwarded["space"] == str(Space.for_family("t5").path)
    assert not forwarded["gpus"] and not forwarded["mps"] and forwarded["storage"] == defaults["storage"]


def test_postgres_url_without_the_driver_names_the_extra(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "psycopg", None)  # import fails, as where sumsweep[postgres] is not installed
    code, err = run_main(["--demo", "--storage", "postgresql://user:hunter2@127.0.0.1:1/db"], capsys)
    assert code == 2 and err.strip().count("\n") == 0
    assert "pip install 'sumsweep[postgres]'" in err and "hunter2" not in err


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_dashboard_serves_the_study(tmp_path):
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    args = build_parser().parse_args(["--storage", url, "--trials", "2", "--output-root", str(tmp_path)])
    run_study(args, Space.for_family("t5"), data(tmp_path), "t5-dash", train_fn=fake_train)
    port = free_port()
    server = subprocess.Popen([shutil.which("optuna-dashboard"), url, "--host", "127.0.0.1",
                               "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=2) as response:
                    studies = json.load(response)["study_summaries"]
                break
            except OSError:
                assert time.monotonic() < deadline, "optuna-dashboard did not answer within 30 s"
                time.sleep(0.5)
        assert [s["study_name"] for s in studies] == ["t5-dash"]
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_ctrl_c_leaves_no_running_trial_and_the_rerun_goes_on(tmp_path):
    from models.demo import demo_assets

    assets = demo_assets("t5")
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    cmd = [sys.executable, "-m", "search.run", "--space", str(quick_space(tmp_path)), "--trials", "2",
           "--storage", url, "--study", "ctrlc", "--train-data", str(assets.train), "--val-data", str(assets.dev),
           "--checkpoint", str(assets.checkpoint), "--output-root", str(tmp_path / "outputs"),
           "--no-wandb"]  # this is about the study; W&B's own shutdown once ended such a run by SIGINT (-2)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not _running(url):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "run the same command to go on" in err, err

    study = optuna.load_study(study_name="ctrlc", storage=open_storage(url))
    assert [t.state for t in study.trials] == [TrialState.FAIL]
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    study = optuna.load_study(study_name="ctrlc", storage=open_storage(url))
    assert sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in study.trials) == 2
    assert not any(t.state == TrialState.RUNNING for t in study.trials)


def _running(url: str) -> bool:
    storage = open_storage(url)
    if "ctrlc" not in study_names(storage):
        return False
    study = optuna.load_study(study_name="ctrlc", storage=storage)
    return any(t.state == TrialState.RUNNING for t in study.get_trials(deepcopy=False))


def test_storage_password_with_a_raw_at_is_hidden_whole(capsys):
    code, err = run_main(["--demo", "--storage", "postgresql://user:pa55w0rd@ter2q@127.0.0.1:1/db"], capsys)
    assert code == 2 and "pa55w0rd" not in err and "ter2q" not in err, err
    assert "user:***@127.0.0.1:1/db" in err and "%40" in err and err.count("\n") == 1


def test_columns_reach_every_trial_and_the_rows_are_read_with_them(tmp_path, capsys):
    """--columns fixes data.columns: the study reads the data with it, and so does each trial's training."""
    import datasets

    from search.study import prepare

    rows = [{"doc_id": f"d{i}", "text": "#Person1#: 안녕하세요.", "highlights": "인사한다." if i else ""} for i in range(3)]
    data_file = tmp_path / "cnn.parquet"
    datasets.Dataset.from_list(rows).to_parquet(str(data_file))
    columns = "dialogue=text,summary=highlights,fname=doc_id"
    args = build_parser().parse_args(["--demo", "--train-data", str(data_file), "--val-data", str(data_file),
                                      "--columns", columns, "--trials", "1", "--no-wandb",
                                      "--storage", f"sqlite:///{tmp_path / 'studies.db'}",
                                      "--output-root", str(tmp_path / "outputs")])
    space = Space.for_family("t5")
    data, name = prepare(args, space)
    trained = []

    def train_fn(config, train_path, val_path, *rest, **options):
        trained.append((config.data.columns, train_path))
        return fake_train(config, train_path, val_path, *rest, **options)

    run_study(args, space, data, name, train_fn=train_fn)
    assert trained == [(columns, str(data_file))]
    assert f"left out for an empty dialogue or summary: 1 rows of {data_file}, 1 of {data_file}" in capsys.readouterr().out


def test_rows_left_out_for_an_empty_dialogue_are_counted_at_the_study_start(tmp_path, capsys):
    from search.study import prepare

    train = write(tmp_path / "t.csv", GOOD + "b,,요약\nc, ,요약\nd,#Person1#: 네.,\n")
    args = build_parser().parse_args(["--demo", "--train-data", train, "--trials", "1", "--no-wandb",
                                      "--storage", f"sqlite:///{tmp_path / 'studies.db'}",
                                      "--output-root", str(tmp_path / "outputs")])
    space = Space.for_family("t5")
    data, name = prepare(args, space)
    run_study(args, space, data, name, train_fn=fake_train)
    assert f"left out for an empty dialogue or summary: 3 rows of {train}, 0 of {data.val}" in capsys.readouterr().out


def test_a_gpu_index_the_driver_does_not_list_is_refused(tmp_path, capsys, monkeypatch):
    """A worker given a GPU that does not exist sees none and would train on the CPU without a word."""
    fake = tmp_path / "bin" / "nvidia-smi"  # NVIDIA's tool as it answers on a two-GPU machine
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho 'GPU 0: NVIDIA H200 (UUID: GPU-a)'\necho 'GPU 1: NVIDIA H200 (UUID: GPU-b)'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.chdir(tmp_path)
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    code, err = run_main(["--storage", url, "--demo", "--gpus", "1,2"], capsys)
    assert code == 2 and err.strip() == "error: --gpus 1,2: this machine has GPUs 0 to 1 (nvidia-smi -L lists them); name those"
    assert not (tmp_path / "studies.db").exists()
