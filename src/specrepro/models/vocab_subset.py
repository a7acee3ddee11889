"""A draft vocabulary subset (FR-Spec / EAGLE-3 style): the draft proposes only frequent tokens.

A drafter's lm_head over the full vocabulary (49,152 rows here) is a large share of each draft
level's cost. With a subset the drafter projects onto the k most frequent tokens of its target's
teacher corpus only and writes -inf for every other token, so its distribution q is exactly
zero there. Speculative sampling stays exact: a drafted token always has q > 0, and the residual
max(p - q, 0) keeps the target's whole mass outside the subset. At T=0 the target decides every
token, so the output is vanilla's whatever the draft proposes.

Chosen at training time (`vocab_subset: k` on a `drafts:` or `heads:` entry): the training CLI
writes `vocab_subset.json` into the model's folder; `harness.load_pair` applies it when it loads
that folder for decoding. Nothing here changes saved weights: the subset head is put in place
after loading and is never saved.

Tree methods draft top-k children per node: a subset smaller than the tree's widest expansion
would make them propose tokens of probability zero, so real subsets should hold thousands.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from specrepro.training.teacher import Sample

SUBSET_FILE = "vocab_subset.json"
HOW_CHOSEN = (
    "the k most frequent ids of the teacher corpus's responses, counting at every response "
    "position the sampled token and the teacher's argmax (top_ids[:, 0]); ties by lower id"
)


class VocabSubsetError(ValueError):
    """A vocab_subset value or file that cannot be used."""


def check_subset_size(k: object, vocab_size: int, where: str) -> int:
    """k as an int, or a clear error when it is not a positive integer <= vocab_size."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise VocabSubsetError(f"{where}: vocab_subset must be a positive integer, got {k!r}")
    if k > vocab_size:
        raise VocabSubsetError(
            f"{where}: vocab_subset {k} exceeds the vocabulary size {vocab_size} "
            "(leave it unset for the full vocabulary)"
        )
    return k


def frequent_tokens(
    samples: Sequence[Sample], k: int, vocab_size: int | None = None
) -> torch.Tensor:
    """The k most frequent token ids of the teacher corpus, sorted ascending (long).

    Counted over the response positions only (prompts are training questions, not what a drafter
    proposes): at each one the sampled token (the corpus is sampled at gen_temperature > 0, so
    this follows the target's distribution) and the teacher's argmax, top_ids[:, 0] (what greedy
    decoding emits; without it T=0 runs would miss tokens the sampled text rarely shows). Ties,
    and ids never seen when k exceeds the distinct ids, are taken by ascending id, so the choice
    is deterministic.
    """
    chunks = []
    for s in samples:
        chunks.append(torch.as_tensor(s.ids[s.n_prompt :], dtype=torch.long))
        if s.top_ids is not None and s.top_ids.numel():
            chunks.append(s.top_ids[:, 0].to(torch.long))
    seen = torch.cat(chunks) if chunks else torch.zeros(0, dtype=torch.long)
    if vocab_size is None:
        vocab_size = int(seen.max()) + 1 if seen.numel() else 0
    size = vocab_size
    check_subset_size(k, size, "frequent_tokens")
    counts = torch.bincount(seen, minlength=size)[:size]
    # A stable descending sort keeps equal counts in ascending id order.
    order = torch.sort(counts, descending=True, stable=True).indices
    return torch.sort(order[:k]).values


class SubsetLmHead(nn.Module):
    """An lm_head that computes the rows `ids` of `full` only and returns full-width logits,
    -inf outside the subset (softmax exactly 0 there).

    The subset rows are copied once into an own nn.Linear (contiguous, packed by the engine like
    every linear layer). `full` is kept as a plain attribute, not a submodule: it is usually the
    target's module (an EAGLE head's lm_head), which must not be cast, moved, packed twice or
    saved through this head. `weight` is the full weight so that code reading the vocabulary
    width from `get_output_embeddings().weight` (ModelRunner, decoder checks) sees V.
    """

    def __init__(self, full: nn.Module, ids: torch.Tensor) -> None:
        super().__init__()
        weight = full.weight
        vocab, hidden = weight.shape
        ids = torch.as_tensor(ids, dtype=torch.long).flatten()
        if ids.numel() == 0 or int(ids.min()) < 0 or int(ids.max()) >= vocab:
            raise VocabSubsetError(f"subset ids must lie in [0, {vocab}) and be non-empty")
        if torch.unique(ids).numel() != ids.numel():
            raise VocabSubsetError("subset ids must be distinct")
        ids = torch.sort(ids).values.to(weight.device)
        bias = getattr(full, "bias", None)
        self.proj = nn.Linear(
            hidden, ids.numel(), bias=bias is not None, device=weight.device, dtype=weight.dtype
        )
        with torch.no_grad():
            self.proj.weight.copy_(weight.detach()[ids])
            if bias is not None:
                self.proj.bias.copy_(bias.detach()[ids])
        self.proj.requires_grad_(False)
        self.register_buffer("ids", ids, persistent=False)
        self.vocab_size = int(vocab)
        object.__setattr__(self, "full", full)

    @property
    def weight(self) -> torch.Tensor:
        return self.full.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sub = self.proj(x)
        out = sub.new_full((*sub.shape[:-1], self.vocab_size), float("-inf"))
        return out.index_copy_(-1, self.ids, sub)


def save_subset(folder: Path, ids: torch.Tensor, how: str = HOW_CHOSEN) -> Path:
    """Write `vocab_subset.json` (sorted ids, k, how they were chosen) into a model folder."""
    ids_list = sorted(int(i) for i in torch.as_tensor(ids).flatten().tolist())
    path = Path(folder) / SUBSET_FILE
    path.write_text(json.dumps({"k": len(ids_list), "how": how, "ids": ids_list}))
    return path


def load_subset(folder: Path | str) -> torch.Tensor | None:
    """The folder's subset ids (sorted long), or None when it has no vocab_subset.json."""
    path = Path(folder) / SUBSET_FILE
    if not path.is_file():
        return None
    raw = json.loads(path.read_text())
    ids = torch.tensor(raw.get("ids", []), dtype=torch.long)
    if ids.numel() != raw.get("k") or ids.numel() == 0:
        raise VocabSubsetError(f"{path}: k {raw.get('k')!r} but {ids.numel()} ids")
    return torch.sort(ids).values


def apply_subset(model: nn.Module, ids: torch.Tensor) -> nn.Module:
    """Make `model` (an EagleHead or a causal LM with `lm_head`) draft from the subset `ids`.

    Only the attribute `lm_head` of this model is replaced: an EAGLE head's lm_head is the
    target's module, which stays untouched for the target. A draft whose lm_head is tied to its
    embedding keeps its embedding; call this after loading, for decoding only (the model is not
    meant to be saved or trained afterwards).
    """
    current = model.lm_head
    if isinstance(current, SubsetLmHead):
        current = current.full
    model.lm_head = SubsetLmHead(current, ids)
    return model


def remove_subset(model: nn.Module) -> nn.Module:
    """Put the full lm_head back (the one `apply_subset` wrapped); a no-op without a subset."""
    if isinstance(model.lm_head, SubsetLmHead):
        model.lm_head = model.lm_head.full
    return model


def apply_saved_subset(model: nn.Module, folder: Path | str) -> int | None:
    """Apply the folder's vocab_subset.json to `model`; returns the subset size (None: none)."""
    ids = load_subset(folder)
    if ids is None:
        return None
    apply_subset(model, ids)
    return int(ids.numel())


def subset_size(model: nn.Module) -> int | None:
    """The size of the subset `model` drafts from (None: the full vocabulary)."""
    head = getattr(model, "lm_head", None)
    return head.proj.out_features if isinstance(head, SubsetLmHead) else None
