"""Deterministic subsampling of prompt records by seed."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Hashable, Sequence
from typing import Any, TypeVar

T = TypeVar("T")


def question_key(record: Any) -> str:
    """Default key: the record's question_id as a string."""
    return str(record["question_id"])


def _keys(items: Sequence[T], key: Callable[[T], Hashable]) -> list[Hashable]:
    keys = [key(x) for x in items]
    dups = [k for k, c in Counter(keys).items() if c > 1]
    if dups:
        raise ValueError(f"duplicate keys {dups[:5]!r}: subsampling needs unique keys")
    return keys


def subsample(
    items: Sequence[T],
    n: int | None,
    seed: int,
    key: Callable[[T], Any] = question_key,
) -> list[T]:
    """n items chosen by seed, in their original order; all items if n is None or >= len.

    The choice depends only on the set of keys and the seed, not on the input order, so the
    same questions are picked whatever order a loader yields them in.
    """
    if n is not None and n < 0:
        raise ValueError(f"n must be >= 0 or None, got {n}")
    keys = _keys(items, key)
    if n is None or n >= len(items):
        return list(items)
    chosen = set(random.Random(seed).sample(sorted(keys), n))
    return [x for x, k in zip(items, keys, strict=True) if k in chosen]


def complement(
    items: Sequence[T], chosen: Sequence[T], key: Callable[[T], Any] = question_key
) -> list[T]:
    """Items whose key is not among the chosen ones, in their original order."""
    taken = {key(x) for x in chosen}
    return [x for x in items if key(x) not in taken]
