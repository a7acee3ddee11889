"""On-policy distillation (DistillSpec): the draft learns on its own rollouts, labelled by the
target, besides the target's own generations.

Speculation proposes what the draft generates, so its agreement with the target matters on the
draft's own text, which the teacher corpus (the target's generations) never shows it. Each
on-policy sample is a training prompt, `rollout_tokens` tokens the student samples after it at
temperature 1, and the teacher's top-k distribution at each of those positions: the same
`Sample` the corpus holds, so the same loss (cross-entropy to the teacher's renormalised top-k,
the forward KL on that support) trains on both.
"""

from __future__ import annotations

import torch
from transformers import PreTrainedModel

from specrepro.training.teacher import Sample


@torch.no_grad()
def rollouts(
    student: PreTrainedModel,
    teacher: PreTrainedModel,
    prompts: list[Sample],
    tokens: int,
    top_k: int,
    pad: int,
    eos: int | None,
) -> list[Sample]:
    """One student rollout per prompt (its prompt part; sampled at T=1 from the full
    vocabulary, stopping at `eos`), with the teacher's top-k log-probabilities at every rolled
    out position."""
    device = student.lm_head.weight.device
    was_training = student.training
    student.eval()
    heads = [s.ids[: s.n_prompt] for s in prompts]
    width = max(map(len, heads))
    # Left-padded so that every row's next token comes at the same column.
    ids = torch.full((len(heads), width), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, head in enumerate(heads):
        ids[row, width - len(head) :] = torch.tensor(head)
        mask[row, width - len(head) :] = 1
    out = student.generate(
        input_ids=ids.to(device),
        attention_mask=mask.to(device),
        max_new_tokens=tokens,
        do_sample=True,
        temperature=1.0,
        top_k=0,
        top_p=1.0,
        pad_token_id=pad,
        eos_token_id=eos,
    )[:, width:].cpu()
    student.train(was_training)
    samples = []
    for head, row in zip(heads, out.tolist(), strict=True):
        rolled = row[: row.index(eos) + 1] if eos is not None and eos in row else row
        if rolled:
            samples.append(_labelled(teacher, head, rolled, top_k))
    return samples


def _labelled(teacher: PreTrainedModel, head: list[int], rolled: list[int], k: int) -> Sample:
    """The sample with the teacher's top-k distribution (T=1) at each rolled-out token."""
    device = teacher.get_output_embeddings().weight.device
    ids = torch.tensor([head + rolled], device=device)
    logits = teacher(input_ids=ids).logits[0, len(head) - 1 : -1].float()
    top_logp, top_ids = torch.log_softmax(logits, dim=-1).topk(k, dim=-1)
    return Sample(
        ids=head + rolled, n_prompt=len(head), top_ids=top_ids.cpu(), top_logp=top_logp.cpu()
    )
