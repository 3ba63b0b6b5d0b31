"""The dataset writer, on a local folder store, with answers graded on real GSM8K items."""

from __future__ import annotations

import hashlib
import itertools
import tempfile
from collections import Counter
from pathlib import Path

import datasets
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prospect import metrics
from prospect.records import GradedRecord, Split, Verdict
from prospect.stages import write
from prospect.stages.write import DatasetError, DatasetManifest
from prospect.storage import DirStore, StorageError

SPEC = "a" * 64
BENCH = "b" * 64
DATA_FILES = ("incorrect.parquet", "kto.parquet", "preferences.parquet")


def written(store: DirStore, manifest: DatasetManifest, name: str) -> list[dict]:
    return pq.read_table(Path(store.uri(manifest.key(name)))).to_pylist()


def write_standard(store: DirStore, exam, **overrides) -> DatasetManifest:
    exam.store_into(store)
    arguments = {
        "store": store,
        "experiment": "gsm8k-qwen",
        "spec_digest": SPEC,
        "benchmark_digest": BENCH,
        **overrides,
    }
    return write.write_dataset(**arguments)


@pytest.fixture
def store(tmp_path: Path) -> DirStore:
    return DirStore(tmp_path / "store")


# What goes in.


def test_every_incorrect_train_answer_is_kept_exactly_once(store, standard_exam):
    manifest = write_standard(store, standard_exam)

    rows = written(store, manifest, "incorrect.parquet")
    keys = [(row["item_id"], row["role"]) for row in rows]
    assert Counter(keys) == Counter(standard_exam.expected_incorrect())
    assert {row["verdict"] for row in rows} == {"incorrect", "unparseable"}
    assert manifest.counts["incorrect"] == {
        "large": sum(role == "large" for _, role in keys),
        "small": sum(role == "small" for _, role in keys),
    }
    assert manifest.counts["incorrect_by_verdict"] == {
        "incorrect": sum(row["verdict"] == "incorrect" for row in rows),
        "unparseable": sum(row["verdict"] == "unparseable" for row in rows),
    }


def test_incorrect_answers_carry_their_provenance(store, standard_exam):
    manifest = write_standard(store, standard_exam)

    rows = written(store, manifest, "incorrect.parquet")
    record = next(
        r for r in standard_exam.records if (r.item_id, r.role) == (rows[0]["item_id"], "small")
    )
    row = next(r for r in rows if (r["item_id"], r["role"]) == (record.item_id, "small"))
    assert row["model"] == record.model
    assert row["prompt"] == record.prompt
    assert row["response"] == record.response
    assert row["extracted"] == record.extracted
    assert row["gold"] == record.gold
    assert row["extraction"] == record.extraction.value
    assert row["prompt_tokens"] == record.prompt_tokens
    assert row["completion_tokens"] == record.completion_tokens
    assert row["latency_seconds"] == record.latency_seconds
    assert row["dataset_version"] == "v1"
    assert row["spec_digest"] == SPEC


def test_held_out_items_never_reach_any_file(store, standard_exam):
    held_out = {item.id for item in standard_exam.items} - standard_exam.train_ids
    assert held_out

    manifest = write_standard(store, standard_exam)

    for name in DATA_FILES:
        assert not {row["item_id"] for row in written(store, manifest, name)} & held_out
    assert manifest.counts["inputs"]["held_out_records_excluded"] == 2 * len(held_out)


def test_records_of_other_roles_are_ignored(store, standard_exam):
    target = standard_exam.records[0].model_copy(
        update={"role": "target-after", "verdict": Verdict.INCORRECT, "response": "42"}
    )
    store.put_bytes("graded/target-after/shard-00000.jsonl", target.model_dump_json().encode())

    manifest = write_standard(store, standard_exam)

    for name in DATA_FILES:
        rows = written(store, manifest, name)
        assert "target-after" not in {row.get("role") or row.get("rejected_role") for row in rows}
        assert "42" not in {row.get("response") or row.get("completion") for row in rows}


def test_a_record_graded_twice_alike_is_kept_once(store, standard_exam):
    standard_exam.store_into(store)
    duplicate = next(r for r in standard_exam.records if not r.verdict.is_correct)
    shard = f"graded/{duplicate.role}/shard-00009.jsonl"
    store.put_bytes(shard, duplicate.model_dump_json().encode())

    manifest = write.write_dataset(
        store=store, experiment="gsm8k-qwen", spec_digest=SPEC, benchmark_digest=BENCH
    )

    keys = [(r["item_id"], r["role"]) for r in written(store, manifest, "incorrect.parquet")]
    assert keys.count(duplicate.key) == 1


def test_a_record_in_another_roles_folder_is_refused(store, standard_exam):
    standard_exam.store_into(store)
    large = next(r for r in standard_exam.records if r.role == "large")
    store.put_bytes("graded/small/shard-00009.jsonl", large.model_dump_json().encode())

    with pytest.raises(DatasetError, match="role 'large' in the folder of 'small'"):
        write.read_graded(store)


def test_a_record_graded_twice_differently_is_an_error_naming_the_item(store, standard_exam):
    record = standard_exam.records[0]
    flipped = record.model_copy(update={"verdict": Verdict.INCORRECT})

    with pytest.raises(DatasetError, match=rf"item '{record.item_id}', role {record.role}"):
        write.write_dataset(
            store=store,
            experiment="gsm8k-qwen",
            spec_digest=SPEC,
            benchmark_digest=BENCH,
            records=[*standard_exam.records, flipped],
            items=standard_exam.items,
        )


def test_a_record_for_an_unknown_item_names_the_item_and_the_shard(store, standard_exam):
    standard_exam.store_into(store)
    stray = standard_exam.records[0].model_copy(update={"item_id": "gsm8k-test-99999"})
    store.put_bytes("graded/large/shard-00007.jsonl", stray.model_dump_json().encode() + b"\n")

    with pytest.raises(DatasetError) as raised:
        write.write_dataset(
            store=store, experiment="gsm8k-qwen", spec_digest=SPEC, benchmark_digest=BENCH
        )

    assert "'gsm8k-test-99999'" in str(raised.value)
    assert "graded/large/shard-00007.jsonl line 1" in str(raised.value)


def test_a_malformed_shard_line_is_named(store, standard_exam):
    standard_exam.store_into(store)
    store.put_bytes("graded/small/shard-00003.jsonl", b'{"item_id": "gsm8k-test-00001"}\n')

    with pytest.raises(DatasetError, match=r"shard-00003.jsonl line 1: role: Field required"):
        write.read_graded(store)


def test_a_record_whose_split_disagrees_with_the_items_is_refused(store, standard_exam):
    items = [
        item.model_copy(update={"split": Split.HELD_OUT}) if index == 0 else item
        for index, item in enumerate(standard_exam.items)
    ]

    with pytest.raises(DatasetError, match="is train in the record but held-out"):
        write.write_dataset(
            store=store,
            experiment="gsm8k-qwen",
            spec_digest=SPEC,
            benchmark_digest=BENCH,
            records=standard_exam.records,
            items=items,
        )


def test_nothing_to_write_is_an_error(store, exam_of):
    exam = exam_of([("C", "I"), ("I", "I")], held_out={0, 1})

    with pytest.raises(DatasetError, match="no competitor answers on train items"):
        write_standard(store, exam)
    assert write.latest_version(store) is None


# What comes out.


def test_kto_holds_every_usable_answer_and_one_gold_reference_per_item(store, standard_exam):
    manifest = write_standard(store, standard_exam)

    rows = written(store, manifest, "kto.parquet")
    competitor = Counter(
        (row["item_id"], row["source"].removeprefix("competitor:"), row["label"])
        for row in rows
        if row["source"] != "gold-reference"
    )
    expected = Counter(
        (item_id, role, verdict.is_correct)
        for (item_id, role), verdict in standard_exam.verdicts.items()
        if item_id in standard_exam.train_ids
    )
    assert competitor == expected
    gold = [row for row in rows if row["source"] == "gold-reference"]
    assert sorted(row["item_id"] for row in gold) == sorted(standard_exam.train_ids)
    assert all(row["label"] for row in gold)
    assert manifest.counts["kto_by_source"] == dict(
        sorted(Counter(row["source"] for row in rows).items())
    )
    assert manifest.counts["kto"]["desirable"] == sum(row["label"] for row in rows)
    assert manifest.counts["kto"]["undesirable"] == sum(not row["label"] for row in rows)


def test_the_gold_reference_is_the_worked_solution_without_calculator_notes(store, standard_exam):
    manifest = write_standard(store, standard_exam)

    rows = written(store, manifest, "kto.parquet")
    first = standard_exam.items[0]
    gold = next(r for r in rows if r["item_id"] == first.id and r["source"] == "gold-reference")
    assert gold["completion"] == (
        "Janet sells 16 - 3 - 4 = 9 duck eggs a day.\n"
        "She makes 9 * 2 = $18 every day at the farmer\u2019s market.\n"
        "The answer is 18."
    )
    assert gold["prompt"] == next(r.prompt for r in standard_exam.records if r.item_id == first.id)


def test_an_item_without_a_reference_gets_a_stated_answer(standard_exam):
    item = standard_exam.items[0].model_copy(update={"reference": None})

    assert write.gold_completion(item) == "The answer is 18."


def test_kto_labels_alternate_when_the_counts_are_equal(store, exam_of):
    # Desirable: four gold references and two right answers; undesirable: six wrong answers.
    exam = exam_of([("I", "I"), ("C", "I"), ("I", "U"), ("C", "U")], held_out=())

    manifest = write_standard(store, exam)

    labels = [row["label"] for row in written(store, manifest, "kto.parquet")]
    assert labels.count(True) == labels.count(False) == 6
    assert all(a != b for a, b in itertools.pairwise(labels))


def test_preference_pairs_are_competitive_first_then_gold(store, standard_exam):
    manifest = write_standard(store, standard_exam)

    pairs = written(store, manifest, "preferences.parquet")
    kinds = [pair["kind"] for pair in pairs]
    assert kinds == sorted(kinds, key=lambda kind: kind != "competitive")
    assert manifest.counts["preferences"] == {
        "competitive": kinds.count("competitive"),
        "gold": kinds.count("gold"),
    }


def test_a_competitive_pair_prefers_the_competitor_that_was_right(store, standard_exam):
    manifest = write_standard(store, standard_exam)

    pairs = written(store, manifest, "preferences.parquet")
    by_key = {(r.item_id, r.role): r for r in standard_exam.records}
    competitive = [pair for pair in pairs if pair["kind"] == "competitive"]
    expected_items = {
        item_id
        for item_id in standard_exam.train_ids
        if {standard_exam.verdicts[(item_id, role)].is_correct for role in ("large", "small")}
        == {True, False}
    }
    assert {pair["item_id"] for pair in competitive} == expected_items
    assert len(competitive) == len(expected_items)
    for pair in competitive:
        loser = pair["rejected_role"]
        winner = "small" if loser == "large" else "large"
        assert pair["chosen"] == by_key[(pair["item_id"], winner)].response
        assert pair["rejected"] == by_key[(pair["item_id"], loser)].response
        assert pair["prompt"] == by_key[(pair["item_id"], loser)].prompt


def test_when_both_were_wrong_the_gold_reference_beats_each_wrong_answer(store, standard_exam):
    manifest = write_standard(store, standard_exam)

    pairs = [p for p in written(store, manifest, "preferences.parquet") if p["kind"] == "gold"]
    both_wrong = {
        item_id
        for item_id in standard_exam.train_ids
        if not any(
            standard_exam.verdicts[(item_id, role)].is_correct for role in ("large", "small")
        )
    }
    assert Counter(p["item_id"] for p in pairs) == {item_id: 2 for item_id in both_wrong}
    items = {item.id: item for item in standard_exam.items}
    for pair in pairs:
        assert pair["chosen"] == write.gold_completion(items[pair["item_id"]])
        assert pair["chosen"].endswith(f"The answer is {items[pair['item_id']].gold}.")
    assert {(p["item_id"], p["rejected_role"]) for p in pairs} == {
        (item_id, role) for item_id in both_wrong for role in ("large", "small")
    }


def test_a_blank_answer_stays_in_incorrect_but_trains_nothing(store, standard_exam):
    records = [
        r.model_copy(update={"response": "", "error": "timed out after 2 retries"})
        if r.key == ("gsm8k-test-00005", "small")
        else r
        for r in standard_exam.records
    ]

    manifest = write.write_dataset(
        store=store,
        experiment="gsm8k-qwen",
        spec_digest=SPEC,
        benchmark_digest=BENCH,
        records=records,
        items=standard_exam.items,
    )

    incorrect = written(store, manifest, "incorrect.parquet")
    blank = [r for r in incorrect if (r["item_id"], r["role"]) == ("gsm8k-test-00005", "small")]
    assert [r["error"] for r in blank] == ["timed out after 2 retries"]
    for name, column in (("kto.parquet", "completion"), ("preferences.parquet", "rejected")):
        assert "" not in {row[column] for row in written(store, manifest, name)}
    assert manifest.counts["inputs"]["blank_responses"] == 1


# Versions and the manifest.


def test_the_manifest_describes_every_file_byte_for_byte(store, standard_exam):
    manifest = write_standard(store, standard_exam)

    assert set(manifest.files) == {*DATA_FILES, "README.md"}
    for name, entry in manifest.files.items():
        data = store.get_bytes(manifest.key(name))
        assert entry.sha256 == hashlib.sha256(data).hexdigest()
        assert entry.bytes == len(data)
        if entry.rows is not None:
            assert entry.rows == pq.read_table(Path(store.uri(manifest.key(name)))).num_rows
    for entry, name in [
        ("incorrect", "incorrect.parquet"),
        ("incorrect_by_verdict", "incorrect.parquet"),
        ("kto", "kto.parquet"),
        ("kto_by_source", "kto.parquet"),
        ("preferences", "preferences.parquet"),
    ]:
        assert sum(manifest.counts[entry].values()) == manifest.files[name].rows
    assert manifest.version == "v1"
    assert manifest.experiment == "gsm8k-qwen"
    assert (manifest.spec_digest, manifest.benchmark_digest) == (SPEC, BENCH)
    assert manifest.schema_version == write.SCHEMA_VERSION
    assert write.load_manifest(store, "v1") == manifest
    assert store.get_bytes("dataset/LATEST") == b"v1\n"


def test_the_dataset_card_names_the_files_counts_and_licence(store, standard_exam):
    manifest = write_standard(store, standard_exam)

    card = " ".join(store.get_bytes(manifest.key("README.md")).decode().split())
    for name in DATA_FILES:
        assert f"`{name}`" in card
    kto, pairs = manifest.counts["kto"], manifest.counts["preferences"]
    assert f"{kto['desirable']} desirable, {kto['undesirable']} undesirable" in card
    assert f"{pairs['competitive']} competitive, {pairs['gold']} gold" in card
    assert SPEC in card and BENCH in card
    assert "inherits the benchmark's licence" in card


def test_a_rerun_with_the_same_answers_returns_the_same_version(store, standard_exam):
    first = write_standard(store, standard_exam)
    files = sorted(store.list("dataset/"))

    again = write_standard(store, standard_exam)

    assert again == first
    assert sorted(store.list("dataset/")) == files


def test_new_answers_or_a_new_spec_make_the_next_version(store, standard_exam):
    first = write_standard(store, standard_exam)
    both_right = ("gsm8k-test-00000", "large")
    assert standard_exam.verdicts[both_right] is Verdict.CORRECT
    flipped = [
        r.model_copy(update={"verdict": Verdict.INCORRECT}) if r.key == both_right else r
        for r in standard_exam.records
    ]

    second = write_standard(store, standard_exam, records=flipped)
    third = write_standard(store, standard_exam, spec_digest="c" * 64, records=flipped)

    assert [first.version, second.version, third.version] == ["v1", "v2", "v3"]
    assert second.counts["incorrect"]["large"] == first.counts["incorrect"]["large"] + 1
    assert write.latest_version(store) == third
    assert store.get_bytes("dataset/LATEST") == b"v3\n"


class FailingStore(DirStore):
    """A folder store that starts refusing writes after a number of them (and, if told, every
    other call too), the way a store that goes away mid-write does."""

    def __init__(self, root: Path, *, writes_allowed: int, then_everything_fails: bool) -> None:
        super().__init__(root)
        self.writes_allowed = writes_allowed
        self.then_everything_fails = then_everything_fails
        self.failed = False

    def put_bytes(self, key: str, data: bytes) -> None:
        if self.writes_allowed <= 0:
            self.failed = True
            raise StorageError(f"cannot write {self.uri(key)}: connection reset")
        self.writes_allowed -= 1
        super().put_bytes(key, data)

    def delete(self, key: str) -> None:
        if self.failed and self.then_everything_fails:
            raise StorageError(f"cannot delete {self.uri(key)}: connection reset")
        super().delete(key)

    def exists(self, key: str) -> bool:
        if self.failed and self.then_everything_fails:
            raise StorageError(f"cannot stat {self.uri(key)}: connection reset")
        return super().exists(key)


# Writes of one version: three data files, the card, the manifest, then LATEST.
@pytest.mark.parametrize("writes_allowed", [0, 1, 2, 3, 4])
@pytest.mark.parametrize("then_everything_fails", [False, True])
def test_a_store_failing_midway_leaves_no_complete_version(
    tmp_path, standard_exam, writes_allowed, then_everything_fails
):
    root = tmp_path / "store"
    standard_exam.store_into(DirStore(root))
    previous = write_standard(DirStore(root), standard_exam, experiment="earlier")
    failing = FailingStore(
        root, writes_allowed=writes_allowed, then_everything_fails=then_everything_fails
    )

    with pytest.raises(StorageError, match="connection reset"):
        write.write_dataset(
            store=failing, experiment="gsm8k-qwen", spec_digest=SPEC, benchmark_digest=BENCH
        )

    healthy = DirStore(root)
    assert write.latest_version(healthy) == previous
    assert not healthy.exists("dataset/v2/manifest.json")
    assert healthy.get_bytes("dataset/LATEST") == b"v1\n"
    with pytest.raises(DatasetError, match="is not a dataset"):
        write.load_manifest(healthy, 2)
    left = healthy.list("dataset/v2/")
    assert left == [] or then_everything_fails

    retried = write.write_dataset(
        store=healthy, experiment="gsm8k-qwen", spec_digest=SPEC, benchmark_digest=BENCH
    )
    assert retried.version == "v2"
    assert sorted(healthy.list("dataset/v2/")) == sorted(
        f"dataset/v2/{name}" for name in [*DATA_FILES, "README.md", "manifest.json"]
    )
    for name, entry in retried.files.items():
        assert hashlib.sha256(healthy.get_bytes(retried.key(name))).hexdigest() == entry.sha256


def test_a_store_failing_on_the_latest_pointer_leaves_a_complete_version(tmp_path, standard_exam):
    root = tmp_path / "store"
    standard_exam.store_into(DirStore(root))
    failing = FailingStore(root, writes_allowed=5, then_everything_fails=False)

    with pytest.raises(StorageError, match="connection reset"):
        write.write_dataset(
            store=failing, experiment="gsm8k-qwen", spec_digest=SPEC, benchmark_digest=BENCH
        )

    healthy = DirStore(root)
    complete = write.latest_version(healthy)
    assert complete is not None and complete.version == "v1"
    assert not healthy.exists("dataset/LATEST")
    again = write.write_dataset(
        store=healthy, experiment="gsm8k-qwen", spec_digest=SPEC, benchmark_digest=BENCH
    )
    assert again == complete
    assert healthy.get_bytes("dataset/LATEST") == b"v1\n"


# Loading and metrics.


def test_every_file_loads_with_datasets_as_it_is(store, standard_exam, tmp_path):
    manifest = write_standard(store, standard_exam)

    loaded = {
        name: datasets.load_dataset(
            "parquet",
            data_files=store.uri(manifest.key(name)),
            split="train",
            cache_dir=str(tmp_path / "hf-cache"),
        )
        for name in DATA_FILES
    }

    assert loaded["kto.parquet"].column_names[:3] == ["prompt", "completion", "label"]
    assert loaded["kto.parquet"].features["label"].dtype == "bool"
    assert loaded["preferences.parquet"].column_names[:3] == ["prompt", "chosen", "rejected"]
    for name, dataset in loaded.items():
        assert dataset.num_rows == manifest.files[name].rows


def test_the_version_folder_loads_by_config_name_from_its_card(store, standard_exam, tmp_path):
    manifest = write_standard(store, standard_exam)

    pairs = datasets.load_dataset(
        store.uri(manifest.prefix),
        "preferences",
        split="train",
        cache_dir=str(tmp_path / "hf-cache"),
    )

    assert pairs.num_rows == manifest.files["preferences.parquet"].rows


def test_the_metrics_report_the_latest_version(store, standard_exam):
    def value(name: str, **labels: str) -> float | None:
        return metrics.REGISTRY.get_sample_value(name, {"experiment": "metrics-test", **labels})

    before = value("prospect_dataset_bytes_written_total") or 0.0
    manifest = write_standard(store, standard_exam, experiment="metrics-test")

    counts = manifest.counts
    assert value("prospect_incorrect_answers_kept") == manifest.files["incorrect.parquet"].rows
    for label in ("desirable", "undesirable"):
        assert value("prospect_kto_examples", label=label) == counts["kto"][label]
    for kind in ("competitive", "gold"):
        assert value("prospect_preference_pairs", kind=kind) == counts["preferences"][kind]
    written_bytes = sum(entry.bytes for entry in manifest.files.values())
    assert value("prospect_dataset_bytes_written_total") - before > written_bytes


# Invariants over any grading.

_CODES = st.sampled_from(["C", "I", "U", "-"])


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    table=st.lists(st.tuples(_CODES, _CODES), min_size=1, max_size=16),
    held_out=st.sets(st.integers(0, 15), max_size=4),
)
def test_any_grading_keeps_each_wrong_answer_once_and_spreads_the_labels(exam_of, table, held_out):
    exam = exam_of(table, held_out=held_out)
    if not any(item_id in exam.train_ids for item_id, _ in exam.verdicts):
        return  # nothing to write; covered by test_nothing_to_write_is_an_error

    with tempfile.TemporaryDirectory() as root:
        store = DirStore(Path(root))
        manifest = write.write_dataset(
            store=store,
            experiment="property",
            spec_digest=SPEC,
            benchmark_digest=BENCH,
            records=exam.records,
            items=exam.items,
        )
        incorrect = written(store, manifest, "incorrect.parquet")
        kto = written(store, manifest, "kto.parquet")
        pairs = written(store, manifest, "preferences.parquet")

    keys = [(row["item_id"], row["role"]) for row in incorrect]
    assert sorted(keys) == sorted(exam.expected_incorrect())
    assert sum(not row["label"] for row in kto) == len(keys)
    labels = [row["label"] for row in kto]
    share = labels.count(False) / len(labels)
    for n in range(1, len(labels) + 1):
        assert abs(labels[:n].count(False) - n * share) <= 0.5 + 1e-9
    kinds = [pair["kind"] for pair in pairs]
    assert kinds == sorted(kinds, key=lambda kind: kind != "competitive")
    for pair in pairs:
        assert pair["chosen"] != pair["rejected"]
        assert exam.verdicts[(pair["item_id"], pair["rejected_role"])] is not Verdict.CORRECT


def test_records_from_the_store_and_from_the_caller_make_the_same_dataset(tmp_path, standard_exam):
    from_store = DirStore(tmp_path / "a")
    from_caller = DirStore(tmp_path / "b")
    standard_exam.store_into(from_store, shards=3)

    stored = write.write_dataset(
        store=from_store, experiment="same", spec_digest=SPEC, benchmark_digest=BENCH
    )
    given_ = write.write_dataset(
        store=from_caller,
        experiment="same",
        spec_digest=SPEC,
        benchmark_digest=BENCH,
        records=list(reversed(standard_exam.records)),
        items=standard_exam.items,
    )

    assert stored.content_digest == given_.content_digest
    assert isinstance(write.read_graded(from_store)[0], GradedRecord)
