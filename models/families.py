"""The model families: what differs between BART, T5 and GPT-2 lives here and nowhere else."""
from __future__ import annotations

from dataclasses import dataclass

from models.errors import UnknownFamily


@dataclass(frozen=True)
class Family:
    name: str
    kind: str  # "seq2seq" (encoder-decoder) or "causal" (dialogue, separator and summary in one sequence)
    checkpoints: tuple[str, ...]  # the design document's checkpoints; any hub id or local folder works too
    lora_targets: tuple[str, ...]  # module-name suffixes of the attention and MLP projections
    prefix: str = ""  # prepended to every dialogue: T5 was pre-trained with task prefixes
    separator: str = ""  # causal only: between dialogue and summary; generation continues after it
    model_types: tuple[str, ...] = ()  # config.json's model_type of the checkpoints it fits; empty: any

    @property
    def is_causal(self) -> bool:
        return self.kind == "causal"


_T5_GATED = ("q", "k", "v", "o", "wi_0", "wi_1", "wo")  # mT5 and Flan-T5 use the gated-GELU MLP
_CAUSAL_SEPARATOR = "\n요약:"
_LLM_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family("bart", "seq2seq", ("facebook/bart-base", "facebook/bart-large"),
               ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"), model_types=("bart", "mbart")),
        Family("t5", "seq2seq", ("t5-small", "t5-base", "t5-large"),
               ("q", "k", "v", "o", "wi", "wo"), prefix="summarize: ", model_types=("t5",)),
        Family("mt5", "seq2seq", ("google/mt5-small", "google/mt5-base"), _T5_GATED, model_types=("mt5",)),
        Family("flan-t5", "seq2seq", ("google/flan-t5-base", "google/flan-t5-large"), _T5_GATED,
               model_types=("t5",)),
        Family("gpt2", "causal", ("gpt2", "gpt2-medium", "gpt2-large"),
               ("c_attn", "c_proj", "c_fc"), separator=_CAUSAL_SEPARATOR, model_types=("gpt2",)),
        Family("kogpt2", "causal", ("skt/kogpt2-base-v2",),
               ("c_attn", "c_proj", "c_fc"), separator=_CAUSAL_SEPARATOR, model_types=("gpt2",)),
        # Any local decoder-only LM (Llama, Gemma, Qwen, SmolLM...), prompted like gpt2.
        Family("llm", "causal", (), _LLM_TARGETS, separator=_CAUSAL_SEPARATOR),
    )
}


def families_for(model_type: str) -> list[str]:
    """The families whose settings fit a checkpoint of this model_type (llm takes any decoder-only model)."""
    return [f.name for f in FAMILIES.values() if model_type in f.model_types]


def get_family(name: str) -> Family:
    try:
        return FAMILIES[name]
    except KeyError:
        raise UnknownFamily(
            f"unknown model family '{name}'; use one of {', '.join(FAMILIES)}"
        ) from None
