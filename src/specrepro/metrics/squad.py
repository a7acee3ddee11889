"""SQuAD v1.1 quality metrics: Exact Match and token F1 with the official normalisation."""

from __future__ import annotations

import re
import string
from collections import Counter

_PUNCTUATION = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
    """Official SQuAD v1.1 normalisation.

    The step order (lowercase, punctuation, articles, whitespace) matters and matches the
    official evaluate-v1.1.py, so scores stay comparable with published numbers.
    """
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def _check_golds(gold_answers: list[str]) -> None:
    if not gold_answers:
        raise ValueError("gold_answers is empty; SQuAD scoring needs at least one gold answer")


def exact_match(prediction: str, gold_answers: list[str]) -> float:
    """1.0 if the normalised prediction equals any normalised gold answer, else 0.0."""
    _check_golds(gold_answers)
    pred = normalize_answer(prediction)
    return float(any(pred == normalize_answer(gold) for gold in gold_answers))


def _f1_single(prediction: str, gold: str) -> float:
    pred_tokens = normalize_answer(prediction).split()
    gold_tokens = normalize_answer(gold).split()
    num_same = sum((Counter(pred_tokens) & Counter(gold_tokens)).values())
    # Official v1.1 rule: no shared token means 0, which also covers empty-vs-empty.
    if num_same == 0:
        return 0.0
    precision = num_same / len(pred_tokens)
    recall = num_same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def f1(prediction: str, gold_answers: list[str]) -> float:
    """Token-level F1 (bag of normalised tokens), maximised over the gold answers."""
    _check_golds(gold_answers)
    return max(_f1_single(prediction, gold) for gold in gold_answers)
