"""How many answers per second the supervisor marks on one CPU core.

The responses are built from real benchmark rows in the shapes models write them: worked
GSM8K solutions (right, wrong, without a final statement, with "$1,234"-style numbers), ARC
answers (a letter alone, an explanation ending "The answer is X.", the option's text, two
options at once) and NQ-open short answers (the phrase, a sentence around it, a wrong one).
Each kind is timed alone and all three mixed; the best of several rounds is reported, since
the slower rounds measure the machine's other tenants rather than the grader.

    python bench/grader_throughput.py            # print the table
    python bench/grader_throughput.py --check    # and exit 1 below 100,000 answers/second

GSM8K and ARC-Easy come from examples/benchmarks; NQ-open from the shared benchmark folder
(--shared, or PROSPECT_SHARED_BENCHMARKS); without it the short-answer row is left out.
"""

from __future__ import annotations

import argparse
import collections
import os
import random
import statistics
import sys
import time
from pathlib import Path

from prospect.benchmarks import load_benchmark
from prospect.grading import Supervisor
from prospect.records import BenchmarkItem
from prospect.spec import BenchmarkSpec

ROOT = Path(__file__).resolve().parent.parent
# The shared benchmark folder beside the checkout.
DEFAULT_SHARED = str(ROOT.parent / "shared" / "benchmarks")
TARGET = 100_000

Case = tuple[Supervisor, BenchmarkItem, str]


def numeric_cases(items: list[BenchmarkItem], rng: random.Random) -> list[Case]:
    supervisor = Supervisor("numeric")
    cases = []
    for item in items:
        gold = int(float(item.gold))
        working = (item.reference or "").rsplit("\n", 1)[0]
        responses = [
            item.reference or f"The answer is {gold}.",
            f"{working}\nThe answer is {gold + rng.choice([-2, -1, 1, 10])}.",
            f"{working}\nSo in the end that comes to {gold}",
            f"Adding everything up, the total is ${gold:,}.\nThe answer is ${gold:,}.",
        ]
        cases += [(supervisor, item, response) for response in responses]
    return cases


def choice_cases(items: list[BenchmarkItem], rng: random.Random) -> list[Case]:
    supervisor = Supervisor("multiple-choice")
    cases = []
    for item in items:
        text = item.choices[item.labels.index(item.gold)]
        other = rng.choice([label for label in item.labels if label != item.gold])
        responses = [
            item.gold,
            f"{text} is the best fit: the other options do not explain what the question "
            f"describes, and only this one is consistent with it.\nThe answer is {item.gold}.",
            f"({other}) {item.choices[item.labels.index(other)]}",
            f"Looking at each option in turn, {text.lower().rstrip('.')} matches what the "
            f"question describes, so that is the one.\n{text}",
            f"It could be either of two options here, since both seem to fit the situation "
            f"described in the question.\nThe answer is {item.gold} or {other}.",
        ]
        cases += [(supervisor, item, response) for response in responses]
    return cases


def short_answer_cases(items: list[BenchmarkItem], rng: random.Random) -> list[Case]:
    supervisor = Supervisor("short-answer")
    cases = []
    for item in items:
        wrong = rng.choice(["Paris", "1969", "George Washington", "the Pacific Ocean"])
        responses = [
            f"The answer is {item.gold}.",
            f"The question asks about a well-known fact. Most reference works and news "
            f"reports agree on it, and I recall it clearly.\nThe answer is {item.gold}.",
            f"Thinking about the question, several candidates come to mind, but the most "
            f"commonly cited one is this.\nThe answer is {wrong}.",
            f"According to most sources it was {item.aliases[-1]}.",
        ]
        cases += [(supervisor, item, response) for response in responses]
    return cases


def load(format: str, path: Path, limit: int) -> list[BenchmarkItem]:
    spec = BenchmarkSpec(format=format, source=str(path), limit=limit, seed=0)
    return load_benchmark(spec, base_dir=ROOT, held_out_fraction=0.0).items


def rate(cases: list[Case], rounds: int, repeat: int) -> tuple[float, float]:
    """(best, median) answers per second over `rounds` timings of `repeat` passes."""
    rates = []
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(repeat):
            for supervisor, item, response in cases:
                supervisor.mark(item, response)
        rates.append(len(cases) * repeat / (time.perf_counter() - started))
    return max(rates), statistics.median(rates)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help=f"exit 1 below {TARGET:,}/s")
    parser.add_argument("--items", type=int, default=300, help="items per benchmark")
    parser.add_argument("--rounds", type=int, default=7, help="timed rounds per row")
    parser.add_argument(
        "--shared",
        type=Path,
        default=Path(os.environ.get("PROSPECT_SHARED_BENCHMARKS", DEFAULT_SHARED)),
        help="folder holding nq-open/dev.jsonl",
    )
    args = parser.parse_args()

    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    rng = random.Random(0)
    examples = ROOT / "examples" / "benchmarks"

    rows: dict[str, list[Case]] = {
        "numeric (gsm8k)": numeric_cases(
            load("gsm8k", examples / "gsm8k/test.jsonl", args.items), rng
        ),
        "multiple-choice (arc-easy)": choice_cases(
            load("arc", examples / "arc-easy/test.jsonl", args.items), rng
        ),
    }
    nq = args.shared / "nq-open" / "dev.jsonl"
    if nq.is_file():
        rows["short-answer (nq-open)"] = short_answer_cases(load("nq-open", nq, args.items), rng)
    else:
        print(f"no {nq}: short answers left out", file=sys.stderr)
    mixed = [case for cases in rows.values() for case in cases]
    rng.shuffle(mixed)
    rows["mix"] = mixed

    print(f"{'responses':<28} {'n':>6} {'chars':>6} {'best/s':>10} {'median/s':>10}  verdicts")
    below = []
    for name, cases in rows.items():
        verdicts = collections.Counter(s.mark(i, r).verdict.value for s, i, r in cases)
        repeat = max(1, 20_000 // len(cases))
        best, median = rate(cases, args.rounds, repeat)
        chars = statistics.mean(len(response) for _, _, response in cases)
        shares = " ".join(f"{v}={n / len(cases):.0%}" for v, n in sorted(verdicts.items()))
        print(f"{name:<28} {len(cases):>6} {chars:>6.0f} {best:>10,.0f} {median:>10,.0f}  {shares}")
        if best < TARGET:
            below.append(name)

    if args.check and below:
        print(f"below {TARGET:,} answers/s: {', '.join(below)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
