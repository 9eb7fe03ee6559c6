"""Paraphrased training dialogues from a local model, made once and kept in a file beside the data.

python -m models.paraphrase --model checkpoints/gemma3-270m --train-data data/train.csv
python -m models.paraphrase --model opus-mt-ko-en --back-model opus-mt-en-ko --train-data data/train.csv

Each turn's text is rewritten apart from its speaker tag, so every turn keeps its place and its speaker. A
causal LM (such as a folder scripts/install_llm.py installs) is prompted, in Korean for Korean data, to say
the text in other words; a sequence-to-sequence model is given the text alone, and `--back-model` sends its
output through a second one (translated out and back). A turn whose rewrite lost a `#...#` placeholder or a
word the row's summary takes from the turn (a name, a place, a date), came back in another language (Korean
or not) or empty keeps its own text, and the run says how many did. The file, `NAME.paraphrased-KEY.csv`
beside the training file (fname, dialogue, summary..., under our column names), is keyed by the rows, the
model folders' contents and the generation settings: the same command again reuses it and generates nothing.
Training mixes it in through `data.augment.paraphrase_file` and `data.augment.paraphrase_ratio`
(models/augment.py).
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import re
import string
import time
from collections import Counter
from pathlib import Path

from models.augment import TAG, TURN
from models.cli import quiet_libraries, run_cli
from models.errors import CheckpointError, OutputError

VERSION = 2  # part of the file's key: bump when the same settings would rewrite otherwise
# A small LM asked in English answers in English: Korean data is asked in Korean.
PROMPTS = {"ko": "다음 문장을 뜻은 그대로 두고 다른 말로 바꿔 쓰세요. #...# 표시는 그대로 두세요.\n문장: {text}\n바꾼 문장:",
           "en": "Rewrite the sentence in other words, keeping its meaning and any #...# placeholder.\n"
                 "Sentence: {text}\nRewritten:"}
PUNCTUATION = string.punctuation + "·…“”‘’「」『』"
HANGUL = re.compile(r"[\uac00-\ud7a3]")
MAX_INPUT_TOKENS = 512  # a longer turn keeps its own text rather than be cut


def turn_texts(dialogue: str) -> list[str]:
    """The text of each turn, its speaker tag left out: what the model rewrites."""
    return [text for _, text in map(split_turn, dialogue.strip().split("\n")) if text]


def split_turn(line: str) -> tuple[str, str]:
    match = TURN.match(line)
    return (match.group(1), match.group(2).strip()) if match else ("", line.strip())


def rewritten(dialogue: str, rewrites: dict[str, str], summary: str = "") -> tuple[str, int]:
    """The dialogue with each turn's text replaced by its rewrite where that kept the text's `#...#` tags,
    language (Korean or not) and the words `summary` takes from it, said something and did not run away, and
    how many turns kept their own text instead."""
    lines, kept = [], 0
    for line in dialogue.strip().split("\n"):
        speaker, text = split_turn(line)
        new = clean(rewrites.get(text, ""))
        if (not text or not new or Counter(TAG.findall(new)) != Counter(TAG.findall(text))
                or bool(HANGUL.search(new)) != bool(HANGUL.search(text)) or runaway(new, text)
                or lost_summary_word(new, text, summary)):
            kept += bool(text)
            lines.append(line)
        else:
            lines.append(f"{speaker}: {new}" if speaker else new)
    return "\n".join(lines), kept


def lost_summary_word(new: str, text: str, summary: str) -> str | None:
    """A word of the summary that the turn says and the rewrite dropped (a name, a place, a date): trained on,
    such a rewrite teaches the model to state what its dialogue no longer holds. A summary word counts by
    its longest stem of two or more characters found in the turn, so a Korean particle on either side still
    matches."""
    for word in summary.split():
        word = word.strip(PUNCTUATION)
        stem = next((word[:n] for n in range(len(word), 1, -1) if word[:n] in text), None)
        if stem and stem not in new:
            return stem
    return None


def runaway(new: str, text: str) -> bool:
    """A rewrite that rambled on (up to its token limit) or broke a character apart (bytes decoded alone)."""
    return len(new) > 3 * len(text) + 20 or "\ufffd" in new


def clean(output: str) -> str:
    """A model's first line, without a speaker tag it may have echoed: a causal LM often goes on past it."""
    first = next((line.strip() for line in output.strip().split("\n") if line.strip()), "")
    return split_turn(first)[1] if TURN.match(first) else first


class Rewriter:
    """A model folder that rewrites texts: a causal LM prompted with PROMPT, a sequence-to-sequence model given
    the text alone. On a GPU in bf16 where it has it."""

    def __init__(self, folder: Path, device, prompt: str, temperature: float, max_new_tokens: int):
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM

        from models.methods import load_pretrained, load_tokenizer

        self.causal = not AutoConfig.from_pretrained(str(folder)).is_encoder_decoder
        self.dtype = torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
        auto = AutoModelForCausalLM if self.causal else AutoModelForSeq2SeqLM
        self.model = load_pretrained(auto, str(folder), dtype=self.dtype).to(device).eval()
        self.tokenizer = load_tokenizer(str(folder))
        self.padding_side = "left" if self.causal else "right"  # a causal LM continues its prompt
        self.chat = self.causal and bool(getattr(self.tokenizer, "chat_template", None))
        self.device, self.prompt, self.temperature, self.max_new_tokens = device, prompt, temperature, max_new_tokens

    def inputs(self, texts: list[str]) -> list[str]:
        if not self.causal:
            return texts
        prompts = [self.prompt.replace("{text}", text) for text in texts]
        if not self.chat:
            return prompts
        return [self.tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                                   add_generation_prompt=True) for p in prompts]

    def __call__(self, texts: list[str], batch_size: int, on_rows=None) -> list[str]:
        """One rewrite per text, in order ("" for a text too long to rewrite whole); batched by length."""
        import torch

        lengths = [len(ids) for ids in self.tokenizer(texts, add_special_tokens=False)["input_ids"]]
        order = sorted((i for i in range(len(texts)) if lengths[i] <= MAX_INPUT_TOKENS), key=lengths.__getitem__)
        if on_rows and len(order) < len(texts):
            on_rows(len(texts) - len(order))
        out = [""] * len(texts)
        sampling = {"do_sample": True, "temperature": self.temperature, "top_p": 0.95} if self.temperature else {}
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                rows = order[start: start + batch_size]
                batch = self.tokenizer(self.inputs([texts[i] for i in rows]), padding=True, return_tensors="pt",
                                       padding_side=self.padding_side, add_special_tokens=not self.chat).to(self.device)
                new = self.model.generate(**batch, max_new_tokens=min(self.max_new_tokens, 2 * lengths[rows[-1]] + 8),
                                          pad_token_id=self.tokenizer.pad_token_id, **sampling)
                if self.causal:
                    new = new[:, batch["input_ids"].shape[1]:]
                for i, text in zip(rows, self.tokenizer.batch_decode(new, skip_special_tokens=True)):
                    out[i] = text.strip()
                if on_rows:
                    on_rows(len(rows))
        return out


def model_folder(path: str) -> Path:
    folder = Path(path).expanduser()
    if not (folder / "config.json").is_file():
        what = "does not exist" if not folder.exists() else "holds no model (no config.json)"
        raise CheckpointError(f"model folder {folder} {what}; pass a Hugging Face model folder, e.g. one "
                              "python scripts/install_llm.py gemma3-270m --out checkpoints/gemma3-270m installs")
    return folder


def folder_digest(folder: Path) -> str:
    """sha256 of every file in a model folder, names and contents: the same model wherever it is copied."""
    digest = hashlib.sha256()
    for file in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(str(file.relative_to(folder)).encode() + b"\0")
        with file.open("rb") as f:
            while chunk := f.read(1 << 24):
                digest.update(chunk)
    return digest.hexdigest()


def file_key(rows: list[dict[str, str]], digests: list[str], settings: dict) -> str:
    blob = json.dumps({"version": VERSION, "rows": rows, "models": digests, **settings}, ensure_ascii=False,
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def output_path(source: str, key: str, out_dir: str | None) -> Path:
    """Beside a local training file (or datasets folder); in the cache for a hub dataset."""
    from models.data import default_cache_dir
    from models.datafiles import is_hub

    name = re.sub(r"[^\w.-]+", "_", source) if is_hub(source) else Path(source).stem
    folder = (Path(out_dir) if out_dir else default_cache_dir() / "paraphrased" if is_hub(source)
              else Path(source).parent)
    return folder / f"{name}.paraphrased-{key}.csv"


def write_rows(path: Path, rows: list[dict[str, str]]) -> None:
    """The whole file or none: written aside and renamed into place."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tmp.open("w", encoding="utf-8", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"cannot write {path} ({err.strerror}); pass --out-dir with a folder you can write") from None


def paraphrase(rows: list[dict[str, str]], folders: list[Path], settings: dict,
               batch_size: int) -> tuple[list[dict[str, str]], int, str]:
    """Every row with its dialogue rewritten through each model in turn; how many turns kept their own text;
    where it ran."""
    import torch

    from models.progress import Counting

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(settings["seed"])
    texts = list(dict.fromkeys(text for row in rows for text in turn_texts(row["dialogue"])))  # each once
    current, dtype, failed = texts, None, [False] * len(texts)
    for folder in folders:
        rewriter = Rewriter(folder, device, settings["prompt"], settings["temperature"], settings["max_new_tokens"])
        dtype = rewriter.dtype
        progress = Counting(f"paraphrase {folder.name}", len(texts), "turns")
        current = [clean(text) for text in rewriter(current, batch_size, progress.update)]
        progress.close()
        del rewriter  # one model on the GPU at a time
        failed = [gone or not text for gone, text in zip(failed, current)]  # once lost, the turn keeps its own
    rewrites = {text: "" if fail else new for text, new, fail in zip(texts, current, failed)}
    out, kept = [], 0
    for row in rows:
        dialogue, n = rewritten(row["dialogue"], rewrites, row.get("summary", ""))
        out.append({**row, "dialogue": dialogue})
        kept += n
    return out, kept, f"{device.type} ({str(dtype).removeprefix('torch.')}), {len(texts)} distinct turns"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m models.paraphrase", description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True,
                        help="a model folder: a causal LM (prompted to rewrite) or a sequence-to-sequence model "
                             "(a translator: pair it with --back-model)")
    parser.add_argument("--back-model", help="a second sequence-to-sequence folder the first one's output goes "
                                             "through: translated out and back")
    parser.add_argument("--train-data", required=True,
                        help="training data (CSV, JSONL, Parquet, a datasets folder, hub:NAME:SPLIT)")
    parser.add_argument("--columns", default="", metavar="OURS=THEIRS,...",
                        help="the data's column names, e.g. dialogue=text,summary=highlights")
    parser.add_argument("--prompt", help="a causal LM's instruction, {text} standing for the turn's text "
                                         "(default: one in Korean for Korean data, else in English)")
    parser.add_argument("--temperature", type=float, default=0.0, help="0: greedy; above: sampled, seeded by --seed")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-new-tokens", type=int, default=256, help="the most a turn's rewrite may take")
    parser.add_argument("--batch-size", type=int, default=64, help="turns generated at once")
    parser.add_argument("--out-dir", help="where the file goes (default: beside the training file)")
    args = parser.parse_args(argv)
    quiet_libraries()

    from models.datafiles import read_rows

    folders = [model_folder(path) for path in (args.model, args.back_model) if path]
    rows, _ = read_rows(args.train_data, need_summary=True, columns=args.columns)
    korean = sum(bool(HANGUL.search(row["dialogue"])) for row in rows) * 2 > len(rows)
    settings = {"prompt": args.prompt or PROMPTS["ko" if korean else "en"], "temperature": args.temperature,
                "seed": args.seed, "max_new_tokens": args.max_new_tokens}
    path = output_path(args.train_data, file_key(rows, [folder_digest(f) for f in folders], settings), args.out_dir)
    if path.is_file():
        print(f"reused {path}: made earlier from these {len(rows)} rows with the same model and settings; "
              "nothing generated")
    else:
        started = time.perf_counter()
        out, kept, how = paraphrase(rows, folders, settings, args.batch_size)
        write_rows(path, out)
        unchanged = sum(a["dialogue"].strip() == b["dialogue"].strip() for a, b in zip(out, rows))
        took = time.strftime("%H:%M:%S", time.gmtime(time.perf_counter() - started))
        print(f"paraphrased {len(rows)} dialogues with {' then '.join(f.name for f in folders)} in {took} on {how}; "
              f"{kept} turns kept their own text (the rewrite lost a #...# tag or a word the summary uses, changed "
              f"language or was empty), {unchanged} dialogues came out unchanged\nwrote {path}")
    print(f"mix it into training: --set data.augment.paraphrase_file={path} --set data.augment.paraphrase_ratio=0.5")
    return 0


if __name__ == "__main__":
    run_cli(main)
