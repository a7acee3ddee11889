"""SQuAD v1.1 dev: 1-shot extractive QA, answer on one line.

The prompt is a completion prompt ("Context: ...\nQuestion: ...\nAnswer:", after one worked
example in the same form, as the DSBD paper prompts it), for every model: the default 135M
instruct target, asked in its chat template, answers in full sentences and scored 2.5% exact
match on 40 dev questions outside the evaluated subset; as a completion it answers with a span
and scored 10% (README, "SQuAD prompt").
"""

from __future__ import annotations

import json
from pathlib import Path

from specrepro.data.fetch import DataError
from specrepro.data.record import FewShot, PromptRecord, make_record

SQUAD_FILE = "squad/dev-v1.1.json"

# Written for this project (not from SQuAD) so that no dev question leaks into the prompt.
SQUAD_EXAMPLE_CONTEXT = (
    "The Harwick Viaduct is a brick railway bridge that crosses the valley of the River Lenn. "
    "Construction began in 1868 and took five years, employing about 900 workers. The "
    "viaduct was designed by the engineer Thomas Aldridge and has 27 arches, the tallest "
    "of which rises 31 metres above the river."
)
SQUAD_EXAMPLE_QUESTION = "Who designed the Harwick Viaduct?"
SQUAD_EXAMPLE_ANSWER = "Thomas Aldridge"


def squad_user_message(context: str, question: str) -> str:
    """The prompt for one context and question (the few-shot example uses it too)."""
    return f"Context: {context.strip()}\nQuestion: {question.strip()}\nAnswer:"


SQUAD_FEW_SHOT: tuple[FewShot, ...] = (
    {
        "user": squad_user_message(SQUAD_EXAMPLE_CONTEXT, SQUAD_EXAMPLE_QUESTION),
        "assistant": SQUAD_EXAMPLE_ANSWER,
    },
)


def load_squad(data_dir: Path) -> list[PromptRecord]:
    """One record per question, in file order; reference holds the gold answer texts."""
    path = Path(data_dir) / SQUAD_FILE
    if not path.is_file():
        raise DataError(f"squad: {SQUAD_FILE} not found in {data_dir}; fetch the data first")
    try:
        articles = json.loads(path.read_text(encoding="utf-8"))["data"]
        records = [
            make_record(
                qa["id"],
                "squad",
                [squad_user_message(paragraph["context"], qa["question"])],
                few_shot=SQUAD_FEW_SHOT,
                answer_format="line",
                conversation="completion",
                reference={
                    "answers": [a["text"] for a in qa["answers"]],
                    "title": article["title"],
                },
            )
            for article in articles
            for paragraph in article["paragraphs"]
            for qa in paragraph["qas"]
        ]
    except (ValueError, KeyError, TypeError) as exc:
        raise DataError(f"squad: malformed {path}: {exc!r}") from exc
    return records
