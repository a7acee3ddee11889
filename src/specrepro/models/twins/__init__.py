"""Toy-scale twins of a config's hub models, so a paper config runs end to end on a CPU.

A twin stands in for a hub model under the model's own hub id, in a local Hugging Face hub cache
(`OUT/hub/models--ORG--NAME/{refs/main, snapshots/COMMIT/}`, the layout huggingface_hub reads
offline), so nothing in the workflow changes: the same `download-model`, the same loader, the
same pair checks, only `HF_HUB_CACHE` points at the twins (the overlay's `models.hub_cache`).

What a twin keeps from the real model, so that what breaks on the GPU breaks here first:
- the architecture class and config family (OPTForCausalLM with learned positions and tied
  embeddings, LlamaForCausalLM with RoPE, GQA where the real model has it, EAGLE heads in the
  published head format), the float16 checkpoint dtype and the context length;
- the shape relations: every size scaled alike (`twin_shape`), so a wide draft stays wider and
  shallower than the deep one and a 13B target stays larger than its 7B sibling;
- the vocabulary relations: one twin tokenizer for every LLaMA-vocabulary model, one for the
  OPT models (whose embedding is padded past the tokenizer, as OPT's 50272 rows over 50265
  tokens are), each head with its target's vocabulary, hidden size and `embed_tokens.weight`;
- the tokenizer conventions (LLaMA: <unk>=0, <s>=1 added at the start, </s>=2; OPT: <s>=0,
  <pad>=1, </s>=2 added at the start, <unk>=3) and the chat templates the chat models ship.

Weights are random but not meaningless: every model of a vocabulary family predicts the same
low-rank "bigram" next-token law (token t -> logits U R u_t, `Factors`) through its own random
projection, and its layers add a context-dependent perturbation. Targets, drafts and heads so
agree on most tokens but not all, distributions are peaked but not one-hot, and speculative
methods accept several tokens per round: the code paths a real pair exercises are exercised.

Every twin is deterministic: seeds come from hub ids and family names, the tokenizer from the
text it is trained on, the snapshot's commit from the bytes of its files (rebuilding rewrites
the same bytes under the same commit).
"""

from __future__ import annotations

from specrepro.models.twins.build import TwinModel, TwinReport, build_twins, shape_line
from specrepro.models.twins.overlay import make_overlay, merged
from specrepro.models.twins.shapes import KNOWN, RealShape, TwinShape, twin_shape
from specrepro.models.twins.twin_plan import TwinPlan, plan_twins
from specrepro.models.twins.vocab import corpus_texts, train_tokenizer

__all__ = [
    "KNOWN",
    "RealShape",
    "TwinModel",
    "TwinPlan",
    "TwinReport",
    "TwinShape",
    "build_twins",
    "corpus_texts",
    "make_overlay",
    "merged",
    "plan_twins",
    "shape_line",
    "train_tokenizer",
    "twin_shape",
]
