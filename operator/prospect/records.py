"""The records that pass between stages: benchmark items, graded answers, set-aside rows.

Each stage reads and writes these as JSON lines, so a stage can run as a local process or as a
pod and resume from what an earlier attempt left.
"""

from __future__ import annotations

import hashlib
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "BenchmarkItem",
    "Extraction",
    "GradedRecord",
    "SetAside",
    "Split",
    "Verdict",
    "split_of",
]


class Verdict(StrEnum):
    """What the supervisor says. Unparseable counts as wrong, flagged as such."""

    CORRECT = "correct"
    INCORRECT = "incorrect"
    UNPARSEABLE = "unparseable"

    @property
    def is_correct(self) -> bool:
        return self is Verdict.CORRECT


class Extraction(StrEnum):
    """How the final answer was read from a response."""

    RULE = "rule"  # the grader's own rules found it
    EXTRACTOR = "extractor"  # the supervisory LLM mapped it onto the answer space
    NONE = "none"  # nothing could be read


class Split(StrEnum):
    TRAIN = "train"
    HELD_OUT = "held-out"


def split_of(item_id: str, held_out_fraction: float) -> Split:
    """A stable split by the hash of the item id: the same id lands in the same split on every
    machine and every run, whatever the order or the limit."""
    digest = hashlib.sha256(item_id.encode()).digest()
    bucket = int.from_bytes(digest[:8], "big") / 2**64
    return Split.HELD_OUT if bucket < held_out_fraction else Split.TRAIN


class BenchmarkItem(BaseModel):
    """One exam question with its gold answer, normalised across benchmarks.

    `gold` is the canonical gold answer: a number as a string (numeric), a choice label
    (multiple choice), or the first accepted alias (short answer); `aliases` lists every
    accepted short answer. `reference` is a worked gold solution when the benchmark has one
    (GSM8K), used as the chosen side of a preference pair when both competitors were wrong.
    """

    model_config = ConfigDict(frozen=True)

    id: str
    question: str
    gold: str
    kind: str = Field(description="numeric, multiple-choice or short-answer")
    choices: list[str] = Field(default_factory=list)
    labels: list[str] = Field(default_factory=list)
    aliases: list[str] = Field(default_factory=list)
    reference: str | None = None
    source_row: int = Field(description="0-based row in the source file (for provenance)")
    split: Split = Split.TRAIN
    meta: dict[str, Any] = Field(default_factory=dict)


class SetAside(BaseModel):
    """A benchmark row that could not become an item, with the reason."""

    source: str
    row: int
    reason: str


class GradedRecord(BaseModel):
    """One competitor's answer to one item, as the supervisor marked it."""

    item_id: str
    role: str
    model: str
    split: Split
    prompt: str
    response: str
    extracted: str | None
    gold: str
    verdict: Verdict
    extraction: Extraction
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_seconds: float = 0.0
    finish_reason: str | None = None
    error: str | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.item_id, self.role)
