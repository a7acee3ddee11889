"""ddd_async: DDD's stopping rule without a host sync at the check levels (SPEC 4.5).

The flag H < x of a check level is copied to the host without blocking and read one level
later, after the next level's head forward has been queued. When it says stop, that extra level
is dropped, so the trees (and, at T=0, the tokens) are exactly those of `ddd`; the price is one
head forward per stopped round, against one sync per check.
"""

from __future__ import annotations

from specrepro.decoding.base import DecodingContext, GenerationResult
from specrepro.decoding.ddd import Params, generate_ddd

NEEDS_DRAFT = False
NEEDS_HEAD = True

__all__ = ["NEEDS_DRAFT", "NEEDS_HEAD", "Params", "generate"]


def generate(ctx: DecodingContext, prompt_ids: list[int], params: Params) -> GenerationResult:
    return generate_ddd(ctx, prompt_ids, params, late=True, method="ddd_async")
