"""How far apart two sets of verdicts on the same items are, and whether that is a real gap.

Small models on a few dozen questions are often statistically tied, whatever their sizes. So the
report never assumes the larger competitor wins: it gives each accuracy with a Wilson 95%
interval, the paired difference on the items both answered with an Agresti-Min interval, and an
exact McNemar test on the items where they disagree. The competitors are called distinct only
when that test rejects a tie at the 5% level.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass

from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.proportion import proportion_confint

__all__ = ["Accuracy", "PairedComparison", "accuracy", "compare"]

_Z95 = 1.959963984540054


@dataclass(frozen=True)
class Accuracy:
    correct: int
    total: int
    value: float
    low: float
    high: float

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def accuracy(correct: int, total: int) -> Accuracy:
    """Share correct with a Wilson 95% interval (sensible at 0, at n and for small n)."""
    if total == 0:
        return Accuracy(0, 0, math.nan, math.nan, math.nan)
    low, high = proportion_confint(correct, total, alpha=0.05, method="wilson")
    return Accuracy(correct, total, correct / total, float(low), float(high))


@dataclass(frozen=True)
class PairedComparison:
    """A against B on the items both answered."""

    items: int
    both_correct: int
    both_wrong: int
    only_a: int
    only_b: int
    difference: float  # accuracy of A minus accuracy of B
    low: float
    high: float
    p_value: float

    @property
    def ties(self) -> int:
        """Items on which both got the same verdict."""
        return self.both_correct + self.both_wrong

    @property
    def distinct(self) -> bool:
        return self.items > 0 and self.p_value < 0.05

    def as_dict(self) -> dict[str, float | int | bool]:
        return {**asdict(self), "ties": self.ties, "distinct": self.distinct}


def compare(a: Mapping[str, bool], b: Mapping[str, bool]) -> PairedComparison:
    """Compare two verdict maps (item id -> correct) on the items present in both."""
    shared = sorted(set(a) & set(b))
    both_correct = sum(1 for i in shared if a[i] and b[i])
    both_wrong = sum(1 for i in shared if not a[i] and not b[i])
    only_a = sum(1 for i in shared if a[i] and not b[i])
    only_b = sum(1 for i in shared if b[i] and not a[i])
    n = len(shared)
    if n == 0:
        return PairedComparison(0, 0, 0, 0, 0, math.nan, math.nan, math.nan, math.nan)

    difference = (only_a - only_b) / n
    low, high = _agresti_min(only_a, only_b, n)
    table = [[both_correct, only_a], [only_b, both_wrong]]
    p_value = float(mcnemar(table, exact=True).pvalue) if only_a + only_b else 1.0
    return PairedComparison(
        n, both_correct, both_wrong, only_a, only_b, difference, low, high, p_value
    )


def _agresti_min(only_a: int, only_b: int, n: int) -> tuple[float, float]:
    """Agresti-Min (2005) interval for a paired difference of proportions: a Wald interval
    on the table with half a count added to every cell, which keeps it honest for small n."""
    b, c, m = only_a + 0.5, only_b + 0.5, n + 2.0
    diff = (b - c) / m
    se = math.sqrt(max((b + c) - (b - c) ** 2 / m, 0.0)) / m
    return max(diff - _Z95 * se, -1.0), min(diff + _Z95 * se, 1.0)
