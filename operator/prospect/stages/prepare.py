"""Turn the benchmark into the exam: items with their split, few-shot examples, set-aside rows.

The result is written to the store (`items/`), where every later stage and every grading pod
reads the same list. Writing it twice writes the same bytes, so concurrent grading pods may all
run this stage without coordination.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel

from prospect import metrics
from prospect.benchmarks import load_benchmark
from prospect.records import BenchmarkItem, SetAside, Split
from prospect.spec import ProspectExperiment
from prospect.storage import Store, open_store

__all__ = ["ITEMS_KEY", "Exam", "prepare", "read_exam"]

log = logging.getLogger("prospect")

ITEMS_KEY = "items/items.jsonl"
FEW_SHOT_KEY = "items/few_shot.jsonl"
SET_ASIDE_KEY = "items/set_aside.jsonl"
BENCHMARK_KEY = "items/benchmark.json"


@dataclass(frozen=True)
class Exam:
    items: list[BenchmarkItem]
    few_shot: list[BenchmarkItem]
    set_aside: list[SetAside]
    source: str
    source_sha256: str

    @property
    def held_out(self) -> list[BenchmarkItem]:
        return [item for item in self.items if item.split is Split.HELD_OUT]


def _jsonl(rows: Iterable[BaseModel]) -> bytes:
    return "".join(row.model_dump_json() + "\n" for row in rows).encode()


def _fetcher(experiment: ProspectExperiment, base_dir: Path) -> Callable[[str], Path]:
    """Downloads an s3:// benchmark with the same credentials as the store."""

    def fetch(uri: str) -> Path:
        bucket_and_key = uri[len("s3://") :]
        bucket, _, key = bucket_and_key.partition("/")
        spec = experiment.spec.storage.model_copy(update={"uri": f"s3://{bucket}"})
        store = open_store(spec, default_root=base_dir)
        target = Path(tempfile.mkdtemp(prefix="prospect-benchmark-")) / Path(key).name
        store.get_file(key, target)
        return target

    return fetch


def prepare(experiment: ProspectExperiment, *, store: Store, base_dir: Path) -> Exam:
    """Load the benchmark and write the exam to the store.

    Raises:
        prospect.benchmarks.BenchmarkError: the source is missing or unreadable as a whole.
    """
    spec = experiment.spec
    loaded = load_benchmark(
        spec.benchmark,
        base_dir=base_dir,
        held_out_fraction=spec.evaluation.held_out_fraction if spec.evaluation.enabled else 0.0,
        fetch=_fetcher(experiment, base_dir),
    )
    exam = Exam(
        items=loaded.items,
        few_shot=loaded.few_shot,
        set_aside=loaded.set_aside,
        source=loaded.source,
        source_sha256=loaded.source_sha256,
    )
    store.put_bytes(ITEMS_KEY, _jsonl(exam.items))
    store.put_bytes(FEW_SHOT_KEY, _jsonl(exam.few_shot))
    store.put_bytes(SET_ASIDE_KEY, _jsonl(exam.set_aside))
    store.put_bytes(
        BENCHMARK_KEY,
        json.dumps(
            {
                "source": exam.source,
                "sha256": exam.source_sha256,
                "format": spec.benchmark.format.value,
                "items": len(exam.items),
                "heldOut": len(exam.held_out),
                "fewShot": len(exam.few_shot),
                "setAside": len(exam.set_aside),
                "rows": loaded.rows,
            },
            indent=2,
        ).encode(),
    )
    metrics.items_set_aside_total.labels(experiment.name).inc(len(exam.set_aside))
    for row in exam.set_aside[:20]:
        log.warning("set aside %s row %d: %s", row.source, row.row, row.reason)
    if len(exam.set_aside) > 20:
        log.warning("... and %d more rows set aside", len(exam.set_aside) - 20)
    return exam


def read_exam(store: Store) -> Exam:
    """The exam a previous `prepare` wrote.

    Raises:
        prospect.storage.StorageError: `prepare` has not run against this store.
    """

    def rows(key: str) -> list[str]:
        return [line for line in store.get_bytes(key).decode().splitlines() if line.strip()]

    info = json.loads(store.get_bytes(BENCHMARK_KEY))
    return Exam(
        items=[BenchmarkItem.model_validate_json(line) for line in rows(ITEMS_KEY)],
        few_shot=[BenchmarkItem.model_validate_json(line) for line in rows(FEW_SHOT_KEY)],
        set_aside=[SetAside.model_validate_json(line) for line in rows(SET_ASIDE_KEY)],
        source=info["source"],
        source_sha256=info["sha256"],
    )
