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


# gpt2's space accumulates 4 micro-batches a step; merged, ours runs them as one batch of 16 (HF as 4 of 4)
@pytest.mark.parametrize("family, merge", [("bart", "auto"), ("gpt2", "auto"), ("gpt2", "always")])
def test_our_loop_learns_as_hf_trainer_does(family, merge, tmp_path):
    parity, assets = parity_module(), demo_assets(family)
    config = parity.parity_config(family, assets.checkpoint, seed=0, **{
        "training.max_steps": 40, "training.learning_rate": 2e-3, "training.generation_max_length": 4,
        "training.merge_micro_batches": merge})
    ours = parity.run_ours(config, assets.train, assets.dev, tmp_path / "ours")
    hf = parity.run_hf(config, assets.train, assets.dev, tmp_path / "hf")
    untrained = parity.untrained_loss(config, assets.dev)
    assert ours["steps"] == hf["steps"] == 40
    assert hf["dev_loss"] < 0.8 * untrained  # both learned: the comparison is not of two untrained models
    assert ours["dev_loss"] <= hf["dev_loss"] * (1 + TOLERANCE), (ours, hf)


def test_merging_result_files_joins_the_seeds_of_a_model(tmp_path):
    import json

    parity = parity_module()

    def result(seeds, ours, hf):
        runs = {"ours": [{"dev_loss": o, "rouge": 0.5, "steps": 10} for o in ours],
                "hf": [{"dev_loss": h, "rouge": 0.4, "steps": 10} for h in hf]}
        body = {"models": {"bart": parity.summary(runs, seeds, "ckpt", "full", {})}}
        path = tmp_path / f"{seeds[0]}.json"
        path.write_text(json.dumps(body))
        return str(path)

    out = tmp_path / "joined.json"
    parity.main(["--merge", result([0], [1.0], [2.0]), result([1, 2], [2.0, 3.0], [2.0, 2.0]), "--out", str(out)])
    joined = json.loads(out.read_text())["models"]["bart"]
    assert joined["seeds"] == [0, 1, 2] and len(joined["runs"]["ours"]) == 3
    assert joined["ours"] == pytest.approx(2.0) and joined["hf"] == pytest.approx(2.0) and joined["loss_ratio"] == 1.0
