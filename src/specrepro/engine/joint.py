"""Beam sampling's step distribution (docs/methods.md): over all R x V candidates, or on its
support.

The joint over (beam, token) is softmax((score_b + log p(token | beam b)) / T) over all R x V
candidates, with top-k and top-p applied to that joint (`joint_distribution`: a flat [R * V]
vector). It is computed in float64 (from the models' float32 logits): two methods that reach
the same beams along different paths (a batch of rows, a forest) then get the same
probabilities to ~1e-16, which the exact-law tests need.

After top-k, only k candidates (and those tied with the k-th) have probability, so
`sparse_joint` computes the same distribution on a few candidates per beam (`Joint`), and DSBD
verifies a level there (engine/beams.py: residuals, acceptance tests and draws) instead of on
all R x V. Only the order of its sums differs from the dense computation (~1e-16).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Joint:
    """A distribution over `size` flat candidates, held on a superset of its support: probs[i]
    is the probability of candidate ids[i] (ids ascending), every other candidate has 0."""

    ids: torch.Tensor  # [M] long
    probs: torch.Tensor  # [M] float64
    size: int
    # On the device: True when candidates tied with the joint's k-th may lie outside `ids`,
    # and this is then not the joint (the caller computes it densely instead).
    spilled: torch.Tensor

    def at(self, flat: torch.Tensor) -> torch.Tensor:
        """The probabilities of flat candidates (0 for those off `ids`)."""
        if self.probs.numel() == self.size:  # ids are every candidate, in order
            return self.probs[flat]
        slot = torch.searchsorted(self.ids, flat).clamp_max(self.ids.numel() - 1)
        return torch.where(self.ids[slot] == flat, self.probs[slot], 0.0)


def full_joint(probs: torch.Tensor) -> Joint:
    """A flat distribution over every candidate, as a Joint."""
    device = probs.device
    ids = torch.arange(probs.numel(), device=device)
    return Joint(ids, probs, probs.numel(), torch.zeros((), dtype=torch.bool, device=device))


def as_joint(probs: Joint | torch.Tensor) -> Joint:
    return probs if isinstance(probs, Joint) else full_joint(probs)


def joint_distribution(
    scores: torch.Tensor, temperature: float, top_k: int = 0, top_p: float = 1.0
) -> torch.Tensor:
    """Flat [R * V] probabilities of softmax(scores / T) after top-k / top-p on the joint.

    scores: [R, V] log-space (beam score + token log-probability); -inf rows are dead beams.
    top_k 0 and top_p 1.0 switch the filters off. Computed in float64.
    """
    logits = scores.reshape(-1).double() / temperature
    candidates = None
    if 0 < top_k < logits.numel():
        values, candidates = row_candidates(logits.view(-1, scores.shape[-1]), top_k)
        kth = torch.topk(values, top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        probs = torch.softmax(logits, dim=-1)
        # After top-k, the cutoff is read off the candidates, not a sort of all R x V: they
        # hold every candidate with probability but, at most, some tied with the k-th (the
        # smallest probability, all equal), so their sorted prefix is the full sort's up to
        # those ties, and a cutoff among the ties keeps them all either way.
        among = probs if candidates is None else probs[candidates]
        logits = logits.masked_fill(probs < nucleus_cutoff(among, top_p), float("-inf"))
    return torch.softmax(logits, dim=-1)


def sparse_joint(
    scores: torch.Tensor, temperature: float, top_k: int = 0, top_p: float = 1.0
) -> Joint:
    """`joint_distribution` on the candidates top-k can keep: 2k per beam (a beam's candidates
    past its k-th count only when tied with the joint's k-th: duplicate beams tie across rows,
    which rows cover, bfloat16 logits within a row; more than k such ties set `spilled`).
    Without top-k every candidate may have probability: the dense vector as a Joint."""
    rows = scores.double() / temperature  # [R, V]
    if not 0 < top_k < rows.numel():
        return full_joint(joint_distribution(scores, temperature, top_k, top_p))
    values, ids = row_candidates(rows, 2 * top_k)
    # Ascending ids: multinomial then meets the candidates in the dense vector's order, so a
    # seeded draw picks the same candidate (engine/beams.py, Draws.sample_support).
    ids, order = torch.sort(ids)
    logits = values[order]
    kth = torch.topk(logits, top_k).values[-1]
    logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        probs = torch.softmax(logits, dim=-1)
        logits = logits.masked_fill(probs < nucleus_cutoff(probs, top_p), float("-inf"))
    # A row whose last candidate is not below the k-th may hold more ties past it (a -inf
    # k-th: fewer than k candidates have probability, and every one is a candidate).
    lowest = values.view(rows.shape[0], -1)[:, -1]
    spilled = (lowest >= kth).any() & kth.isfinite() & (ids.numel() < rows.numel())
    return Joint(ids, torch.softmax(logits, dim=-1), rows.numel(), spilled)


def row_candidates(rows: torch.Tensor, per_row: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(values, flat ids) of each row's `per_row` largest entries, row after row, each row's
    in descending order. With per_row >= k they hold the joint's top k."""
    values, tokens = torch.topk(rows, min(per_row, rows.shape[-1]), dim=-1)
    offsets = rows.shape[-1] * torch.arange(rows.shape[0], device=rows.device)
    return values.reshape(-1), (tokens + offsets[:, None]).reshape(-1)


def nucleus_cutoff(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """[1]: the probability of the last member of the smallest set whose mass reaches top_p;
    every candidate below it leaves."""
    ordered = torch.sort(probs, descending=True).values
    # The smallest set whose mass reaches top_p, plus every candidate tied with its last
    # member: duplicate beams give exactly tied candidates, and keeping one of a tie by sort
    # order would make the draft's and the target's filters differ.
    inside = torch.cumsum(ordered, dim=-1) - ordered < top_p
    # The last member's probability, picked on the device (an index read on the host would be
    # a sync per call on a GPU); the remainder wraps an empty set (NaN probabilities) to the
    # last entry, as the host index -1 did.
    last = torch.remainder(inside.sum() - 1, ordered.numel()).view(1)
    return ordered.gather(0, last)
