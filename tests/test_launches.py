"""`python -m specrepro.bench launches`: the counter counts (one more operator per target forward
is one more launch per round), draft levels are counted where they run, the CUDA attribution
ties device events to their levels, and the command is wired."""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch
from torch.profiler import ProfilerActivity, profile

from specrepro.bench import launches as bench
from specrepro.bench import main as bench_main
from specrepro.bench.gpu_check_models import check_decoder, llama_config
from specrepro.engine.runner import ModelRunner
from tests.conftest import REPO

pytestmark = pytest.mark.usefixtures("one_torch_thread")

NEW_TOKENS = 8
SMALL_TREE = {"top_k": 4, "depth": 4, "total_tokens": 12}  # eagle2 at a test's cost


@pytest.fixture(scope="module")
def small() -> bench.CheckModels:
    config = llama_config(64, 64)
    return bench.launch_models(torch.device("cpu"), torch.float32, config)


def profiled_run(
    small, method: str, params: dict | None = None
) -> tuple[ModelRunner, ModelRunner | None, int, bench.Counts]:
    """The decoder's target and drafter (head or draft model) after one profiled generation,
    with its rounds and counts."""
    decoder = check_decoder(small, method, bench._temperature(method), params or {})
    ids = bench.prompt(decoder.target.vocab_size)
    decoder.generate(ids, NEW_TOKENS, bench.SEED)
    rounds, counts = bench.profiled(decoder, ids, NEW_TOKENS)
    drafter = decoder.head if decoder.head in decoder.used_runners() else decoder.draft
    return decoder.target, drafter, rounds, counts


def test_counts_are_positive_per_round_and_per_level(small) -> None:
    row = bench.measure(small, "sps", NEW_TOKENS)
    assert row["rounds"] == row["timed_rounds"] > 0
    assert row["launches_per_round"] == pytest.approx(row["launches"] / row["rounds"])
    # A round is at least one target forward: dozens of operators even for a 2-layer model.
    assert row["launches_per_round"] > 20
    assert row["levels"] > 0
    assert row["levels_per_round"] == pytest.approx(row["levels"] / row["rounds"])
    assert row["launches_per_level"] == pytest.approx(row["level_launches"] / row["levels"])
    assert 0 < row["level_launches"] < row["launches"]
    assert row["cpu_ms_per_round"] > 0 and row["wall_ms_per_round"] > 0
    assert row["memcpy"] == row["memset"] == 0  # counted on CUDA only


@pytest.mark.parametrize(("method", "params"), [("sps", {}), ("eagle", {}), ("eagle2", SMALL_TREE)])
def test_every_draft_level_is_counted(small, method, params) -> None:
    _, drafter, rounds, counts = profiled_run(small, method, params)
    assert drafter is not None
    # sps: every draft-model forward is a level; the EAGLE family: every head forward but the
    # round's first (it reads the accepted tokens, outside level_region).
    expected = drafter.forwards if method == "sps" else drafter.forwards - rounds
    assert counts.levels == expected > 0
    assert counts.level_launches / counts.levels > 10  # a head or draft forward, at least


def test_one_more_operator_per_target_forward_is_one_more_launch_per_round(small, monkeypatch):
    _, _, rounds, before = profiled_run(small, "sps")
    forward = ModelRunner.forward

    def one_more(self, *args, **kwargs):
        out = forward(self, *args, **kwargs)
        if self.name == "target":
            with torch.inference_mode():
                out.logits.neg()
        return out

    monkeypatch.setattr(ModelRunner, "forward", one_more)
    target, _, rounds_after, after = profiled_run(small, "sps")
    assert rounds_after == rounds == target.forwards  # sps: every target forward verifies
    assert (after.launches - before.launches) / rounds == 1.0
    assert (after.levels, after.level_launches) == (before.levels, before.level_launches)


def test_cpu_ops_are_the_calls_that_compute() -> None:
    x, w = torch.randn(3, 8), torch.randn(4, 8)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        torch.nn.functional.linear(x, w)  # linear -> matmul -> mm: one launch
        x.view(-1).t()  # views: none
        torch.empty(5)  # an allocation: none
        (x + 1)[0, 0].item()  # add: one (its scalar's copy is part of it); a view; a host read
        x.to(torch.float64).sum()  # `to` does not compute, the copy under it does; sum: one
    names = sorted(e.name for e in bench.cpu_ops(prof.events()))
    assert names == ["aten::_to_copy", "aten::add", "aten::linear", "aten::sum"]


def _event(id_, start, activity, name="k", linked=0, end=None):
    end = start + 1 if end is None else end
    return SimpleNamespace(
        id=id_, name=name, activity_type=activity, linked_correlation_id=linked,
        time_range=SimpleNamespace(start=start, end=end),
    )  # fmt: skip


def test_cuda_events_are_counted_by_kind_and_placed_by_their_launching_call() -> None:
    events = [
        _event(1, 10, "user_annotation", bench.LEVEL, end=20),
        _event(2, 10, "gpu_user_annotation", bench.LEVEL, end=20),  # the level's device copy
        _event(3, 12, "cpu_op", "aten::mm"),  # in the level
        _event(4, 25, "cpu_op", "aten::add"),  # after it
        _event(90, 30, "kernel", linked=3),  # device time past the level: still the level's
        _event(91, 31, "kernel", linked=4),
        _event(92, 32, "kernel", linked=99),  # no launching call recorded: outside levels
        _event(93, 33, "gpu_memcpy", linked=3),
        _event(94, 34, "gpu_memset", linked=4),
        _event(95, 35, "cuda_runtime", "cudaLaunchKernel", linked=3),
    ]
    counts = bench.count_launches(events, cuda=True)
    assert counts == bench.Counts(launches=3, level_launches=1, levels=1, memcpy=1, memset=1)
    with pytest.raises(RuntimeError, match="no CUDA kernel"):
        bench.count_launches(events[:4], cuda=True)


def test_the_command_prints_one_table_of_cpu_ops(capsys) -> None:
    bench_main(["launches", "--device", "cpu", "--methods", "vanilla", "--new-tokens", "4"])
    out = capsys.readouterr().out
    assert "CPU ops/round" in out and "not CUDA kernels" in out
    assert "CUDA kernels/" not in out
    rows = [line for line in out.splitlines() if line.startswith("| vanilla |")]
    assert len(rows) == 1
    cells = [cell.strip() for cell in rows[0].strip("|").split("|")]
    assert cells[3] == cells[5] == "-"  # vanilla drafts nothing: no levels


def test_the_module_command_is_wired() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "specrepro.bench", "launches", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "--new-tokens" in done.stdout and "--methods" in done.stdout
