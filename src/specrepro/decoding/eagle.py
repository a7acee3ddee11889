"""eagle: EAGLE-1, a static draft tree grown by the feature-level head (docs/methods.md)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

from specrepro.decoding.base import DecodingContext, GenerationResult
from specrepro.decoding.tree_rounds import EAGLE1_TREE, generate_with_trees
from specrepro.engine.static_tree import StaticTree, draft_static_tree

NEEDS_DRAFT = False
NEEDS_HEAD = True


@dataclass
class Params:
    # Paths of child ranks from the root; the default is EAGLE-1's 25-node, depth-5 tree.
    tree: list[list[int]] | None = None

    def lookahead(self) -> int:
        return max(self.shape().depth)

    def validate(self) -> None:
        self.shape()

    def shape(self) -> StaticTree:
        choices = EAGLE1_TREE if self.tree is None else tuple(tuple(p) for p in self.tree)
        return StaticTree.from_choices(choices)


def generate(ctx: DecodingContext, prompt_ids: list[int], params: Params) -> GenerationResult:
    drafter = partial(draft_static_tree, shape=params.shape())
    return generate_with_trees(ctx, prompt_ids, drafter, "eagle")
