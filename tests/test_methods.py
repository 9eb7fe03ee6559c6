"""Which modules LoRA wraps in each family, and the refusals that come before anything loads."""
import os
import shutil
import sys

import pytest
import torch

from models.errors import ConfigError
from models.families import get_family
from models.methods import build_model, check_method_possible

from conftest import FAMILIES


@pytest.mark.parametrize("family", FAMILIES)
def test_lora_wraps_the_attention_and_mlp_projections_of_each_family(family, tiny_config):
    config, _ = tiny_config(family, method="lora")
    model, _, wrapped = build_model(config, get_family(family), torch.device("cpu"), torch.float32)
    names = {name.rsplit(".", 1)[-1] for name, module in model.named_modules() if hasattr(module, "lora_A")}
    assert wrapped > 0 and names == set(get_family(family).lora_targets)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)


def test_targets_that_match_nothing_are_an_error(tiny_config):
    config, _ = tiny_config("gpt2", method="lora")
    llm = get_family("llm")  # a causal family too, but Llama's q_proj/gate_proj do not exist in GPT-2
    with pytest.raises(ConfigError, match="LoRA matched no module"):
        build_model(config, llm, torch.device("cpu"), torch.float32)


def test_a_checkpoint_of_the_wrong_kind_names_the_fix(tiny_config):
    from models.errors import CheckpointError

    config, _ = tiny_config("gpt2")
    with pytest.raises(CheckpointError, match="not a sequence-to-sequence model.*model.architecture"):
        build_model(config, get_family("bart"), torch.device("cpu"), torch.float32)


def test_unsloth_is_refused_without_cuda_and_names_what_works():
    with pytest.raises(ConfigError, match="needs a CUDA GPU.*full, lora or qlora"):
        check_method_possible("unsloth", has_cuda=False)


def test_unsloth_without_the_extra_says_how_to_install_it():
    pytest.importorskip("torch")
    try:
        import unsloth  # noqa: F401
        pytest.skip("unsloth is installed here")
    except Exception:
        pass
    with pytest.raises(ConfigError, match=r"pip install 'sumsweep\[unsloth\]'"):
        check_method_possible("unsloth", has_cuda=True)


def test_qlora_without_bitsandbytes_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # as if it were not installed
    with pytest.raises(ConfigError, match=r"method 'qlora' needs bitsandbytes; install it with pip install"):
        check_method_possible("qlora")


def test_a_tokenizer_is_loaded_once_until_its_files_change(tmp_path):
    from models.demo import demo_assets
    from models.methods import load_tokenizer

    folder = tmp_path / "tok"
    shutil.copytree(demo_assets("bart").checkpoint, folder)
    first = load_tokenizer(str(folder))
    assert load_tokenizer(str(folder)) is first  # each trial of a study: not built again
    os.utime(folder / "tokenizer.json", ns=(0, 10 ** 18))  # written again, as a trial's best/ folder is
    again = load_tokenizer(str(folder))
    assert again is not first and again("안녕하세요")["input_ids"] == first("안녕하세요")["input_ids"]
