"""A real-shape timing: random weights in LLaMA-2-7B's shapes, float16 on the GPU. Vanilla
decoding's ms per token (DECODE_TOKENS after a PROMPT_LEN-token prompt) and one
TREE_TOKENS-token tree verification forward (a random tree mask) after that prompt.

Not a benchmark: it fails only on absurd numbers, the kind a broken engine gives (weights or
the cache on the host, a float32 fallback, a host sync per layer, a cache copied per forward).
Through transformers' modelling code an H100 decodes a 7B float16 model in roughly 20-30 ms per
token and verifies a 60-token tree in about as long, so the limits are ~7x and ~15x that.
"""

from __future__ import annotations

import statistics
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from specrepro.bench.gpu_check_core import CheckContext, CheckResult
from specrepro.bench.gpu_check_models import decoder_for
from specrepro.bench.gpu_check_sdpa import random_tree
from specrepro.engine.runner import NonFiniteLogitsError
from specrepro.engine.timing import synchronize
from specrepro.engine.tree import ancestor_mask, positions
from specrepro.run.decoder import Decoder

PROMPT_LEN = 512
DECODE_TOKENS = 64
TREE_TOKENS = 60
TREE_REPEATS = 5
DECODE_MS_LIMIT = 200.0
TREE_MS_LIMIT = 500.0


def llama2_7b_config() -> LlamaConfig:
    return LlamaConfig(
        vocab_size=32000,
        hidden_size=4096,
        intermediate_size=11008,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=32,
        max_position_embeddings=4096,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=None,
    )


def random_llama(config: LlamaConfig, device: torch.device) -> LlamaForCausalLM:
    """Random float16 weights created (and initialised) on `device` itself: a 7B model built on
    the host and then moved would cost minutes of CPU init."""
    torch.manual_seed(0)
    with torch.device(device):
        model = LlamaForCausalLM._from_config(config, dtype=torch.float16)
    return model.eval()


def tree_verify_ms(decoder: Decoder, prompt: list[int], vocab: int) -> float:
    """Median ms of a TREE_TOKENS-node tree verification forward after `prompt` (cached)."""
    runner = decoder.target
    device = runner.device
    runner.reset(len(prompt) + TREE_TOKENS)
    runner.forward(prompt)
    parents = random_tree(TREE_TOKENS, 7)
    where = positions(parents, len(prompt), device)
    mask = ancestor_mask(parents, device)
    tokens = torch.randint(0, vocab, (TREE_TOKENS,), generator=torch.Generator().manual_seed(8))
    tokens = tokens.to(device)
    times = []
    for _ in range(TREE_REPEATS + 1):  # the first: warm-up
        runner.crop(len(prompt))
        synchronize(device)
        start = time.perf_counter()
        runner.forward(tokens, positions=where, tree_mask=mask)
        synchronize(device)
        times.append(time.perf_counter() - start)
    runner.ensure_finite()
    return 1e3 * statistics.median(times[1:])


def timings(model: LlamaForCausalLM, prompt_len: int) -> tuple[float, float, int]:
    """(decode ms per token, tree verification ms, tokens decoded) on `model`."""
    vocab = model.config.vocab_size
    decoder = decoder_for(model, None, None, "vanilla", 0.0, {})
    generator = torch.Generator().manual_seed(9)
    prompt = torch.randint(0, vocab, (prompt_len,), generator=generator).tolist()
    decoder.generate(prompt, 4, 0)  # warm-up: kernels chosen, cache allocated
    first = decoder.generate(prompt, 1, 0)[1].total  # the prompt and one token
    result, timer = decoder.generate(prompt, DECODE_TOKENS + 1, 0)
    decode_ms = 1e3 * (timer.total - first) / DECODE_TOKENS
    return decode_ms, tree_verify_ms(decoder, prompt, vocab), result.new_tokens


def check_real_shape_timing(
    ctx: CheckContext, config: LlamaConfig | None = None, prompt_len: int = PROMPT_LEN
) -> CheckResult:
    """Decode ms/token and tree verification ms on a random model of `config` (LLaMA-2-7B)."""
    config = config or llama2_7b_config()
    model = random_llama(config, ctx.device)
    try:
        decode_ms, tree_ms, decoded = timings(model, prompt_len)
    except NonFiniteLogitsError as err:
        return CheckResult(False, f"random float16 weights gave non-finite logits: {err}")
    finally:
        del model  # its ~13 GB go back to the GPU before the next check
        if ctx.device.type == "cuda":
            torch.cuda.empty_cache()
    detail = (
        f"float16 {config.num_hidden_layers} layers x {config.hidden_size}: vanilla decode "
        f"{decode_ms:.1f} ms/token ({DECODE_TOKENS} tokens after {prompt_len}; FAIL above "
        f"{DECODE_MS_LIMIT:g}), {TREE_TOKENS}-token tree verification {tree_ms:.1f} ms (FAIL "
        f"above {TREE_MS_LIMIT:g})"
    )
    if decoded != DECODE_TOKENS + 1:
        return CheckResult(False, f"{detail}; decoded {decoded} tokens, not {DECODE_TOKENS + 1}")
    return CheckResult(0 < decode_ms <= DECODE_MS_LIMIT and 0 < tree_ms <= TREE_MS_LIMIT, detail)
