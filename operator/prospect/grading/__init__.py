"""The supervisor: an exam marker that reads each answer's final answer and compares it, by
code, with the gold answer. It never judges quality, style or reasoning.

A verdict is one of correct, incorrect or unparseable (no final answer could be read). The
rules for each answer space live in :mod:`.numeric`, :mod:`.choice` and :mod:`.short_answer`.
When an optional supervisory LLM is configured, it only maps an answer the rules could not read
onto the answer space ("B", "18", "none"); :meth:`Supervisor.mark_extracted` reads its reply
with the same rules, so the verdict is still computed here.

Marking is on the hot path of the grading stage (every answer of both competitors), so a
:class:`Marking` is a plain named tuple and the regular expressions are compiled once.
"""

from __future__ import annotations

from typing import NamedTuple

from prospect.benchmarks import ANSWER_KIND
from prospect.grading import choice, numeric, short_answer
from prospect.records import BenchmarkItem, Extraction, Verdict
from prospect.spec import BenchmarkFormat, GraderKind

__all__ = ["Marking", "Supervisor", "grader_for"]


class Marking(NamedTuple):
    """What the supervisor read from one answer and what it concluded."""

    extracted: str | None
    """The final answer as read: a canonical number, a label, or the short answer's text."""
    verdict: Verdict
    extraction: Extraction


_UNREAD = Marking(None, Verdict.UNPARSEABLE, Extraction.NONE)
_NONE_REPLIES = frozenset({"", "none", "n/a", "na", "null", "no answer", "unknown"})


def grader_for(format: BenchmarkFormat, grader: GraderKind) -> str:
    """The grader that marks a benchmark: the one the spec names, or the format's own for auto."""
    if grader is GraderKind.AUTO:
        return ANSWER_KIND[format].value
    return grader.value


class Supervisor:
    """Marks answers in one answer space against each item's gold answer.

    Args:
        kind: numeric, multiple-choice or short-answer (resolve auto with :func:`grader_for`).
        numeric_tolerance: Relative tolerance when comparing numbers (absolute near zero).

    Raises:
        ValueError: `kind` is auto or not an answer space.
    """

    __slots__ = ("_read", "kind", "numeric_tolerance")

    def __init__(self, kind: GraderKind | str, numeric_tolerance: float = 1e-6) -> None:
        resolved = GraderKind(kind)
        if resolved is GraderKind.AUTO:
            raise ValueError("the supervisor needs a resolved grader; use grader_for() on auto")
        self.kind = resolved
        self.numeric_tolerance = numeric_tolerance
        readers = {
            GraderKind.NUMERIC: self._numeric,
            GraderKind.MULTIPLE_CHOICE: self._choice,
            GraderKind.SHORT_ANSWER: self._short_answer,
        }
        self._read = readers[resolved]

    def mark(self, item: BenchmarkItem, response: str) -> Marking:
        """Read a competitor's response and compare its final answer with the gold answer."""
        return self._read(item, response, Extraction.RULE)

    def mark_extracted(self, item: BenchmarkItem, extractor_output: str) -> Marking:
        """Read the supervisory LLM's short reply ("B", "18", "none") with the same rules.

        A reply of "none" (or an empty one) means the extractor found no answer either.
        """
        if extractor_output.strip().strip(".").lower() in _NONE_REPLIES:
            return _UNREAD
        return self._read(item, extractor_output, Extraction.EXTRACTOR)

    def _numeric(self, item: BenchmarkItem, text: str, how: Extraction) -> Marking:
        found = numeric.read(text)
        if found is None:
            return _UNREAD
        answer, value = found
        correct = numeric.same_number(value, item.gold, self.numeric_tolerance)
        return Marking(answer, Verdict.CORRECT if correct else Verdict.INCORRECT, how)

    def _choice(self, item: BenchmarkItem, text: str, how: Extraction) -> Marking:
        label = choice.read(text, item.labels, item.choices)
        if label is None:
            return _UNREAD
        return Marking(label, Verdict.CORRECT if label == item.gold else Verdict.INCORRECT, how)

    def _short_answer(self, item: BenchmarkItem, text: str, how: Extraction) -> Marking:
        answer = short_answer.final_answer(text)
        if answer is None:
            return _UNREAD
        correct = short_answer.matches(answer, item.aliases or (item.gold,))
        if correct is None:
            return _UNREAD
        return Marking(answer, Verdict.CORRECT if correct else Verdict.INCORRECT, how)
