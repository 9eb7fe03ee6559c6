"""The bundled demo: Korean dialogue data and a tiny checkpoint per family, built on first use.

No weights or datasets can be downloaded, so the project makes its own: the families' real
model classes at tiny sizes, with tokenizers trained on the demo data by `tokenizers`
(byte-level BPE where the family uses BPE, unigram for the T5 family). Everything is built
into the cache once, into a temporary folder renamed into place, so parallel workers that
race to build it all end up with the same files.
"""
from __future__ import annotations

import csv
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import ByteLevelBPETokenizer, SentencePieceUnigramTokenizer, processors

import models.lean_imports  # noqa: F401  before transformers' model classes
from transformers import (BartConfig, BartForConditionalGeneration, GPT2Config, GPT2LMHeadModel, LlamaConfig,
                          LlamaForCausalLM, MT5Config, MT5ForConditionalGeneration, PreTrainedTokenizerFast,
                          T5Config, T5ForConditionalGeneration)

from models.data import default_cache_dir
from models.demo_data import write_demo_data
from models.families import FAMILIES

VERSION = "v2"  # bump when the demo data or the tiny architectures change: old caches are then ignored
VOCAB_SIZE = 3000
# Small enough to train in seconds on a laptop CPU, large enough to learn the demo summaries.
WIDTH, FFN, LAYERS, HEADS = 64, 256, 2, 4


# A demo study should finish in minutes on a laptop CPU: 1,000 training rows keep a trial under a
# minute, and frequent evals on a small subset give the pruner several reports per trial.
DEMO_TRAIN_ROWS = 1000
DEMO_OVERRIDES = {"training.eval_steps": 25, "training.eval_subset": 32, "training.eval_batch_size": 64}


@dataclass(frozen=True)
class DemoAssets:
    train: Path
    dev: Path
    test: Path
    checkpoint: Path


def demo_assets(family: str) -> DemoAssets:
    root = default_cache_dir() / "demo" / VERSION
    data = _build_once(root / "data", lambda out: write_demo_data(out, n_train=DEMO_TRAIN_ROWS))
    checkpoint = _build_once(root / "checkpoints" / f"tiny-{family}",
                             lambda out: build_tiny_checkpoint(family, data / "train.csv", out))
    return DemoAssets(data / "train.csv", data / "dev.csv", data / "test.csv", checkpoint)


def _build_once(target: Path, build) -> Path:
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        build(tmp)
        os.rename(tmp, target)
    except OSError:
        if not target.is_dir():  # the rename lost a race only if someone else's copy is there
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _texts(train_csv: Path) -> list[str]:
    with train_csv.open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    # The prefixes and separators the families add must be spelled by the tokenizer too.
    extras = {f.prefix + f.separator for f in FAMILIES.values()} - {""}
    return [r["dialogue"] for r in rows] + [r["summary"] for r in rows] + sorted(extras) * 10


def _bpe(texts: list[str], specials: list[str], template: str | None, **roles: str) -> PreTrainedTokenizerFast:
    tok = ByteLevelBPETokenizer()
    tok.train_from_iterator(texts, vocab_size=VOCAB_SIZE, min_frequency=2, special_tokens=specials)
    if template:
        tok.post_processor = processors.TemplateProcessing(
            single=template, special_tokens=[(s, tok.token_to_id(s)) for s in ("<s>", "</s>")])
    return PreTrainedTokenizerFast(tokenizer_object=tok, **roles)


def _unigram(texts: list[str]) -> PreTrainedTokenizerFast:
    tok = SentencePieceUnigramTokenizer()
    tok.train_from_iterator(texts, vocab_size=VOCAB_SIZE, special_tokens=["<pad>", "</s>", "<unk>"], unk_token="<unk>")
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")


def build_tiny_checkpoint(family: str, train_csv: Path, out: Path) -> Path:
    """The family's real model class at a tiny size, with a tokenizer trained on the demo data."""
    texts = _texts(train_csv)
    torch.manual_seed(0)
    if family == "bart":
        tok = _bpe(texts, ["<s>", "<pad>", "</s>", "<unk>", "<mask>"], "<s> $A </s>", bos_token="<s>",
                   eos_token="</s>", pad_token="<pad>", unk_token="<unk>", mask_token="<mask>")
        model = BartForConditionalGeneration(BartConfig(
            vocab_size=len(tok), d_model=WIDTH, encoder_layers=LAYERS, decoder_layers=LAYERS,
            encoder_attention_heads=HEADS, decoder_attention_heads=HEADS, encoder_ffn_dim=FFN, decoder_ffn_dim=FFN,
            max_position_embeddings=1024, pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id, decoder_start_token_id=tok.eos_token_id, forced_eos_token_id=None))
    elif family in ("t5", "mt5", "flan-t5"):
        tok = _unigram(texts)
        # t5 v1.0 uses a ReLU MLP and tied embeddings; mT5 and Flan-T5 (v1.1) a gated GELU, untied.
        v11 = family != "t5"
        sizes = dict(vocab_size=len(tok), d_model=WIDTH, d_kv=WIDTH // HEADS, d_ff=FFN, num_layers=LAYERS,
                     num_heads=HEADS, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                     decoder_start_token_id=tok.pad_token_id,
                     feed_forward_proj="gated-gelu" if v11 else "relu", tie_word_embeddings=not v11)
        model = (MT5ForConditionalGeneration(MT5Config(**sizes)) if family == "mt5"
                 else T5ForConditionalGeneration(T5Config(**sizes)))
    elif family in ("gpt2", "kogpt2"):
        # GPT-2 has only <|endoftext|>; KoGPT2 ships </s> and <pad> of its own.
        specials = ["<|endoftext|>"] if family == "gpt2" else ["</s>", "<pad>", "<unk>"]
        roles = (dict(bos_token="<|endoftext|>", eos_token="<|endoftext|>") if family == "gpt2"
                 else dict(bos_token="</s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"))
        tok = _bpe(texts, specials, None, **roles)
        model = GPT2LMHeadModel(GPT2Config(
            vocab_size=len(tok), n_positions=1024, n_embd=WIDTH, n_layer=LAYERS, n_head=HEADS, n_inner=FFN,
            bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id))
    elif family == "llm":
        tok = _bpe(texts, ["<s>", "</s>", "<unk>"], None, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
        model = LlamaForCausalLM(LlamaConfig(
            vocab_size=len(tok), hidden_size=WIDTH, intermediate_size=FFN, num_hidden_layers=LAYERS,
            num_attention_heads=HEADS, num_key_value_heads=HEADS // 2, max_position_embeddings=1024,
            bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id))
    else:
        raise ValueError(f"no tiny checkpoint for family '{family}'")
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out
