"""Benchmark items from a :class:`~prospect.spec.BenchmarkSpec`: the exam the competitors sit.

A source is a local file (JSONL, JSON list, CSV or Parquet; relative paths resolve against the
experiment file's folder), an ``s3://bucket/key`` object the caller downloads for us, or an
``hf://owner/name`` dataset on the Hugging Face Hub. Named formats know their benchmark's
columns; the generic ones read the columns that ``spec.fields`` names.

Every row becomes a :class:`~prospect.records.BenchmarkItem` with a canonical gold answer, or a
:class:`~prospect.records.SetAside` that says which row and why (a broken JSON line, no
question, a gold answer that is not one of the options...). A bad row never stops the load; a
source that cannot be read at all raises :class:`BenchmarkError` naming the file.

Which rows are asked is decided by the seed alone: every row is shuffled with
``random.Random(spec.seed)``, the first ``spec.few_shot`` valid rows become the solved examples
shown in the prompt, and the next ``spec.limit`` valid rows are the items. Each item's split
comes from the hash of its id (:func:`prospect.records.split_of`), so it does not move when the
limit or the order changes. Row numbers are 0-based: the line of a JSONL file, the element of a
JSON list, the data row of a CSV (header excluded) or the row of a Parquet table.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import math
import os
import random
import re
import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prospect.records import BenchmarkItem, SetAside, split_of
from prospect.spec import BenchmarkFormat, BenchmarkSpec, FieldMapping, GraderKind

__all__ = [
    "ANSWER_KIND",
    "BenchmarkError",
    "LoadedBenchmark",
    "load_benchmark",
]

log = logging.getLogger("prospect")

ANSWER_KIND: dict[BenchmarkFormat, GraderKind] = {
    BenchmarkFormat.GSM8K: GraderKind.NUMERIC,
    BenchmarkFormat.NUMERIC: GraderKind.NUMERIC,
    BenchmarkFormat.ARC: GraderKind.MULTIPLE_CHOICE,
    BenchmarkFormat.MMLU: GraderKind.MULTIPLE_CHOICE,
    BenchmarkFormat.TRUTHFULQA: GraderKind.MULTIPLE_CHOICE,
    BenchmarkFormat.MULTIPLE_CHOICE: GraderKind.MULTIPLE_CHOICE,
    BenchmarkFormat.NQ_OPEN: GraderKind.SHORT_ANSWER,
    BenchmarkFormat.SHORT_ANSWER: GraderKind.SHORT_ANSWER,
}
"""The answer space of each format: the item's `kind`, and the grader `auto` picks."""

_SUFFIXES = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
}
_LETTERS = string.ascii_uppercase
_HF_DEFAULT_SPLIT = "test"


class BenchmarkError(RuntimeError):
    """The benchmark source as a whole cannot be read; the message names it and says why."""


class _Malformed(Exception):
    """One row cannot become an item; the row is set aside with this reason."""


@dataclass(frozen=True, slots=True)
class LoadedBenchmark:
    """What :func:`load_benchmark` read.

    Attributes:
        items: The questions to ask, in the seeded order, each with its split set.
        few_shot: The solved examples for the prompt; never among `items`.
        set_aside: Rows that could not become items, in file order, with the reason.
        source_sha256: sha256 of the source file's bytes, or of the hub id, subset and split
            for an hf:// dataset: what makes two runs ask the same exam.
        source: Where the rows came from (the resolved local path, or the URI).
        rows: How many rows the source held, set-aside ones included.
    """

    items: list[BenchmarkItem]
    few_shot: list[BenchmarkItem]
    set_aside: list[SetAside]
    source_sha256: str
    source: str
    rows: int


def load_benchmark(
    spec: BenchmarkSpec,
    *,
    base_dir: Path,
    held_out_fraction: float,
    fetch: Callable[[str], Path] | None = None,
    quiet: bool = False,
) -> LoadedBenchmark:
    """Read the benchmark a spec names and pick the items to ask.

    Args:
        spec: The experiment's benchmark section.
        base_dir: Folder that a relative `spec.source` is relative to (the experiment file's).
        held_out_fraction: Share of item ids kept out of training (see `split_of`).
        fetch: Downloads an s3:// URI to a local file and returns its path; the caller owns
            the credentials, so the loader never touches them.

    Raises:
        BenchmarkError: The source does not exist, cannot be fetched or downloaded, or is not
            a file of the expected format. Bad rows do not raise; they are set aside.
    """
    source, digest, rows = _read_source(spec, base_dir=base_dir, fetch=fetch)

    convert = _CONVERTERS[spec.format]
    kind = ANSWER_KIND[spec.format].value
    context = _Context(spec=spec, kind=kind, prefix=spec.format.value)
    drafts: dict[int, dict[str, Any]] = {}
    set_aside: list[SetAside] = []
    first_seen: dict[str, int] = {}
    for index, row in enumerate(rows):
        try:
            if isinstance(row, _Broken):
                raise _Malformed(row.reason)
            draft = convert(row, index, context)
            if draft["id"] in first_seen:
                raise _Malformed(
                    f"duplicate id {draft['id']!r} (first at row {first_seen[draft['id']]})"
                )
        except _Malformed as exc:
            set_aside.append(SetAside(source=source, row=index, reason=str(exc)))
            continue
        first_seen[draft["id"]] = index
        drafts[index] = draft

    if not drafts:
        what = "holds no rows" if not rows else f"has no usable row among {len(rows)}"
        first = f"; row {set_aside[0].row}: {set_aside[0].reason}" if set_aside else ""
        raise BenchmarkError(f"benchmark {source} {what} for format {spec.format.value!r}{first}")

    order = list(range(len(rows)))
    random.Random(spec.seed).shuffle(order)
    chosen = [drafts[i] for i in order if i in drafts]
    wanted = spec.few_shot + (spec.limit if spec.limit is not None else len(chosen))
    picked = [
        BenchmarkItem(**draft, kind=kind, split=split_of(draft["id"], held_out_fraction))
        for draft in chosen[:wanted]
    ]
    loaded = LoadedBenchmark(
        items=picked[spec.few_shot :],
        few_shot=picked[: spec.few_shot],
        set_aside=set_aside,
        source_sha256=digest,
        source=source,
        rows=len(rows),
    )
    log.log(
        logging.DEBUG if quiet else logging.INFO,
        "benchmark %s: %d rows, %d items, %d few-shot, %d set aside",
        source,
        loaded.rows,
        len(loaded.items),
        len(loaded.few_shot),
        len(loaded.set_aside),
    )
    if len(loaded.few_shot) < spec.few_shot:
        log.warning(
            "benchmark %s has only %d valid rows; fewer few-shot examples than the %d asked",
            source,
            len(chosen),
            spec.few_shot,
        )
    return loaded


# Reading the source.


@dataclass(frozen=True, slots=True)
class _Broken:
    """A row that is not even a record (a JSON line that does not parse)."""

    reason: str


def _read_source(
    spec: BenchmarkSpec, *, base_dir: Path, fetch: Callable[[str], Path] | None
) -> tuple[str, str, list[Mapping[str, Any] | _Broken]]:
    if spec.source.startswith("hf://"):
        return _read_hub(spec)

    if spec.source.startswith("s3://"):
        if fetch is None:
            raise BenchmarkError(
                f"benchmark source {spec.source} is on S3 but no downloader was given; "
                "run it where the experiment's storage credentials are configured"
            )
        try:
            path = Path(fetch(spec.source))
        except Exception as exc:
            raise BenchmarkError(f"cannot download benchmark {spec.source}: {exc}") from exc
        label = spec.source
    else:
        path = Path(spec.source.removeprefix("file://")).expanduser()
        if not path.is_absolute():
            path = base_dir / path
        label = str(path)

    kind = _SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise BenchmarkError(
            f"benchmark file {label} has suffix {path.suffix or '(none)'!r}; expected one of "
            f"{', '.join(sorted(_SUFFIXES))}"
        )
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise BenchmarkError(
            f"benchmark file {label} does not exist (source {spec.source!r})"
        ) from None
    except OSError as exc:
        raise BenchmarkError(f"cannot read benchmark file {label}: {exc.strerror}") from None

    digest = hashlib.sha256(data).hexdigest()
    if kind == "parquet":
        return label, digest, _parquet_rows(data, label)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BenchmarkError(
            f"benchmark file {label} is not UTF-8 text (byte {exc.start}); expected {kind}"
        ) from None
    if kind == "jsonl":
        return label, digest, _jsonl_rows(text)
    if kind == "csv":
        return label, digest, _csv_rows(text, label)
    return label, digest, _json_rows(text, label)


def _jsonl_rows(text: str) -> list[Mapping[str, Any] | _Broken]:
    # Split on "\n" only: str.splitlines() also splits on U+0085 and U+2028, which real rows
    # (MMLU's test split among them) carry inside their strings.
    lines = text.split("\n")
    if lines and not lines[-1].strip():
        lines.pop()
    rows: list[Mapping[str, Any] | _Broken] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            rows.append(_Broken(f"line {number} is blank"))
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            rows.append(_Broken(f"line {number} is not valid JSON ({exc.msg}, column {exc.colno})"))
            continue
        if not isinstance(row, dict):
            rows.append(_Broken(f"line {number} is a JSON {type(row).__name__}, not an object"))
            continue
        rows.append(row)
    return rows


def _json_rows(text: str, label: str) -> list[Mapping[str, Any] | _Broken]:
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        if exc.msg == "Extra data":
            # Many exports are JSON lines named .json.
            return _jsonl_rows(text)
        raise BenchmarkError(
            f"benchmark file {label} is not valid JSON at line {exc.lineno}, column {exc.colno}: "
            f"{exc.msg}; expected a JSON list of rows"
        ) from None
    if not isinstance(document, list):
        raise BenchmarkError(
            f"benchmark file {label} holds a JSON {type(document).__name__}; "
            "expected a JSON list of rows"
        )
    return [
        row if isinstance(row, dict) else _Broken(f"element is a JSON {type(row).__name__}")
        for row in document
    ]


def _csv_rows(text: str, label: str) -> list[Mapping[str, Any] | _Broken]:
    try:
        reader = csv.DictReader(io.StringIO(text, newline=""))
        # An empty cell means "no value", as a missing key does in JSON.
        return [{k: v for k, v in row.items() if v not in ("", None)} for row in reader]
    except csv.Error as exc:
        raise BenchmarkError(f"benchmark file {label} is not a readable CSV file: {exc}") from None


def _parquet_rows(data: bytes, label: str) -> list[Mapping[str, Any] | _Broken]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(io.BytesIO(data))
    except (pa.ArrowException, OSError) as exc:
        raise BenchmarkError(
            f"benchmark file {label} is not a readable Parquet file: {exc}"
        ) from None
    return list(table.to_pylist())


def _read_hub(spec: BenchmarkSpec) -> tuple[str, str, list[Mapping[str, Any] | _Broken]]:
    name = spec.source.removeprefix("hf://").strip("/")
    split = spec.split or _HF_DEFAULT_SPLIT
    where = f"{spec.source} (subset {spec.subset or 'default'}, split {split})"
    try:
        import datasets

        dataset = datasets.load_dataset(name, spec.subset, split=split)
    except Exception as exc:
        hint = ""
        if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
            hint = (
                "; HF_HUB_OFFLINE is set and the dataset is not in the local cache: load it "
                "once where the Hub is reachable, or point `source` at a local copy"
            )
        raise BenchmarkError(f"cannot load Hugging Face dataset {where}: {exc}{hint}") from exc

    digest = hashlib.sha256(f"hf://{name}\0{spec.subset or ''}\0{split}".encode()).hexdigest()
    return where, digest, list(dataset.to_list())


# Turning rows into items. Each converter returns the BenchmarkItem fields (all but kind and
# split) or raises _Malformed with a reason a user can act on.


@dataclass(frozen=True, slots=True)
class _Context:
    spec: BenchmarkSpec
    kind: str
    prefix: str

    @property
    def fields(self) -> FieldMapping:
        assert self.spec.fields is not None  # the spec validator requires it for these formats
        return self.spec.fields


def _positional_id(context: _Context, index: int) -> str:
    return f"{context.prefix}-{index:04d}"


def _text(row: Mapping[str, Any], key: str, what: str) -> str:
    value = row.get(key)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        raise _Malformed(f"missing {what} (expected a non-empty {key!r} field)")
    return value.strip()


def _list(row: Mapping[str, Any], key: str, what: str) -> list[Any]:
    value = row.get(key)
    if isinstance(value, str) and value.lstrip().startswith("["):
        # CSV cells carry lists as JSON.
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise _Malformed(f"{what} in {key!r} is not a JSON list: {value[:60]!r}") from None
    if not isinstance(value, (list, tuple)) or not value:
        raise _Malformed(f"missing {what} (expected a non-empty list in {key!r})")
    return list(value)


def _options(texts: list[Any], labels: list[Any] | None, where: str) -> tuple[list[str], list[str]]:
    if len(texts) < 2:
        raise _Malformed(f"{where} has {len(texts)} option(s); expected at least 2")
    if labels is None:
        if len(texts) > len(_LETTERS):
            raise _Malformed(f"{where} has {len(texts)} options; at most 26 without labels")
        labels = list(_LETTERS[: len(texts)])
    if len(labels) != len(texts):
        raise _Malformed(f"{where} has {len(texts)} options but {len(labels)} labels")
    clean_texts = [str(t).strip() for t in texts if t is not None]
    clean_labels = [str(label).strip() for label in labels if label is not None]
    if len(clean_texts) != len(texts) or not all(clean_texts):
        raise _Malformed(f"{where} has an empty option")
    if len(clean_labels) != len(labels) or not all(clean_labels):
        raise _Malformed(f"{where} has an empty label")
    if len(set(clean_labels)) != len(clean_labels):
        raise _Malformed(f"{where} has repeated labels {clean_labels}")
    return clean_texts, clean_labels


def _gold_label(answer: Any, labels: list[str]) -> str:
    """A label, or a 0-based index into the labels. A value that is a label wins, so a digit
    label such as "1" is never read as an index."""
    if isinstance(answer, str):
        answer = answer.strip()
        if answer in labels:
            return answer
        if answer.isdigit():
            answer = int(answer)
    if isinstance(answer, int) and not isinstance(answer, bool):
        if 0 <= answer < len(labels):
            return labels[answer]
        raise _Malformed(f"answer index {answer} is out of range for {len(labels)} options")
    raise _Malformed(f"answer {answer!r} is not one of the labels {', '.join(labels)}")


_INTEGER = re.compile(r"[-+]?\d+")


def _number(value: Any) -> str:
    """The canonical text of a numeric gold answer: no commas or currency, integers exact,
    "18.00" as "18"."""
    if isinstance(value, bool) or value is None:
        raise _Malformed(f"gold answer {value!r} is not a number")
    text = str(value).strip().replace(",", "").replace("$", "").rstrip("%").strip()
    if _INTEGER.fullmatch(text):
        return str(int(text))
    try:
        number = float(text)
    except ValueError:
        raise _Malformed(f"gold answer {str(value).strip()[:60]!r} is not a number") from None
    if not math.isfinite(number):
        raise _Malformed(f"gold answer {value!r} is not a finite number")
    return str(int(number)) if number.is_integer() else repr(number)


_CALCULATOR = re.compile(r"<<[^<>]*>>")


def _gsm8k(row: Mapping[str, Any], index: int, context: _Context) -> dict[str, Any]:
    question = _text(row, "question", "question")
    solution = _text(row, "answer", "worked solution")
    marker = solution.rfind("####")
    if marker < 0:
        raise _Malformed("worked solution has no final '#### N' line")
    gold = _number(solution[marker + 4 :])
    working = _CALCULATOR.sub("", solution[:marker]).rstrip()
    reference = f"{working}\nThe answer is {gold}." if working else f"The answer is {gold}."
    return {
        "id": _positional_id(context, index),
        "question": question,
        "gold": gold,
        "reference": reference,
        "source_row": index,
    }


def _arc(row: Mapping[str, Any], index: int, context: _Context) -> dict[str, Any]:
    question = _text(row, "question", "question")
    choices = row.get("choices")
    if not isinstance(choices, Mapping):
        raise _Malformed("missing choices (expected 'choices' with 'text' and 'label' lists)")
    texts = _list(choices, "text", "option texts")
    labels = _list(choices, "label", "option labels")
    texts, labels = _options(texts, labels, "choices")
    gold = _gold_label(_text(row, "answerKey", "answer key"), labels)
    own_id = row.get("id")
    return {
        "id": str(own_id).strip() if own_id not in (None, "") else _positional_id(context, index),
        "question": question,
        "gold": gold,
        "choices": texts,
        "labels": labels,
        "source_row": index,
    }


def _mmlu(row: Mapping[str, Any], index: int, context: _Context) -> dict[str, Any]:
    question = _text(row, "question", "question")
    texts, labels = _options(_list(row, "choices", "options"), None, "choices")
    answer = row.get("answer")
    if answer is None:
        raise _Malformed("missing answer (expected a 0-based index in 'answer')")
    subject = row.get("subject")
    return {
        "id": _positional_id(context, index),
        "question": question,
        "gold": _gold_label(answer, labels),
        "choices": texts,
        "labels": labels,
        "source_row": index,
        "meta": {"subject": subject} if subject else {},
    }


def _truthfulqa(row: Mapping[str, Any], index: int, context: _Context) -> dict[str, Any]:
    question = _text(row, "question", "question")
    targets = row.get("mc1_targets")
    # The original release maps option text to 1/0; the Hub copy has choices and labels lists.
    if isinstance(targets, Mapping) and "choices" in targets and "labels" in targets:
        texts = _list(targets, "choices", "options")
        values = _list(targets, "labels", "labels")
        if len(texts) != len(values):
            raise _Malformed(f"mc1_targets has {len(texts)} choices but {len(values)} labels")
        pairs = list(zip(texts, values, strict=True))
    elif isinstance(targets, Mapping):
        pairs = list(targets.items())
    else:
        raise _Malformed("missing mc1_targets (expected option text mapped to 1 or 0)")
    true_options = [text for text, value in pairs if value == 1]
    if len(true_options) != 1:
        raise _Malformed(f"mc1_targets has {len(true_options)} true options; expected exactly 1")

    # The true option is always listed first upstream; shuffle so position carries no signal,
    # with a seed per item so the order is the same on every machine.
    item_id = _positional_id(context, index)
    options = [str(text) for text, _ in pairs]
    random.Random(f"{context.spec.seed}:{item_id}").shuffle(options)
    texts, labels = _options(options, None, "mc1_targets")
    return {
        "id": item_id,
        "question": question,
        "gold": labels[texts.index(str(true_options[0]).strip())],
        "choices": texts,
        "labels": labels,
        "source_row": index,
    }


def _aliases(value: Any, key: str) -> list[str]:
    if isinstance(value, str) and not value.lstrip().startswith("["):
        value = [value]
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        value = [str(value)]
    else:
        value = _list({key: value}, key, "accepted answers")
    aliases = [str(alias).strip() for alias in value if alias is not None and str(alias).strip()]
    if not aliases:
        raise _Malformed(f"missing accepted answers (expected a string or a list in {key!r})")
    return aliases


def _nq_open(row: Mapping[str, Any], index: int, context: _Context) -> dict[str, Any]:
    question = _text(row, "question", "question")
    aliases = _aliases(row.get("answer"), "answer")
    return {
        "id": _positional_id(context, index),
        "question": question,
        "gold": aliases[0],
        "aliases": aliases,
        "source_row": index,
    }


def _generic_id(row: Mapping[str, Any], index: int, context: _Context) -> str:
    if context.fields.id is None:
        return _positional_id(context, index)
    return _text(row, context.fields.id, "id")


def _numeric(row: Mapping[str, Any], index: int, context: _Context) -> dict[str, Any]:
    fields = context.fields
    return {
        "id": _generic_id(row, index, context),
        "question": _text(row, fields.question, "question"),
        "gold": _number(row.get(fields.answer)),
        "source_row": index,
    }


def _multiple_choice(row: Mapping[str, Any], index: int, context: _Context) -> dict[str, Any]:
    fields = context.fields
    assert fields.choices is not None  # the spec validator requires it
    question = _text(row, fields.question, "question")
    texts = _list(row, fields.choices, "options")
    labels = _list(row, fields.labels, "option labels") if fields.labels else None
    texts, labels = _options(texts, labels, repr(fields.choices))
    answer = row.get(fields.answer)
    if answer is None:
        raise _Malformed(f"missing answer (expected a label or 0-based index in {fields.answer!r})")
    return {
        "id": _generic_id(row, index, context),
        "question": question,
        "gold": _gold_label(answer, labels),
        "choices": texts,
        "labels": labels,
        "source_row": index,
    }


def _short_answer(row: Mapping[str, Any], index: int, context: _Context) -> dict[str, Any]:
    fields = context.fields
    question = _text(row, fields.question, "question")
    aliases = _aliases(row.get(fields.answer), fields.answer)
    return {
        "id": _generic_id(row, index, context),
        "question": question,
        "gold": aliases[0],
        "aliases": aliases,
        "source_row": index,
    }


_CONVERTERS: dict[BenchmarkFormat, Callable[[Mapping[str, Any], int, _Context], dict[str, Any]]] = {
    BenchmarkFormat.GSM8K: _gsm8k,
    BenchmarkFormat.ARC: _arc,
    BenchmarkFormat.MMLU: _mmlu,
    BenchmarkFormat.TRUTHFULQA: _truthfulqa,
    BenchmarkFormat.NQ_OPEN: _nq_open,
    BenchmarkFormat.NUMERIC: _numeric,
    BenchmarkFormat.MULTIPLE_CHOICE: _multiple_choice,
    BenchmarkFormat.SHORT_ANSWER: _short_answer,
}
