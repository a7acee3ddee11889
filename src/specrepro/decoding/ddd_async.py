"""ddd_async: DDD's stopping rule without a host sync at the check levels
(docs/methods.md#ddd-async).

At a check level the pair (H, H < x) is copied to pinned host memory without blocking and an
event is recorded after the copy. Between levels the drafter polls the oldest pending event
(never reading a value whose copy has not landed) and drafts the next level while it has not
fired; when a landed flag says stop, the levels drafted after its check are dropped, and when
drafting reaches the last level the pending checks are waited for. So the tree is always the
one ddd's rule gives (the same trees, H values and, at T=0, tokens as `ddd`); only the head
forwards drafted and dropped depend on the copy's timing (recorded per round as "drafted"
beside "levels"), against one sync per check in `ddd`. On the CPU a flag is a host value at
once, and ddd_async drafts exactly what ddd drafts.
"""

from __future__ import annotations

from specrepro.decoding.base import DecodingContext, GenerationResult
from specrepro.decoding.ddd import Params, generate_ddd

NEEDS_DRAFT = False
NEEDS_HEAD = True

__all__ = ["NEEDS_DRAFT", "NEEDS_HEAD", "Params", "generate"]


def generate(ctx: DecodingContext, prompt_ids: list[int], params: Params) -> GenerationResult:
    return generate_ddd(ctx, prompt_ids, params, late=True, method="ddd_async")
