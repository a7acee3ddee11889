"""The round loop of the EAGLE family (eagle, eagle2, ddd, ddd_async); the front door to their
drafters, which live in the engine (static_tree, dynamic_tree, host_reads, drafter).

Invariant between rounds: the target's cache holds every committed token except the newest (the
tree's root); the head's cache holds one entry per committed position t < L, the pair
(embed(x_{t+1}), f_t) with f_t the target's own final-norm feature. A round feeds the head the
pairs of the tokens committed last round, drafts a tree over the head's cache (masks over the
cached levels, positions by depth), verifies it in one target forward, keeps the accepted path in
the target's cache and crops the head's drafted levels, whose features were the head's guesses.

Depth, everywhere in this project, is the number of draft levels (the EAGLE-2 paper's "depth 6"
is its code's depth=5).

`late_reader` and `_level_region` are not re-exported: swap them on engine/host_reads.py, where
the drafters look them up.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from specrepro.decoding.base import DecodingContext, GenerationResult, MethodError, commit
from specrepro.engine.drafter import DraftInput, RoundStats
from specrepro.engine.runner import ModelRunner
from specrepro.engine.sampling import greedy, probs_from_logits, sample
from specrepro.engine.tree import DraftTree, accept_greedy, accept_sampling, to_device

__all__ = ["EAGLE1_TREE", "Drafter", "generate_with_trees"]

# EAGLE-1's default tree (its choices.py, `mc_sim_7b_63`): 25 nodes below the root, depth 5.
# Each entry is a path of child ranks from the root ([0, 1]: the root's best child's 2nd child).
EAGLE1_TREE: tuple[tuple[int, ...], ...] = (
    (0,), (1,), (2,), (3,), (0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (2, 0), (2, 1), (3, 0),
    (0, 0, 0), (0, 0, 1), (0, 0, 2), (0, 1, 0), (0, 1, 1), (0, 2, 0), (0, 2, 1), (1, 0, 0),
    (0, 0, 0, 0), (0, 0, 0, 1), (0, 0, 0, 2), (0, 0, 0, 0, 0), (0, 0, 0, 0, 1),
)  # fmt: skip

Drafter = Callable[[DecodingContext, ModelRunner, DraftInput], tuple[DraftTree, RoundStats]]


def generate_with_trees(
    ctx: DecodingContext, prompt_ids: list[int], drafter: Drafter, method: str
) -> GenerationResult:
    """Generate with the EAGLE family's rounds, `drafter` growing each round's tree."""
    head = ctx.head
    if head is None:
        raise MethodError(f"{method} needs an EAGLE head; the pair names none")
    result = GenerationResult(tokens=[], target_forwards=0)
    rounds: dict[str, list] = {
        "levels": [], "drafted": [], "tree_size": [], "accepted": [], "checks": []
    }  # fmt: skip
    generated: list[int] = []
    # The target features the head reads: the final-norm state, or an EAGLE-3 head's layers.
    layers = getattr(head.model, "feature_layers", None)
    # The target reads the prompt and chooses the first token, as vanilla's first step does.
    with ctx.timer.section("verify"):
        out = ctx.target.forward(
            prompt_ids, logits_from=len(prompt_ids) - 1, want_hidden=True, hidden_layers=layers
        )
        first = _choose(ctx, out.logits[-1])
        ctx.target.ensure_finite()
    result.target_forwards += 1
    result.prefill_forwards = 1
    done = commit(ctx, generated, [first], result)
    head_tokens, head_features, root = prompt_ids[1:] + [first], out.hidden, first
    while not done:
        committed = ctx.target.cache_len
        with ctx.timer.section("draft"):
            fed = head.forward(
                to_device(torch.tensor(head_tokens), head.device),
                features=head_features,
                logits_from=len(head_tokens) - 1,
                want_hidden=True,
            )
            tree, stats = drafter(
                ctx, head, DraftInput(root, fed.logits[-1], fed.hidden[-1], committed)
            )
        with ctx.timer.section("verify"):
            verified = ctx.target.forward(
                tree.tokens,
                positions=tree.device_positions(committed, ctx.target.device),
                tree_mask=tree.device_mask(ctx.target.device),
                want_hidden=True,
                hidden_layers=layers,
            )
            if ctx.temperature == 0:
                path, bonus = accept_greedy(tree, verified.logits)
            else:
                probs = probs_from_logits(verified.logits, ctx.temperature)
                path, bonus = accept_sampling(tree, probs, ctx.generator)
            ctx.target.ensure_finite()
            head.ensure_finite()
        result.target_forwards += 1
        ctx.target.keep(list(range(committed + 1)) + [committed + node for node in path])
        head.crop(committed)
        tokens = tree.host_tokens()  # read by the acceptance already
        accepted = [tokens[node] for node in path]
        rounds["levels"].append(stats.levels)
        rounds["drafted"].append(stats.levels if stats.drafted is None else stats.drafted)
        rounds["tree_size"].append(tree.size)  # tokens verified, the root included
        rounds["accepted"].append(len(accepted))
        rounds["checks"].append([[level, h] for level, h in stats.checks])
        done = commit(ctx, generated, accepted + [bonus], result)
        head_tokens = accepted + [bonus]
        rows = to_device(torch.tensor([0] + path), verified.hidden.device)
        head_features = verified.hidden.index_select(0, rows)
        root = bonus
    result.tokens = generated
    result.draft_forwards = head.forwards
    result.extra = {"rounds": rounds}
    return result


def _choose(ctx: DecodingContext, logits: torch.Tensor) -> int:
    if ctx.temperature == 0:
        return greedy(logits)
    return sample(probs_from_logits(logits, ctx.temperature), ctx.generator)
