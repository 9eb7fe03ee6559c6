"""The real recipe on every family's tiny checkpoint: the loss falls and ROUGE rises above the untrained model's."""
import pytest
import torch

from models.data import load_split
from models.families import get_family
from models.generate import generate
from models.methods import build_model
from models.metrics import rouge
from models.trainer import train

from conftest import FAMILIES


def untrained_rouge(config, assets, rows: int) -> float:
    family = get_family(config.model.architecture)
    model, tokenizer, _ = build_model(config, family, torch.device("cpu"), torch.float32)
    t = config.training
    dev = load_split(assets.dev, tokenizer, family, t.max_source_length, t.max_target_length)
    summaries = generate(model, tokenizer, family, dev.features[:rows], num_beams=1,
                         max_new_tokens=t.generation_max_length, batch_size=32, device=torch.device("cpu"))
    return rouge(summaries, dev.references[:rows], "whitespace")["mean"]


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_learns_the_demo(family, tiny_config, tmp_path):
    config, assets = tiny_config(family, training__max_steps=120, training__eval_steps=60,
                                 training__eval_subset=32, training__rouge_tokenize="whitespace")
    result = train(config, assets.train, assets.dev, tmp_path, progress=False)
    first, last = result.evals[0], result.evals[-1]
    assert result.steps == 120 and [e["step"] for e in result.evals] == [60, 120]
    assert last["eval_loss"] < first["eval_loss"]
    assert result.metrics["mean"] > untrained_rouge(config, assets, rows=32) + 0.02
    assert (tmp_path / "best" / "sumsweep.json").is_file()


def test_report_can_stop_training_early(tiny_config, tmp_path):
    config, assets = tiny_config("t5", training__max_steps=40, training__eval_steps=10)
    seen = []

    def report(step, metrics):
        seen.append((step, set(metrics)))
        return step >= 20  # as a pruner would, at the second report

    result = train(config, assets.train, assets.dev, tmp_path, report=report, progress=False)
    assert result.stopped_early and result.steps == 20
    assert [s for s, _ in seen] == [10, 20]
    assert {"rouge1", "rouge2", "rougeL", "mean", "eval_loss"} <= seen[0][1]


@pytest.mark.parametrize("family", ["t5", "gpt2"])
@pytest.mark.parametrize("method", ["lora", "qlora"])
def test_lora_and_qlora_train(family, method, tiny_config, tmp_path):
    config, assets = tiny_config(family, method=method, training__max_steps=40, training__eval_steps=20,
                                 training__learning_rate=1e-2)
    result = train(config, assets.train, assets.dev, tmp_path, progress=False)
    assert result.evals[-1]["eval_loss"] < result.evals[0]["eval_loss"]
    assert (tmp_path / "best" / "adapter_config.json").is_file()
