"""CPU tree settings chosen on tuning questions: the tree size (verified tokens) at which an
EAGLE-2 entry runs fastest, then DDD's threshold x for that tree, as the median of H at the DDD
entry's first check (so about half of the rounds draft past it). Method entries ask for a chosen
value with `tuned`; the DAG's tune_trees rule writes the choice, with every measurement it was
made from, and each decoding job reads it (`apply_tuning`)."""

from __future__ import annotations

import copy
import statistics

from specrepro.config import TUNED, ConfigError, MethodChoice
from specrepro.decoding.base import make_params
from specrepro.run.decoder import Decoder, LoadedPair
from specrepro.run.timing_group import balanced_order

RULE = (
    "total_tokens: the size at which the size entry makes the most tokens per second (totals) "
    "on the tuning questions at T=0, interleaved with vanilla; threshold: the median H at the "
    "threshold entry's first check level, over the rounds of a probe that checks every level "
    "and never stops, at that size"
)


def tuned_keys(entry: dict) -> list[str]:
    """The parameters of a method entry that a tuning file sets."""
    return [key for key, value in entry.items() if value == TUNED]


def apply_tuning(methods: dict, tuning: dict, where: str = "") -> dict:
    """A copy of the `methods` entries with every `tuned` value replaced by the tuning file's
    choice (a config error names the entry when the file chose no such value)."""
    out = copy.deepcopy(methods)
    for name, entry in out.items():
        for key in tuned_keys(entry):
            if key not in tuning.get("chosen", {}):
                raise ConfigError(
                    f"methods.{name}.{key} is `tuned`, but the tuning file {where} chose no "
                    f"{key} (it chose {sorted(tuning.get('chosen', {}))})"
                )
            entry[key] = tuning["chosen"][key]
    return out


def warm_decoders(
    loaded: LoadedPair, methods: dict[str, MethodChoice], temperature: float, ids: list[int]
) -> dict[str, Decoder]:
    """A decoder per method, each warmed up by one short generation (not measured)."""
    decoders = {name: Decoder(loaded, choice, temperature) for name, choice in methods.items()}
    for decoder in decoders.values():
        decoder.generate(ids, 8, 0)
    return decoders


def interleaved_stats(
    loaded: LoadedPair, methods: dict[str, MethodChoice], encoded: list[list[int]], max_new: int
) -> dict[str, dict]:
    """Every method on every prompt at T=0, interleaved (each prompt in the next order of a
    Williams design) so that drift hits all alike: per method its totals (tokens, verified
    tokens, verify forwards, the draft / verify / other seconds), its drafted levels and checks
    per round, and its tokens per prompt."""
    decoders = warm_decoders(loaded, methods, 0.0, encoded[0])
    stats = {
        name: {
            "tokens": 0,
            "verified": 0,
            "forwards": 0,
            "levels": [],
            "checks": [],
            "split": [0.0, 0.0, 0.0],
            "out": [],
            "accept_lengths": [],
        }  # fmt: skip
        for name in decoders
    }
    for index, ids in enumerate(encoded):
        for name in balanced_order(list(decoders), index):
            result, timer = decoders[name].generate(ids, max_new, 0)
            entry = stats[name]
            entry["tokens"] += result.new_tokens
            entry["verified"] += result.verified_tokens
            entry["forwards"] += result.verify_forwards
            entry["levels"] += result.extra.get("rounds", {}).get("levels", [])
            entry["checks"] += result.extra.get("rounds", {}).get("checks", [])
            entry["accept_lengths"] += result.accept_lengths
            split = timer.split()
            for i, key in enumerate(("draft", "verify", "other")):
                entry["split"][i] += split[key]
            entry["out"].append(result.tokens)
    return stats


def h_probe(base: MethodChoice) -> MethodChoice:
    """DDD with `base`'s tree but a check at every level and a threshold nothing reaches: its
    rounds record H (the log of the beam's total draft probability) at every level, the values
    a threshold x is chosen from."""
    values = {**vars(base.params), "threshold": -1e9}
    values["check_levels"] = list(range(1, values["max_levels"] + 1))
    return MethodChoice("h-probe", "ddd", make_params("ddd", values))


def h_medians(checks: list[list[list[float]]]) -> dict[int, float] | None:
    """Median H at each checked level over every round ([[level, H], ...] per round)."""
    by_level: dict[int, list[float]] = {}
    for round_checks in checks:
        for level, h in round_checks:
            by_level.setdefault(int(level), []).append(float(h))
    return {lv: statistics.median(hs) for lv, hs in sorted(by_level.items())} or None


def with_values(choice: MethodChoice, **values: object) -> MethodChoice:
    params = make_params(choice.algorithm, {**vars(choice.params), **values})
    return MethodChoice(choice.name, choice.algorithm, params, choice.stop_at_answer)


def tune_trees(
    loaded: LoadedPair,
    size_entry: MethodChoice,
    threshold_entry: MethodChoice,
    sizes: list[int],
    encoded: list[list[int]],
    max_new: int,
) -> dict:
    """Choose the tree size, then DDD's threshold at it, on the encoded tuning prompts; the
    result holds the choice and every measurement it came from."""
    if not sizes or not encoded:
        raise ValueError("tree tuning needs at least one size and one tuning prompt")
    vanilla = MethodChoice("vanilla", "vanilla", make_params("vanilla", {}))
    candidates = {f"size-{s}": with_values(size_entry, total_tokens=int(s)) for s in sizes}
    stats = interleaved_stats(loaded, {"vanilla": vanilla, **candidates}, encoded, max_new)
    measured = {}
    for s in sizes:
        entry = stats[f"size-{s}"]
        measured[int(s)] = {
            "tokens_per_s": entry["tokens"] / sum(entry["split"]),
            "tau": entry["verified"] / max(entry["forwards"], 1),
        }
    base_tps = stats["vanilla"]["tokens"] / sum(stats["vanilla"]["split"])
    size = max(measured, key=lambda s: measured[s]["tokens_per_s"])
    probe = h_probe(with_values(threshold_entry, total_tokens=size, threshold=0.0))
    medians = h_medians(
        interleaved_stats(loaded, {"h-probe": probe}, encoded, max_new)["h-probe"]["checks"]
    )
    first_check = int(threshold_entry.params.check_levels[0])
    if not medians or first_check not in medians:
        raise RuntimeError(
            f"the H probe drafted no level {first_check} on {len(encoded)} tuning prompts: no "
            "threshold can be chosen (more tuning questions or tokens?)"
        )
    return {
        "chosen": {"total_tokens": size, "threshold": round(float(medians[first_check]), 3)},
        "rule": RULE,
        "size_entry": size_entry.name,
        "threshold_entry": threshold_entry.name,
        "first_check_level": first_check,
        "sizes": {
            str(s): {**m, "speedup": m["tokens_per_s"] / base_tps} for s, m in measured.items()
        },
        "vanilla_tokens_per_s": base_tps,
        "h_median_by_level": {str(lv): h for lv, h in medians.items()},
        "prompts": len(encoded),
        "max_new_tokens": max_new,
    }
