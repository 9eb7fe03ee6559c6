"""Ensembles of trained checkpoints: candidates from each, minimum-Bayes-risk voting, weight soups.

Two ways to combine models. MBR voting: every model writes its summaries (one or several beams), and for
each dialogue the candidate that agrees most, by ROUGE, with the other candidates is chosen; it works
across families and tokenizers, since only text is compared. A soup averages the weights of models
fine-tuned from one base checkpoint with one architecture (LoRA adapters merged into it first) and runs
the average as one model; the greedy soup of "Model soups" (Wortsman et al., 2022) adds a model's weights
only where the dev score does not drop.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from models.config import TrainConfig
from models.data import Split, load_split
from models.errors import CheckpointError
from models.generate import generate_candidates, load_checkpoint, save_checkpoint
from models.metrics import pairwise_rouge, rouge
from models.trainer import release_memory

# groups of texts -> for each group, how much every text agrees with every other (symmetric matrices)
Agreement = Callable[[Sequence[Sequence[str]]], list[list[list[float]]]]


# -- candidates ------------------------------------------------------------------------------------------
def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def summaries_of(model, tokenizer, family, config: TrainConfig, data: str | Path, *, labelled: bool,
                 batch_size: int, num_return: int = 1) -> tuple[Split, list[list[str]]]:
    """A data file's rows as this model reads them, and its `num_return` best beams for each (best first),
    generated with the settings it was trained with (beam search widened to `num_return` where narrower)."""
    t, device = config.training, next(model.parameters()).device
    split = load_split(data, tokenizer, family, t.max_source_length, t.max_target_length, need_summary=labelled,
                       columns=config.data.columns)
    return split, generate_candidates(model, tokenizer, family, split.features, num_beams=t.num_beams,
                                      num_return=num_return, max_new_tokens=t.generation_max_length,
                                      batch_size=batch_size, device=device)


def checkpoint_candidates(folder: str | Path, datas: Sequence[tuple[str | Path, bool]], *, batch_size: int,
                          num_return: int = 1) -> list[tuple[Split, list[list[str]]]]:
    """`summaries_of` a saved checkpoint for each (data file, labelled) pair; the model is freed after."""
    model, tokenizer, family, config = load_checkpoint(folder, default_device())
    try:
        return [summaries_of(model, tokenizer, family, config, data, labelled=labelled, batch_size=batch_size,
                             num_return=num_return) for data, labelled in datas]
    finally:
        del model
        release_memory()


# -- minimum Bayes risk ----------------------------------------------------------------------------------
def mbr_select(candidates: Sequence[Sequence[str]], weights: Sequence[float], agreement: Agreement) -> list[int]:
    """For each row's candidates, the index of the one with the highest expected agreement (minimum Bayes risk).

    The expectation is over the candidates as an ensemble draws them: the k-th candidate of every row has
    probability `weights[k]` (its model's dev score, normalized), itself included. Among near-equal models
    the candidate most others agree with wins; between two that disagree, the better model's. A tie goes to
    the earlier candidate: list the best model's first.
    """
    total = sum(weights)
    probability = [w / total for w in weights] if total > 0 else [1 / len(weights)] * len(weights)
    chosen = []
    for row, matrix in zip(candidates, agreement(candidates)):
        if len(row) != len(weights):
            raise ValueError(f"{len(row)} candidates for a row but {len(weights)} weights")
        expected = [sum(p * agree for p, agree in zip(probability, matrix[i])) for i in range(len(row))]
        chosen.append(max(range(len(row)), key=lambda i: (round(expected[i], 12), -i)))
    return chosen


def rouge_agreement(tokenize: str) -> Agreement:
    """Agreement as the mean of ROUGE-1/2/L F1 between two candidates."""
    return lambda groups: pairwise_rouge(groups, tokenize)


@dataclass
class Vote:
    summaries: list[str]
    picks: list[int]  # per row, the model whose candidate was chosen


def mbr_vote(per_model: Sequence[Sequence[Sequence[str]]], model_weights: Sequence[float],
             agreement: Agreement) -> Vote:
    """`per_model[m][row]`: model m's candidates for a row (the same number for every row). Models are
    listed best first; each of a model's candidates weighs the model's weight."""
    beams = [len(rows[0]) for rows in per_model]
    owner = [m for m, n in enumerate(beams) for _ in range(n)]
    rows = [[text for rows_of_model in per_model for text in rows_of_model[r]] for r in range(len(per_model[0]))]
    chosen = mbr_select(rows, [model_weights[m] for m in owner], agreement)
    return Vote([row[i] for row, i in zip(rows, chosen)], [owner[i] for i in chosen])


# -- weight soups ----------------------------------------------------------------------------------------
def soup_problem(first: TrainConfig, other: TrainConfig) -> str | None:
    """Why a model trained with `other` cannot be averaged with one trained with `first`, or None."""
    if (other.model.architecture, other.model.checkpoint) != (first.model.architecture, first.model.checkpoint):
        return (f"fine-tuned {other.model.checkpoint} ({other.model.architecture}), "
                f"not {first.model.checkpoint} ({first.model.architecture})")
    if (other.method == "full") != (first.method == "full"):
        return f"{describe(other)}, not {describe(first)}"
    if other.method != "full" and other.qlora.lora_rank != first.qlora.lora_rank:
        return f"{describe(other)}, not {describe(first)}"
    return None


def describe(config: TrainConfig) -> str:
    return "full fine-tuning" if config.method == "full" else f"{config.method} rank {config.qlora.lora_rank}"


def weights_of(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A copy of a model's weights on the CPU (floats in fp32, to average without rounding)."""
    return {k: v.detach().to("cpu", torch.float32 if v.is_floating_point() else v.dtype, copy=True)
            for k, v in model.state_dict().items()}


def average(total: dict[str, torch.Tensor], count: int, reference: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`total / count` for the float weights; other tensors (integer buffers) as in `reference`."""
    return {k: total[k] / count if k in total else v for k, v in reference.items()}


def check_same_shapes(first: dict[str, torch.Tensor], other: dict[str, torch.Tensor], folder: Path) -> None:
    differ = sorted(k for k in first.keys() | other.keys()
                    if k not in first or k not in other or first[k].shape != other[k].shape)
    if differ:
        raise CheckpointError(f"{folder} holds other weights than the soup's first model ({differ[0]} and "
                              f"{len(differ) - 1} more differ); it cannot be averaged with it")


@dataclass
class Soup:
    model: torch.nn.Module
    tokenizer: object
    family: object
    config: TrainConfig
    metrics: dict[str, float]  # of the final soup on the dev data
    members: list[int]  # indices into the folders given, best first
    tried: list[dict] = field(default_factory=list)  # each candidate: index, the dev score with it, kept

    def summaries(self, data: str | Path, *, batch_size: int) -> list[str]:
        """The soup's summary of every row of a data file without references (a test file)."""
        return [c[0] for c in summaries_of(self.model, self.tokenizer, self.family, self.config, data, labelled=False,
                                           batch_size=batch_size)[1]]


def greedy_soup(folders: Sequence[str | Path], dev: str | Path, *, metric: str, batch_size: int,
                first_metrics: dict[str, float] | None = None) -> Soup:
    """Start from the first (best) model; add each next one's weights to the uniform average only if the
    dev `metric` does not drop. `first_metrics`: the first model's dev metrics, where already known."""
    model, tokenizer, family, config = load_checkpoint(folders[0], default_device())
    t = config.training

    def score() -> dict[str, float]:
        split, candidates = summaries_of(model, tokenizer, family, config, dev, labelled=True,
                                         batch_size=batch_size)
        return rouge([c[0] for c in candidates], split.references, t.rouge_tokenize)

    reference = weights_of(model)
    total, members = {k: v.clone() for k, v in reference.items() if v.is_floating_point()}, [0]
    metrics = first_metrics or score()
    tried = []
    for index, folder in enumerate(folders[1:], start=1):
        other, _, _, _ = load_checkpoint(folder, torch.device("cpu"))
        extra = weights_of(other)
        del other
        check_same_shapes(reference, extra, Path(folder))
        model.load_state_dict(average({k: total[k] + extra[k] for k in total}, len(members) + 1, reference))
        with_it = score()
        kept = with_it[metric] >= metrics[metric]
        tried.append({"index": index, metric: with_it[metric], "kept": kept})
        if kept:
            members.append(index)
            metrics = with_it
            for k in total:
                total[k] += extra[k]
        del extra
    model.load_state_dict(average(total, len(members), reference))
    release_memory()
    return Soup(model, tokenizer, family, config, metrics, members, tried)


def save_soup(soup: Soup, folder: Path) -> None:
    """The soup as a checkpoint `models.predict` loads: full weights, LoRA already merged in."""
    save_checkpoint(soup.model, soup.tokenizer, soup.config.override({"method": "full"}), folder)
