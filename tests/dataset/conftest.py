"""Graded exams built from real GSM8K rows, as the grade stage would leave them.

`data/gsm8k-test-head.jsonl` holds the first 16 rows of GSM8K's test split (MIT licence,
github.com/openai/grade-school-math), unchanged.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from prospect.records import BenchmarkItem, Extraction, GradedRecord, Split, Verdict
from prospect.storage import Store

GSM8K_ROWS = Path(__file__).parent / "data" / "gsm8k-test-head.jsonl"
MODELS = {"large": "Qwen/Qwen2.5-1.5B-Instruct", "small": "Qwen/Qwen2.5-0.5B-Instruct"}
VERDICTS = {"C": Verdict.CORRECT, "I": Verdict.INCORRECT, "U": Verdict.UNPARSEABLE}

# One (large, small) pair of verdicts per item: C correct, I incorrect, U unparseable,
# - no record. Items 10 and 11 are held out.
STANDARD = [
    ("C", "C"),
    ("C", "I"),
    ("I", "C"),
    ("I", "U"),
    ("C", "U"),
    ("I", "I"),
    ("C", "I"),
    ("U", "U"),
    ("C", "C"),
    ("I", "C"),
    ("I", "I"),
    ("C", "I"),
]
STANDARD_HELD_OUT = {10, 11}


def prompt_for(question: str) -> str:
    return (
        "Solve the math problem. Show your reasoning, then finish with "
        '"The answer is N." where N is a number.\n\n'
        f"Problem: {question}\nSolution:"
    )


def _steps(reference: str) -> str:
    worked, _, _ = reference.partition("####")
    return "\n".join(
        line.split("<<")[0] + line.split(">>")[-1] if "<<" in line else line
        for line in worked.strip().splitlines()
    )


@dataclass
class Exam:
    items: list[BenchmarkItem]
    records: list[GradedRecord]
    verdicts: dict[tuple[str, str], Verdict]  # (item id, role) -> verdict

    @property
    def train_ids(self) -> set[str]:
        return {item.id for item in self.items if item.split is Split.TRAIN}

    def expected_incorrect(self) -> set[tuple[str, str]]:
        return {
            key
            for key, verdict in self.verdicts.items()
            if key[0] in self.train_ids and not verdict.is_correct
        }

    def store_into(self, store: Store, *, shards: int = 2) -> None:
        """Write the items and the records as the grade stage does, records spread over shards."""
        store.put_bytes("items/items.jsonl", _jsonl(self.items))
        by_shard: dict[str, list[GradedRecord]] = {}
        for index, record in enumerate(self.records):
            key = f"graded/{record.role}/shard-{index % shards:05d}.jsonl"
            by_shard.setdefault(key, []).append(record)
        for key, records in by_shard.items():
            store.put_bytes(key, _jsonl(records))


def _jsonl(models: Sequence[BenchmarkItem] | Sequence[GradedRecord]) -> bytes:
    return "".join(model.model_dump_json() + "\n" for model in models).encode()


def _answer(role: str, item: BenchmarkItem, verdict: Verdict) -> GradedRecord:
    steps = _steps(item.reference or "")
    opening = "Let's work through it step by step.\n" if role == "large" else ""
    if verdict is Verdict.CORRECT:
        response, extracted = f"{opening}{steps}\nThe answer is {item.gold}.", item.gold
    elif verdict is Verdict.INCORRECT:
        wrong = str(int(item.gold) + (7 if role == "large" else 1))
        response, extracted = f"{opening}{steps}\nThe answer is {wrong}.", wrong
    else:
        response, extracted = f"{opening}I am not sure how to finish this one.", None
    return GradedRecord(
        item_id=item.id,
        role=role,
        model=MODELS[role],
        split=item.split,
        prompt=prompt_for(item.question),
        response=response,
        extracted=extracted,
        gold=item.gold,
        verdict=verdict,
        extraction=Extraction.RULE if extracted is not None else Extraction.NONE,
        prompt_tokens=len(item.question.split()) + 30,
        completion_tokens=len(response.split()),
        latency_seconds=0.4 if role == "small" else 1.3,
        finish_reason="stop",
    )


def make_exam(
    table: Sequence[tuple[str, str]], held_out: Collection[int] = STANDARD_HELD_OUT
) -> Exam:
    """Items from the first GSM8K rows, one per table entry, with answers graded as told."""
    rows = [json.loads(line) for line in GSM8K_ROWS.read_text().splitlines()]
    if len(table) > len(rows):
        raise ValueError(f"{GSM8K_ROWS} has only {len(rows)} rows")
    items = [
        BenchmarkItem(
            id=f"gsm8k-test-{index:05d}",
            question=row["question"],
            gold=row["answer"].split("####")[-1].strip().replace(",", ""),
            kind="numeric",
            reference=row["answer"],
            source_row=index,
            split=Split.HELD_OUT if index in held_out else Split.TRAIN,
        )
        for index, row in enumerate(rows[: len(table)])
    ]
    records, verdicts = [], {}
    for item, codes in zip(items, table, strict=True):
        for role, code in zip(("large", "small"), codes, strict=True):
            if code == "-":
                continue
            verdicts[(item.id, role)] = VERDICTS[code]
            records.append(_answer(role, item, VERDICTS[code]))
    return Exam(items=items, records=records, verdicts=verdicts)


@pytest.fixture(scope="session")
def exam_of() -> Callable[..., Exam]:
    """make_exam(table, held_out): an exam graded as the table says."""
    return make_exam


@pytest.fixture
def standard_exam() -> Exam:
    return make_exam(STANDARD)
