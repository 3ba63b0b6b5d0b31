from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from prospect.grading import Marking, Supervisor
from prospect.records import Extraction, Verdict

supervisor = Supervisor("multiple-choice")


@pytest.fixture(scope="module")
def mask(arc):
    """Which safety equipment keeps mold spores out? B. breathing mask."""
    item = arc["Mercury_7081673"]
    assert (item.gold, item.choices[1]) == ("B", "breathing mask")
    return item


@pytest.mark.parametrize(
    "response",
    [
        "B",
        "B.",
        "(B)",
        "B)",
        "**B**",
        "Answer: B",
        "**Answer:** B",
        "The answer is B.",
        "The answer is (B).",
        "the answer is (b)",
        "The correct answer is B because masks filter spores.",
        "B. breathing mask",
        "(B) breathing mask",
        "Mold spores are tiny and airborne, so they must be filtered from the air you breathe."
        "\n\nThe answer is B.",
        "A breathing mask.",
        "breathing mask",
    ],
)
def test_the_usual_ways_of_choosing_an_option_are_read(mask, response):
    assert supervisor.mark(mask, response) == Marking("B", Verdict.CORRECT, Extraction.RULE)


def test_choosing_another_option_is_incorrect_and_says_which(mask):
    assert supervisor.mark(mask, "The answer is (C).") == Marking(
        "C", Verdict.INCORRECT, Extraction.RULE
    )


@pytest.mark.parametrize(
    "response",
    [
        "The answer is B or C.",
        "The answer is A or C",
        "Answer: B, D",
        "The answer is (B) and (D).",
        "B or C",
        "A. Goggles protect the eyes.\nB. A mask filters the air.\nC. Gloves protect the hands.",
    ],
)
def test_an_answer_naming_two_options_is_unparseable(mask, response):
    assert supervisor.mark(mask, response) == Marking(None, Verdict.UNPARSEABLE, Extraction.NONE)


def test_an_explicit_final_answer_wins_over_an_afterthought(mask):
    # The documented rule: "Actually B" is not a final-answer statement, so A stands.
    assert supervisor.mark(mask, "The answer is A. Actually B").extracted == "A"


def test_the_last_final_answer_statement_wins(mask):
    response = "At first glance the answer is A, goggles.\nOn reflection, the answer is B."

    assert supervisor.mark(mask, response).extracted == "B"


def test_a_statement_wins_over_options_quoted_earlier(mask):
    response = "A. safety goggles - no\nC. rubber gloves - no\nSo the answer is B."

    assert supervisor.mark(mask, response).extracted == "B"


@pytest.mark.parametrize("response", ["", "  \n\t", "I am not sure.", "None of these."])
def test_a_response_without_a_choice_is_unparseable(mask, response):
    assert supervisor.mark(mask, response).verdict is Verdict.UNPARSEABLE


def test_the_article_a_is_not_read_as_option_a(mask):
    assert supervisor.mark(mask, "The answer is a mask of some kind").verdict is (
        Verdict.UNPARSEABLE
    )
    assert supervisor.mark(mask, "The answer is A tree").verdict is Verdict.UNPARSEABLE
    assert supervisor.mark(mask, "The answer is A.").extracted == "A"


def test_a_letter_that_is_not_an_option_is_not_an_answer(mask):
    assert supervisor.mark(mask, "The answer is E.").verdict is Verdict.UNPARSEABLE


def test_a_fifth_option_is_read_on_a_five_option_item(arc):
    hibernation = arc["TIMSS_1995_8_P4"]
    assert hibernation.labels == ["A", "B", "C", "D", "E"]

    assert supervisor.mark(hibernation, "The answer is E.").verdict is Verdict.CORRECT


def test_an_option_inside_a_longer_option_gives_way_to_it(arc):
    building_block = arc["Mercury_7268205"]  # A. a cell ... C. an organ, D. an organ system
    assert building_block.choices[2:] == ["an organ", "an organ system"]

    assert supervisor.mark(building_block, "An organ system.").extracted == "D"
    assert supervisor.mark(building_block, "An organ.").extracted == "C"
    assert supervisor.mark(building_block, "The cell.").verdict is Verdict.CORRECT


def test_a_negative_temperature_is_not_mistaken_for_the_positive_one(arc):
    freezing = arc["MCAS_2003_8_26"]  # A. -10°C, B. -1°C, C. 0°C, D. 10°C
    assert freezing.choices == ["-10°C", "-1°C", "0°C", "10°C"]

    assert supervisor.mark(freezing, "-10°C").extracted == "A"
    assert supervisor.mark(freezing, "10°C").extracted == "D"


def test_option_text_must_match_whole_words_and_only_one_option(field_extension):
    assert supervisor.mark(field_extension, "The degree is 4.").extracted == "B"
    assert supervisor.mark(field_extension, "It is 4, since 2 * 2 = 4.").verdict is (
        Verdict.UNPARSEABLE
    )
    assert supervisor.mark(field_extension, "The degree is 14.").verdict is Verdict.UNPARSEABLE


def test_digit_labels_are_the_benchmarks_own_labels(digit_labels):
    assert supervisor.mark(digit_labels, "The answer is 1.") == Marking(
        "1", Verdict.CORRECT, Extraction.RULE
    )
    assert supervisor.mark(digit_labels, "(3)").extracted == "3"
    assert supervisor.mark(digit_labels, "2").extracted == "2"


def test_numbered_reasoning_steps_are_not_read_as_digit_labels(digit_labels):
    steps = "1. The plant uses light.\n2. The frog eats flies.\nBoth get energy."

    assert supervisor.mark(digit_labels, steps).verdict is Verdict.UNPARSEABLE


def test_the_extractor_reply_is_read_with_the_same_rules(mask):
    assert supervisor.mark_extracted(mask, "B") == Marking(
        "B", Verdict.CORRECT, Extraction.EXTRACTOR
    )
    assert supervisor.mark_extracted(mask, "C.").extracted == "C"
    assert supervisor.mark_extracted(mask, "none") == Marking(
        None, Verdict.UNPARSEABLE, Extraction.NONE
    )


def test_every_real_arc_item_reads_its_own_gold_statement_as_correct(arc):
    wrong = [
        item.id
        for item in arc.values()
        if supervisor.mark(item, f"The answer is {item.gold}.").verdict is not Verdict.CORRECT
    ]

    assert wrong == []


@given(
    label=st.sampled_from(["A", "B", "C", "D"]),
    template=st.sampled_from(
        [
            "{}",
            "({})",
            "{}.",
            "Answer: {}",
            "The answer is {}.",
            "The answer is ({}).",
            "The correct option is **{}**",
            "Masks filter the air we breathe, which is what matters here.\nThe answer is {}",
        ]
    ),
    preamble=st.sampled_from(["", "Let me think step by step.\n", "Goggles protect eyes.\n\n"]),
)
def test_any_label_in_any_usual_template_reads_back_as_that_label(mask, label, template, preamble):
    response = preamble + template.format(label)

    marking = supervisor.mark(mask, response)

    assert marking.extracted == label
    assert marking.verdict is (Verdict.CORRECT if label == "B" else Verdict.INCORRECT)
