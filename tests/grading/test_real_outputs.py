"""The supervisor on real answers that SmolLM2-135M-Instruct and Gemma 3 270M gave to GSM8K and
ARC-Easy items through vLLM in this project's runs (tests/grading/data/real_outputs.jsonl).

Each answer's expected final answer was read by a person; the verdict follows from the
benchmark's own gold answer, never from the file.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from prospect.grading import Supervisor
from prospect.records import Extraction, Verdict

CASES = [
    json.loads(line)
    for line in (Path(__file__).parent / "data" / "real_outputs.jsonl").read_text().splitlines()
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c['role']}-{c['item_id']}")
def test_a_real_model_answer_is_read_and_marked_against_the_gold_answer(case, gsm8k, arc):
    item = (gsm8k if case["benchmark"] == "gsm8k" else arc)[case["item_id"]]
    supervisor = Supervisor("numeric" if case["benchmark"] == "gsm8k" else "multiple-choice")

    marking = supervisor.mark(item, case["response"])

    assert marking.extracted == case["expected"], case["what"]
    if case["expected"] is None:
        assert marking.verdict is Verdict.UNPARSEABLE
        assert marking.extraction is Extraction.NONE
    else:
        same = (
            float(case["expected"]) == float(item.gold)
            if item.kind == "numeric"
            else (case["expected"] == item.gold)
        )
        assert marking.verdict is (Verdict.CORRECT if same else Verdict.INCORRECT)
        assert marking.extraction is Extraction.RULE


def test_the_real_answers_cover_right_wrong_and_unreadable_for_both_models(gsm8k, arc):
    verdicts = set()
    for case in CASES:
        item = (gsm8k if case["benchmark"] == "gsm8k" else arc)[case["item_id"]]
        kind = "numeric" if case["benchmark"] == "gsm8k" else "multiple-choice"
        verdicts.add((case["role"], Supervisor(kind).mark(item, case["response"]).verdict))
    assert {v for _, v in verdicts} == set(Verdict)
    assert {r for r, _ in verdicts} == {"large", "small"}
