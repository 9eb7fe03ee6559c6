"""Learning parity on the CPU: our loop and Hugging Face's Trainer, same config, rows, steps and seed,
reach the same dev loss (benchmarks/parity.py runs the same comparison at full size on a GPU)."""
import importlib.util
import sys
from pathlib import Path

import pytest

from models.demo import demo_assets

REPO = Path(__file__).resolve().parents[1]
TOLERANCE = 0.02  # one seed of a tiny model; the GPU benchmark holds three seeds to 1%


def parity_module():
    sys.path.insert(0, str(REPO))
    spec = importlib.util.spec_from_file_location("parity", REPO / "benchmarks" / "parity.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("family", ["bart", "gpt2"])  # gpt2's space accumulates 4 micro-batches a step
def test_our_loop_learns_as_hf_trainer_does(family, tmp_path):
    parity, assets = parity_module(), demo_assets(family)
    config = parity.parity_config(family, assets.checkpoint, seed=0, **{
        "training.max_steps": 40, "training.learning_rate": 2e-3, "training.generation_max_length": 4})
    ours = parity.run_ours(config, assets.train, assets.dev, tmp_path / "ours")
    hf = parity.run_hf(config, assets.train, assets.dev, tmp_path / "hf")
    untrained = parity.untrained_loss(config, assets.dev)
    assert ours["steps"] == hf["steps"] == 40
    assert hf["dev_loss"] < 0.8 * untrained  # both learned: the comparison is not of two untrained models
    assert ours["dev_loss"] <= hf["dev_loss"] * (1 + TOLERANCE), (ours, hf)
