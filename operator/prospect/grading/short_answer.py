"""Reading and marking a short free-text answer (NQ-open and the generic short-answer format).

The final answer is the text after the last "The answer is" / "Answer:" statement, up to the
end of its line (or the next non-empty line when the statement ends its line); without such a
statement it is the last non-empty line of the response.

Both it and every accepted alias are normalized the way SQuAD's evaluation does: lowercase,
punctuation removed, the articles "a", "an" and "the" dropped, whitespace collapsed. The answer
is correct when

* it equals a normalized alias exactly, or
* it is short (at most :data:`SHORT_ANSWER_WORDS` words once normalized) and a normalized
  alias occurs in it as whole words: "It was written by Bobby Scott." contains "bobby scott".

The second rule credits a sentence that wraps the right phrase; the word limit keeps a long
answer that lists many candidates from being credited for one of them. A final answer that
normalizes to nothing (empty, or only punctuation) is unparseable.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache

from prospect.grading.statements import statement_ends

__all__ = ["SHORT_ANSWER_WORDS", "final_answer", "matches", "normalize"]

SHORT_ANSWER_WORDS = 12

_CUE = re.compile(r"answer[*_]*\s*(?:is|:)[*_:]*", re.IGNORECASE)
_ARTICLES = re.compile(r"\b(?:a|an|the)\b")
# ASCII punctuation as SQuAD strips it, plus the typographic quotes and dashes models write.
_PUNCTUATION = str.maketrans(
    {c: None for c in "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~\u2018\u2019\u201c\u201d\u2013\u2014"}
)
_EXTRACTED_CHARS = 200
_TRIM = " \t*_\"'`\u201c\u201d\u2018\u2019.,;:!"


def final_answer(text: str) -> str | None:
    """The final answer as written in the response (trimmed), or None when there is none.

    A statement with nothing after it ("The answer is:" at the very end) reads as no answer,
    not as its own words."""
    ends = statement_ends(text, words=("answer",), pattern=_CUE)
    if ends:
        start = ends[0]
        end = text.find("\n", start)
        answer = text[start : end if end >= 0 else len(text)].strip(_TRIM)
        if not answer and end >= 0:
            answer = _first_line(text[end:])
    else:
        answer = _last_line(text)
    answer = answer.strip(_TRIM)
    return answer[:_EXTRACTED_CHARS] if answer else None


def matches(answer: str, aliases: Sequence[str]) -> bool | None:
    """Whether a final answer matches an alias; None when it normalizes to nothing."""
    said = normalize(answer)
    if not said:
        return None
    short = said.count(" ") < SHORT_ANSWER_WORDS
    padded = f" {said} "
    for alias in aliases:
        accepted = _normalized_alias(alias)
        if not accepted:
            continue
        if said == accepted or (short and f" {accepted} " in padded):
            return True
    return False


def normalize(text: str) -> str:
    """SQuAD's answer normalization: lowercase, no punctuation, no articles, single spaces."""
    text = text.lower().translate(_PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


# Aliases repeat for every answer to the same item; responses do not.
_normalized_alias = lru_cache(maxsize=65536)(normalize)


def _first_line(text: str) -> str:
    for line in text.splitlines():
        if line.strip(_TRIM):
            return line
    return ""


def _last_line(text: str) -> str:
    end = len(text)
    while end > 0:
        start = text.rfind("\n", 0, end) + 1
        line = text[start:end]
        if line.strip(_TRIM):
            return line
        end = start - 1
    return ""
