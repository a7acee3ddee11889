"""Beam sampling's pieces, shared by `beam` and `dsbd` (docs/engine.md#beams).

One step of beam sampling: the joint distribution over (beam, token) is
softmax((score_b + log p(token | beam b)) / T) over all R x V candidates, with top-k and top-p
applied to that joint (engine/joint.py); W candidates are drawn from it independently (with
replacement), and a kept candidate's score becomes the log of its joint probability. Drawing
with replacement is what makes DSBD exact: each accepted draft or residual draw is one
independent sample of the target's joint, so DSBD's beams follow this distribution (DSBD paper,
Sec. 3). A finished candidate (EOS, the task's answer end, or max_new_tokens under the shared
stop rule) leaves for a pool; the output is chosen from the pool by the reference's rule
(`Beam.normalised`).

The verification of one level of drafted candidates (`verify_level`) fills target slots one
after the other: a draft x ~ q is accepted with probability min(1, p_cur(x)/q(x)); a rejection
replaces p_cur by norm(max(p_cur - q, 0)); an acceptance fills the slot and resets p_cur to p.
Each filled slot, together with a residual draw when the drafts run out, is an exact sample of
p, independent of the others. `accepted_count_distribution` gives the law of the number of
accepted drafts, from which DSBD picks the level's width. `level_tables` prepares a whole
level on the device (the chain of residuals, every draft's acceptance test against each of
them, the count law's inputs, the drafts' scores) so that the host reads it once per level.
It works on the target's joint as a `Joint` (its candidates, not all R x V): every residual
of p is 0 wherever p is, so the chain, the acceptance probabilities and the draws live there.

Every random choice goes through a `Draws` object (`make_draws`): i.i.d. draws from a flat
distribution and the uniforms of the acceptance tests. The default wraps the run's seeded
generator; the exact-law tests swap in an enumerating one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from specrepro.engine.joint import Joint, as_joint
from specrepro.engine.joint import joint_distribution as joint_distribution
from specrepro.engine.sampling import residual
from specrepro.engine.stopping import StopRule, StopScan
from specrepro.engine.tree import to_device


def draw_on_device(probs: torch.Tensor, count: int, generator: torch.Generator) -> torch.Tensor:
    """`count` independent draws (with replacement) from a flat distribution, left on the
    device; exact multinomial sampling, with no cut-off that turns unlikely draws into the
    argmax. A non-finite `probs` is drawn as uniform, not passed to multinomial (on a GPU
    that is a device-side assert, which kills the process): the caller reads the draws'
    probabilities and raises (`require_finite_joint`)."""
    finite = torch.isfinite(probs).all()
    safe = torch.where(finite, probs, torch.ones_like(probs))
    return torch.multinomial(safe, count, replacement=True, generator=generator)


class Draws:
    """The randomness of beam sampling and DSBD, from the run's seeded generator."""

    def __init__(self, generator: torch.Generator) -> None:
        self.generator = generator

    def sample(self, probs: torch.Tensor, count: int) -> torch.Tensor:
        """`count` i.i.d. draws from the flat distribution `probs`, on its device."""
        if count == 0:
            return torch.zeros(0, dtype=torch.long, device=probs.device)
        return draw_on_device(probs, count, self.generator)

    def sample_support(
        self, probs: torch.Tensor, count: int, ids: torch.Tensor, size: int
    ) -> torch.Tensor:
        """`sample` of a distribution over `size` candidates given on `ids` (ascending; probs
        theirs): positions into probs, the seeded generator's draws those of the dense vector.
        multinomial's draws with replacement do not see candidates of probability 0, but its
        single draw takes one exponential per candidate (an argmax of p / E), so that one takes
        `size` of them here too. A stand-in with its own `sample` draws from the support."""
        if count != 1 or probs.numel() == size or type(self).sample is not Draws.sample:
            return self.sample(probs, count)
        noise = torch.empty(size, dtype=probs.dtype, device=probs.device)
        noise.exponential_(generator=self.generator)
        return torch.argmax(probs / noise[ids]).view(1)

    def uniforms(self, thresholds: torch.Tensor) -> torch.Tensor:
        """One uniform in [0, 1) per row of `thresholds` [m, k]; a row's uniform is compared
        with its thresholds (u < t accepts), which only an enumerating stand-in reads."""
        return torch.rand(
            thresholds.shape[0], generator=self.generator, device=thresholds.device,
            dtype=thresholds.dtype,
        )  # fmt: skip


def make_draws(generator: torch.Generator) -> Draws:
    return Draws(generator)


def _as_draws(source: Draws | torch.Generator) -> Draws:
    return source if isinstance(source, Draws) else Draws(source)


def sample_joint(
    source: Draws, joint: Joint, count: int, probs: torch.Tensor | None = None
) -> torch.Tensor:
    """`count` draws of flat candidates from `joint`, or from `probs` (another distribution on
    its ids, e.g. a residual), left on the device."""
    values = joint.probs if probs is None else probs
    return joint.ids[source.sample_support(values, count, joint.ids, joint.size)]


def draw(probs: torch.Tensor, count: int, generator: Draws | torch.Generator) -> list[int]:
    """`count` draws, read to the host."""
    if count == 0:
        return []
    return _as_draws(generator).sample(probs, count).tolist()


def residual_chain(p: torch.Tensor, q: torch.Tensor, tries: int) -> torch.Tensor:
    """[tries, N]: p_0 = p and p_r = norm(max(p_{r-1} - q, 0)), the target of a slot after r
    rejections."""
    chain = [p]
    for _ in range(tries - 1):
        chain.append(residual(chain[-1], q))
    return torch.stack(chain)


def acceptance_chain(p: torch.Tensor, q: torch.Tensor, tries: int) -> list[float]:
    """alpha_i: the probability that the i-th consecutive try on one slot is accepted, i.e.
    sum(min(p_{i-1}, q)) with p_0 = p and p_i = norm(max(p_{i-1} - q, 0))."""
    if tries == 0:
        return []
    chain = residual_chain(p, q, tries)
    # One host read for the whole chain, not one per try.
    return torch.minimum(chain, q).sum(-1).clamp(0.0, 1.0).tolist()


def count_law(alphas: list[float], drafts: int) -> list[float]:
    """P(K = k), k = 0..drafts, from the acceptance chain (see accepted_count_distribution).

    A dynamic programme over (accepted, rejections in the current slot): an acceptance opens
    a new slot with a fresh p, a rejection moves to the next residual."""
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


def accepted_count_distribution(p: torch.Tensor, q: torch.Tensor, drafts: int) -> list[float]:
    """P(K = k), k = 0..drafts: K accepted drafts when `drafts` i.i.d. drafts from q go
    through `verify_level` with no width cap."""
    return count_law(acceptance_chain(p, q, drafts), drafts)


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
class LevelTables:
    """One level's verification inputs, read to the host at once (`level_tables`)."""

    chain: torch.Tensor  # [m + 1, M] on p's candidates: the slot's target after r rejections
    alphas: list[float]  # acceptance chain (count law input)
    accept: list[list[bool]]  # accept[j][r]: draft j passes its test against chain[r]
    log_p: list[float]  # log p(draft j): its beam score when kept
    extra: list[list[float]]  # rows of `extra` gathered at the drafts (e.g. token log-probs)
    spilled: bool = False  # p was not the joint (Joint.spilled): nothing here may be used


def level_tables(
    p: Joint | torch.Tensor,
    q: Joint | torch.Tensor,
    drafts: list[int],
    draws: Draws | torch.Generator,
    extra: torch.Tensor | None = None,
) -> LevelTables:
    """Everything a level's sequential acceptance needs, in one host read: a draft is tried
    against the slot's current target, which depends only on the rejections since the slot
    opened, so every draft's test against every possible current target is computed up
    front with one uniform per draft (u_j q(x_j) < p_r(x_j), as the one-by-one test).
    p, q: the target's and the draft's joints (flat vectors or Joints) over the same
    candidates. extra: [E, N] rows gathered at the drafts and read with the rest."""
    p, q = as_joint(p), as_joint(q)
    m = len(drafts)
    q_on_p = q.at(p.ids)
    chain = residual_chain(p.probs, q_on_p, m + 1)  # every try rejected: the open slot's p_m
    where = to_device(torch.tensor(drafts, dtype=torch.long), p.probs.device)
    slot = torch.searchsorted(p.ids, where).clamp_max(p.ids.numel() - 1)
    at = torch.where(p.ids[slot] == where, chain[:m, slot], 0.0)  # [m_r, m_j]: p_r(x_j)
    ratio = (at / q.at(where)).T.contiguous()  # [j, r]
    u = _as_draws(draws).uniforms(ratio)
    dtype = p.probs.dtype
    # Strict: a draft the target gives probability 0 is never accepted, even at u = 0.
    accept = (u[:, None] < ratio).to(dtype)
    alphas = torch.minimum(chain[:m], q_on_p).sum(-1).clamp(0.0, 1.0)
    rows = [p.spilled.to(dtype).view(1), alphas, accept.reshape(-1), p.at(where).log()]
    if extra is not None:
        rows += list(extra[:, where].to(dtype))
    spilled, *flat = torch.cat(rows).tolist()  # the level's one host read
    alphas_h, flat = flat[:m], flat[m:]
    acc, flat = flat[: m * m], flat[m * m :]
    log_p, flat = flat[:m], flat[m:]
    extras = [flat[i * m : (i + 1) * m] for i in range(len(flat) // m)] if m else []
    return LevelTables(
        chain=chain,
        alphas=alphas_h[:m],
        accept=[[bool(v) for v in acc[j * m : (j + 1) * m]] for j in range(m)],
        log_p=log_p,
        extra=extras,
        spilled=bool(spilled),
    )


@dataclass
class LevelOutcome:
    accepted: list[int]  # indices into the drafts list, in slot order
    samples: list[int]  # flat candidates of every filled slot (accepted drafts first)
    complete: bool  # every slot was filled by an accepted draft
    residual: int = -1  # when incomplete: where in samples the open slot's draw is
    pending: torch.Tensor | None = None  # device draws of the unfilled slots (not yet read)


def walk(tables: LevelTables, width: int) -> tuple[list[int], int]:
    """The sequential acceptance on the host: (accepted draft indices, rejections in the open
    slot)."""
    accepted: list[int] = []
    rejected = 0
    for j, row in enumerate(tables.accept):
        if len(accepted) == width:
            break
        if row[rejected]:
            accepted.append(j)
            rejected = 0
        else:
            rejected += 1
    return accepted, rejected


def fill_level(
    p: Joint | torch.Tensor,
    tables: LevelTables,
    drafts: list[int],
    width: int,
    draws: Draws | torch.Generator,
    fill: int | None = None,
) -> LevelOutcome:
    """Fill `width` slots (module docstring); when the drafts run out first, the open slot
    draws from its residual and the remaining slots up to `fill` (default: width) from p.
    (`fill` below the open slot's place: only the open slot draws.) The unfilled slots' draws
    stay on the device (`pending`): the caller reads them with their scores."""
    accepted, rejected = walk(tables, width)
    samples = [drafts[j] for j in accepted]
    if len(accepted) == width:
        return LevelOutcome(accepted, samples, True)
    total = width if fill is None else max(fill, len(accepted) + 1)
    source, p = _as_draws(draws), as_joint(p)
    opening = sample_joint(source, p, 1, tables.chain[rejected])
    pending = torch.cat([opening, sample_joint(source, p, total - len(accepted) - 1)])
    return LevelOutcome(accepted, samples, False, len(accepted), pending)


def verify_level(
    p: Joint | torch.Tensor,
    q: Joint | torch.Tensor,
    drafts: list[int],
    width: int,
    generator: Draws | torch.Generator,
    fill: int | None = None,
) -> LevelOutcome:
    """Fill `width` slots with exact samples of p from i.i.d. drafts of q (module docstring).

    When the drafts run out first, the open slot draws from its residual and any further slots
    (up to `fill`, default width) draw from p, so the level holds independent samples of p.
    """
    tables = level_tables(p, q, drafts, generator)
    outcome = fill_level(p, tables, drafts, width, generator, fill)
    if outcome.pending is not None:
        outcome.samples += outcome.pending.tolist()
        outcome.pending = None
    return outcome


@dataclass
class Beam:
    """One live or finished beam: its generated tokens, beam score and log-likelihood."""

    tokens: list[int]
    score: float  # log of the joint probability it was kept with (the beam-sampling score)
    logprob: float  # sum of log p(token | prefix) under the target at T=1
    scan: StopScan | None = field(default=None, repr=False, compare=False)

    def normalised(self) -> float:
        """The output rule, the reference's: the beam score divided by the number of generated
        tokens (the stopping token counted).

        The beam score is the reference's "renormalised" score: the log of the probability
        with which the beam was kept, under its step's joint distribution after temperature,
        top-k and top-p and renormalisation over every (beam, token) candidate of that step
        (`joint_distribution`); the parent's score enters through that joint, so it is not a
        sum of per-token log-probabilities. Ties go to the earlier candidate (pool order, then
        live order), as the reference's strict `>` scan."""
        return self.score / max(len(self.tokens), 1)

    def loglik_per_token(self) -> float:
        """The target's (T=1) log-likelihood per generated token: the output rule before the
        reference's was followed; kept as a quality measure."""
        return self.logprob / max(len(self.tokens), 1)


@dataclass
class BeamPool:
    """Finished beams; the output is the best by `Beam.normalised`.

    The stop rule's scan of each beam continues its parent's (`scan_of`), so checking a new
    beam reads only its new token, not its whole history."""

    stop: StopRule
    finished: list[Beam] = field(default_factory=list)

    def scan(self, parent: StopScan | None, tokens: list[int]) -> StopScan:
        """The stop rule's scan of `tokens`, continuing `parent` (the scan of all but the last
        token; None: read them all)."""
        if parent is None:
            return self.stop.advance(self.stop.begin(), tokens)
        return self.stop.advance(parent, tokens[parent.length :])

    def extend(self, parent: Beam, token: int, score: float, token_logprob: float) -> Beam:
        """`extend`, with the child's stop scan continued from its parent's."""
        child = extend(parent, token, score, token_logprob)
        child.scan = self.scan(parent.scan, child.tokens)
        return child

    def done(self, beam: Beam) -> bool:
        """Whether the beam's generation is over (its scan, made on first use)."""
        if beam.scan is None:
            beam.scan = self.scan(None, beam.tokens)
        return self.stop.finished(beam.scan)

    def is_finished(self, tokens: list[int]) -> bool:
        """Whether a whole generated sequence is over (a full scan)."""
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
