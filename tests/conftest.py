import contextlib
import os
import re
import signal
import uuid

import pytest
import torch

# Two threads on a 2-core machine run these tiny models far slower than one.
torch.set_num_threads(1)
# Ctrl-C is a KeyboardInterrupt here and in the processes the tests start, as in a terminal, also where the
# test run itself was started with SIGINT ignored (a background job of a script inherits that, and so would
# every search it starts, which the Ctrl-C tests would then find deaf).
signal.signal(signal.SIGINT, signal.default_int_handler)
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SEQ2SEQ = ["bart", "t5", "mt5", "flan-t5"]
CAUSAL = ["gpt2", "kogpt2"]
FAMILIES = SEQ2SEQ + CAUSAL
SECRET = "SECRET-pw-3f9a1c"  # a storage password that must reach no file and no console line


@pytest.fixture(scope="session", autouse=True)
def demo_cache(tmp_path_factory):
    """One cache of demo data and tiny checkpoints for the session, shared by subprocesses via the env."""
    cache = os.environ.get("SUMSWEEP_TEST_CACHE") or str(tmp_path_factory.mktemp("sumsweep-cache"))
    os.environ["SUMSWEEP_CACHE"] = cache
    return cache


@pytest.fixture
def tiny_config():
    """A family's space defaults on its tiny checkpoint, cut to a few seconds of training."""
    from models.config import TrainConfig
    from models.demo import demo_assets
    from search.space import SPACES_DIR

    def make(family: str, **overrides):
        assets = demo_assets(family)
        base = {"model.checkpoint": str(assets.checkpoint), "training.max_steps": 20, "training.eval_steps": 10,
                "training.eval_subset": 16, "training.num_beams": 1, "training.generation_max_length": 32,
                "training.learning_rate": 3e-3, "training.gradient_accumulation_steps": 1}
        config = TrainConfig.from_yaml(SPACES_DIR / f"{family}.yaml")
        return config.override({**base, **{k.replace("__", "."): v for k, v in overrides.items()}}), assets

    return make


def _postgres_url():
    return os.environ.get("SUMSWEEP_TEST_POSTGRES")


@pytest.fixture(params=["sqlite", "postgresql"])
def storage_url(request, tmp_path):
    """Each storage test runs on SQLite and on a real PostgreSQL (scripts/start_test_postgres.sh)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'studies.db'}"
        return
    with fresh_database() as url:
        yield url


@contextlib.contextmanager
def fresh_database():
    """A database of its own on the test PostgreSQL, dropped afterwards: tests may run side by side."""
    import psycopg

    server = _postgres_url()
    if not server:
        if os.environ.get("CI"):
            pytest.fail("SUMSWEEP_TEST_POSTGRES is not set; .ci/run starts PostgreSQL and sets it")
        pytest.skip("no PostgreSQL: export SUMSWEEP_TEST_POSTGRES=$(scripts/start_test_postgres.sh)")
    name = f"test_{uuid.uuid4().hex[:12]}"
    admin = server.replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    try:
        yield server.rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def csv_default_limit():
    """Python csv's field size limit at its default, whatever an earlier test set (it is process-wide)."""
    import csv

    before = csv.field_size_limit(131_072)
    yield 131_072
    csv.field_size_limit(before)


@pytest.fixture
def password_url():
    """The test PostgreSQL's URL with a password in it (its trust login takes any): where a real one goes."""
    with fresh_database() as url:
        yield re.sub(r"://([^:@/]+)@", rf"://\1:{SECRET}@", url, count=1)


@pytest.fixture
def study_name():
    return f"test-{uuid.uuid4().hex[:8]}"

