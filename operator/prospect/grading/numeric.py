"""Reading a numeric final answer (GSM8K and the generic numeric format).

The answer read is, in order of preference:

1. the first number after the last explicit final-answer statement that has one within
   :data:`CUE_WINDOW` characters: "The answer is", "Answer:", "answer =", "####" or
   ``\\boxed{``; when that statement works the answer out on its line ("The answer is
   20 + 1.5 = 21.5 meters"), the number after its last "=" in that sentence is the answer.
   The last statement wins, as in the usual GSM8K evaluations, so a model that corrects
   itself is read at its correction;
2. otherwise the last number in the response.

A number may carry thousands commas ("1,234"), a currency sign ("$18", "-$3"), a minus sign
("-3", or the Unicode minus U+2212), decimals ("18.00" is 18) and a trailing percent sign
("50%" is 50). A hyphen glued to a word or a digit is not a sign, so "16-3-4=9" reads 3, 4
and 9, never -3. Digits glued to letters ("x2") are not read. Commas count as thousands
separators only in groups of three, so "1,2,3" reads three numbers.

Not read: numbers written as words ("eighteen"), fractions ("3/4" reads 3 and 4), and
scientific notation. The supervisory extractor, when configured, covers what the rules miss.
"""

from __future__ import annotations

import math
import re
from collections import deque
from functools import lru_cache

from prospect.grading.statements import statement_ends

__all__ = ["CUE_WINDOW", "canonical", "gold_value", "read", "same_number"]

CUE_WINDOW = 60
"""How far after a final-answer statement its number may be ("The answer is: $1,234")."""

_NUMBER = re.compile(
    r"(?<![\w.])"  # not glued to a word or to the end of another number
    r"(?P<sign>[-\u2212]?)"
    r"[$£€]?"
    r"(?P<digits>\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)"
)
_CUE = re.compile(r"answer\s*(?:is|:|=)", re.IGNORECASE)
_CUE_WORDS = ("answer",)
_CUE_MARKERS = ("####", "\\boxed{")
_LAST_DIGIT = re.compile(r"(?s:.*)\d")


def read(text: str) -> tuple[str, float] | None:
    """The final answer in a response: its canonical text and its value, or None."""
    for cue in statement_ends(text, words=_CUE_WORDS, pattern=_CUE, markers=_CUE_MARKERS):
        # The search ends a little past the window so a number that starts inside it is read
        # whole; the longest numbers people write fit in the margin.
        match = _NUMBER.search(text, cue, cue + CUE_WINDOW + 40)
        if match is not None and match.start() < cue + CUE_WINDOW:
            return _value(_worked_out(text, match))

    match = _last_number(text)
    return _value(match) if match is not None else None


def same_number(value: float, gold: str, tolerance: float) -> bool:
    """Whether a read value equals the gold answer within a relative tolerance (which is also
    the absolute tolerance near zero, where a relative one means nothing)."""
    target = gold_value(gold)
    return math.isclose(value, target, rel_tol=tolerance, abs_tol=tolerance)


@lru_cache(maxsize=65536)
def gold_value(gold: str) -> float:
    """The value of a canonical gold answer, read with the same rules as a response."""
    found = read(gold)
    if found is None:
        raise ValueError(f"gold answer {gold!r} is not a number")
    return found[1]


def canonical(text: str) -> str | None:
    """The canonical text of the final answer in `text` ("$1,234.50" -> "1234.5")."""
    found = read(text)
    return found[0] if found is not None else None


def _worked_out(text: str, match: re.Match[str]) -> re.Match[str]:
    """The result of a calculation that follows the stated number in its sentence, if any."""
    line_end = text.find("\n", match.end())
    line_end = len(text) if line_end < 0 else line_end
    sentence_end = text.find(". ", match.end(), line_end)
    line_end = line_end if sentence_end < 0 else sentence_end
    equals = text.rfind("=", match.end(), line_end)
    if equals < 0:
        return match
    result = _NUMBER.search(text, equals + 1, line_end)
    return result if result is not None else match


def _last_number(text: str) -> re.Match[str] | None:
    # Responses are read from the end: find the last digit, back up to the whitespace before
    # it (a number never holds one, so none is cut in half), and read forward from there. A
    # digit that is not part of a number ("x2") sends the search further back.
    end = len(text)
    while True:
        digit = _LAST_DIGIT.search(text, 0, end)
        if digit is None:
            return None
        start = _token_start(text, digit.end())
        last = deque(_NUMBER.finditer(text, start), maxlen=1)
        if last:
            return last[0]
        end = start


def _token_start(text: str, end: int) -> int:
    return max(text.rfind(" ", 0, end), text.rfind("\n", 0, end), text.rfind("\t", 0, end), 0)


def _value(match: re.Match[str]) -> tuple[str, float]:
    digits = match["digits"].replace(",", "")
    if "." in digits:
        digits = digits.rstrip("0").rstrip(".") or "0"
        if digits.startswith("."):
            digits = "0" + digits
    negative = bool(match["sign"]) and digits.strip("0.") != ""
    text = f"-{digits}" if negative else digits
    return text, float(text)
