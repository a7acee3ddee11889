"""One level's draws from a joint over (row, token), read to the host with what the caller
needs of them, and the check that such a read is finite (beam sampling, DSBD's draft and
verification)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from specrepro.engine.beams import Draws, sample_joint
from specrepro.engine.joint import Joint, full_joint, joint_distribution, sparse_joint

if TYPE_CHECKING:
    from specrepro.engine.runner import ModelRunner


class NonFiniteJointError(RuntimeError):
    """A joint over (beam, token) was NaN or inf (NaN or inf logits, or no live beam): no draw
    from it means anything."""


def require_finite_joint(values: list[float], where: str, *runners: ModelRunner | None) -> None:
    """Raise unless every value read from a joint is finite: its draws' log probabilities (a
    draw always has probability > 0, so a NaN or -inf one came from `draw_on_device`'s
    stand-in for a non-finite distribution) or a level's acceptance rates. The runners whose
    logits fed the joint are checked first, so NaN logits are reported as such, by model."""
    if not all(math.isfinite(v) for v in values):
        for runner in runners:
            if runner is not None:
                runner.ensure_finite()
        raise NonFiniteJointError(
            f"{where}: the joint distribution over (beam, token) is not finite (NaN or inf "
            "logits, or no live beam); its draws would be meaningless, so the run stops here"
        )


@dataclass
class LevelDraws:
    """`count` i.i.d. draws of a joint over (row, token), read to the host."""

    joint: Joint
    picks: list[int]  # flat candidates (row * V + token)
    log_joint: list[float]  # log joint probability of each draw
    extra: list[float]  # the `extra` tensor's values at the draws (e.g. token log-probs)


def draw_level(
    draws: Draws,
    scores: torch.Tensor,
    temperature: float,
    top_k: int,
    top_p: float,
    count: int,
    extra: torch.Tensor | None = None,
) -> LevelDraws:
    """Draw `count` candidates from the joint of `scores` [R, V] (`sparse_joint`: on the
    top-k candidates), with their log joint probabilities and `extra` [R * V] at them, in one
    host read. When ties with the k-th spill past the candidates, the joint is computed
    densely and drawn again (the same law; such ties are rare)."""
    joint = sparse_joint(scores, temperature, top_k, top_p)
    drawn = sample_joint(draws, joint, count)
    rows = [drawn.double(), joint.at(drawn).log(), joint.spilled.double().expand(drawn.shape)]
    if extra is not None:
        rows.append(extra[drawn].double())
    flat, log_joint, spilled, *rest = torch.stack(rows).tolist()
    if count and spilled[0]:
        joint = full_joint(joint_distribution(scores, temperature, top_k, top_p))
        drawn = sample_joint(draws, joint, count)
        rows = [drawn.double(), joint.at(drawn).log()] + ([] if extra is None else [extra[drawn]])
        flat, log_joint, *rest = torch.stack(rows).tolist()
    return LevelDraws(joint, [int(x) for x in flat], log_joint, rest[0] if rest else [])
