"""Where a task's answer starts and ends in generated text.

One definition serves both the stop rule (which token ends a generation, hence how many tokens
count) and the scorers (which text is the answer), so they never disagree. Answer formats:

- "free": no task boundary (MT-bench); only EOS and the token budget end a generation.
- "line": the first line with content (SQuAD). A line holding only decoration, an opening
  code fence or a label such as "Answer:", is not yet the answer.
- "sql": one SQL statement (Spider). It may span lines and ends at a semicolon outside
  quotes, a closing code fence, or a blank line after the statement has begun.
"""

from __future__ import annotations

import re

ANSWER_FORMATS = ("free", "line", "sql")

# An opening fence may carry a language tag; "```SELECT" keeps its "SELECT".
_FENCE_OPEN = re.compile(r"^```(?:(?:sqlite|sql|text|plaintext)(?=\s|$))?", re.IGNORECASE)
_LABEL = re.compile(r"^(?:answer|sqlite|sql|query)\s*:\s*", re.IGNORECASE)
_QUOTES = frozenset("'\"")


def check_format(answer_format: str) -> str:
    if answer_format not in ANSWER_FORMATS:
        raise ValueError(f"answer format must be one of {ANSWER_FORMATS}, got {answer_format!r}")
    return answer_format


def strip_decorations(line: str) -> str:
    """A line without surrounding whitespace, opening/closing fences and a leading label."""
    previous = None
    line = line.strip()
    # Labels and fences come in either order ("SQL: ```sql ..."), so peel until stable.
    while line != previous:
        previous = line
        line = _FENCE_OPEN.sub("", line).strip()
        line = _LABEL.sub("", line).strip()
        if line.endswith("```"):
            line = line[:-3].strip()
    return line


class AnswerScanner:
    """Reads generated text piece by piece and reports the character that ends the answer."""

    def __init__(self, answer_format: str) -> None:
        self.format = check_format(answer_format)
        self.line = ""  # the current line so far
        self.started = False  # a line with content was completed (or the current one has some)
        self.quote: str | None = None  # inside a quoted SQL literal or identifier
        self.ended = False

    def feed(self, text: str) -> int | None:
        """Index in `text` of the character that ends the answer, or None if it goes on."""
        if self.format == "free" or self.ended:
            return None
        for i, char in enumerate(text):
            if self._ends_at(char):
                self.ended = True
                return i
        return None

    def _ends_at(self, char: str) -> bool:
        if char == "\n":
            line, self.line = self.line, ""
            content = bool(strip_decorations(line))
            if self.format == "line":
                return content
            blank_after_statement = self.started and not line.strip() and self.quote is None
            self.started = self.started or content
            return blank_after_statement
        self.line += char
        if self.format == "line":
            return False
        # Content before this character (backticks aside, which may be a fence in the making).
        in_statement = self.started or bool(strip_decorations(self.line[:-1].rstrip("`")))
        if char in _QUOTES and in_statement:
            self.quote = None if self.quote == char else (self.quote or char)
            return False
        if self.quote is not None:
            return False
        if char == ";" and in_statement:
            return True
        # A fence after the statement began closes it; before, it opens it.
        return self.line.endswith("```") and in_statement


def answer_text(text: str, answer_format: str) -> str:
    """The answer inside a generation: "line" its first content line, "sql" the statement
    (one line, without fences, label or semicolon), "free" the whole text stripped."""
    check_format(answer_format)
    if answer_format == "free":
        return text.strip()
    scanner = AnswerScanner(answer_format)
    end = scanner.feed(text)
    body = text if end is None else text[: end + 1]
    lines = [strip_decorations(line) for line in body.splitlines()]
    lines = [line for line in lines if line]
    if answer_format == "line":
        return lines[0] if lines else ""
    statement = " ".join(lines)
    return statement.rstrip(";").strip()
