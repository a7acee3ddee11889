"""Named scorers: how a dataset's answers become quality scores in the tidy table.

A dataset names its scorer (`datasets.NAME.scorer`; a built-in dataset has its own,
BUILTIN_SCORERS). Each scorer cuts the answer out of a generation (specrepro.answers), scores it
against the record's `reference`, and declares the tidy-table columns it fills and the quality
columns a dataset table shows for it (report/tables.py). Plain Python, no torch: the tidy step
and the config check use it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from specrepro.answers import answer_text
from specrepro.metrics import squad
from specrepro.metrics.spider import execution_match

# Every per-question quality column of the tidy table, in its order; a scorer fills some.
TIDY_COLUMNS = ("em", "f1", "exec_match", "exec_error", "exec_excluded")


@dataclass
class ScoreContext:
    """What a scorer may read besides the answer: the data folder (Spider's databases) and a
    cache of SQL executions shared by the rows of one tidy table."""

    data_dir: Path
    sql_cache: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Scorer:
    """A named scorer. `needs`: reference keys every record it scores must have (checked when
    the records are loaded); `kind`: the one dataset kind it scores, when it reads that
    dataset's files; `answer_format`: how the answer is cut out of the generation."""

    name: str
    description: str
    tidy_columns: tuple[str, ...]
    table_columns: tuple[str, ...]
    answer_format: str
    score: Callable[[str, dict, ScoreContext], dict[str, Any]]
    needs: tuple[str, ...] = ()
    kind: str | None = None

    def missing(self, reference: Any) -> str | None:
        """Why a record's reference cannot be scored, or None."""
        reference = reference if isinstance(reference, dict) else {}
        for key in self.needs:
            value = reference.get(key)
            if key == "answers" and not _is_answers(value):
                return f"scorer {self.name} needs reference.answers, a non-empty list of strings"
            if not value:
                return f"scorer {self.name} needs reference.{key}"
        return None


def _is_answers(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(a, str) for a in value)


def _answers(reference: dict) -> list[str]:
    return reference.get("answers") or []


def _exact_match(answer: str, reference: dict, ctx: ScoreContext) -> dict[str, Any]:
    return {"em": squad.exact_match(answer, _answers(reference))}


def _f1(answer: str, reference: dict, ctx: ScoreContext) -> dict[str, Any]:
    return {"f1": squad.f1(answer, _answers(reference))}


def _em_f1(answer: str, reference: dict, ctx: ScoreContext) -> dict[str, Any]:
    return {**_exact_match(answer, reference, ctx), **_f1(answer, reference, ctx)}


def _spider_exec(sql: str, reference: dict, ctx: ScoreContext) -> dict[str, Any]:
    # Imported here: the data package imports this registry to check records.
    from specrepro.data.spider import spider_db_path

    key = (reference["db_id"], reference["gold_sql"], sql)
    if key not in ctx.sql_cache:
        db = spider_db_path(ctx.data_dir, reference["db_id"])
        ctx.sql_cache[key] = execution_match(db, reference["gold_sql"], sql)
    result = ctx.sql_cache[key]
    # A gold query that fails on its own database scores nothing either way: left out of
    # execution accuracy and counted (exec_excluded; docs/measurement.md#quality-scores).
    return {
        "exec_match": None if result.excluded else int(result.match),
        "exec_excluded": int(result.excluded),
        "exec_error": result.pred_error or result.gold_error,
    }


def _nothing(answer: str, reference: dict, ctx: ScoreContext) -> dict[str, Any]:
    return {}


SQUAD_TEXT = "the answer's first line against reference.answers, SQuAD's normalisation"
SCORERS: dict[str, Scorer] = {
    s.name: s
    for s in (
        Scorer(
            "exact_match", f"exact match of {SQUAD_TEXT}, max over answers", ("em",), ("em",),
            "line", _exact_match, needs=("answers",),
        ),
        Scorer(
            "f1", f"token F1 of {SQUAD_TEXT}, max over answers", ("f1",), ("f1",), "line", _f1,
            needs=("answers",),
        ),
        Scorer(
            "squad_em_f1", f"exact match and token F1 of {SQUAD_TEXT} (SQuAD v1.1's pair)",
            ("em", "f1"), ("em", "f1"), "line", _em_f1, needs=("answers",),
        ),
        Scorer(
            "spider_exec", "execution accuracy of the SQL statement on its Spider database",
            ("exec_match", "exec_error", "exec_excluded"), ("exec_acc", "n_exec_excluded"),
            "sql", _spider_exec, needs=("db_id", "gold_sql"), kind="spider",
        ),
        Scorer("none", "not scored (free text)", (), (), "free", _nothing),
    )
}  # fmt: skip
SCORER_NAMES = tuple(sorted(SCORERS))
# The scorer of each built-in dataset (its `scorer`, when written, must be this one).
BUILTIN_SCORERS = {"mtbench": "none", "squad": "squad_em_f1", "spider": "spider_exec"}
NO_SCORER = "none"


def get_scorer(name: str) -> Scorer:
    """The scorer of that name; ValueError listing the known ones otherwise."""
    if name not in SCORERS:
        raise ValueError(f"unknown scorer {name!r}; scorers: {', '.join(SCORER_NAMES)}")
    return SCORERS[name]


def dataset_scorer(name: str, entry: dict | None = None) -> Scorer:
    """The scorer of dataset `name` with config entry `entry` (datasets.NAME): its `scorer`,
    else its built-in one, else `none`. ValueError for an unknown scorer, a built-in dataset
    given another scorer than its own, or a scorer bound to another kind."""
    entry = entry or {}
    kind = entry.get("kind", name)
    builtin = BUILTIN_SCORERS.get(kind)
    scorer = get_scorer(entry.get("scorer", builtin or NO_SCORER))
    where = f"datasets.{name}"
    if builtin is not None and scorer.name != builtin:
        raise ValueError(
            f"{where}: the built-in {kind} is scored by {builtin}, not {scorer.name}; a dataset "
            "scored otherwise is a `kind: jsonl` dataset of your own"
        )
    if scorer.kind is not None and scorer.kind != kind:
        raise ValueError(
            f"{where}: scorer {scorer.name} reads the {scorer.kind} dataset's files and scores "
            f"only it; for kind {kind} use one of {', '.join(_free_scorers())}"
        )
    return scorer


def _free_scorers() -> list[str]:
    return [n for n in SCORER_NAMES if SCORERS[n].kind is None]


def dataset_scorers(config: dict) -> dict[str, str]:
    """{dataset: scorer name} for every configured dataset."""
    return {name: dataset_scorer(name, entry).name for name, entry in config["datasets"].items()}


def score_answer(scorer: Scorer, text: str, reference: dict, ctx: ScoreContext) -> dict:
    """Every tidy quality column for one generation: the scorer's values, None elsewhere. A
    record without what the scorer needs (an old prompt file) is left unscored."""
    out: dict[str, Any] = dict.fromkeys(TIDY_COLUMNS)
    if scorer.tidy_columns and scorer.missing(reference) is None:
        out.update(scorer.score(answer_text(text, scorer.answer_format), reference, ctx))
    return out
