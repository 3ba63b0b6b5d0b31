"""What the competitors are asked, and what the supervisory extractor is asked.

Both competitors get the same content for an item, so their answers can be compared. The
content is plain few-shot text that ends in an "Answer:" cue, which serves both prompt styles:

* **chat**: the content is the single user message (:func:`chat_messages`), and the server's
  chat template wraps it;
* **completion**: the content is the whole prompt for a base model with no chat template; the
  solved examples show it the format, and :func:`stop_sequences` stops it before it invents
  the next question.

Every prompt asks for the final answer in a form the supervisor reads by rule: "The answer is
N." for numbers, "The answer is X." with the option's label for multiple choice, and "The
answer is <short phrase>." for short answers. Solved examples show exactly that form.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from prospect.records import BenchmarkItem
from prospect.spec import GraderKind, PromptStyle

__all__ = [
    "INSTRUCTIONS",
    "build_prompt",
    "chat_messages",
    "extractor_prompt",
    "stop_sequences",
]

INSTRUCTIONS: Mapping[str, str] = {
    GraderKind.NUMERIC.value: (
        "Solve the problem. Show your working briefly, then end with a line of the form "
        "'The answer is N.' where N is the final number, written with digits only."
    ),
    GraderKind.MULTIPLE_CHOICE.value: (
        "Choose the correct option. End with a line of the form 'The answer is X.' where X is "
        "the {label_word} of the option: one of {labels}."
    ),
    GraderKind.SHORT_ANSWER.value: (
        "Answer with a short phrase of a few words, not a sentence, in the form "
        "'The answer is <phrase>.'"
    ),
}
"""The default instruction that opens a prompt, per answer space. `{labels}` and
`{label_word}` are filled in for multiple choice ("A, B, C or D", "letter")."""

_CUE = "Answer:"
_QUESTION = "Question:"
# A base model that has answered goes on to write the next "Question:"; stop it there. Choice
# and short answers are one line, so a blank line also ends them; worked numeric solutions
# may hold blank lines, so they do not stop on one.
_COMPLETION_STOPS = {
    GraderKind.NUMERIC.value: ["\nQuestion:", "\n\n\n"],
    GraderKind.MULTIPLE_CHOICE.value: ["\nQuestion:", "\n\n"],
    GraderKind.SHORT_ANSWER.value: ["\nQuestion:", "\n\n"],
}
# The extractor sees only the end of a long response: that is where final answers are.
_EXTRACTOR_RESPONSE_CHARS = 4000


def build_prompt(
    item: BenchmarkItem,
    few_shot: Sequence[BenchmarkItem] = (),
    *,
    instructions_for_kind: Mapping[str, str] | None = INSTRUCTIONS,
) -> str:
    """The prompt content for one item, the same for both competitors and both styles.

    Args:
        item: The question to ask.
        few_shot: Solved examples, shown before the question with a correct, fully formatted
            answer (GSM8K's cleaned worked solution; "The answer is B."; "The answer is <gold>.").
        instructions_for_kind: The instruction that opens the prompt, by answer space (the
            item's `kind`); :data:`INSTRUCTIONS` by default. None, or a mapping without the
            item's kind, leaves the instruction out.
    """
    parts = []
    instruction = (instructions_for_kind or {}).get(item.kind)
    if instruction:
        parts.append(_fill(instruction, item))
    for example in few_shot:
        parts.append(f"{_question_block(example)}\n{_CUE} {_solution(example)}")
    parts.append(f"{_question_block(item)}\n{_CUE}")
    return "\n\n".join(parts)


def chat_messages(content: str) -> list[dict[str, str]]:
    """The content as a chat request: one user message, no system prompt (not every chat
    template accepts one, and both competitors must see the same thing)."""
    return [{"role": "user", "content": content}]


def stop_sequences(kind: GraderKind | str, style: PromptStyle | str) -> list[str]:
    """Where generation stops: before the model writes another question. Small chat models
    continue the few-shot pattern too, so they get the question stop as well."""
    if PromptStyle(style) is PromptStyle.CHAT:
        return ["\nQuestion:"]
    return list(_COMPLETION_STOPS[GraderKind(kind).value])


def extractor_prompt(item: BenchmarkItem, response: str) -> str:
    """The request to the supervisory LLM for a response the rules could not read.

    It asks only which final answer the response gives, mapped onto the item's answer space,
    with "none" when it gives none or several. It never shows the question or the gold answer
    and never asks whether the response is right: the verdict is computed by code.
    """
    if len(response) > _EXTRACTOR_RESPONSE_CHARS:
        response = "[...]" + response[-_EXTRACTOR_RESPONSE_CHARS:]

    if item.kind == GraderKind.MULTIPLE_CHOICE.value:
        options = "\n".join(_option_lines(item))
        task = (
            "The response below was written for a multiple-choice question with these options:"
            f"\n{options}\n\nWhich single option does the response give as its final answer? "
            f"Reply with just its {_label_word(item)} ({_label_list(item)}), or 'none' if the "
            "response gives no option or more than one."
        )
    elif item.kind == GraderKind.NUMERIC.value:
        task = (
            "Which number does the response below give as its final answer? Reply with just "
            "that number, digits only, or 'none' if it gives no final number."
        )
    else:
        task = (
            "Which short final answer does the response below give? Reply with just that "
            "phrase, copied from the response, or 'none' if it gives no answer."
        )
    return (
        "You read answers for an exam marker. Do not answer the question yourself and do not "
        "judge whether the response is right.\n\n"
        f"{task}\n\nResponse:\n<<<\n{response}\n>>>\n\nReply:"
    )


def _question_block(item: BenchmarkItem) -> str:
    block = f"{_QUESTION} {item.question}"
    if item.kind == GraderKind.MULTIPLE_CHOICE.value:
        block += "\n" + "\n".join(_option_lines(item))
    return block


def _option_lines(item: BenchmarkItem) -> list[str]:
    return [f"{label}. {text}" for label, text in zip(item.labels, item.choices, strict=True)]


def _solution(item: BenchmarkItem) -> str:
    if item.kind == GraderKind.NUMERIC.value and item.reference:
        return item.reference
    return f"The answer is {item.gold}."


def _fill(instruction: str, item: BenchmarkItem) -> str:
    if item.kind != GraderKind.MULTIPLE_CHOICE.value:
        return instruction
    # Plain replacement, not str.format: a user's own instruction may hold other braces.
    return instruction.replace("{labels}", _label_list(item)).replace(
        "{label_word}", _label_word(item)
    )


def _label_list(item: BenchmarkItem) -> str:
    labels = list(item.labels)
    if len(labels) < 2:
        return "".join(labels)
    return f"{', '.join(labels[:-1])} or {labels[-1]}"


def _label_word(item: BenchmarkItem) -> str:
    return "letter" if all(label.isalpha() for label in item.labels) else "label"
