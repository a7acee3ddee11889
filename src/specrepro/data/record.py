"""The prompt record: its type, its one constructor and its key.

A prompt record is a plain JSON-serialisable dict shaped like an MT-bench question:
{"question_id", "dataset", "turns", "few_shot", "system", "answer_format", "reference",
"conversation"}. answer_format says where an answer ends (specrepro.answers: "free", "line" or
"sql"); conversation, when not null, is the prompt format the record is written for
(prompting.CONVERSATIONS), overriding the pair's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypedDict

from specrepro.answers import check_format
from specrepro.prompting import check_conversation


class FewShot(TypedDict):
    user: str
    assistant: str


class PromptRecord(TypedDict):
    question_id: str
    dataset: str
    turns: list[str]
    few_shot: list[FewShot]
    system: str | None
    answer_format: str
    reference: dict[str, Any]
    conversation: str | None


def make_record(
    question_id: str | int,
    dataset: str,
    turns: Sequence[str],
    few_shot: Sequence[FewShot] = (),
    system: str | None = None,
    answer_format: str = "free",
    reference: dict[str, Any] | None = None,
    conversation: str | None = None,
) -> PromptRecord:
    """A prompt record with every field present, in the canonical key order."""
    return {
        "question_id": str(question_id),
        "dataset": dataset,
        "turns": list(turns),
        "few_shot": [{"user": s["user"], "assistant": s["assistant"]} for s in few_shot],
        "system": system,
        "answer_format": check_format(answer_format),
        "reference": dict(reference or {}),
        "conversation": None if conversation is None else check_conversation(conversation),
    }


def record_key(record: PromptRecord) -> str:
    """Key unique across datasets (question ids alone may collide between datasets)."""
    return f"{record['dataset']}:{record['question_id']}"
