"""Beam sampling's pieces, shared by `beam` (SPEC 4.6) and `dsbd` (SPEC 4.7).

One step of beam sampling: the joint distribution over (beam, token) is
softmax((score_b + log p(token | beam b)) / T) over all R x V candidates, with top-k and top-p
applied to that joint; W candidates are drawn from it independently (with replacement), and a
kept candidate's score becomes the log of its joint probability. Drawing with replacement is
what makes DSBD exact: each accepted draft or residual draw is one independent sample of the
target's joint, so DSBD's beams follow this distribution (DSBD paper, Sec. 3). A finished
candidate (EOS, the task's answer end, or max_new_tokens under the shared stop rule) leaves for
a pool; the output is the pooled beam with the best length-normalised log-likelihood.

The verification of one level of drafted candidates (`verify_level`) fills target slots one
after the other: a draft x ~ q is accepted with probability min(1, p_cur(x)/q(x)); a rejection
replaces p_cur by norm(max(p_cur - q, 0)); an acceptance fills the slot and resets p_cur to p.
Each filled slot, together with a residual draw when the drafts run out, is an exact sample of
p, independent of the others. `accepted_count_distribution` gives the law of the number of
accepted drafts, from which DSBD picks the level's width.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from specrepro.engine.sampling import residual
from specrepro.engine.stopping import StopRule


def joint_distribution(
    scores: torch.Tensor, temperature: float, top_k: int = 0, top_p: float = 1.0
) -> torch.Tensor:
    """Flat [R * V] probabilities of softmax(scores / T) after top-k / top-p on the joint.

    scores: [R, V] log-space (beam score + token log-probability); -inf rows are dead beams.
    top_k 0 and top_p 1.0 switch the filters off.
    """
    logits = scores.reshape(-1).float() / temperature
    if 0 < top_k < logits.numel():
        kth = torch.topk(logits, top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        probs = torch.softmax(logits, dim=-1)
        ordered = torch.sort(probs, descending=True).values
        # The smallest set whose mass reaches top_p, plus every candidate tied with its last
        # member: duplicate beams give exactly tied candidates, and keeping one of a tie by
        # sort order would make the draft's and the target's filters differ.
        inside = torch.cumsum(ordered, dim=-1) - ordered < top_p
        # The last member's probability, picked on the device (an index read on the host would
        # be a sync per call on a GPU); the remainder wraps an empty set (NaN probabilities) to
        # the last entry, as the host index -1 did.
        last = torch.remainder(inside.sum() - 1, ordered.numel()).view(1)
        cutoff = ordered.gather(0, last)
        logits = logits.masked_fill(probs < cutoff, float("-inf"))
    return torch.softmax(logits, dim=-1)


def draw_on_device(probs: torch.Tensor, count: int, generator: torch.Generator) -> torch.Tensor:
    """`count` independent draws (with replacement) from a flat distribution, left on the
    device; exact multinomial sampling, with no cut-off that turns unlikely draws into the
    argmax."""
    finite = torch.isfinite(probs).all()
    safe = torch.where(finite, probs, torch.ones_like(probs))
    return torch.multinomial(safe, count, replacement=True, generator=generator)


def draw(probs: torch.Tensor, count: int, generator: torch.Generator) -> list[int]:
    """`draw_on_device`, read to the host."""
    if count == 0:
        return []
    return draw_on_device(probs, count, generator).tolist()


def acceptance_chain(p: torch.Tensor, q: torch.Tensor, tries: int) -> list[float]:
    """alpha_i: the probability that the i-th consecutive try on one slot is accepted, i.e.
    sum(min(p_{i-1}, q)) with p_0 = p and p_i = norm(max(p_{i-1} - q, 0))."""
    if tries == 0:
        return []
    alphas = []
    current = p
    for _ in range(tries):
        alphas.append(torch.minimum(current, q).sum().clamp(0.0, 1.0))
        current = residual(current, q)
    # One host read for the whole chain, not one per try.
    return torch.stack(alphas).tolist()


def accepted_count_distribution(p: torch.Tensor, q: torch.Tensor, drafts: int) -> list[float]:
    """P(K = k), k = 0..drafts: K accepted drafts when `drafts` i.i.d. drafts from q go
    through `verify_level` with no width cap.

    A dynamic programme over (drafts used, accepted, rejections in the current slot): an
    acceptance opens a new slot with a fresh p, a rejection moves to the next residual.
    """
    alphas = acceptance_chain(p, q, drafts)
    state = {(0, 0): 1.0}  # (accepted, rejections in the open slot) -> probability
    for _ in range(drafts):
        nxt: dict[tuple[int, int], float] = {}
        for (accepted, rejected), prob in state.items():
            alpha = alphas[rejected]
            up = (accepted + 1, 0)
            nxt[up] = nxt.get(up, 0.0) + prob * alpha
            down = (accepted, rejected + 1)
            nxt[down] = nxt.get(down, 0.0) + prob * (1.0 - alpha)
        state = nxt
    dist = [0.0] * (drafts + 1)
    for (accepted, _), prob in state.items():
        dist[accepted] += prob
    return dist


def dynamic_width(count_dist: list[float], threshold: float, min_width: int) -> int:
    """The largest n with P(K >= n) >= threshold, floored at min_width (and at most the number
    of drafts)."""
    at_least = 0.0
    for n in range(len(count_dist) - 1, -1, -1):
        at_least += count_dist[n]
        if at_least >= threshold:
            return max(n, min(min_width, len(count_dist) - 1))
    return min(min_width, len(count_dist) - 1)


@dataclass
class LevelOutcome:
    accepted: list[int]  # indices into the drafts list, in slot order
    samples: list[int]  # flat candidates of every filled slot (accepted drafts first)
    complete: bool  # every slot was filled by an accepted draft


def verify_level(
    p: torch.Tensor,
    q: torch.Tensor,
    drafts: list[int],
    width: int,
    generator: torch.Generator,
) -> LevelOutcome:
    """Fill `width` slots with exact samples of p from i.i.d. drafts of q (module docstring).

    When the drafts run out first, the open slot draws from its residual and any further slots
    draw from p, so the level still holds `width` independent samples of p.
    """
    accepted: list[int] = []
    current = p
    for j, x in enumerate(drafts):
        if len(accepted) == width:
            break
        u = torch.rand((), generator=generator, device=p.device)
        if bool(u * q[x] <= current[x]):
            accepted.append(j)
            current = p
        else:
            current = residual(current, q)
    samples = [drafts[j] for j in accepted]
    missing = width - len(accepted)
    if missing:
        samples += draw(current, 1, generator) + draw(p, missing - 1, generator)
    return LevelOutcome(accepted=accepted, samples=samples, complete=not missing)


@dataclass
class Beam:
    """One live or finished beam: its generated tokens, beam score and log-likelihood."""

    tokens: list[int]
    score: float  # log of the joint probability it was kept with (the beam-sampling score)
    logprob: float  # sum of log p(token | prefix) under the target at T=1, for the output pick

    def normalised(self) -> float:
        return self.logprob / max(len(self.tokens), 1)


@dataclass
class BeamPool:
    """Finished beams; the output is the best length-normalised one."""

    stop: StopRule
    finished: list[Beam] = field(default_factory=list)

    def is_finished(self, tokens: list[int]) -> bool:
        return self.stop.trim(tokens)[1]

    def add(self, beam: Beam) -> None:
        self.finished.append(beam)

    def best(self, live: list[Beam]) -> Beam:
        """The best beam among the finished ones and (when generation was cut) the live ones."""
        candidates = self.finished + live
        if not candidates:
            raise ValueError("beam pool is empty")
        return max(candidates, key=Beam.normalised)


def extend(parent: Beam, token: int, score: float, token_logprob: float) -> Beam:
    return Beam(parent.tokens + [token], score, parent.logprob + token_logprob)
