"""The write stage: turn graded answers into versioned training datasets.

Input is what the grade stage left in the store: `items/items.jsonl` (benchmark items) and
`graded/<role>/shard-<NNNNN>.jsonl` (one competitor's marked answers per shard). Only the two
competitors' records on train items feed a dataset; evaluation roles and held-out items never do.

Output is one version under `dataset/v<N>/` with three Parquet files in the formats TRL reads:

- `incorrect.parquet`: every wrong or unparseable answer, once, with its provenance;
- `kto.parquet`: unpaired prompt/completion/label rows (label False is undesirable);
- `preferences.parquet`: prompt/chosen/rejected pairs, competitive pairs first.

A version is complete when its `manifest.json` exists. The data files and the dataset card are
written before the manifest and the `dataset/LATEST` pointer after it, so a writer that dies
midway leaves a folder without a manifest, which no reader reports and the next writer removes.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from prospect import metrics
from prospect.records import BenchmarkItem, GradedRecord, Split, Verdict
from prospect.spec import Role
from prospect.storage import StorageError, Store

__all__ = [
    "COMPETITOR_ROLES",
    "DATASET_PREFIX",
    "GRADED_PREFIX",
    "ITEMS_KEY",
    "LATEST_KEY",
    "SCHEMA_VERSION",
    "DatasetError",
    "DatasetManifest",
    "FileEntry",
    "gold_completion",
    "latest_version",
    "load_manifest",
    "read_graded",
    "read_items",
    "write_dataset",
]

log = logging.getLogger("prospect")

SCHEMA_VERSION = 1
ITEMS_KEY = "items/items.jsonl"
GRADED_PREFIX = "graded/"
DATASET_PREFIX = "dataset"
LATEST_KEY = f"{DATASET_PREFIX}/LATEST"
MANIFEST = "manifest.json"
CARD = "README.md"
COMPETITOR_ROLES: tuple[str, ...] = tuple(role.value for role in Role)

_SHARD = re.compile(r"^graded/(?P<role>[^/]+)/shard-\d+\.jsonl$")
_VERSION = re.compile(rf"^{DATASET_PREFIX}/v(?P<number>[1-9]\d*)/")
_CALCULATOR = re.compile(r"<<[^<>]*>>")
_FINAL_LINE = re.compile(r"^\s*####\s*(?P<answer>.+?)\s*$", re.MULTILINE)


class DatasetError(ValueError):
    """The graded records or items cannot make a dataset; the message names the file and line."""


class FileEntry(BaseModel):
    model_config = ConfigDict(frozen=True)

    sha256: str
    bytes: int
    rows: int | None = Field(None, description="Rows in a Parquet file; None for the card.")


class DatasetManifest(BaseModel):
    """What one complete dataset version holds; its presence is what makes a version complete."""

    model_config = ConfigDict(frozen=True)

    schema_version: int
    version: str = Field(description="v1, v2, ...")
    experiment: str
    spec_digest: str
    benchmark_digest: str
    content_digest: str = Field(
        description="sha256 of the rows and the digests; equal digests mean an identical dataset."
    )
    created: datetime
    files: dict[str, FileEntry]
    counts: dict[str, dict[str, int]] = Field(
        description=(
            "inputs (what was read); incorrect (by role), incorrect_by_verdict, kto (by label), "
            "kto_by_source, preferences (by kind): each of these sums to its file's rows."
        )
    )

    @property
    def number(self) -> int:
        return int(self.version[1:])

    @property
    def prefix(self) -> str:
        return f"{DATASET_PREFIX}/{self.version}"

    def key(self, name: str) -> str:
        """The store key of one of this version's files."""
        return f"{self.prefix}/{name}"


# Reading the grade stage's output.


def read_items(store: Store) -> list[BenchmarkItem]:
    """Every benchmark item in `items/items.jsonl`, in file order.

    Raises:
        StorageError: the file is missing or the store cannot be read.
        DatasetError: a line is not an item, or two lines share an id.
    """
    items: list[BenchmarkItem] = []
    seen: dict[str, int] = {}
    for line_no, data in _json_lines(store, ITEMS_KEY):
        try:
            item = BenchmarkItem.model_validate(data)
        except ValidationError as exc:
            raise DatasetError(f"{store.uri(ITEMS_KEY)} line {line_no}: {_first(exc)}") from None
        if item.id in seen:
            raise DatasetError(
                f"{store.uri(ITEMS_KEY)} line {line_no}: item id {item.id!r} already used on "
                f"line {seen[item.id]}"
            )
        seen[item.id] = line_no
        items.append(item)
    return items


def read_graded(store: Store, *, roles: Iterable[str] = COMPETITOR_ROLES) -> list[GradedRecord]:
    """The graded records of the given roles (the two competitors by default), shard by shard.

    Records of other roles (an evaluation's `target-after`, say) are not read at all.

    Raises:
        DatasetError: a shard line is not a graded record, or sits under another role's folder.
    """
    return [record for _, record in _graded_with_sources(store, roles=roles)]


def _graded_with_sources(
    store: Store, *, roles: Iterable[str]
) -> Iterator[tuple[str, GradedRecord]]:
    wanted = set(roles)
    for key in store.list(GRADED_PREFIX):
        match = _SHARD.match(key)
        if match is None or match["role"] not in wanted:
            continue
        for line_no, data in _json_lines(store, key):
            where = f"{store.uri(key)} line {line_no}"
            try:
                record = GradedRecord.model_validate(data)
            except ValidationError as exc:
                raise DatasetError(f"{where}: {_first(exc)}") from None
            if record.role != match["role"]:
                raise DatasetError(
                    f"{where}: a record of role {record.role!r} in the folder of {match['role']!r}"
                )
            yield where, record


def _json_lines(store: Store, key: str) -> Iterator[tuple[int, Any]]:
    text = store.get_bytes(key).decode("utf-8")
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield line_no, json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetError(
                f"{store.uri(key)} line {line_no}: not JSON ({exc.msg} at column {exc.colno})"
            ) from None


def _first(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error["loc"]) or "record"
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{where}: {error['msg']}{more}"


# Choosing the answers that feed a dataset.


@dataclass(frozen=True)
class _Answer:
    record: GradedRecord
    source: str

    @property
    def usable(self) -> bool:
        """A blank response teaches nothing; it stays in incorrect.parquet as provenance only."""
        return bool(self.record.response.strip())


@dataclass(frozen=True)
class _Selection:
    items: list[BenchmarkItem]  # train items with at least one competitor answer, in item order
    answers: dict[str, dict[str, _Answer]]  # item id -> role -> answer
    held_out_records: int


def _select(
    sourced: Iterable[tuple[str, GradedRecord]], items: Sequence[BenchmarkItem]
) -> _Selection:
    by_id = {item.id: item for item in items}
    answers: dict[str, dict[str, _Answer]] = {}
    held_out = 0

    for source, record in sourced:
        if record.role not in COMPETITOR_ROLES:
            continue
        item = by_id.get(record.item_id)
        if item is None:
            raise DatasetError(
                f"{source}: the {record.role} record names item {record.item_id!r}, which is not "
                f"in {ITEMS_KEY}; were the items prepared again after grading?"
            )
        if record.split != item.split:
            raise DatasetError(
                f"{source}: item {record.item_id!r} is {record.split.value} in the record but "
                f"{item.split.value} in {ITEMS_KEY}; grade again after changing the split"
            )
        if item.split is not Split.TRAIN:
            held_out += 1
            continue

        earlier = answers.setdefault(record.item_id, {}).get(record.role)
        if earlier is None:
            answers[record.item_id][record.role] = _Answer(record, source)
        elif earlier.record.verdict != record.verdict:
            raise DatasetError(
                f"item {record.item_id!r}, role {record.role}: {earlier.source} marks it "
                f"{earlier.record.verdict.value} but {source} marks it {record.verdict.value}"
            )
        else:
            log.debug("duplicate record for %s/%s in %s", record.item_id, record.role, source)

    chosen = [item for item in items if item.id in answers]
    return _Selection(items=chosen, answers=answers, held_out_records=held_out)


def gold_completion(item: BenchmarkItem) -> str | None:
    """The desirable completion the benchmark itself offers for an item, if any.

    A worked reference is used when there is one, with GSM8K's calculator annotations
    (`<<3*3=9>>`) removed and its `#### N` line restated as "The answer is N." so the gold
    completion ends the way a competitor is asked to end. Without a reference the completion
    is just "The answer is <gold>."; without a gold answer there is none.
    """
    gold = item.gold.strip()
    reference = (item.reference or "").strip()
    if not reference:
        return f"The answer is {gold}." if gold else None

    reference = _CALCULATOR.sub("", reference)
    final = _FINAL_LINE.search(reference)
    if final is not None:
        stated = gold or final["answer"]
        reference = reference[: final.start()].rstrip() + f"\nThe answer is {stated}."
    elif gold and gold not in reference.splitlines()[-1]:
        reference += f"\nThe answer is {gold}."
    return reference.strip()


# The rows of each file.

_INCORRECT_SCHEMA = pa.schema(
    [
        ("item_id", pa.string()),
        ("role", pa.string()),
        ("model", pa.string()),
        ("prompt", pa.string()),
        ("response", pa.string()),
        ("extracted", pa.string()),
        ("gold", pa.string()),
        ("verdict", pa.string()),
        ("extraction", pa.string()),
        ("prompt_tokens", pa.int64()),
        ("completion_tokens", pa.int64()),
        ("latency_seconds", pa.float64()),
        ("finish_reason", pa.string()),
        ("error", pa.string()),
        ("dataset_version", pa.string()),
        ("spec_digest", pa.string()),
    ]
)
_KTO_SCHEMA = pa.schema(
    [
        ("prompt", pa.string()),
        ("completion", pa.string()),
        ("label", pa.bool_()),
        ("source", pa.string()),
        ("item_id", pa.string()),
    ]
)
_PREFERENCE_SCHEMA = pa.schema(
    [
        ("prompt", pa.string()),
        ("chosen", pa.string()),
        ("rejected", pa.string()),
        ("kind", pa.string()),
        ("item_id", pa.string()),
        ("rejected_role", pa.string()),
    ]
)

Row = dict[str, Any]


def _ordered(selection: _Selection, item: BenchmarkItem) -> list[_Answer]:
    by_role = selection.answers[item.id]
    return [by_role[role] for role in COMPETITOR_ROLES if role in by_role]


def _incorrect_rows(selection: _Selection) -> list[Row]:
    """Every wrong answer once, blank ones included: this file is the record of what went wrong.

    The version and spec digest columns are added when the version is known.
    """
    rows = []
    for item in selection.items:
        for answer in _ordered(selection, item):
            record = answer.record
            if record.verdict.is_correct:
                continue
            rows.append(
                {
                    "item_id": record.item_id,
                    "role": record.role,
                    "model": record.model,
                    "prompt": record.prompt,
                    "response": record.response,
                    "extracted": record.extracted,
                    "gold": record.gold,
                    "verdict": record.verdict.value,
                    "extraction": record.extraction.value,
                    "prompt_tokens": record.prompt_tokens,
                    "completion_tokens": record.completion_tokens,
                    "latency_seconds": record.latency_seconds,
                    "finish_reason": record.finish_reason,
                    "error": record.error,
                }
            )
    return rows


def _kto_rows(selection: _Selection) -> list[Row]:
    desirable: list[Row] = []
    undesirable: list[Row] = []
    for item in selection.items:
        answers = _ordered(selection, item)
        for answer in answers:
            if not answer.usable:
                continue
            record = answer.record
            row = {
                "prompt": record.prompt,
                "completion": record.response,
                "label": record.verdict.is_correct,
                "source": f"competitor:{record.role}",
                "item_id": item.id,
            }
            (desirable if row["label"] else undesirable).append(row)
        gold = gold_completion(item)
        if gold is not None:
            desirable.append(
                {
                    "prompt": answers[0].record.prompt,
                    "completion": gold,
                    "label": True,
                    "source": "gold-reference",
                    "item_id": item.id,
                }
            )
    return _interleave(desirable, undesirable)


def _interleave(first: list[Row], second: list[Row]) -> list[Row]:
    """Merge two lists so each is spread evenly over the result: strict alternation when the
    counts are equal, and the smaller list evenly spaced through the larger otherwise.

    A KTO batch that holds only one label cannot report the other label's rewards, so the rows
    are ordered for batches to see both whenever the counts allow.
    """

    def position(index: int, count: int) -> float:
        return (index + 0.5) / count

    keyed = [(position(i, len(first)), 0, i, row) for i, row in enumerate(first)]
    keyed += [(position(i, len(second)), 1, i, row) for i, row in enumerate(second)]
    keyed.sort(key=lambda entry: entry[:3])
    return [entry[3] for entry in keyed]


def _preference_rows(selection: _Selection) -> list[Row]:
    """Competitive pairs (one competitor right, the other wrong) first, then gold pairs: when no
    competitor got an item right, the gold reference is preferred over each wrong answer."""
    competitive: list[Row] = []
    gold_pairs: list[Row] = []
    for item in selection.items:
        answers = [answer.record for answer in _ordered(selection, item) if answer.usable]
        right = [record for record in answers if record.verdict.is_correct]
        wrong = [record for record in answers if not record.verdict.is_correct]
        if right:
            competitive.extend(
                _pair(rejected, chosen=right[0].response, kind="competitive") for rejected in wrong
            )
            continue
        chosen = gold_completion(item)
        if chosen is not None:
            gold_pairs.extend(_pair(rejected, chosen=chosen, kind="gold") for rejected in wrong)
    return competitive + gold_pairs


def _pair(rejected: GradedRecord, *, chosen: str, kind: str) -> Row:
    return {
        "prompt": rejected.prompt,
        "chosen": chosen,
        "rejected": rejected.response,
        "kind": kind,
        "item_id": rejected.item_id,
        "rejected_role": rejected.role,
    }


def _counts(
    selection: _Selection, incorrect: list[Row], kto: list[Row], pairs: list[Row]
) -> dict[str, dict[str, int]]:
    """Every entry but `inputs` splits one file's rows by one column, so its values sum to the
    file's row count; every possible value is listed, zero or not."""

    def tally(rows: list[Row], column: str, values: Iterable[Any]) -> dict[str, int]:
        found = Counter(row[column] for row in rows)
        return {str(value).lower(): found[value] for value in values}

    answers = [a for by_role in selection.answers.values() for a in by_role.values()]
    wrong = [v.value for v in Verdict if not v.is_correct]
    sources = [*(f"competitor:{role}" for role in COMPETITOR_ROLES), "gold-reference"]
    labelled = [{"label": "desirable" if row["label"] else "undesirable"} for row in kto]
    return {
        "inputs": {
            "train_items": len(selection.items),
            "train_records": len(answers),
            "blank_responses": sum(not answer.usable for answer in answers),
            "held_out_records_excluded": selection.held_out_records,
        },
        "incorrect": tally(incorrect, "role", COMPETITOR_ROLES),
        "incorrect_by_verdict": tally(incorrect, "verdict", wrong),
        "kto": tally(labelled, "label", ["desirable", "undesirable"]),
        "kto_by_source": tally(kto, "source", sources),
        "preferences": tally(pairs, "kind", ["competitive", "gold"]),
    }


def _content_digest(identity: dict[str, str], tables: dict[str, list[Row]]) -> str:
    canonical = json.dumps(
        {"schema_version": SCHEMA_VERSION, **identity, "tables": tables},
        sort_keys=True,
        ensure_ascii=False,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def _parquet(rows: list[Row], schema: pa.Schema) -> bytes:
    table = pa.Table.from_pylist(rows, schema=schema)
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    return buffer.getvalue()


# Versions.


def _version_numbers(keys: Iterable[str]) -> tuple[set[int], set[int]]:
    """(every version number that has any file, the numbers that have a manifest)."""
    seen: set[int] = set()
    complete: set[int] = set()
    for key in keys:
        match = _VERSION.match(key)
        if match is None:
            continue
        number = int(match["number"])
        seen.add(number)
        if key == f"{DATASET_PREFIX}/v{number}/{MANIFEST}":
            complete.add(number)
    return seen, complete


def load_manifest(store: Store, version: str | int) -> DatasetManifest:
    """The manifest of one version ("v3", "dataset/v3" or 3).

    Raises:
        DatasetError: the version has no manifest (it is incomplete or absent), or the manifest
            cannot be read.
    """
    name = str(version).removeprefix(f"{DATASET_PREFIX}/").strip("/")
    if not name.startswith("v"):
        name = f"v{name}"
    key = f"{DATASET_PREFIX}/{name}/{MANIFEST}"
    if not store.exists(key):
        raise DatasetError(
            f"{store.uri(f'{DATASET_PREFIX}/{name}')} has no {MANIFEST}: the version is absent "
            "or a write did not finish, so it is not a dataset"
        )
    try:
        return DatasetManifest.model_validate_json(store.get_bytes(key))
    except ValidationError as exc:
        raise DatasetError(f"{store.uri(key)}: not a dataset manifest: {_first(exc)}") from None


def latest_version(store: Store) -> DatasetManifest | None:
    """The newest complete version, or None when there is none.

    The newest version with a manifest wins even where `dataset/LATEST` lags behind it (a
    writer that stopped between the two); a version without a manifest is never reported.
    """
    _, complete = _version_numbers(store.list(f"{DATASET_PREFIX}/"))
    if not complete:
        return None
    return load_manifest(store, max(complete))


# Writing.


def write_dataset(
    *,
    store: Store,
    experiment: str,
    spec_digest: str,
    benchmark_digest: str,
    records: Iterable[GradedRecord] | None = None,
    items: Iterable[BenchmarkItem] | None = None,
) -> DatasetManifest:
    """Write the next dataset version, or return the newest one when its content is the same.

    Records and items default to what the grade stage left in the store. Records of roles
    other than the two competitors and of held-out items are left out; duplicate records of one
    answer are kept once.

    Raises:
        DatasetError: a record names an unknown item, disagrees with the items about the split,
            or contradicts another record of the same answer; or no train answer exists.
        StorageError: the store failed. A version interrupted before its manifest was written
            is removed where the store still allows it, and is never reported in any case.
    """
    item_list = list(items) if items is not None else read_items(store)
    if records is None:
        sourced: Iterable[tuple[str, GradedRecord]] = _graded_with_sources(
            store, roles=COMPETITOR_ROLES
        )
    else:
        sourced = ((f"records[{i}]", record) for i, record in enumerate(records))
    selection = _select(sourced, item_list)
    if not selection.answers:
        raise DatasetError(
            f"no competitor answers on train items under {store.uri(GRADED_PREFIX)} "
            f"({selection.held_out_records} held-out records excluded): nothing to write"
        )

    tables = {
        "incorrect": _incorrect_rows(selection),
        "kto": _kto_rows(selection),
        "preferences": _preference_rows(selection),
    }
    identity = {
        "experiment": experiment,
        "spec_digest": spec_digest,
        "benchmark_digest": benchmark_digest,
    }
    digest = _content_digest(identity, tables)
    counts = _counts(selection, tables["incorrect"], tables["kto"], tables["preferences"])

    latest = latest_version(store)
    if latest is not None and latest.content_digest == digest:
        log.info(
            "dataset %s already holds these answers; not writing another version",
            store.uri(latest.prefix),
            extra={"experiment": experiment, "stage": "write"},
        )
        _point_latest(store, latest)
        _report(latest)
        return latest

    number = _clear_incomplete(store, after=latest.number if latest else 0)
    manifest = _write_version(
        store, number=number, identity=identity, digest=digest, tables=tables, counts=counts
    )
    _point_latest(store, manifest)
    _report(manifest)
    log.info(
        "wrote dataset %s: %d incorrect answers, %d KTO examples, %d preference pairs",
        store.uri(manifest.prefix),
        sum(counts["incorrect"].values()),
        sum(counts["kto"].values()),
        sum(counts["preferences"].values()),
        extra={"experiment": experiment, "stage": "write"},
    )
    return manifest


def _clear_incomplete(store: Store, *, after: int) -> int:
    """Remove what interrupted writers left above the newest complete version; the next number.

    This assumes one writer per store at a time (the controller runs one write Job): a second
    writer would remove the first one's unfinished version, and the first would then fail.
    """
    seen, complete = _version_numbers(store.list(f"{DATASET_PREFIX}/"))
    for number in sorted(n for n in seen - complete if n > after):
        log.info("removing incomplete dataset version %s", store.uri(f"{DATASET_PREFIX}/v{number}"))
        store.delete(f"{DATASET_PREFIX}/v{number}/")
    return after + 1


def _write_version(
    store: Store,
    *,
    number: int,
    identity: dict[str, str],
    digest: str,
    tables: dict[str, list[Row]],
    counts: dict[str, dict[str, int]],
) -> DatasetManifest:
    version = f"v{number}"
    prefix = f"{DATASET_PREFIX}/{version}"
    incorrect = [
        {**row, "dataset_version": version, "spec_digest": identity["spec_digest"]}
        for row in tables["incorrect"]
    ]
    payloads = {
        "incorrect.parquet": (_parquet(incorrect, _INCORRECT_SCHEMA), len(incorrect)),
        "kto.parquet": (_parquet(tables["kto"], _KTO_SCHEMA), len(tables["kto"])),
        "preferences.parquet": (
            _parquet(tables["preferences"], _PREFERENCE_SCHEMA),
            len(tables["preferences"]),
        ),
    }
    created = datetime.now(UTC)
    card = _dataset_card(version=version, identity=identity, counts=counts, created=created)
    files: dict[str, FileEntry] = {}

    try:
        for name, (data, rows) in payloads.items():
            _put(store, f"{prefix}/{name}", data, identity["experiment"])
            files[name] = FileEntry(sha256=_sha256(data), bytes=len(data), rows=rows)
        card_bytes = card.encode()
        _put(store, f"{prefix}/{CARD}", card_bytes, identity["experiment"])
        files[CARD] = FileEntry(sha256=_sha256(card_bytes), bytes=len(card_bytes), rows=None)

        manifest = DatasetManifest(
            schema_version=SCHEMA_VERSION,
            version=version,
            content_digest=digest,
            created=created,
            files=files,
            counts=counts,
            **identity,
        )
        # The manifest goes last: its presence is what makes the version complete.
        _put(
            store,
            f"{prefix}/{MANIFEST}",
            manifest.model_dump_json(indent=2).encode(),
            identity["experiment"],
        )
    except Exception:
        _abandon(store, prefix)
        raise
    return manifest


def _abandon(store: Store, prefix: str) -> None:
    try:
        if store.exists(f"{prefix}/{MANIFEST}"):
            return
        store.delete(f"{prefix}/")
        log.warning("removed the interrupted dataset version %s", store.uri(prefix))
    except StorageError as exc:
        # No manifest was written, so nothing reports this folder; the next writer removes it.
        log.warning("could not remove the interrupted version %s: %s", store.uri(prefix), exc)


def _put(store: Store, key: str, data: bytes, experiment: str) -> None:
    store.put_bytes(key, data)
    metrics.dataset_bytes_written_total.labels(experiment=experiment).inc(len(data))


def _point_latest(store: Store, manifest: DatasetManifest) -> None:
    pointer = f"{manifest.version}\n".encode()
    try:
        current = store.get_bytes(LATEST_KEY)
    except StorageError:
        current = b""  # absent, or unreadable: writing it again says which
    if current != pointer:
        _put(store, LATEST_KEY, pointer, manifest.experiment)


def _report(manifest: DatasetManifest) -> None:
    experiment = manifest.experiment
    counts = manifest.counts
    metrics.incorrect_answers_kept.labels(experiment=experiment).set(
        sum(counts["incorrect"].values())
    )
    for label in ("desirable", "undesirable"):
        metrics.kto_examples.labels(experiment=experiment, label=label).set(counts["kto"][label])
    for kind in ("competitive", "gold"):
        metrics.preference_pairs.labels(experiment=experiment, kind=kind).set(
            counts["preferences"][kind]
        )


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _dataset_card(
    *,
    version: str,
    identity: dict[str, str],
    counts: dict[str, dict[str, int]],
    created: datetime,
) -> str:
    inputs, kto, pairs, incorrect = (
        counts["inputs"],
        counts["kto"],
        counts["preferences"],
        counts["incorrect"],
    )
    return f"""---
configs:
- config_name: kto
  data_files: kto.parquet
  default: true
- config_name: preferences
  data_files: preferences.parquet
- config_name: incorrect
  data_files: incorrect.parquet
---

# {identity["experiment"]}: dataset {version}

Training data made by prospect from two competing models' answers to a benchmark. A supervisor
marked every answer against the benchmark's gold answer; an answer it could not read counts as
wrong. Only train items are used; held-out items are kept for evaluation and never appear here.

- Experiment: `{identity["experiment"]}`
- Spec digest: `{identity["spec_digest"]}`
- Benchmark digest: `{identity["benchmark_digest"]}`
- Created: {created.isoformat()}
- Writer schema version: {SCHEMA_VERSION}

Inputs: {inputs["train_items"]} train items, {inputs["train_records"]} competitor answers
({inputs["blank_responses"]} blank, kept only in `incorrect.parquet`);
{inputs["held_out_records_excluded"]} answers to held-out items were left out.

## Files

`kto.parquet` ({sum(kto.values())} rows: {kto["desirable"]} desirable, {kto["undesirable"]}
undesirable) is in TRL's unpaired preference format for `KTOTrainer`:

| column | meaning |
|---|---|
| prompt | the prompt the competitors saw |
| completion | a competitor's answer, or the benchmark's gold reference |
| label | true: desirable (a correct answer or the gold reference); false: undesirable |
| source | `competitor:large`, `competitor:small` or `gold-reference` |
| item_id | the benchmark item |

Desirable and undesirable rows are interleaved so that batches hold both labels.

`preferences.parquet` ({sum(pairs.values())} pairs: {pairs["competitive"]} competitive,
{pairs["gold"]} gold) is in TRL's paired preference format for `DPOTrainer`:

| column | meaning |
|---|---|
| prompt | the prompt the competitors saw |
| chosen | the correct answer (competitive) or the gold reference (gold) |
| rejected | a wrong answer |
| kind | `competitive`: one competitor right, the other wrong; `gold`: none was right |
| item_id | the benchmark item |
| rejected_role | the competitor whose answer is rejected |

Competitive pairs come first.

`incorrect.parquet` ({sum(incorrect.values())} rows) holds every wrong or unparseable answer once,
with its provenance: item_id, role, model, prompt, response, extracted (the final answer read
from the response, if any), gold, verdict (`incorrect` or `unparseable`), extraction (`rule`,
`extractor` or `none`), prompt_tokens, completion_tokens, latency_seconds, finish_reason,
error, dataset_version and spec_digest.

`manifest.json` lists every file with its sha256, size and row count, and the counts above.

## Licence

The prompts, gold answers and references come from the benchmark, and the dataset inherits
the benchmark's licence. The completions were generated by the competitor models, whose own
licences may restrict how their outputs are used.
"""
