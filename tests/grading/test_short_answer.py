from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from prospect.grading import Marking, Supervisor
from prospect.grading.short_answer import SHORT_ANSWER_WORDS, normalize
from prospect.records import BenchmarkItem, Extraction, Verdict

supervisor = Supervisor("short-answer")


@pytest.mark.parametrize(
    "response",
    [
        "December 1972",
        "december 1972.",
        "The answer is December 1972.",
        "The answer is **14 December 1972 UTC**.",
        "Answer:\n\nDecember 1972\n",
        "The last crewed landing was Apollo 17.\nThe answer is December 1972.",
        "Apollo 17 left the Moon in December 1972.",
    ],
)
def test_an_accepted_answer_in_the_usual_forms_is_correct(moon, response):
    assert supervisor.mark(moon, response).verdict is Verdict.CORRECT


def test_the_final_answer_is_read_after_the_last_statement(moon):
    response = "Apollo 11 landed in July 1969.\nThe answer is December 1972."

    assert supervisor.mark(moon, response) == Marking(
        "December 1972", Verdict.CORRECT, Extraction.RULE
    )


def test_any_alias_is_accepted_not_only_the_first(lyrics):
    assert supervisor.mark(lyrics, "The answer is Bob Russell.").verdict is Verdict.CORRECT
    assert supervisor.mark(lyrics, "Bobby Scott").verdict is Verdict.CORRECT


def test_case_punctuation_and_articles_do_not_matter(lyrics):
    assert supervisor.mark(lyrics, "The answer is: BOBBY SCOTT!").verdict is Verdict.CORRECT


def test_a_short_sentence_containing_an_alias_as_whole_words_is_correct(lyrics):
    response = "The lyrics were written by Bobby Scott and Bob Russell."

    assert supervisor.mark(lyrics, response).verdict is Verdict.CORRECT


def test_a_wrong_answer_is_incorrect_and_reports_what_was_read(moon):
    assert supervisor.mark(moon, "The answer is July 1969.") == Marking(
        "July 1969", Verdict.INCORRECT, Extraction.RULE
    )


def test_part_of_an_alias_is_not_enough(moon):
    assert supervisor.mark(moon, "The answer is 1972.").verdict is Verdict.INCORRECT
    assert supervisor.mark(moon, "The answer is December.").verdict is Verdict.INCORRECT


def test_an_alias_must_match_whole_words(lyrics):
    assert supervisor.mark(lyrics, "Bobby Scottish").verdict is Verdict.INCORRECT


def test_a_long_final_line_is_not_credited_for_mentioning_an_alias(moon):
    listing = (
        "It might be July 1969, November 1969, February 1971, July 1971, April 1972 or "
        "December 1972, depending on the mission you count"
    )
    assert listing.count(" ") > SHORT_ANSWER_WORDS

    assert supervisor.mark(moon, listing).verdict is Verdict.INCORRECT


@pytest.mark.parametrize("response", ["", "   \n\n", "...", "**", "The answer is:"])
def test_a_response_with_no_final_answer_is_unparseable(moon, response):
    assert supervisor.mark(moon, response) == Marking(None, Verdict.UNPARSEABLE, Extraction.NONE)


def test_the_extractor_reply_is_read_with_the_same_rules(moon):
    assert supervisor.mark_extracted(moon, "December 1972") == Marking(
        "December 1972", Verdict.CORRECT, Extraction.EXTRACTOR
    )
    assert supervisor.mark_extracted(moon, "None.") == Marking(
        None, Verdict.UNPARSEABLE, Extraction.NONE
    )


def test_an_item_without_aliases_is_marked_against_its_gold_answer():
    item = BenchmarkItem(
        id="short-answer-0000", question="?", gold="Paris", kind="short-answer", source_row=0
    )

    assert supervisor.mark(item, "The answer is Paris.").verdict is Verdict.CORRECT


@pytest.mark.parametrize(
    ("text", "normalized"),
    [
        ("The Beatles!", "beatles"),
        ("  an   apple a day ", "apple day"),
        ("14 December 1972 UTC", "14 december 1972 utc"),
        ("O'Neill", "oneill"),
        ("Theatre", "theatre"),
    ],
)
def test_normalization_follows_squad(text, normalized):
    assert normalize(text) == normalized


@given(st.text(max_size=60))
def test_normalization_is_idempotent(text):
    assert normalize(normalize(text)) == normalize(text)


@given(
    alias=st.text(
        alphabet=st.characters(whitelist_categories=("Lu", "Ll", "Nd")), min_size=1, max_size=20
    ).filter(lambda alias: normalize(alias)),
    template=st.sampled_from(["{}", "The answer is {}.", "Answer: **{}**", "It is {}."]),
)
def test_any_alias_written_in_a_usual_form_is_correct(alias, template):
    item = BenchmarkItem(
        id="short-answer-0000",
        question="?",
        gold=alias,
        aliases=[alias],
        kind="short-answer",
        source_row=0,
    )

    assert supervisor.mark(item, template.format(alias)).verdict is Verdict.CORRECT
