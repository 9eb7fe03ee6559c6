"""A step's micro-batches merged into fewer, larger ones: the same rows and the same update, fewer passes."""
import pytest
import torch

import models.trainer as trainer
from models.data import load_split
from models.families import get_family
from models.micro_batches import largest_row, rows_per_pass
from models.methods import build_model
from models.steps import accumulation_windows, batch_maker

CPU, GPU = torch.device("cpu"), torch.device("cuda")


@pytest.mark.parametrize("mode, device, fitting, expected", [
    ("never", GPU, 16, 4),     # the config's own batches
    ("auto", CPU, 16, 4),      # no launch cost to save on a CPU
    ("always", CPU, 0, 16),    # the whole step in one pass, unprobed
    ("auto", GPU, 16, 16),     # the largest size the probe finds room for
    ("auto", GPU, 15, 8),      # 16 does not fit, 8 (two passes of the step's 16 rows) does
    ("auto", GPU, 7, 4),       # nothing merged fits: the config's batches
])
def test_merging_takes_the_largest_size_that_fits_and_divides_the_step(tiny_config, mode, device, fitting, expected):
    config, _ = tiny_config("gpt2", training__batch_size=4, training__gradient_accumulation_steps=4,
                            training__merge_micro_batches=mode)
    asked = []

    def fits(rows):
        asked.append(rows)
        return rows <= fitting

    assert rows_per_pass(config, device, fits) == expected
    assert all(16 % rows == 0 and rows > 4 for rows in asked)
    assert asked == sorted(asked, reverse=True)


def test_a_step_without_accumulation_is_never_merged(tiny_config):
    config, _ = tiny_config("t5", training__batch_size=8, training__gradient_accumulation_steps=1,
                            training__merge_micro_batches="always")
    assert rows_per_pass(config, GPU, lambda rows: True) == 8


@pytest.mark.parametrize("family", ["bart", "gpt2"])
def test_a_merged_step_makes_the_same_update_from_the_same_rows(family, tiny_config, tmp_path):
    """Every summary token of a step weighs the same, so one pass over its 8 rows gives the gradient of 4
    passes of 2; dropout is off here, the one thing that differs between the two."""
    def first_update(merge: str):
        config, assets = tiny_config(family, training__batch_size=2, training__gradient_accumulation_steps=4,
                                     training__merge_micro_batches=merge, training__max_grad_norm=0)
        recipe = trainer.Recipe(config, tmp_path / merge)
        recipe.setup(assets.train, assets.dev)
        recipe.model.eval()
        window, gradients = next(accumulation_windows(recipe.loader, recipe.accumulation)), []
        recipe.optimizer.step = lambda: gradients.extend(p.grad.clone() for p in recipe.unwrapped.parameters())
        recipe.scheduler.step = lambda: None  # the update itself is not the question here
        recipe.optimizer_step(window)
        rows = sorted(tuple(ids[mask == 1].tolist()) for b in window for ids, mask in zip(b["input_ids"],
                                                                                             b["attention_mask"]))
        return recipe.rows_per_pass, len(window), rows, gradients

    merged, unmerged = first_update("always"), first_update("never")
    assert merged[:2] == (8, 1) and unmerged[:2] == (2, 4)
    assert merged[2] == unmerged[2] and len(merged[2]) == 8  # the same rows, padding aside
    assert len(merged[3]) == len(unmerged[3]) > 0
    for a, b in zip(merged[3], unmerged[3]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)


def test_out_of_memory_in_a_merged_step_halves_the_merged_batch(tiny_config, tmp_path, monkeypatch):
    config, assets = tiny_config("t5", training__batch_size=2, training__gradient_accumulation_steps=4,
                                 training__merge_micro_batches="always", training__max_steps=6,
                                 training__eval_steps=6)
    real_loss, passes = trainer.forward_loss, []

    def fits_4_rows(model, batch, *args):
        passes.append(len(batch["input_ids"]))
        if len(batch["input_ids"]) > 4:  # as a smaller GPU would
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_loss(model, batch, *args)

    monkeypatch.setattr(trainer, "forward_loss", fits_4_rows)
    result = trainer.train(config, assets.train, assets.dev, tmp_path, progress=False)
    assert result.oom_retries and "batch 8 x accumulation 1" in result.oom_retries[0]
    assert result.rows_per_pass == 4 and result.steps == 6
    assert passes[0] == 8 and set(passes[1:]) == {4}  # 4 x 2 passes: the step's 8 rows kept


@pytest.mark.parametrize("family", ["t5", "gpt2"])
def test_the_memory_probe_batch_is_at_least_as_large_as_any_training_batch(family, tiny_config):
    config, assets = tiny_config(family)
    fam = get_family(family)
    model, tokenizer, _ = build_model(config, fam, CPU, torch.float32)
    features = load_split(assets.train, tokenizer, fam, 512, 128).features
    make = batch_maker(model, fam, tokenizer.pad_token_id)
    probe = make([largest_row(features, fam.is_causal)] * 4)
    for start in range(0, len(features), 4):
        batch = make(features[start: start + 4])
        for key, tensor in batch.items():
            if isinstance(tensor, torch.Tensor):
                assert tensor.shape[1] <= probe[key].shape[1], key
        assert batch.get("logits_to_keep", 0) <= probe.get("logits_to_keep", 0)


@pytest.mark.parametrize("family", ["t5", "gpt2"])
def test_the_eval_loss_is_per_summary_token_whatever_the_batching(family, tiny_config):
    from contextlib import nullcontext

    from models.evaluation import eval_loss

    config, assets = tiny_config(family)
    fam = get_family(family)
    model, tokenizer, _ = build_model(config, fam, CPU, torch.float32)
    features = load_split(assets.dev, tokenizer, fam, 512, 128).features[:13]
    make = batch_maker(model, fam, tokenizer.pad_token_id)
    losses = [eval_loss(model.eval(), features, make, fam.is_causal, rows, CPU, nullcontext) for rows in (1, 4, 13)]
    assert losses[0] == pytest.approx(losses[1], rel=1e-5) == pytest.approx(losses[2], rel=1e-5)


def test_the_eval_loss_takes_the_training_pass_rows_not_the_generation_batch(tiny_config, tmp_path, monkeypatch):
    """A vocabulary-wide fp32 logit row per token: 64 rows of Gemma's were a 12 GiB allocation."""
    config, assets = tiny_config("gpt2", training__batch_size=2, training__gradient_accumulation_steps=4,
                                 training__merge_micro_batches="always", training__eval_batch_size=64,
                                 training__max_steps=4, training__eval_steps=4)
    real, seen = trainer.eval_loss, []
    monkeypatch.setattr(trainer, "eval_loss", lambda *args: seen.append(args[4]) or real(*args))
    trainer.train(config, assets.train, assets.dev, tmp_path, progress=False)
    assert seen == [8]


def test_a_generation_batch_that_runs_out_of_memory_is_halved_and_nothing_is_lost(tiny_config):
    from models.generate import generate

    config, assets = tiny_config("gpt2")
    fam = get_family("gpt2")
    model, tokenizer, _ = build_model(config, fam, CPU, torch.float32)
    features = load_split(assets.dev, tokenizer, fam, 512, 128).features[:10]
    real_generate, sizes = model.generate, []

    def fits_4_rows(**batch):
        sizes.append(len(batch["input_ids"]))
        if len(batch["input_ids"]) > 4:  # as a smaller GPU would
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_generate(**batch)

    options = dict(num_beams=1, max_new_tokens=8, device=CPU)
    expected = generate(model, tokenizer, fam, features, batch_size=2, **options)
    model.generate = fits_4_rows
    assert generate(model, tokenizer, fam, features, batch_size=16, **options) == expected
    assert sizes == [10, 5, 2, 2, 2, 2, 2]  # halved until it fitted, then the rest at that size
