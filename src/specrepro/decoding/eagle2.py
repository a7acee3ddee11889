"""eagle2: EAGLE-2, a dynamic draft tree from a beam over cumulative draft log-probs
(docs/methods.md).

`depth` is the number of draft levels (the paper's "depth 6" is the reference code's depth=5).
"""

from __future__ import annotations

from dataclasses import dataclass

from specrepro.decoding.base import DecodingContext, GenerationResult, MethodError
from specrepro.decoding.tree_rounds import generate_with_trees
from specrepro.engine.dynamic_tree import draft_dynamic_tree

NEEDS_DRAFT = False
NEEDS_HEAD = True


@dataclass
class Params:
    top_k: int = 10
    depth: int = 6
    total_tokens: int = 60

    def lookahead(self) -> int:
        return self.depth

    def validate(self) -> None:
        check_positive("eagle2", top_k=self.top_k, depth=self.depth, total_tokens=self.total_tokens)
        check_tree_size("eagle2", self.total_tokens)


def check_tree_size(method: str, total_tokens: int) -> None:
    """total_tokens counts the root (the reference's convention): a tree needs a draft too."""
    if total_tokens < 2:
        raise MethodError(
            f"{method}: total_tokens counts the root, so it must be at least 2, got {total_tokens}"
        )


def check_positive(method: str, **values: object) -> None:
    for name, value in values.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise MethodError(f"{method}: {name} must be a positive integer, got {value!r}")


def generate(ctx: DecodingContext, prompt_ids: list[int], params: Params) -> GenerationResult:
    def drafter(ctx, head, start):
        return draft_dynamic_tree(ctx, head, start, params.top_k, params.depth, params.total_tokens)

    return generate_with_trees(ctx, prompt_ids, drafter, "eagle2")
