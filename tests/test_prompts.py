from __future__ import annotations

from pathlib import Path

import pytest

from prospect import prompts
from prospect.benchmarks import LoadedBenchmark, load_benchmark
from prospect.grading import Supervisor
from prospect.records import BenchmarkItem, Verdict
from prospect.spec import BenchmarkSpec, PromptStyle

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "benchmarks"


def load(format: str, source: str, few_shot: int) -> LoadedBenchmark:
    spec = BenchmarkSpec(format=format, source=source, few_shot=few_shot, limit=5, seed=1)
    return load_benchmark(spec, base_dir=EXAMPLES, held_out_fraction=0.0)


@pytest.fixture(scope="module")
def gsm8k() -> LoadedBenchmark:
    return load("gsm8k", "gsm8k/test.jsonl", few_shot=2)


@pytest.fixture(scope="module")
def arc() -> LoadedBenchmark:
    return load("arc", "arc-easy/test.jsonl", few_shot=3)


def asked_part(prompt: str) -> str:
    """The last question block: what the competitor is asked to answer."""
    return prompt[prompt.rindex("Question:") :]


def option_lines(item: BenchmarkItem) -> str:
    return "\n".join(f"{lab}. {text}" for lab, text in zip(item.labels, item.choices, strict=True))


def test_a_multiple_choice_prompt_lists_the_options_and_asks_for_the_letter(arc):
    item = arc.items[0]

    prompt = prompts.build_prompt(item, [])

    assert asked_part(prompt) == f"Question: {item.question}\n{option_lines(item)}\nAnswer:"
    assert "'The answer is X.'" in prompt
    assert "one of A, B, C or D" in prompt


def test_digit_labels_are_listed_and_asked_for_as_they_are(digit_labels):
    prompt = prompts.build_prompt(digit_labels, [])

    assert "1. obtain energy\n2. escape predators" in prompt
    assert "the label of the option: one of 1, 2, 3 or 4" in prompt


def test_a_numeric_prompt_asks_to_end_with_the_answer_sentence(gsm8k):
    prompt = prompts.build_prompt(gsm8k.items[0], [])

    assert "'The answer is N.'" in prompt
    assert prompt.endswith(f"Question: {gsm8k.items[0].question}\nAnswer:")


def test_a_short_answer_prompt_asks_for_a_short_phrase(moon):
    prompt = prompts.build_prompt(moon, [])

    assert "short phrase" in prompt
    assert prompt.endswith("Question: when was the last time anyone was on the moon\nAnswer:")


def test_gsm8k_examples_show_the_cleaned_worked_solution_before_the_question(gsm8k):
    prompt = prompts.build_prompt(gsm8k.items[0], gsm8k.few_shot)

    for example in gsm8k.few_shot:
        block = f"Question: {example.question}\nAnswer: {example.reference}"
        assert block in prompt
        assert prompt.index(block) < prompt.index(asked_part(prompt))
    assert "<<" not in prompt
    assert "####" not in prompt


def test_choice_examples_show_the_answer_sentence_with_the_gold_letter(arc):
    prompt = prompts.build_prompt(arc.items[0], arc.few_shot)

    for example in arc.few_shot:
        assert f"{example.choices[-1]}\nAnswer: The answer is {example.gold}." in prompt


def test_the_asked_question_carries_no_answer(gsm8k, arc, moon):
    for item, few_shot in [(gsm8k.items[0], gsm8k.few_shot), (arc.items[0], arc.few_shot)]:
        asked = asked_part(prompts.build_prompt(item, few_shot))
        assert asked.endswith("Answer:")
        assert "The answer is" not in asked
    assert "1972" not in prompts.build_prompt(moon, [])


@pytest.mark.parametrize("kind", ["gsm8k", "arc"])
def test_the_supervisor_marks_every_example_answer_correct(gsm8k, arc, kind):
    # The examples teach the format the supervisor reads: they must read back as correct.
    loaded = gsm8k if kind == "gsm8k" else arc
    supervisor = Supervisor(loaded.few_shot[0].kind)
    prompt = prompts.build_prompt(loaded.items[0], loaded.few_shot)

    for example in loaded.few_shot:
        start = prompt.index(f"Question: {example.question}")
        answer = prompt[prompt.index("Answer: ", start) + len("Answer: ") :]
        answer = answer.split("\n\nQuestion:")[0]
        assert supervisor.mark(example, answer).verdict is Verdict.CORRECT


def test_the_instruction_can_be_replaced_or_left_out(arc):
    item = arc.items[0]

    assert prompts.build_prompt(item, [], instructions_for_kind=None).startswith("Question:")
    custom = prompts.build_prompt(
        item, [], instructions_for_kind={"multiple-choice": "Pick {labels}. {not a field}"}
    )
    assert custom.startswith("Pick A, B, C or D. {not a field}\n\nQuestion:")


def test_a_chat_request_is_one_user_message_with_the_content(arc):
    content = prompts.build_prompt(arc.items[0], arc.few_shot)

    assert prompts.chat_messages(content) == [{"role": "user", "content": content}]


def test_a_base_model_is_stopped_before_it_writes_the_next_question():
    stops = prompts.stop_sequences("multiple-choice", PromptStyle.COMPLETION)
    continuation = "The answer is B.\n\nQuestion: Which gas do plants take in?\nA. oxygen"

    cut = min(continuation.find(stop) for stop in stops if stop in continuation)

    assert continuation[:cut] == "The answer is B."
    assert "\nQuestion:" in prompts.stop_sequences("numeric", "completion")
    assert "\n\n" not in prompts.stop_sequences("numeric", "completion")


def test_a_chat_model_is_stopped_before_it_invents_the_next_question():
    assert prompts.stop_sequences("numeric", PromptStyle.CHAT) == ["\nQuestion:"]


def test_the_extractor_is_asked_only_to_map_the_answer_never_to_judge_it(arc):
    item = arc.items[0]
    response = "Goggles protect the eyes, a mask the lungs; I would go with the mask."

    request = prompts.extractor_prompt(item, response)

    assert response in request
    assert option_lines(item) in request
    assert "Reply with just its letter (A, B, C or D), or 'none'" in request
    assert "do not judge whether the response is right" in request
    assert item.question not in request
    assert "correct" not in request.lower()


def test_the_extractor_request_for_numbers_and_phrases_names_the_reply_form(gsm8k, moon):
    numeric = prompts.extractor_prompt(gsm8k.items[0], "so she has eighteen left")
    short = prompts.extractor_prompt(moon, "It happened late in 1972, in December.")

    assert "Reply with just that number, digits only, or 'none'" in numeric
    assert gsm8k.items[0].gold not in numeric
    assert "Reply with just that phrase, copied from the response, or 'none'" in short
    assert moon.question not in short


def test_a_long_response_reaches_the_extractor_by_its_end(moon):
    response = "I am thinking. " * 1000 + "Final: December 1972"

    request = prompts.extractor_prompt(moon, response)

    assert "Final: December 1972" in request
    assert len(request) < 5000
