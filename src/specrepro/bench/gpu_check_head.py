"""An fp16 EAGLE head drafts as the fp32 one far into a sequence: the top-1 drafts and logits
at positions 1,000-2,000 agree (a float16-rounded RoPE frequency makes them drift apart past
~1,000: on the CPU, agreement 0.957 and max logit error 0.65 std, against 0.997 and 0.014 with
float32 frequencies)."""

from __future__ import annotations

import copy

import torch

from specrepro.bench.gpu_check_core import CheckContext, CheckResult
from specrepro.engine.runner import ModelRunner
from specrepro.models.eagle_head import build_head, head_config_for

LONG_POSITIONS = (1000, 2000)
MIN_TOP1_AGREEMENT = 0.98
MAX_LOGIT_ERROR = 0.1  # in standard deviations of the fp32 logits
# A random head attends almost uniformly, which hides position errors; one whose attention
# scores are QK_SCALE x larger attends by relative position.
QK_SCALE = 20.0


def head_top1(head: torch.nn.Module, tokens: torch.Tensor, features: torch.Tensor) -> tuple:
    """The head's logits over a whole sequence (t reads x_{t+1} and f_t), in one forward."""
    runner = ModelRunner(head, "head")
    runner.reset(len(tokens) + 1)
    logits = runner.forward(tokens, features=features).logits
    return logits.argmax(dim=-1), logits


def sharpened(head: torch.nn.Module, factor: float = QK_SCALE) -> torch.nn.Module:
    """A copy of `head` whose attention scores are `factor` x larger."""
    head = copy.deepcopy(head)
    attention = head.layers[0].self_attn
    with torch.no_grad():
        attention.q_proj.weight.mul_(factor)
        attention.k_proj.weight.mul_(factor)
    return head


def check_head_fp16(ctx: CheckContext, positions: tuple[int, int] = LONG_POSITIONS) -> CheckResult:
    """The same head in fp32 and fp16 over one sequence of the check target."""
    models = ctx.models()
    lo, hi = positions
    target = models.target
    device = next(target.parameters()).device
    generator = torch.Generator().manual_seed(3)
    vocab = target.get_output_embeddings().weight.shape[0]
    seq = torch.randint(0, vocab, (hi + 1,), generator=generator).to(device)
    runner = ModelRunner(target, "target")
    runner.reset(hi + 1)
    features = runner.forward(seq, logits_from=hi + 1, want_hidden=True).hidden
    head32 = sharpened(models.head)
    top32, logits32 = head_top1(head32, seq[1:], features[:-1])
    target16 = copy.deepcopy(target).to(torch.float16)
    head16 = build_head(head_config_for(target16), target16)
    head16.load_state_dict(head32.state_dict())
    top16, logits16 = head_top1(head16, seq[1:], features[:-1].to(torch.float16))
    window = slice(lo, hi)
    agree = float((top16[window] == top32[window]).float().mean())
    short = float((top16[:lo] == top32[:lo]).float().mean())
    scale = float(logits32[window].std())
    err = float((logits16[window] - logits32[window]).abs().max()) / max(scale, 1e-12)
    ok = agree >= MIN_TOP1_AGREEMENT and err <= MAX_LOGIT_ERROR
    detail = (
        f"positions {lo}-{hi}: top-1 agreement {agree:.4f} (>= {MIN_TOP1_AGREEMENT} needed; "
        f"{short:.4f} before {lo}), max |logit diff| {err:.3f} logit std "
        f"(<= {MAX_LOGIT_ERROR} needed)"
    )
    return CheckResult(ok, detail)
