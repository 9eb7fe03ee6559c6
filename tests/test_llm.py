"""The `llm` family (any decoder-only LM, LoRA by default) on its tiny Llama, and the GGUF conversion of
scripts/install_llm.py on a GGUF file written here from that tiny Llama (no download)."""
import csv
import json

import pytest
import torch

from models.families import get_family
from models.generate import load_checkpoint
from models.methods import build_model
from models.trainer import train

LLM_TARGETS = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}


def first_rows(src, dst, n):
    with open(src, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))[:n]
    with open(dst, "w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return dst


@pytest.mark.parametrize("method", ["lora", "qlora"])
def test_llm_trains_with_lora_and_qlora_and_its_adapter_predicts(method, tiny_config, tmp_path):
    config, assets = tiny_config("llm", method=method, training__max_steps=30, training__eval_steps=15,
                                 training__eval_subset=16, training__generation_max_length=16,
                                 training__learning_rate=1e-2, training__rouge_tokenize="whitespace")
    assert config.method == method
    dev = first_rows(assets.dev, tmp_path / "dev.csv", 16)  # all of it is the eval subset: no extra final pass
    result = train(config, assets.train, dev, tmp_path / "run", progress=False)
    assert [e["step"] for e in result.evals] == [15, 30]
    assert result.evals[-1]["eval_loss"] < result.evals[0]["eval_loss"]
    best = tmp_path / "run" / "best"
    assert (best / "adapter_config.json").is_file() and not (best / "model.safetensors").exists()

    model, tokenizer, family, loaded = load_checkpoint(best, torch.device("cpu"))
    assert family.name == "llm" and loaded.method == method
    from models.predict import main as predict

    out = tmp_path / "submission.csv"
    assert predict(["--checkpoint", str(best), "--test-data", str(first_rows(assets.test, tmp_path / "t.csv", 4)),
                    "--output", str(out), "--num-beams", "1"]) == 0
    with out.open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 and any(r["summary"] for r in rows)


def test_lora_wraps_every_llm_projection(tiny_config):
    config, _ = tiny_config("llm", method="lora")
    model, _, wrapped = build_model(config, get_family("llm"), torch.device("cpu"), torch.float32)
    from peft.tuners.lora import LoraLayer

    names = [name for name, module in model.named_modules() if isinstance(module, LoraLayer)]
    assert wrapped == len(names) > 0
    assert {name.rsplit(".", 1)[-1] for name in names} == LLM_TARGETS
    assert wrapped == len(LLM_TARGETS) * model.config.num_hidden_layers


# -- GGUF -----------------------------------------------------------------------------------

def _llama_cpp_permute(w: torch.Tensor, n_head: int) -> torch.Tensor:
    """What llama.cpp's converter does to q/k rows (transformers' GGUF loader undoes it)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_gguf(model, tokenizer, path):
    """A float32 GGUF of a Llama checkpoint with its byte-level BPE tokenizer, as llama.cpp would write it."""
    import gguf

    c = model.config
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny llm")
    writer.add_context_length(c.max_position_embeddings)
    writer.add_embedding_length(c.hidden_size)
    writer.add_block_count(c.num_hidden_layers)
    writer.add_feed_forward_length(c.intermediate_size)
    writer.add_head_count(c.num_attention_heads)
    writer.add_head_count_kv(c.num_key_value_heads)
    writer.add_rope_dimension_count(c.head_dim)
    writer.add_rope_freq_base(c.rope_parameters["rope_theta"])
    writer.add_layer_norm_rms_eps(c.rms_norm_eps)
    writer.add_vocab_size(c.vocab_size)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokenizer.convert_ids_to_tokens(list(range(len(tokenizer)))))
    special = set(tokenizer.all_special_ids)
    writer.add_token_types([3 if i in special else 1 for i in range(len(tokenizer))])
    merges = json.loads(tokenizer.backend_tokenizer.to_str())["model"]["merges"]
    writer.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in merges])
    writer.add_bos_token_id(tokenizer.bos_token_id)
    writer.add_eos_token_id(tokenizer.eos_token_id)
    writer.add_unk_token_id(tokenizer.unk_token_id)

    names = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
             "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
             "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm"}
    state = model.state_dict()
    tensors = {"token_embd.weight": state["model.embed_tokens.weight"],
               "output_norm.weight": state["model.norm.weight"], "output.weight": state["lm_head.weight"]}
    for i in range(c.num_hidden_layers):
        for hf, gg in names.items():
            w = state[f"model.layers.{i}.{hf}.weight"]
            if gg == "attn_q":
                w = _llama_cpp_permute(w, c.num_attention_heads)
            elif gg == "attn_k":
                w = _llama_cpp_permute(w, c.num_key_value_heads)
            tensors[f"blk.{i}.{gg}.weight"] = w
    for name, w in tensors.items():
        writer.add_tensor(name, w.float().contiguous().numpy())
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_gguf_file_converts_to_a_checkpoint_that_matches_the_original(tmp_path):
    pytest.importorskip("gguf", reason="the gguf package (pip install gguf) writes the test's GGUF file")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from models.demo import demo_assets
    from scripts.install_llm import convert_gguf, holds_model

    source = demo_assets("llm").checkpoint
    original = AutoModelForCausalLM.from_pretrained(source).eval()
    tokenizer = AutoTokenizer.from_pretrained(source)
    gguf_file = write_gguf(original, tokenizer, tmp_path / "gguf" / "tiny-llm.gguf")

    out = convert_gguf(gguf_file, tmp_path / "converted")
    assert holds_model(out)
    saved = json.loads((out / "config.json").read_text(encoding="utf-8"))
    assert "quantization_config" not in saved and saved["model_type"] == "llama"
    converted = AutoModelForCausalLM.from_pretrained(out).eval()
    for name, value in original.state_dict().items():
        torch.testing.assert_close(converted.state_dict()[name], value, msg=name)

    again = AutoTokenizer.from_pretrained(out)
    text = "#Person1#: 내일 회의는 몇 시예요?\n#Person2#: 오전 10시입니다.\n요약:"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert again(text, add_special_tokens=False)["input_ids"] == ids
    assert again.decode(ids) == text
    # transformers' GGUF tokenizer swaps bos and eos; the converter takes them from the config
    assert (again.eos_token, again.bos_token) == (tokenizer.eos_token, tokenizer.bos_token)
    x = torch.tensor([ids])
    with torch.inference_mode():
        torch.testing.assert_close(converted(x).logits, original(x).logits)
