"""ddd: Dynamic Depth Decoding, EAGLE-2 whose number of draft levels varies per round
(docs/methods.md).

After the beam of a level in `check_levels` is known, H = logsumexp of the beam's cumulative
log-probs (the log of its total probability mass) is read on the host; drafting stops when
H < `threshold`, and otherwise continues up to `max_levels`. The host read is the sync the paper
names as DDD's cost; `ddd_async` avoids it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from specrepro.decoding.base import DecodingContext, GenerationResult, MethodError
from specrepro.decoding.eagle2 import check_positive, check_tree_size
from specrepro.decoding.tree_rounds import generate_with_trees
from specrepro.engine.dynamic_tree import draft_dynamic_tree
from specrepro.engine.host_reads import DepthRule

NEEDS_DRAFT = False
NEEDS_HEAD = True


@dataclass
class Params:
    top_k: int = 10
    total_tokens: int = 60
    check_levels: list[int] = field(default_factory=lambda: [5, 7, 9])  # S
    threshold: float = -0.3  # x
    max_levels: int = 11  # n

    def lookahead(self) -> int:
        return self.max_levels

    def validate(self) -> None:
        check_positive(
            "ddd", top_k=self.top_k, total_tokens=self.total_tokens, max_levels=self.max_levels
        )
        check_tree_size("ddd", self.total_tokens)
        if not self.check_levels or any(
            not isinstance(s, int) or not 1 <= s <= self.max_levels for s in self.check_levels
        ):
            raise MethodError(
                f"ddd: check_levels must be levels in [1, max_levels={self.max_levels}], "
                f"got {self.check_levels!r}"
            )
        if not isinstance(self.threshold, int | float):
            raise MethodError(f"ddd: threshold must be a number, got {self.threshold!r}")


def generate_ddd(
    ctx: DecodingContext, prompt_ids: list[int], params: Params, late: bool, method: str
) -> GenerationResult:
    rule = DepthRule(tuple(params.check_levels), float(params.threshold), late=late)

    def drafter(ctx, head, start):
        return draft_dynamic_tree(
            ctx, head, start, params.top_k, params.max_levels, params.total_tokens, rule
        )

    return generate_with_trees(ctx, prompt_ids, drafter, method)


def generate(ctx: DecodingContext, prompt_ids: list[int], params: Params) -> GenerationResult:
    return generate_ddd(ctx, prompt_ids, params, late=False, method="ddd")
