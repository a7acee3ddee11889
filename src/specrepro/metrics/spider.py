"""Spider execution accuracy: run gold and predicted SQL on the sqlite database and compare."""

from __future__ import annotations

import re
import sqlite3
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

_ORDER_BY = re.compile(r"\border\s+by\b", re.IGNORECASE)

# Memory bounds for scoring untrusted SQL: a cross join can return tens of millions of rows
# within the timeout, and printf/zeroblob can build gigabyte strings in one call.
MAX_ROWS = 100_000
MAX_VALUE_BYTES = 1_000_000  # sqlite's own per-string/blob limit on the scoring connection
_FETCH_CHUNK = 10_000
_DENIED_FUNCTIONS = frozenset(
    {"zeroblob", "randomblob", "printf", "format", "load_extension", "readfile", "writefile"}
)

# VM instructions between deadline checks: frequent enough for sub-second timeouts,
# rare enough that the Python callback costs nothing measurable.
_PROGRESS_STEPS = 1000


@dataclass(frozen=True)
class ExecResult:
    """Outcome of comparing one predicted query with its gold query."""

    match: bool
    pred_error: str | None = None
    gold_error: str | None = None
    ordered: bool = False


def _top_level_text(sql: str) -> str:
    """The query with strings, quoted identifiers, comments and parenthesised parts blanked.

    What remains is the outermost statement, so an ORDER BY inside a subquery or a window
    (OVER (ORDER BY ...)) does not make the comparison ordered.
    """
    out: list[str] = []
    depth = 0
    i, n = 0, len(sql)
    closers = {"'": "'", '"': '"', "`": "`", "[": "]"}
    while i < n:
        ch = sql[i]
        if ch in closers:
            end = sql.find(closers[ch], i + 1)
            i = n if end == -1 else end + 1
            out.append(" ")
        elif sql.startswith("--", i):
            end = sql.find("\n", i)
            i = n if end == -1 else end + 1
            out.append(" ")
        elif sql.startswith("/*", i):
            end = sql.find("*/", i + 2)
            i = n if end == -1 else end + 2
            out.append(" ")
        else:
            if ch == "(":
                depth += 1
                out.append(" ")
            elif ch == ")":
                depth = max(depth - 1, 0)
                out.append(" ")
            else:
                out.append(ch if depth == 0 else " ")
            i += 1
    return "".join(out)


def has_top_level_order_by(sql: str) -> bool:
    """True if the outermost statement of ``sql`` has an ORDER BY clause."""
    return _ORDER_BY.search(_top_level_text(sql)) is not None


_READ_ACTIONS = frozenset(
    {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION, sqlite3.SQLITE_RECURSIVE}
)


def _allow_reads_only(action: int, arg1: object, arg2: object, *_: object) -> int:
    if action not in _READ_ACTIONS:
        return sqlite3.SQLITE_DENY
    if action == sqlite3.SQLITE_FUNCTION and str(arg2).lower() in _DENIED_FUNCTIONS:
        return sqlite3.SQLITE_DENY
    return sqlite3.SQLITE_OK


def _connect_read_only(db_path: Path) -> sqlite3.Connection:
    # Quoting keeps '?', '#' or '%' in a path from being read as URI syntax.
    uri = f"file:{quote(str(db_path.resolve()))}?mode=ro"
    conn = sqlite3.connect(uri, uri=True)
    # Spider has a few databases with non-UTF-8 text; a decode error must not count as
    # a failed query.
    conn.text_factory = lambda b: b.decode(errors="replace")
    # Belt and braces next to mode=ro: also refuses writes to ATTACHed databases.
    conn.execute("PRAGMA query_only = ON")
    # mode=ro does not stop ATTACH from creating a new file, so only reads may be prepared.
    conn.set_authorizer(_allow_reads_only)
    conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, MAX_VALUE_BYTES)
    return conn


def _run(
    conn: sqlite3.Connection, sql: str, timeout_s: float, max_rows: int = MAX_ROWS
) -> tuple[list[tuple], str | None]:
    """Rows of ``sql`` (at most max_rows) or an error message; never raises for a bad query."""
    deadline = time.monotonic() + timeout_s
    timed_out = False

    def past_deadline() -> int:
        nonlocal timed_out
        timed_out = time.monotonic() > deadline
        return int(timed_out)

    # The handler stays installed through fetchall because rows are produced lazily there.
    conn.set_progress_handler(past_deadline, _PROGRESS_STEPS)
    try:
        cursor = conn.execute(sql)
        rows: list[tuple] = []
        while chunk := cursor.fetchmany(_FETCH_CHUNK):
            rows += chunk
            if len(rows) > max_rows:
                return [], f"more than {max_rows} rows"
    # sqlite3.Warning: several statements at once; ValueError: NUL characters in the query.
    except (sqlite3.Error, sqlite3.Warning, ValueError, OverflowError) as exc:
        if timed_out:
            return [], f"timeout after {timeout_s:g}s"
        return [], f"{type(exc).__name__}: {exc}"
    finally:
        conn.set_progress_handler(None, _PROGRESS_STEPS)
    # A comment-only text or a non-query (BEGIN, PRAGMA x=y) yields no columns; it must not
    # "match" a gold query whose result happens to be empty.
    if cursor.description is None:
        return [], "statement returned no result columns"
    return rows, None


def execution_match(
    db_path: Path, gold_sql: str, pred_sql: str, timeout_s: float = 10.0, max_rows: int = MAX_ROWS
) -> ExecResult:
    """Execution accuracy for one question.

    Rows are compared as multisets (Counter of row tuples) unless the gold query has a
    top-level ORDER BY, in which case the ordered row lists must be equal. Values are
    compared as sqlite returns them, with no rounding.
    """
    db_path = Path(db_path)
    # sqlite would otherwise fail with a vague error, or in rw mode create an empty db and
    # make every query "match" on nothing.
    if not db_path.is_file():
        raise FileNotFoundError(f"Spider database not found: {db_path}")
    if timeout_s <= 0:
        raise ValueError(f"timeout_s must be positive, got {timeout_s}")

    ordered = has_top_level_order_by(gold_sql)
    conn = _connect_read_only(db_path)
    try:
        gold_rows, gold_error = _run(conn, gold_sql, timeout_s, max_rows)
        if not pred_sql.strip():
            return ExecResult(False, "empty prediction", gold_error, ordered)
        pred_rows, pred_error = _run(conn, pred_sql, timeout_s, max_rows)
    finally:
        conn.close()

    if gold_error is not None or pred_error is not None:
        return ExecResult(False, pred_error, gold_error, ordered)
    if ordered:
        match = pred_rows == gold_rows
    else:
        match = Counter(pred_rows) == Counter(gold_rows)
    return ExecResult(match, None, None, ordered)
