"""Real benchmark items for the grading tests: the repository's example copies of GSM8K and
ARC-Easy, and a few rows of the other benchmarks quoted with their attribution."""

from __future__ import annotations

from pathlib import Path

import pytest

from prospect.benchmarks import load_benchmark
from prospect.records import BenchmarkItem
from prospect.spec import BenchmarkSpec

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "benchmarks"


def _load(format: str, source: str) -> dict[str, BenchmarkItem]:
    spec = BenchmarkSpec(format=format, source=source)
    loaded = load_benchmark(spec, base_dir=EXAMPLES, held_out_fraction=0.0)
    return {item.id: item for item in loaded.items}


@pytest.fixture(scope="session")
def gsm8k() -> dict[str, BenchmarkItem]:
    """GSM8K test split (openai/grade-school-math, MIT), keyed by item id."""
    return _load("gsm8k", "gsm8k/test.jsonl")


@pytest.fixture(scope="session")
def arc() -> dict[str, BenchmarkItem]:
    """ARC-Easy test split (AI2, CC BY-SA 4.0), keyed by item id."""
    return _load("arc", "arc-easy/test.jsonl")


@pytest.fixture
def lyrics() -> BenchmarkItem:
    """NQ-open dev, row 1 (Google, CC BY-SA 3.0)."""
    return BenchmarkItem(
        id="nq-open-0001",
        question="who wrote he ain't heavy he's my brother lyrics",
        gold="Bobby Scott",
        aliases=["Bobby Scott", "Bob Russell"],
        kind="short-answer",
        source_row=1,
    )


@pytest.fixture
def field_extension() -> BenchmarkItem:
    """MMLU test, row 0 (Hendrycks et al., MIT): options that are bare numbers."""
    return BenchmarkItem(
        id="mmlu-0000",
        question=(
            "Find the degree for the given field extension Q(sqrt(2), sqrt(3), sqrt(18)) over Q."
        ),
        gold="B",
        choices=["0", "4", "2", "6"],
        labels=["A", "B", "C", "D"],
        kind="multiple-choice",
        source_row=0,
    )
