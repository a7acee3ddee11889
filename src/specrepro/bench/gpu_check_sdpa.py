"""SDPA under tree masks: a tree verification forward (ModelRunner.forward with a non-causal
`tree_mask` after a cached prefix) gives the same logits with attn_implementation "sdpa" (what
every run uses) as with "eager" (plain matmul and softmax), and each root-to-leaf path's logits
are those of that path run alone, causally, through transformers.

On a GPU, SDPA picks a fused kernel by dtype, head_dim and mask; a kernel that mishandles an
arbitrary additive mask (or one aligned to the wrong corner) changes the tree's logits and
nothing else fails. Eager is the reference for the kernel, the path alone for the mask itself.
"""

from __future__ import annotations

import copy
import random

import torch
from transformers import PreTrainedModel

from specrepro.bench.gpu_check_core import CheckContext, CheckResult, failed
from specrepro.engine.runner import ModelRunner
from specrepro.engine.tree import ancestor_mask, paths, positions

PREFIX_LEN = 40
TREE_NODES = 30
# Max |logit difference| in standard deviations of the reference logits: float32 kernels agree
# to ~1e-6 of that, float16 ones to ~1e-2; a wrong mask moves logits by ~1.
TOLERANCE = {torch.float32: 1e-3, torch.float16: 0.05}


def random_tree(nodes: int, seed: int) -> list[int]:
    """Parent of each node (-1: the root), each parent among the 3 nodes before it: both
    branching and depth (about a third of the nodes deep), as EAGLE's trees have."""
    rng = random.Random(seed)
    return [-1] + [rng.randrange(max(0, i - 3), i) for i in range(1, nodes)]


def with_attention(model: PreTrainedModel, implementation: str) -> PreTrainedModel:
    """A copy of `model` (same weights) attending through `implementation`."""
    twin = copy.deepcopy(model)
    twin.set_attn_implementation(implementation)
    got = twin.config._attn_implementation
    if got != implementation:
        raise RuntimeError(f"asked for attn_implementation {implementation!r}, got {got!r}")
    return twin


def tree_logits(
    model: PreTrainedModel, prefix: list[int], tokens: list[int], parents: list[int]
) -> torch.Tensor:
    """One tree verification forward after a cached prefix, as the tree methods run it."""
    runner = ModelRunner(model, "target")
    runner.reset(len(prefix) + len(tokens))
    runner.forward(prefix)
    device = runner.device
    out = runner.forward(
        tokens,
        positions=positions(parents, len(prefix), device),
        tree_mask=ancestor_mask(parents, device),
    )
    return out.logits.float()


@torch.no_grad()
def path_logits(
    model: PreTrainedModel, prefix: list[int], tokens: list[int], parents: list[int]
) -> dict[int, torch.Tensor]:
    """Each node's logits with its root-to-node path run alone (a causal forward)."""
    device = next(model.parameters()).device
    out: dict[int, torch.Tensor] = {}
    for path in paths(parents):
        ids = torch.tensor([prefix + [tokens[i] for i in path]], device=device)
        logits = model(ids).logits[0, len(prefix) :].float()
        out.update(zip(path, logits, strict=True))
    return out


def _worst(got: torch.Tensor, ref: torch.Tensor) -> tuple[float, int]:
    """Max |got - ref| in standard deviations of ref, and the node (row) where it is."""
    error = (got - ref).abs().amax(dim=-1) / max(float(ref.std()), 1e-12)
    node = int(error.argmax())
    return float(error[node]), node


def check_sdpa_tree_masks(ctx: CheckContext) -> CheckResult:
    """SDPA = eager, and tree = each path alone, for a random tree after a prefix, on the LLaMA
    and OPT families in every dtype the device runs."""
    vocab = ctx.shapes.vocab
    generator = torch.Generator().manual_seed(5)
    prefix = torch.randint(0, vocab, (PREFIX_LEN,), generator=generator).tolist()
    tokens = torch.randint(0, vocab, (TREE_NODES,), generator=generator).tolist()
    parents = random_tree(TREE_NODES, 5)
    failures, worst = [], 0.0
    for dtype in ctx.dtypes:
        for name in ("llama", "opt"):
            target = ctx.family(name, dtype).target
            label, tolerance = f"{name} {str(dtype).removeprefix('torch.')}", TOLERANCE[dtype]
            sdpa = tree_logits(with_attention(target, "sdpa"), prefix, tokens, parents)
            eager = tree_logits(with_attention(target, "eager"), prefix, tokens, parents)
            alone = path_logits(with_attention(target, "sdpa"), prefix, tokens, parents)
            ref = torch.stack([alone[i] for i in range(TREE_NODES)])
            kernel, node = _worst(sdpa, eager)
            if kernel > tolerance:
                failures.append(
                    f"[{label}] sdpa's tree logits differ from eager's by {kernel:.3g} logit std "
                    f"at node {node} (tolerance {tolerance})"
                )
            for impl, got in (("sdpa", sdpa), ("eager", eager)):
                error, node = _worst(got, ref)
                if error > tolerance:
                    failures.append(
                        f"[{label}] {impl} tree logits differ from the path run alone by "
                        f"{error:.3g} logit std at node {node} (tolerance {tolerance}): the tree "
                        "mask or positions are wrong"
                    )
                worst = max(worst, error)
            worst = max(worst, kernel)
    if failures:
        return failed(failures)
    return CheckResult(
        True,
        f"{TREE_NODES}-node tree after {PREFIX_LEN} tokens: sdpa = eager = each path alone "
        f"(worst {worst:.2g} logit std) for llama and opt in {len(ctx.dtypes)} dtype(s)",
    )
