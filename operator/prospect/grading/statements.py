"""Finding final-answer statements ("The answer is", "Answer:") quickly.

A case-insensitive regular expression tried at every position of a response is most of the
cost of marking it. Instead, the statement's leading words are found by plain substring search
in the lowercased response, and the expression only confirms a statement where one of them
occurs.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

__all__ = ["statement_ends"]


def statement_ends(
    text: str, *, words: Sequence[str], pattern: re.Pattern[str], markers: Sequence[str] = ()
) -> list[int]:
    """Where each statement ends in `text`, the last one first.

    Args:
        text: The response.
        words: Lowercase words a statement starts with ("answer"); `pattern` must match the
            lowercased text at each occurrence for it to count.
        pattern: The whole statement, compiled with re.IGNORECASE.
        markers: Literal, case-sensitive statements ("####").
    """
    lowered = text.lower()
    if len(lowered) != len(text):
        # A few characters lowercase to two ("\u0130"), so positions would not line up.
        ends = [m.end() for m in pattern.finditer(text)]
    else:
        ends = []
        for word in words:
            start = lowered.find(word)
            while start >= 0:
                statement = pattern.match(lowered, start)
                if statement is not None:
                    ends.append(statement.end())
                start = lowered.find(word, start + len(word))
    for marker in markers:
        start = text.find(marker)
        while start >= 0:
            ends.append(start + len(marker))
            start = text.find(marker, start + len(marker))
    ends.sort(reverse=True)
    return ends
