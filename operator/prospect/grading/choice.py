"""Reading a multiple-choice final answer (ARC, MMLU, TruthfulQA, the generic format).

Only the item's own labels count ("A"-"D", "A"-"E", "1"-"4"...); a letter that is not one of
them is not an answer. Three kinds of evidence are tried in order, and the first kind that
names any option decides:

1. **Explicit final-answer statements**: "The answer is (C).", "Answer: B", "**Answer:** C",
   "the correct option is B", "#### B". The last statement in the response wins, so "The
   answer is A. Actually B" reads A (the afterthought is not a statement) and a model that
   restates its answer at the end is read at the end. A statement that names two options
   ("The answer is B or C", "answer: A, D") makes the response unparseable.
2. **Label lines**: a line that is only a label ("B", "(B)", "**B.**") or that starts with
   "B." / "B)" / "(B)" followed by text. If such lines name two different options (a model
   going through A, B, C in turn), the response is unparseable.
3. **Option text**: the last non-empty line contains exactly one option's text as whole words
   (case, punctuation other than hyphens, and the articles a, an, the ignored). An option
   contained in another matching option ("water" in "water vapor") gives way to the longer one.

Bare "A" and "I" are English words, so they count as a label only when not followed by a
lowercase word ("The answer is A tree" is not read; "The answer is A." is). Lowercase labels
count only in parentheses ("(b)"). Digit labels at the start of a line count only when the
line is the label alone, since "1." usually starts a numbered step.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache

from prospect.grading.statements import statement_ends

__all__ = ["read"]

_LABEL = r"[A-Za-z]|\d{1,2}"
_STATEMENT = re.compile(
    r"(?:answer|choice|option)[*_]*\s*(?:is|would be|should be|must be|will be|:|=)",
    re.IGNORECASE,
)
_STATEMENT_WORDS = ("answer", "choice", "option")
_TOKEN = re.compile(
    rf"[\s*_:]*(?:\((?P<paren>{_LABEL})\)|\[(?P<bracket>{_LABEL})\]"
    rf"|(?P<bare>[A-Z]|\d{{1,2}})(?![\w'\u2019]))"
)
_FOLLOWED_BY_WORD = re.compile(r"[ \t]+[a-z]")
_ALSO = re.compile(
    rf"[\s*_]*(?:,|/|&|\bor\b|\band\b)[\s*_]*(?:\((?P<paren>{_LABEL})\)|(?P<bare>[A-Z]|\d{{1,2}})"
    r"(?![\w'\u2019]))"
)
_LABEL_LINE = re.compile(
    rf"^[ \t>*_#-]*(?:\((?P<paren>{_LABEL})\)|(?P<bare>[A-Z]|\d{{1,2}})(?=[.):\]]|[ \t*_]*$))",
    re.MULTILINE,
)
_LINE_REST = " \t*_.):]"
# Punctuation becomes a space so option text matches as whole words. The hyphen stays: it
# tells "-10°C" from "10°C" (ARC MCAS_2003_8_26) and keeps "T-cells" one word.
_PUNCTUATION = str.maketrans(
    {c: " " for c in "!\"#$%&'()*+,./:;<=>?@[\\]^_`{|}~\u2018\u2019\u201c\u201d"}
)
_ARTICLES = frozenset({"a", "an", "the"})


class Ambiguous(Exception):
    """The response names two different options where one was expected."""


def read(text: str, labels: Sequence[str], choices: Sequence[str]) -> str | None:
    """The label of the option a response chose, or None when it chose none or two."""
    try:
        return (
            _statement(text, labels)
            or _label_lines(text, labels)
            or _option_text(text, labels, choices)
        )
    except Ambiguous:
        return None


def _statement(text: str, labels: Sequence[str]) -> str | None:
    ends = statement_ends(text, words=_STATEMENT_WORDS, pattern=_STATEMENT, markers=("####",))
    for end in ends:
        token = _TOKEN.match(text, end)
        if token is None:
            continue
        label = (token["paren"] or token["bracket"] or token["bare"]).upper()
        if label not in labels:
            continue
        also = _ALSO.match(text, token.end())
        if also is not None:
            other = (also["paren"] or also["bare"]).upper()
            if other in labels and other != label:
                raise Ambiguous
        if token["bare"] in ("A", "I") and _FOLLOWED_BY_WORD.match(text, token.end()):
            continue
        return label
    return None


def _label_lines(text: str, labels: Sequence[str]) -> str | None:
    found = None
    for line in _LABEL_LINE.finditer(text):
        label = (line["paren"] or line["bare"]).upper()
        if label not in labels:
            continue
        if label.isdigit() and not _alone(text, line.end()):
            continue
        if line["bare"] in ("A", "I") and _FOLLOWED_BY_WORD.match(text, line.end()):
            continue
        if found is not None and found != label:
            raise Ambiguous
        found = label
    return found


def _alone(text: str, end: int) -> bool:
    line_end = text.find("\n", end)
    rest = text[end : line_end if line_end >= 0 else len(text)]
    return not rest.strip(_LINE_REST)


def _option_text(text: str, labels: Sequence[str], choices: Sequence[str]) -> str | None:
    line = _last_line(text)
    if not line or not choices:
        return None
    haystack = f" {_normalize(line)} "
    matched = [
        (label, option)
        for label, option in zip(labels, map(_normalize, choices), strict=False)
        if option and f" {option} " in haystack
    ]
    # An option inside a longer matching option ("water" in "water vapor") is not evidence.
    matched = [
        (label, option)
        for label, option in matched
        if not any(option != other and f" {option} " in f" {other} " for _, other in matched)
    ]
    if len({label for label, _ in matched}) > 1:
        raise Ambiguous
    return matched[0][0] if matched else None


def _last_line(text: str) -> str:
    for line in reversed(text.splitlines()):
        if line.strip():
            return line
    return ""


@lru_cache(maxsize=65536)
def _normalize(text: str) -> str:
    words = text.lower().translate(_PUNCTUATION).split()
    return " ".join(word for word in words if word not in _ARTICLES)
