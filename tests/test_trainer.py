"""The real recipe on every family's tiny checkpoint: the loss falls and ROUGE rises above the untrained model's."""
import pytest
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from safetensors import safe_open

from models.compiling import MIN_BATCHES, inductor_options, should_compile, without_layerdrop
from models.data import load_split
from models.families import get_family
from models.generate import generate, load_checkpoint
from models.methods import build_model
from models.metrics import rouge
from models.steps import batch_maker, forward_loss, smoothed_cross_entropy
from models.trainer import train, without_autocast_wrapper

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
    # The tiny causal models reach about 0.02 from 0.0 here, the seq2seq ones more.
    assert result.metrics["mean"] > untrained_rouge(config, assets, rows=32) + 0.01
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


FREED_AND_FROZEN = """
import gc, sys, weakref
import models.trainer
from models.config import TrainConfig

config, (train_csv, dev_csv, out) = TrainConfig.from_yaml(sys.argv[1]), sys.argv[2:]
built, build = [], models.trainer.build_model

def build_and_watch(*args, **kwargs):
    model, tokenizer, wrapped = build(*args, **kwargs)
    built.append(weakref.ref(model))
    return model, tokenizer, wrapped

models.trainer.build_model = build_and_watch
frozen = []
for run in range(2):
    models.trainer.train(config, train_csv, dev_csv, f"{out}/{run}", progress=False)
    frozen.append(gc.get_freeze_count())
gc.collect()
print(frozen[0] > 10_000, frozen[1] == frozen[0], [ref() is None for ref in built])
"""


def test_each_runs_model_is_freed_after_it_though_what_lived_before_is_frozen(tiny_config, tmp_path):
    import subprocess
    import sys

    import yaml

    config, assets = tiny_config("t5", training__max_steps=4, training__eval_steps=4, training__eval_subset=8)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config.to_dict()), encoding="utf-8")
    # A process of its own: tests that fork unfreeze everything, ours included.
    done = subprocess.run([sys.executable, "-c", FREED_AND_FROZEN, str(tmp_path / "config.yaml"), str(assets.train),
                           str(assets.dev), str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    # The libraries frozen once, before the first run; no run's model outlives it.
    assert done.stdout.strip().splitlines()[-1] == "True True [True, True]"


def test_a_checkpoint_the_search_would_delete_is_not_written(tiny_config, tmp_path):
    config, assets = tiny_config("t5", training__max_steps=10, training__eval_steps=10, training__eval_subset=0)
    asked = []

    def keep_checkpoint(value, stopped_early):
        asked.append((value, stopped_early))
        return False

    result = train(config, assets.train, assets.dev, tmp_path, progress=False, keep_checkpoint=keep_checkpoint)
    assert asked == [(result.metrics["mean"], False)]  # asked once, with the value the search records
    assert result.checkpoint is None and not (tmp_path / "best").exists()


def test_the_saved_checkpoint_holds_the_best_evals_weights_not_the_last_steps(tiny_config, tmp_path):
    # At this learning rate the tiny gpt2's ROUGE never beats its first eval's, while its eval loss goes
    # on falling: the best eval is the first, and the two checkpoints tell apart by their loss.
    config, assets = tiny_config("gpt2", training__max_steps=30, training__learning_rate=0.1,
                                 training__warmup_ratio=0.0, training__rouge_tokenize="whitespace")
    result = train(config, assets.train, assets.dev, tmp_path, progress=False)
    best, last = next(e for e in result.evals if e["step"] == result.best_step), result.evals[-1]
    assert result.best_step < result.steps and best["eval_loss"] > last["eval_loss"] + 0.3
    model, tokenizer, family, saved = load_checkpoint(tmp_path / "best", torch.device("cpu"))
    t = saved.training
    dev = load_split(assets.dev, tokenizer, family, t.max_source_length, t.max_target_length)
    batch = batch_maker(model, family, tokenizer.pad_token_id)(dev.features[:t.eval_subset])
    with torch.no_grad():
        assert forward_loss(model, batch, family.is_causal, 0.0).item() == pytest.approx(best["eval_loss"], abs=1e-4)


@pytest.mark.parametrize("family", ["t5", "gpt2"])
@pytest.mark.parametrize("method", ["lora", "qlora"])
def test_lora_and_qlora_train(family, method, tiny_config, tmp_path):
    config, assets = tiny_config(family, method=method, training__max_steps=40, training__eval_steps=20,
                                 training__learning_rate=1e-2)
    result = train(config, assets.train, assets.dev, tmp_path, progress=False)
    assert result.evals[-1]["eval_loss"] < result.evals[0]["eval_loss"]
    assert (tmp_path / "best" / "adapter_config.json").is_file()


@pytest.mark.parametrize("family", ["gpt2", "bart"])
def test_compiled_training_learns_as_eager_does_and_saves_the_same_checkpoint(family, tiny_config, tmp_path):
    from torch._dynamo.utils import counters

    runs = {}
    for mode in ("never", "always"):
        config, assets = tiny_config(family, training__compile=mode)
        breaks, graphs = sum(counters["graph_break"].values()), counters["stats"]["unique_graphs"]
        runs[mode] = train(config, assets.train, assets.dev, tmp_path / mode, progress=False)
    eager, compiled = runs["never"], runs["always"]
    assert compiled.compiled and not eager.compiled
    # One graph for the whole trial, whatever its batches' lengths; BART's LayerDrop draw is out of it.
    assert counters["stats"]["unique_graphs"] == graphs + 1
    assert sum(counters["graph_break"].values()) == breaks
    assert compiled.evals[-1]["eval_loss"] < compiled.evals[0]["eval_loss"]
    # Dropout draws differ under inductor, so the runs are close, not equal.
    assert compiled.evals[-1]["eval_loss"] == pytest.approx(eager.evals[-1]["eval_loss"], rel=0.05)
    assert compiled.samples_per_second > 0 and compiled.first_step_seconds > 0
    with safe_open(tmp_path / "always" / "best" / "model.safetensors", "pt") as saved, \
            safe_open(tmp_path / "never" / "best" / "model.safetensors", "pt") as reference:
        assert set(saved.keys()) == set(reference.keys())  # no `_orig_mod.` prefixes


def test_compile_auto_is_for_long_full_fine_tuning_on_a_gpu(tiny_config):
    config, _ = tiny_config("t5")
    gpu, cpu, long = torch.device("cuda"), torch.device("cpu"), MIN_BATCHES
    assert should_compile(config, gpu, long)
    assert not should_compile(config, cpu, long)
    assert not should_compile(config, gpu, long - 1)
    assert not should_compile(config.override({"method": "lora"}), gpu, long)
    assert not should_compile(config.override({"training.gradient_checkpointing": True}), gpu, long)
    assert should_compile(config.override({"training.compile": "always"}), cpu, 1)
    assert not should_compile(config.override({"training.compile": "never"}), gpu, long)


def test_cuda_graphs_replay_the_compiled_step_on_one_gpu_unless_turned_off(tiny_config):
    config, _ = tiny_config("bart")
    gpu, cpu = torch.device("cuda"), torch.device("cpu")
    assert inductor_options(config, gpu, 1, varied_lengths=False) == {"triton.cudagraphs": True}
    assert inductor_options(config, gpu, 1, varied_lengths=True) == {"triton.cudagraphs": True,
                                                                      "shape_padding": False}
    assert inductor_options(config, gpu, 2, varied_lengths=False) == {}  # data-parallel: not tried
    assert inductor_options(config, cpu, 1, varied_lengths=False) == {}
    assert inductor_options(config.override({"training.cuda_graphs": False}), gpu, 1, varied_lengths=False) == {}


def test_the_model_autocasts_only_where_the_trainer_asks(tiny_config):
    """Generation runs in full precision; the training step and eval loss under `accelerator.autocast()`."""
    config, _ = tiny_config("t5")
    model, _, _ = build_model(config, get_family("t5"), torch.device("cpu"), torch.float32)
    ids = torch.randint(5, 100, (2, 12))
    inputs = {"input_ids": ids, "decoder_input_ids": ids[:, :4], "use_cache": False}
    model.eval()
    AcceleratorState._reset_state(True)  # the process-wide state the other tests' trainers set up
    with torch.no_grad():
        plain = model(**inputs).logits
        accelerator = Accelerator(mixed_precision="bf16", cpu=True)
        model = accelerator.prepare(model)
        assert not torch.equal(model(**inputs).logits, plain)  # accelerate's wrapper autocasts to bf16
        without_autocast_wrapper(model)
        assert torch.equal(model(**inputs).logits, plain)
        with accelerator.autocast():
            assert not torch.equal(model(**inputs).logits, plain)
    AcceleratorState._reset_state(True)


def test_a_workers_later_compiled_trials_reuse_the_graph(tiny_config, tmp_path):
    """Under mixed precision, as on a GPU, and with the label smoothing a search draws: a worker's next
    trial must not compile again (nor, from its ninth, run eager past dynamo's recompile limit), and
    the first traces its step once, not twice."""
    from torch._dynamo.utils import clear_compilation_metrics, counters, get_compilation_metrics

    clear_compilation_metrics()
    AcceleratorState._reset_state(True)
    try:
        graphs = []
        for trial, smoothing in enumerate([0.0, 0.05, 0.1]):
            config, assets = tiny_config("gpt2", training__compile="always", training__precision="bf16",
                                         training__max_steps=4, training__eval_steps=4,
                                         training__label_smoothing=smoothing)
            assert train(config, assets.train, assets.dev, tmp_path / str(trial), progress=False).compiled
            graphs.append(counters["stats"]["unique_graphs"])
    finally:
        AcceleratorState._reset_state(True)
    assert graphs[1:] == graphs[:1] * 2
    assert [m.restart_reasons for m in get_compilation_metrics() if m.restart_reasons] == []


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_the_written_out_loss_is_torchs_cross_entropy(smoothing):
    logits, labels = torch.randn(40, 300) * 3, torch.randint(0, 300, (40,))
    labels[::5] = -100  # padding
    expected = F.cross_entropy(logits, labels, ignore_index=-100, label_smoothing=smoothing)
    for given in (smoothing, torch.tensor(smoothing)):
        torch.testing.assert_close(smoothed_cross_entropy(logits, labels, given), expected)


@pytest.mark.parametrize("family", ["t5", "bart", "gpt2"])
def test_the_training_loss_is_the_models_own_loss(family, tiny_config):
    """Ours feeds the model a batch from `batch_maker` (a causal model's logits only from the first
    summary token on) and computes the loss apart; it must equal Hugging Face's loss from `labels`."""
    config, assets = tiny_config(family)
    fam = get_family(family)
    model, tokenizer, _ = build_model(config, fam, torch.device("cpu"), torch.float32)
    model.eval()
    t = config.training
    rows = load_split(assets.train, tokenizer, fam, t.max_source_length, t.max_target_length).features[:6]
    batch = batch_maker(model, fam, tokenizer.pad_token_id)(rows)
    assert batch["input_ids"].size(1) % 8 == 0
    if fam.is_causal:
        assert 1 < batch["logits_to_keep"] < batch["input_ids"].size(1)
        assert batch["logits_to_keep"] % 8 == 0  # few shapes: each is a compile, or a CUDA graph to record
    with torch.no_grad():
        ours = forward_loss(model, batch, fam.is_causal, smoothing=0.0)
        theirs = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                       labels=batch["labels"]).loss
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-5)


def test_bart_trains_without_its_layerdrop_draw_but_keeps_its_embedding_dropout(tiny_config):
    config, _ = tiny_config("bart")
    model, _, _ = build_model(config, get_family("bart"), torch.device("cpu"), torch.float32)
    encoder = model.get_encoder()
    encoder.dropout = 0.5
    without_layerdrop(model)
    seen = []
    encoder.layers[0].register_forward_pre_hook(lambda layer, args: seen.append(args[0]))
    ids = torch.randint(5, 100, (4, 64))
    inputs = {"input_ids": ids, "decoder_input_ids": ids[:, :8], "use_cache": False}

    def zeros_entering_the_first_layer() -> float:
        with torch.no_grad():
            model(**inputs)
        return (seen.pop() == 0).float().mean().item()

    model.train()
    assert not encoder.training and encoder.layers[0].training  # no draw; the layers' own dropout runs
    assert zeros_entering_the_first_layer() == pytest.approx(0.5, abs=0.05)
    model.eval()
    assert zeros_entering_the_first_layer() == 0.0
    model.train()
    assert zeros_entering_the_first_layer() == pytest.approx(0.5, abs=0.05)


def test_a_run_whose_loss_diverges_fails_naming_the_step(tiny_config, tmp_path):
    from models.errors import Diverged

    config, assets = tiny_config("gpt2", training__learning_rate=1e30, training__max_steps=20)
    with pytest.raises(Diverged, match=r"loss diverged at step \d+"):
        train(config, assets.train, assets.dev, tmp_path, progress=False)
    assert not (tmp_path / "best").exists()
