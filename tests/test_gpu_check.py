"""`python -m specrepro.bench gpu-check`: wired, refuses a machine without CUDA with its own exit
code, prints one table, and its checks, run here on the CPU where they can (tiny shapes), pass
on the code and fail, naming what broke, on the bugs they are there to catch."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
import yaml
from transformers.modeling_utils import AttentionInterface

from specrepro.bench import gpu_check as bench
from specrepro.bench import (
    gpu_check_async,
    gpu_check_exact,
    gpu_check_head,
    gpu_check_sdpa,
    gpu_check_syncs,
    gpu_check_timing,
)
from specrepro.bench import main as bench_main
from specrepro.bench.gpu_check_core import CheckContext, CheckResult
from specrepro.bench.gpu_check_energy import judge_energy
from specrepro.bench.gpu_check_exact import GreedyPath, compare_greedy
from specrepro.bench.gpu_check_memory import check_paper_memory
from specrepro.bench.gpu_check_models import (
    TINY,
    check_models,
    llama_config,
    proxy_models,
    random_opt,
)
from specrepro.decoding import vanilla
from specrepro.energy import EnergyReading
from specrepro.engine import host_reads
from specrepro.engine.runner import ModelRunner
from tests import test_host_reads
from tests.conftest import REPO
from tests.test_ddd_async import slow_copies
from tests.test_host_reads import counting_reads, refusing_reads

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="tests the machine without CUDA")
CPU = torch.device("cpu")
CONFIGS = tuple(str(REPO / "config" / f"paper_{n}.yaml") for n in ("ddd", "dsbd", "draft_design"))

# Tiny models: one intra-op thread is ~10x faster than several contending for the CPUs.
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def ctx() -> CheckContext:
    """The exactness checks' families at tiny shapes, built once for the module."""
    return CheckContext(CPU, shapes=TINY, paper_configs=CONFIGS)


@pytest.fixture(scope="module")
def small() -> CheckContext:
    """The sync and stream checks' models, smaller than gpu-check's."""
    context = CheckContext(CPU)
    context.cached(("models",), lambda: check_models(CPU, config=llama_config(64, 64)))
    return context


# -- the command ----------------------------------------------------------------------------


@no_cuda
def test_gpu_check_without_cuda_says_so_and_exits_2(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        bench_main(["gpu-check"])
    assert exit_info.value.code == bench.EXIT_NO_CUDA == 2
    assert bench.NEEDS_CUDA in capsys.readouterr().err
    assert "tests/test_host_reads.py" in bench.NEEDS_CUDA


@no_cuda
def test_the_module_command_is_wired() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "specrepro.bench", "gpu-check"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert "gpu-check needs a CUDA device; the CPU proxy runs in the test suite" in done.stderr


def test_the_makefile_runs_it() -> None:
    makefile = (REPO / "Makefile").read_text()
    assert "gpu-check:" in makefile
    assert "$(BIN)/python -m specrepro.bench gpu-check" in makefile


def test_on_the_cpu_it_prints_one_table_and_skips_the_cuda_checks(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        bench_main(["gpu-check", "--device", "cpu", "--only", "paper-memory", "energy",
                    "--configs", *CONFIGS])  # fmt: skip
    assert exit_info.value.code == 0
    lines = capsys.readouterr().out.splitlines()
    table = lines[lines.index(next(x for x in lines if x.startswith("check "))) :]
    assert [x.split(" | ")[:2] for x in table[2:4]] == [
        ["paper-memory", "PASS  "],
        ["energy      ", "SKIP  "],
    ]
    assert "needs CUDA" in table[3]
    assert table[1].startswith("-") and table[4] == "gpu-check: 1 passed, 0 failed, 1 skipped"


def test_a_failing_check_makes_the_exit_code_1_and_the_table_names_it(monkeypatch, capsys):
    def broken(ctx: CheckContext) -> CheckResult:
        raise RuntimeError("no NVML")

    checks = [
        bench.Check("fine", lambda ctx: CheckResult(True, "ok"), 1, needs_cuda=False),
        bench.Check("broken", broken, 1, needs_cuda=False),
        bench.Check("gpu-only", broken, 1, needs_cuda=True),
    ]
    monkeypatch.setattr(bench, "CHECKS", checks)
    args = bench.argparse.Namespace(device="cpu", model=None, sleep_cycles=0, configs=[], only=None)
    assert bench.run_gpu_check(args) == bench.EXIT_FAILED
    out = capsys.readouterr().out.splitlines()
    rows = [line.split(" | ") for line in out[3:6]]
    assert [(r[0].strip(), r[1].strip()) for r in rows] == [
        ("fine", "PASS"), ("broken", "FAIL"), ("gpu-only", "SKIP")
    ]  # fmt: skip
    assert rows[1][2].strip() == "error: RuntimeError: no NVML"
    assert all(float(r[3]) >= 0 for r in rows)
    assert out[-1] == "gpu-check: 1 passed, 1 failed, 1 skipped"


# -- 1, 2: exactness at T=0 -------------------------------------------------------------------


def test_compare_greedy_accepts_near_ties_only_and_compares_on_past_them() -> None:
    vocab = 4

    def path(tokens: list[int], gaps: dict[int, float]) -> GreedyPath:
        logits = torch.zeros(len(tokens), vocab)
        for i, token in enumerate(tokens):
            logits[i, token] = 4.0
            logits[i, (token + 1) % vocab] = 4.0 - gaps.get(i, 2.0)
        return GreedyPath(tokens, logits)

    ref = [0, 1, 2, 3, 0, 1]
    calls = []

    def reference(ids: list[int], n: int) -> GreedyPath:
        calls.append(len(ids))
        done = len(ids) - 2
        return path(ref[done : done + n], {2 - done: 1e-6})  # a tie at step 2

    def flips_at_the_tie(ids: list[int], n: int) -> list[int]:
        done = len(ids) - 2
        return [3 if done + i == 2 else t for i, t in enumerate(ref[done : done + n])]

    out = compare_greedy(reference, flips_at_the_tie, [9, 9], 6, torch.float32)
    assert out.failure is None and [p for p, _ in out.ties] == [2]
    assert calls == [2, 5]  # restarted after the tie, from the reference's token there

    def flips_at_step_4(ids: list[int], n: int) -> list[int]:
        return [1 if len(ids) - 2 + i == 4 else t for i, t in enumerate(ref[len(ids) - 2 :][:n])]

    out = compare_greedy(reference, flips_at_step_4, [9, 9], 6, torch.float32)
    assert out.failure.startswith("token 4: 1 where the reference has 0 (logit gap 2")
    out = compare_greedy(reference, lambda ids, n: ref[:3], [9, 9], 6, torch.float32)
    assert out.failure == "3 tokens after 0, the reference 6"


def test_exactness_checks_pass_on_the_engine(ctx) -> None:
    result = gpu_check_exact.check_vanilla_is_transformers(ctx)
    assert result.ok and result.detail.startswith("4 cases x 24 tokens equal"), result.detail
    result = gpu_check_exact.check_lossless_is_vanilla(ctx)
    assert result.ok and result.detail.startswith("12 cases x 24 tokens equal"), result.detail


def test_vanilla_check_catches_a_decoder_taking_the_second_best_token(ctx, monkeypatch) -> None:
    monkeypatch.setattr(vanilla, "greedy", lambda logits: int(logits.topk(2).indices[1]))
    result = gpu_check_exact.check_vanilla_is_transformers(ctx)
    assert not result.ok
    assert result.detail.startswith(
        "vanilla != transformers greedy [llama float32 prompt 0] at token 0: "
    ), result.detail


def test_vanilla_check_catches_a_runner_that_does_not_use_its_cache(ctx, monkeypatch) -> None:
    forward = ModelRunner.forward

    def forgetful(self: ModelRunner, tokens, positions=None, **kwargs: object) -> object:
        past = self.cache_len
        if positions is None:
            positions = torch.arange(past, past + len(tokens))
        self.crop(0)  # the bug: each forward sees only its own tokens, at the right positions
        return forward(self, tokens, positions, **kwargs)

    monkeypatch.setattr(ModelRunner, "forward", forgetful)
    result = gpu_check_exact.check_vanilla_is_transformers(ctx)
    assert not result.ok
    assert "vanilla != transformers greedy [llama float32 prompt 0] at token " in result.detail
    assert "[opt float32 prompt 0]" in result.detail


def test_lossless_check_catches_a_cache_that_keeps_the_wrong_path(ctx, monkeypatch) -> None:
    keep = ModelRunner.keep

    def keeps_a_neighbour(self: ModelRunner, indices) -> None:
        indices = list(indices)  # the bug: the last kept node's neighbour, not the node
        if indices[-1] + 1 < self.cache_len:
            indices[-1] += 1
        keep(self, indices)

    monkeypatch.setattr(ModelRunner, "keep", keeps_a_neighbour)
    result = gpu_check_exact.check_lossless_is_vanilla(ctx)
    assert not result.ok
    assert "eagle != vanilla [llama float32 prompt 0] at token" in result.detail, result.detail


def test_lossless_check_needs_rounds_that_accept_drafted_tokens(ctx, monkeypatch) -> None:
    # Only sps on the OPT family (no head): a draft that never agrees leaves acceptance untested.
    fam = ctx.family("opt", torch.float32)
    monkeypatch.setattr(gpu_check_exact, "LOSSLESS", {"sps": {}})
    monkeypatch.setattr(ctx, "family", lambda name, dtype: fam)
    monkeypatch.setattr(fam, "draft", random_opt(fam.target.config, 7, CPU))
    result = gpu_check_exact.check_lossless_is_vanilla(ctx)
    assert not result.ok and "no round accepted 2+ drafted tokens" in result.detail


# -- 3: SDPA under tree masks ---------------------------------------------------------------


def test_sdpa_check_passes_on_the_engine(ctx) -> None:
    result = gpu_check_sdpa.check_sdpa_tree_masks(ctx)
    assert result.ok, result.detail
    assert result.detail.startswith("30-node tree after 40 tokens: sdpa = eager = each path")


def test_sdpa_check_catches_a_wrong_tree_mask(ctx, monkeypatch) -> None:
    def causal(parents: list[int], device: object = "cpu") -> torch.Tensor:  # the bug
        n = len(parents)
        return torch.ones(n, n, dtype=torch.bool).tril()

    monkeypatch.setattr(gpu_check_sdpa, "ancestor_mask", causal)
    result = gpu_check_sdpa.check_sdpa_tree_masks(ctx)
    assert not result.ok
    assert "[llama float32] sdpa tree logits differ from the path run alone" in result.detail
    assert "the tree mask or positions are wrong" in result.detail


def test_sdpa_check_catches_an_sdpa_kernel_that_drops_the_mask(ctx, monkeypatch) -> None:
    sdpa = AttentionInterface._global_mapping["sdpa"]

    def maskless(module, query, key, value, attention_mask, **kwargs):  # the bug
        return sdpa(module, query, key, value, None, **kwargs)

    monkeypatch.setitem(AttentionInterface._global_mapping, "sdpa", maskless)
    result = gpu_check_sdpa.check_sdpa_tree_masks(ctx)
    assert not result.ok
    assert "[llama float32] sdpa's tree logits differ from eager's" in result.detail


# -- 4: sync counts and sync-free levels ------------------------------------------------------


def proxy_count(run):
    """The CPU proxy of count_syncs: host reads (tests/test_host_reads.py)."""
    with counting_reads() as counts:
        out = run()
    return out, sum(counts.values())


def test_the_sync_counter_counts_each_warning_torch_emits() -> None:
    modes = []

    @contextlib.contextmanager
    def stand_in(mode: str):
        modes.append(mode)
        yield

    def syncing() -> str:
        for _ in range(5):  # from one line: the default filter would show it once
            warnings.warn(gpu_check_syncs.SYNC_WARNING, UserWarning, stacklevel=1)
        warnings.warn("something else", UserWarning, stacklevel=1)
        return "done"

    assert gpu_check_syncs.count_syncs(syncing, mode=stand_in) == ("done", 5)
    assert modes == ["warn"]
    assert gpu_check_syncs.SYNC_WARNING == "called a synchronizing CUDA operation"


def test_sync_bounds_are_the_cpu_proxys_ceilings_on_its_models() -> None:
    # "For now": the GPU bounds are the host-read ceilings, on the same models and settings.
    bounds = {key: bound for key, (bound, _) in gpu_check_syncs.SYNC_BOUNDS.items()}
    assert bounds == {key: c for key, (c, _) in test_host_reads.CEILINGS.items()}
    assert gpu_check_syncs.SYNC_PARAMS == test_host_reads.PARAMS
    assert gpu_check_syncs.SYNC_PROMPT == test_host_reads.PROMPT
    assert gpu_check_syncs.SYNC_NEW_TOKENS == test_host_reads.MAX_NEW
    models = proxy_models(CPU)
    target = test_host_reads.tiny_llama(vocab_size=test_host_reads.VOCAB, seed=0)
    torch.manual_seed(11)
    head = test_host_reads.build_head(test_host_reads.head_config_for(target), target)
    for ours, theirs in ((models.target, target), (models.head, head)):
        theirs_state = theirs.state_dict()
        assert all(torch.equal(v, theirs_state[k]) for k, v in ours.state_dict().items())


def test_sync_count_check_on_the_cpu_proxy_and_a_read_per_forward(monkeypatch) -> None:
    proxy = CheckContext(CPU)
    result = gpu_check_syncs.check_sync_counts(proxy, count=proxy_count)
    assert result.ok, result.detail
    assert "vanilla T=0 " in result.detail and "(timer: 0)" in result.detail
    forward = ModelRunner.forward

    def reading(self: ModelRunner, *args: object, **kwargs: object) -> object:
        bool(torch.ones(()).sum())  # the bug: a host read in every forward
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(ModelRunner, "forward", reading)
    result = gpu_check_syncs.check_sync_counts(proxy, count=proxy_count)
    assert not result.ok
    assert result.detail.startswith("vanilla T=0: 3.")
    assert "syncs per round > 2.2" in result.detail
    assert "the round needs: the chosen token" in result.detail


@pytest.fixture
def short_runs(monkeypatch) -> None:
    monkeypatch.setattr(gpu_check_syncs, "FREE_PROMPTS", 1)
    monkeypatch.setattr(gpu_check_syncs, "FREE_NEW_TOKENS", 16)
    monkeypatch.setattr(gpu_check_async, "ASYNC_PROMPTS", 1)
    monkeypatch.setattr(gpu_check_async, "ASYNC_NEW_TOKENS", 16)
    monkeypatch.setattr(gpu_check_async, "ASYNC_THRESHOLDS", (-1.0, -3.0))


def test_sync_free_check_on_the_cpu_proxy(small, short_runs, monkeypatch) -> None:
    result = gpu_check_syncs.check_sync_free(small, region=refusing_reads)
    assert result.ok, result.detail
    forward = ModelRunner.forward

    def reading(self: ModelRunner, *args: object, **kwargs: object) -> object:
        bool(torch.ones(()).sum())  # a host read in every forward
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(ModelRunner, "forward", reading)
    result = gpu_check_syncs.check_sync_free(small, region=refusing_reads)
    assert not result.ok
    assert result.detail.startswith("eagle T=0: a host sync in a draft level: Tensor.__bool__")
    assert "(+5 more)" in result.detail  # every case: 8 tree ones and dsbd's draft forwards


def test_checked_levels_restores_the_previous_region() -> None:
    with host_reads.checked_levels(refusing_reads):
        assert host_reads._level_region is refusing_reads
    assert host_reads._level_region is contextlib.nullcontext


# -- the stream and head checks ---------------------------------------------------------------


def test_async_check_needs_pending_flags_and_equal_trees(small, short_runs, monkeypatch) -> None:
    small.sleep_cycles = 0
    # On the CPU nothing is in flight: the check must say the delay did not bite...
    idle = gpu_check_async.check_async_trees(small)
    assert not idle.ok and "did not bite" in idle.detail
    # ...with copies that land two polls late it passes (trees equal, levels dropped)...
    monkeypatch.setattr(host_reads, "late_reader", slow_copies(2))
    delayed = gpu_check_async.check_async_trees(small)
    assert delayed.ok, delayed.detail
    # ...and a stale read fails it.
    monkeypatch.setattr(host_reads.CopiedRead, "value", lambda self: (0.0, True))
    stale = gpu_check_async.check_async_trees(small)
    assert not stale.ok and "differ" in stale.detail


def test_fp16_head_check_passes_and_catches_a_float16_rope(small, monkeypatch) -> None:
    assert gpu_check_head.check_head_fp16(small).ok
    build = gpu_check_head.build_head

    def rounded_rope(config, target, *args):  # the bug: RoPE frequencies cast with the head
        head = build(config, target, *args)
        if target.dtype == torch.float16:
            head.rotary.inv_freq = head.rotary.inv_freq.half().float()
        return head

    monkeypatch.setattr(gpu_check_head, "build_head", rounded_rope)
    result = gpu_check_head.check_head_fp16(small)
    assert not result.ok, result.detail


# -- 5: real-shape timing (its logic, at a tiny shape) -----------------------------------------


def test_timing_check_reports_both_times_and_fails_past_its_limits(monkeypatch) -> None:
    config = gpu_check_timing.llama2_7b_config()
    config.hidden_size, config.intermediate_size, config.num_hidden_layers = 64, 128, 2
    config.num_attention_heads = config.num_key_value_heads = 4
    config.vocab_size = 128
    result = gpu_check_timing.check_real_shape_timing(CheckContext(CPU), config, prompt_len=32)
    assert result.ok, result.detail
    assert "ms/token (64 tokens after 32; FAIL above 200)" in result.detail
    assert "60-token tree verification" in result.detail
    monkeypatch.setattr(gpu_check_timing, "DECODE_MS_LIMIT", 1e-6)
    assert not gpu_check_timing.check_real_shape_timing(CheckContext(CPU), config, prompt_len=32).ok


# -- 6: the paper configs' memory ---------------------------------------------------------------


def test_paper_memory_fits_an_80gb_gpu_and_names_a_group_over_a_small_one() -> None:
    assert check_paper_memory(CheckContext(CPU, paper_configs=CONFIGS)).ok
    h100 = CheckContext(CPU, gpu_memory_bytes=85_520_000_000, paper_configs=CONFIGS)
    result = check_paper_memory(h100)
    assert result.ok and "(this GPU: 85.5 GB)" in result.detail, result.detail
    a40 = CheckContext(CPU, gpu_memory_bytes=48_000_000_000, paper_configs=CONFIGS)
    result = check_paper_memory(a40)
    assert not result.ok
    assert result.detail.startswith(
        "paper_draft_design group llama2-13b/mtbench/T0.0-s0-part1: 68.0 GB of weights + 12.0 "
        "GB reserve > this GPU's 48.0 GB"
    ), result.detail


def test_paper_memory_names_a_group_over_its_config_and_a_missing_config(tmp_path) -> None:
    config = yaml.safe_load(Path(CONFIGS[1]).read_text())
    config["runs"]["cache_reserve_gb"] = 60  # 26 GB of the 13B target + 60 > 80
    path = tmp_path / "paper_dsbd.yaml"
    path.write_text(yaml.safe_dump(config))
    result = check_paper_memory(CheckContext(CPU, paper_configs=(str(path),)))
    assert not result.ok
    assert "paper_dsbd: run llama2-13b/" in result.detail and "cannot fit one GPU" in result.detail
    config["runs"]["gpu_memory_gb"] = 200  # fits the config, not an 80 GB GPU
    path.write_text(yaml.safe_dump(config))
    h100 = CheckContext(CPU, gpu_memory_bytes=85_520_000_000, paper_configs=(str(path),))
    result = check_paper_memory(h100)
    assert not result.ok
    assert result.detail.startswith("paper_dsbd group llama2-13b/squad/T1.0-s0: "), result.detail
    assert "> this GPU's 85.5 GB" in result.detail
    missing = CheckContext(CPU, paper_configs=(str(tmp_path / "none.yaml"),))
    assert "none.yaml: not found" in check_paper_memory(missing).detail


# -- 7: energy (the verdict on given readings) ------------------------------------------------


def test_energy_verdict() -> None:
    burst = EnergyReading(energy_j=900.0, avg_power_w=450.0, source="nvml_energy_counter")
    result = judge_energy(burst, 70.0, 700.0, 0.5)
    assert result.ok and result.detail.startswith("matmul burst 900 J at 450 W (idle 70 W, limit")
    none = EnergyReading(reason="no usable energy counter reading")
    assert "no energy measured (no usable" in judge_energy(none, 70.0, 700.0, 0.5).detail
    idle = EnergyReading(energy_j=100.0, avg_power_w=60.0)
    assert "is not above idle (70.0 W)" in judge_energy(idle, 70.0, 700.0, 0.5).detail
    hot = EnergyReading(energy_j=2000.0, avg_power_w=1000.0)
    assert "over 1.1 x the power limit (700 W)" in judge_energy(hot, 70.0, 700.0, 0.5).detail
    result = judge_energy(burst, 70.0, None, float("nan"))
    assert not result.ok and "J/token nan is not finite and positive" in result.detail
