"""NVML energy sanity: the harness's meter (timing_group.open_energy_meter) sees a burst of
matmuls (energy > 0, average power above idle and within the GPU's power limit) and gives a
finite, positive J/token for a short vanilla generation."""

from __future__ import annotations

import math
import time

import torch

from specrepro.bench.gpu_check_core import CheckContext, CheckResult, failed
from specrepro.bench.gpu_check_models import check_decoder, check_prompts
from specrepro.energy import IDLE_ACTIVE, EnergyReading
from specrepro.engine.timing import synchronize
from specrepro.run.timing_group import open_energy_meter

IDLE_SECONDS = 1.0
BURST_SECONDS = 2.0
GENERATION_SECONDS = 2.0
MATMUL_SIZE = 8192  # ~1 TFLOP per product: the GPU stays busy between the host's launches
# NVML's window average may pass the enforced limit for a moment while power capping reacts.
LIMIT_MARGIN = 1.1


def matmul_burst(device: torch.device, seconds: float) -> None:
    a = torch.randn(MATMUL_SIZE, MATMUL_SIZE, device=device, dtype=torch.float16)
    out = torch.empty_like(a)
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(8):
            torch.matmul(a, a, out=out)
        synchronize(device)


def judge_energy(
    burst: EnergyReading, idle_w: float | None, limit_w: float | None, per_token: float | None
) -> CheckResult:
    """The verdict on a matmul burst's reading and a generation's J/token."""
    failures = []
    power = burst.avg_power_w
    if burst.energy_j is None or not burst.energy_j > 0:
        failures.append(f"matmul burst: no energy measured ({burst.reason or burst.energy_j})")
    elif power is None or not power > (idle_w or 0.0):
        failures.append(f"matmul burst: average power {power} W is not above idle ({idle_w} W)")
    elif limit_w is not None and power > LIMIT_MARGIN * limit_w:
        failures.append(
            f"matmul burst: average power {power:.0f} W is over {LIMIT_MARGIN:g} x the power "
            f"limit ({limit_w:.0f} W)"
        )
    if per_token is None or not (math.isfinite(per_token) and per_token > 0):
        failures.append(f"generation: J/token {per_token} is not finite and positive")
    if failures:
        return failed(failures)
    limit = "unknown" if limit_w is None else f"{limit_w:.0f} W"
    return CheckResult(
        True,
        f"matmul burst {burst.energy_j:.0f} J at {power:.0f} W (idle {idle_w or 0:.0f} W, limit "
        f"{limit}, source {burst.source}); generation {per_token:.4g} J/token",
    )


def check_energy(ctx: CheckContext) -> CheckResult:
    """NVML energy of a matmul burst and of vanilla generations on the check target."""
    models = ctx.models()
    meter = open_energy_meter(ctx.device, 20.0)
    try:
        if not meter.available:
            return CheckResult(False, f"no energy meter: {meter.reason}")
        idle_w = meter.measure_idle(IDLE_SECONDS)
        with meter.window() as burst:
            matmul_burst(ctx.device, BURST_SECONDS)
        decoder = check_decoder(models, "vanilla", 0.0, {})
        prompts = check_prompts(models.target.get_output_embeddings().weight.shape[0], 3, 24)
        decoder.generate(prompts[0], 8, 0)
        # As a timing group does: the active idle, right after warm work, for net energy.
        synchronize(ctx.device)
        active_w = meter.measure_idle(IDLE_SECONDS, IDLE_ACTIVE)
        tokens, start = 0, time.perf_counter()
        with meter.window() as reading:
            while time.perf_counter() - start < GENERATION_SECONDS:
                result, _ = decoder.generate(prompts[tokens % len(prompts)], 64, 0)
                tokens += result.new_tokens
            synchronize(ctx.device)
        limit_w = meter.gpu_state().power_limit_w  # the enforced limit; None if NVML won't say
        verdict = judge_energy(burst, idle_w, limit_w, reading.joules_per_token(tokens))
        net = reading.joules_per_token(tokens, net=True)
        net_text = "n/a" if net is None else f"{net:.4g}"
        verdict.detail += f"; active idle {active_w} W, net {net_text} J/token"
        return verdict
    finally:
        meter.close()
