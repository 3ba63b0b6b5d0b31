from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from prospect.grading import Marking, Supervisor
from prospect.records import BenchmarkItem, Extraction, Verdict

supervisor = Supervisor("numeric")


def numeric_item(gold: str) -> BenchmarkItem:
    return BenchmarkItem(id="numeric-0000", question="?", gold=gold, kind="numeric", source_row=0)


def test_the_stated_final_answer_of_a_real_gsm8k_item_is_marked_correct(gsm8k):
    ducks = gsm8k["gsm8k-0000"]
    response = (
        "Janet's ducks lay 16 eggs per day. She eats 3 and bakes with 4, so 16 - 3 - 4 = 9 "
        "eggs are left. She sells them at $2 each: 9 * 2 = $18.\nThe answer is 18."
    )

    assert supervisor.mark(ducks, response) == Marking("18", Verdict.CORRECT, Extraction.RULE)


def test_a_wrong_final_answer_is_incorrect_and_reports_what_was_read(gsm8k):
    response = "She has 16 - 3 = 13 eggs left and sells them for $2 each.\nThe answer is 26."

    marking = supervisor.mark(gsm8k["gsm8k-0000"], response)

    assert marking == Marking("26", Verdict.INCORRECT, Extraction.RULE)


def test_a_gold_answer_with_thousands_commas_matches_an_answer_written_either_way(gsm8k):
    blocks = gsm8k["gsm8k-0146"]  # "#### 2,125" upstream
    assert blocks.gold == "2125"

    assert supervisor.mark(blocks, "In total Johnny picked up 2,125 blocks.").verdict is (
        Verdict.CORRECT
    )
    assert supervisor.mark(blocks, "The answer is 2125.").verdict is Verdict.CORRECT


def test_currency_thousands_and_cents_are_read_as_one_number():
    marking = supervisor.mark(numeric_item("1234.5"), "She pays $1,234.50 in total.")

    assert marking == Marking("1234.5", Verdict.CORRECT, Extraction.RULE)


@pytest.mark.parametrize(
    "response",
    [
        "The answer is 18.",
        "The answer is 18.00",
        "The answer is $18",
        "So she makes 18 dollars.\n#### 18",
        "Answer: 18",
        "The final answer is $\\boxed{18}$.",
        "**The answer is 18**",
        "18",
    ],
)
def test_common_ways_of_writing_eighteen_all_read_eighteen(gsm8k, response):
    assert supervisor.mark(gsm8k["gsm8k-0000"], response).extracted == "18"


def test_a_percentage_equals_the_plain_number():
    assert supervisor.mark(numeric_item("50"), "The answer is 50%.").verdict is Verdict.CORRECT


def test_negative_gold_answers_of_real_items_need_the_minus_sign(gsm8k):
    temperature = gsm8k["gsm8k-0489"]  # "#### -10" upstream
    assert temperature.gold == "-10"

    assert supervisor.mark(temperature, "The answer is -10.").verdict is Verdict.CORRECT
    assert supervisor.mark(temperature, "The answer is 10.").verdict is Verdict.INCORRECT


def test_a_hyphen_between_numbers_is_not_a_minus_sign():
    assert supervisor.mark(numeric_item("9"), "Left over: 16-3-4=9").extracted == "9"
    assert supervisor.mark(numeric_item("4"), "She uses 16-3-4").extracted == "4"


def test_an_explicit_final_answer_wins_over_numbers_written_after_it(gsm8k):
    response = (
        "The answer is 18.\n\nCheck: 16 eggs minus 3 for breakfast minus 4 for muffins leaves 9; "
        "9 eggs at 2 dollars is 18, which is more than the 7 she uses."
    )

    assert supervisor.mark(gsm8k["gsm8k-0000"], response).extracted == "18"


def test_the_last_final_answer_statement_wins_when_the_model_corrects_itself(gsm8k):
    response = "The answer is 14.\nWait, she sells 9 eggs, not 7: 9 * 2 = 18.\nThe answer is 18."

    assert supervisor.mark(gsm8k["gsm8k-0000"], response).verdict is Verdict.CORRECT


def test_without_a_final_answer_statement_the_last_number_is_read(gsm8k):
    rambling = (
        "Let me think. 16 eggs a day, 3 for breakfast (that's 3 x 7 = 21 a week), 4 for "
        "muffins, so 16 - 7 = 9 remain, and 9 eggs times $2 comes to 18"
    )

    assert supervisor.mark(gsm8k["gsm8k-0000"], rambling) == Marking(
        "18", Verdict.CORRECT, Extraction.RULE
    )


def test_a_long_rambling_answer_is_read_from_its_end(gsm8k):
    rambling = "On day 12 she had 45 eggs and 3 ducks. " * 40 + "In the end she makes $18 a day."

    assert supervisor.mark(gsm8k["gsm8k-0000"], rambling).extracted == "18"


def test_digits_glued_to_letters_are_not_numbers():
    assert supervisor.mark(numeric_item("12"), "We have 12 apples, scaled x2").extracted == "12"


@pytest.mark.parametrize("response", ["", "   \n", "I don't know.", "eighteen dollars"])
def test_a_response_without_a_number_is_unparseable(gsm8k, response):
    marking = supervisor.mark(gsm8k["gsm8k-0000"], response)

    assert marking == Marking(None, Verdict.UNPARSEABLE, Extraction.NONE)


def test_numbers_compare_with_a_relative_tolerance():
    million = numeric_item("1000000")
    assert supervisor.mark(million, "The answer is 1000000.5").verdict is Verdict.CORRECT
    assert supervisor.mark(million, "The answer is 1000002").verdict is Verdict.INCORRECT

    exact = Supervisor("numeric", numeric_tolerance=0.0)
    assert exact.mark(million, "The answer is 1000000.5").verdict is Verdict.INCORRECT


def test_every_cleaned_reference_solution_of_gsm8k_is_marked_correct(gsm8k):
    # The reference is the chosen side of a preference pair and the few-shot answer format:
    # the supervisor must read it back as the gold answer, for every real item.
    wrong = [
        item.id
        for item in gsm8k.values()
        if supervisor.mark(item, item.reference or "").verdict is not Verdict.CORRECT
    ]

    assert wrong == []


def test_the_extractor_reply_is_read_with_the_same_rules(gsm8k):
    ducks = gsm8k["gsm8k-0000"]

    assert supervisor.mark_extracted(ducks, "18") == Marking(
        "18", Verdict.CORRECT, Extraction.EXTRACTOR
    )
    assert supervisor.mark_extracted(ducks, "$1,018").verdict is Verdict.INCORRECT
    assert supervisor.mark_extracted(ducks, "none") == Marking(
        None, Verdict.UNPARSEABLE, Extraction.NONE
    )


def test_auto_is_refused_because_the_supervisor_needs_an_answer_space():
    with pytest.raises(ValueError, match="grader_for"):
        Supervisor("auto")


@given(
    value=st.integers(min_value=-(10**12), max_value=10**12),
    template=st.sampled_from(
        [
            "The answer is {}.",
            "So the total is {}",
            "#### {}",
            "Answer: {} in all.",
            "After 3 steps and 2 checks, it comes to {}.",
        ]
    ),
    currency=st.booleans(),
)
def test_any_integer_written_with_commas_or_currency_reads_back_equal(value, template, currency):
    written = f"{abs(value):,}"
    written = f"${written}" if currency else written
    written = f"-{written}" if value < 0 else written

    marking = supervisor.mark(numeric_item(str(value)), template.format(written))

    assert marking.verdict is Verdict.CORRECT
    assert marking.extracted == str(value)


@given(
    cents=st.integers(min_value=0, max_value=10**9),
    trailing_zeros=st.integers(min_value=0, max_value=3),
)
def test_any_amount_with_cents_reads_back_equal(cents, trailing_zeros):
    amount = f"{cents // 100:,}.{cents % 100:02d}" + "0" * trailing_zeros
    gold = str(cents / 100)

    assert supervisor.mark(numeric_item(gold), f"It costs ${amount}.").verdict is Verdict.CORRECT


def test_statements_are_found_when_lowercasing_changes_the_length_of_the_text():
    # "\u0130" (capital I with dot) lowercases to two characters, so the fast search falls
    # back to the regular expression; the statement must still win over the later number.
    response = "\u0130stanbul trip: the answer is 18. We left at 7."

    assert supervisor.mark(numeric_item("18"), response).extracted == "18"
