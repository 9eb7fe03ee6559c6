"""Build the model for a training method: full fine-tuning, LoRA, QLoRA (4-bit + LoRA) or unsloth."""
from __future__ import annotations

import importlib.util
import logging
from collections import OrderedDict
from pathlib import Path

import torch

import models.lean_imports  # noqa: F401  before transformers' model classes
from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer, BitsAndBytesConfig

from models.config import TrainConfig
from models.errors import CheckpointError, ConfigError
from models.families import Family, families_for
from models.hub import hub_reachable

log = logging.getLogger(__name__)


# The tokenizers loaded last, by checkpoint and the stamp of its files: every trial of a study loads the same
# one, and Gemma's takes seconds to build. Two: the study's checkpoint and the trial's own best/ folder.
_TOKENIZERS: OrderedDict[tuple, object] = OrderedDict()
KEEP_TOKENIZERS = 2


def load_tokenizer(checkpoint: str):
    """The checkpoint's tokenizer, a pad token set where it has none. Loaded once for the same files: callers
    share the object and must not change it (pass per-call options such as padding_side instead)."""
    key = files_stamp(checkpoint)
    if key in _TOKENIZERS:
        _TOKENIZERS.move_to_end(key)
        return _TOKENIZERS[key]
    tokenizer = load_pretrained(AutoTokenizer, checkpoint)
    if tokenizer.pad_token is None:  # GPT-2 ships no pad token; padded positions are masked anyway
        tokenizer.pad_token = tokenizer.eos_token
    _TOKENIZERS[key] = tokenizer
    while len(_TOKENIZERS) > KEEP_TOKENIZERS:
        _TOKENIZERS.popitem(last=False)
    return tokenizer


def files_stamp(checkpoint: str) -> tuple:
    """A local folder by its path and each file's name, size and modification time; a hub id by itself."""
    folder = Path(checkpoint).expanduser()
    if not folder.is_dir():
        return (checkpoint,)
    stats = ((f.name, f.stat()) for f in folder.iterdir() if f.is_file())
    return (str(folder.resolve()), *sorted((name, st.st_size, st.st_mtime_ns) for name, st in stats))


def load_pretrained(cls, checkpoint: str, **kwargs):
    """A local folder, the local hub cache, or the hub; an unreachable hub fails in seconds, not minutes."""
    local = Path(checkpoint).expanduser()
    try:
        if local.is_dir():
            return cls.from_pretrained(str(local), **kwargs)
        try:
            return cls.from_pretrained(checkpoint, local_files_only=True, **kwargs)
        except OSError:
            if not hub_reachable():  # transformers would retry for about a minute before failing
                raise
            return cls.from_pretrained(checkpoint, **kwargs)
    except ValueError as err:  # AutoModel's "Unrecognized configuration class" for the wrong family kind
        kind = "sequence-to-sequence" if "Seq2Seq" in cls.__name__ else "causal"
        raise CheckpointError(f"checkpoint '{checkpoint}' is not a {kind} model ({str(err).splitlines()[0][:120]}); "
                              "set model.architecture to the family it belongs to") from None
    except OSError as err:
        if local.is_dir():
            raise CheckpointError(f"checkpoint folder {local} cannot be loaded ({str(err).splitlines()[0]}); "
                                  "point --checkpoint at a folder written by save_pretrained") from None
        made_here = (f" (python scripts/install_llm.py {local.name} --out {checkpoint} makes it)"
                     if local.parent.name == "checkpoints" else "")  # where spaces/llm.yaml expects its model
        raise CheckpointError(f"checkpoint '{checkpoint}' is not a local folder{made_here} and the model hub cannot "
                              "be reached; pass a local folder with --checkpoint, or run with --demo") from None


def check_family_fits(checkpoint: str, family: Family) -> None:
    """Refuse a checkpoint of another family before anything trains: its prefix, LoRA targets and prompt
    would be the wrong ones (a t5 study of a BART folder fails each LoRA trial deep inside peft). A
    checkpoint whose config cannot be read here (a hub id not yet downloaded) is left to the loading."""
    from transformers import AutoConfig

    try:
        config = load_pretrained(AutoConfig, checkpoint)
    except CheckpointError:
        return
    if family.model_types and config.model_type not in family.model_types:
        fitting = families_for(config.model_type) or ([] if config.is_encoder_decoder else ["llm"])
        fix = (f"set model.architecture (--family) to {' or '.join(fitting)}" if fitting
               else "no family here trains it; choose another checkpoint")
        if config.is_encoder_decoder == family.is_causal:
            kind = "causal" if family.is_causal else "sequence-to-sequence"
            raise CheckpointError(f"checkpoint '{checkpoint}' is a {config.model_type} model, not a {kind} model as "
                                  f"family '{family.name}' needs; {fix}")
        raise CheckpointError(f"checkpoint '{checkpoint}' is a {config.model_type} model, which family '{family.name}' "
                              f"does not train; {fix}")


def check_method_possible(method: str, has_cuda: bool | None = None) -> None:
    """Refuse before anything loads: a trial that would fail after minutes of setup wastes the GPU."""
    if has_cuda is None:
        has_cuda = torch.cuda.is_available()
    if method == "unsloth" and not has_cuda:
        raise ConfigError("method 'unsloth' needs a CUDA GPU and none is visible here; "
                          "use --method full, lora or qlora on this machine")
    if method == "unsloth":
        try:
            import unsloth  # noqa: F401  (must be imported before transformers' models are built)
        except ImportError:
            raise ConfigError("method 'unsloth' needs the unsloth extra; install it with "
                              "pip install 'sumsweep[unsloth]' (in a checkout: pip install -e '.[unsloth]')") from None
    # Found, not imported: importing it loads its CUDA libraries, seconds a study would spend before trial 0.
    if method == "qlora" and importlib.util.find_spec("bitsandbytes") is None:
        raise ConfigError("method 'qlora' needs bitsandbytes; install it with pip install 'bitsandbytes>=0.50.2'")


def build_model(config: TrainConfig, family: Family, device: torch.device, compute_dtype: torch.dtype):
    """The model ready to train, its tokenizer, and how many modules LoRA wrapped (0 for full)."""
    method, checkpoint = config.method, config.model.checkpoint
    check_method_possible(method, device.type == "cuda")
    check_family_fits(checkpoint, family)
    if method == "unsloth":
        return _build_unsloth(config, family)
    tokenizer = load_tokenizer(checkpoint)
    auto = AutoModelForCausalLM if family.is_causal else AutoModelForSeq2SeqLM
    kwargs = {}
    if method == "qlora":
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=compute_dtype)
        kwargs["device_map"] = {"": device}  # 4-bit weights are placed at load and never moved
    model = load_pretrained(auto, checkpoint, **kwargs)
    if method == "qlora" and device.type == "cpu":
        # On a CPU with AVX512-BF16, bitsandbytes repacks a 4-bit weight for inference at its first forward
        # in eval mode, and keeps it so: the training step after an eval then fails ("a view of a leaf
        # Variable that requires grad is being used in an in-place operation") unless a save unpacked it.
        for module in model.modules():
            if hasattr(module, "support_avx512bf16_for_cpu"):
                module.support_avx512bf16_for_cpu = False
    if method == "full":
        if config.training.gradient_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        return model, tokenizer, 0
    model, wrapped = _add_lora(model, config, family)
    return model, tokenizer, wrapped


def _add_lora(model, config: TrainConfig, family: Family):
    from peft import LoraConfig, TaskType, get_peft_model, prepare_model_for_kbit_training

    checkpointing = config.training.gradient_checkpointing
    if config.method == "qlora":
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False})
    elif checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()  # frozen embeddings would otherwise cut the graph
    q = config.qlora
    lora = LoraConfig(r=q.lora_rank, lora_alpha=q.lora_alpha, lora_dropout=q.lora_dropout,
                      target_modules=list(family.lora_targets),
                      task_type=TaskType.CAUSAL_LM if family.is_causal else TaskType.SEQ_2_SEQ_LM)
    try:
        model = get_peft_model(model, lora)
    except ValueError as err:  # peft's own "Target modules ... not found"
        raise ConfigError(f"LoRA matched no module of {config.model.checkpoint} "
                          f"(targets {', '.join(family.lora_targets)}): {str(err).splitlines()[0]}; "
                          f"is model.architecture '{family.name}' right for this checkpoint?") from None
    wrapped = _count_lora(model)
    log.info("LoRA wrapped %d modules (%s)", wrapped, ", ".join(family.lora_targets))
    return model, wrapped


def _count_lora(model) -> int:
    from peft.tuners.lora import LoraLayer

    return sum(isinstance(m, LoraLayer) for m in model.modules())


def _build_unsloth(config: TrainConfig, family: Family):
    """unsloth's loaders: FastModel for encoder-decoders, FastLanguageModel for decoder-only models.

    unsloth may replace the tokenizer's pad token, so the tokenizer it returns is the one trained
    with and the one saved next to the adapter.
    """
    from unsloth import FastLanguageModel, FastModel

    loader = FastLanguageModel if family.is_causal else FastModel
    t, q = config.training, config.qlora
    model, tokenizer = loader.from_pretrained(
        model_name=config.model.checkpoint, max_seq_length=t.max_source_length + t.max_target_length,
        load_in_4bit=q.load_in_4bit, full_finetuning=False)
    model = loader.get_peft_model(
        model, r=q.lora_rank, lora_alpha=q.lora_alpha, lora_dropout=q.lora_dropout,
        target_modules=list(family.lora_targets),
        use_gradient_checkpointing="unsloth" if t.gradient_checkpointing else False,
        random_state=t.seed)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer, _count_lora(model)
