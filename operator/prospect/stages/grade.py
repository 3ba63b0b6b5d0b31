"""The supervisor at work: ask every item of every competitor, mark each answer, keep the record.

Requests go out concurrently through the OpenAI API and each answer is marked the moment it
arrives, so grading costs little more than generation itself (`bench/grading_overhead.py`
measures it). Records land in shards keyed by item and competitor
(`graded/<role>/shard-NNNNN.jsonl`); a rerun after a crash, a Ctrl-C or a killed pod reads what
is there and asks only for what is missing, so no record is ever written twice.

A request that still fails after its retries leaves its item unmarked (never "incorrect"): the
stage then fails with the count, and the next run asks again.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import openai

from prospect import metrics, prompts
from prospect.grading import Marking, Supervisor
from prospect.records import BenchmarkItem, Extraction, GradedRecord, Verdict
from prospect.spec import PromptStyle, SupervisorSpec
from prospect.stages.serve import Endpoint
from prospect.storage import Store

__all__ = [
    "GradeError",
    "GradeSummary",
    "ShardLedger",
    "grade",
    "read_records",
    "shard_key",
    "shard_of",
]

log = logging.getLogger("prospect")

Progress = Callable[[str, int, int], None]


class GradeError(RuntimeError):
    """Grading could not finish; what was graded is kept and a rerun continues."""


def shard_of(item_id: str, shards: int) -> int:
    """A stable shard for an item: the same on every machine, whatever the item order."""
    return int.from_bytes(hashlib.sha256(item_id.encode()).digest()[:8], "big") % shards


def shard_key(role: str, shard: int) -> str:
    return f"graded/{role}/shard-{shard:05d}.jsonl"


def read_records(store: Store, role: str | None = None) -> list[GradedRecord]:
    """Every graded record in the store (of one role, or of all), skipping a torn last line."""
    prefix = f"graded/{role}/" if role else "graded/"
    records: list[GradedRecord] = []
    for key in store.list(prefix):
        if key.endswith(".jsonl"):
            records.extend(_parse_shard(store.get_bytes(key), key))
    return records


def _parse_shard(data: bytes, key: str) -> list[GradedRecord]:
    records = []
    for number, line in enumerate(data.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(GradedRecord.model_validate_json(line))
        except ValueError:
            log.warning("%s line %d is not a complete record; it will be graded again", key, number)
    return records


@dataclass
class ShardLedger:
    """The records of the shards this process owns, and when to write them back.

    A shard is rewritten whole (the store renames it into place), at most every
    `flush_seconds`, and once more when grading ends for whatever reason.
    """

    store: Store
    flush_seconds: float = 2.0
    _lines: dict[str, dict[tuple[str, str], str]] = field(default_factory=dict)
    _dirty: set[str] = field(default_factory=set)
    _last_flush: float = field(default_factory=time.monotonic)

    def load(self, key: str) -> list[GradedRecord]:
        records = _parse_shard(self.store.get_bytes(key), key) if self.store.exists(key) else []
        self._lines[key] = {r.key: r.model_dump_json() for r in records}
        return records

    def add(self, key: str, record: GradedRecord) -> None:
        lines = self._lines.setdefault(key, {})
        if record.key in lines:
            return
        lines[record.key] = record.model_dump_json()
        self._dirty.add(key)

    def due(self) -> bool:
        return bool(self._dirty) and time.monotonic() - self._last_flush >= self.flush_seconds

    def flush(self) -> None:
        for key in sorted(self._dirty):
            body = "".join(line + "\n" for line in self._lines[key].values())
            self.store.put_bytes(key, body.encode())
        self._dirty.clear()
        self._last_flush = time.monotonic()


@dataclass
class GradeSummary:
    """What a grading run leaves behind, per role."""

    total: dict[str, int] = field(default_factory=dict)
    graded: dict[str, int] = field(default_factory=dict)
    correct: dict[str, int] = field(default_factory=dict)
    unparseable: dict[str, int] = field(default_factory=dict)
    failed: dict[str, int] = field(default_factory=dict)
    asked: int = 0

    def as_json(self) -> dict[str, object]:
        return {
            "graded": sum(self.graded.values()),
            "total": sum(self.total.values()),
            "correct": self.correct,
            "unparseable": self.unparseable,
        }


@dataclass
class _Job:
    item: BenchmarkItem
    endpoint: Endpoint
    key: str
    prompt: str


class _Asker:
    """One OpenAI client per server, with a cap on requests in flight."""

    def __init__(self, spec: SupervisorSpec) -> None:
        self._spec = spec
        self._clients: dict[str, openai.AsyncOpenAI] = {}
        self._gates: dict[str, asyncio.Semaphore] = defaultdict(
            lambda: asyncio.Semaphore(spec.concurrency)
        )

    def client(self, base_url: str) -> openai.AsyncOpenAI:
        if base_url not in self._clients:
            self._clients[base_url] = openai.AsyncOpenAI(
                base_url=base_url,
                api_key="not-needed",
                max_retries=self._spec.retries,
                timeout=self._spec.request_timeout_seconds,
            )
        return self._clients[base_url]

    async def ask(
        self, endpoint: Endpoint, content: str, *, kind: str, max_tokens: int | None = None
    ) -> tuple[str, int, int, str | None]:
        """(text, prompt tokens, completion tokens, finish reason) for one prompt."""
        client = self.client(endpoint.base_url)
        tokens = max_tokens or endpoint.max_tokens
        async with self._gates[endpoint.base_url]:
            if endpoint.style == PromptStyle.COMPLETION:
                completion = await client.completions.create(
                    model=endpoint.model,
                    prompt=content,
                    max_tokens=tokens,
                    temperature=endpoint.temperature,
                    stop=prompts.stop_sequences(kind, endpoint.style),
                )
                choice = completion.choices[0]
                text, finish = choice.text, str(choice.finish_reason)
                usage = completion.usage
            else:
                chat = await client.chat.completions.create(
                    model=endpoint.model,
                    messages=prompts.chat_messages(content),  # type: ignore[arg-type]
                    max_tokens=tokens,
                    temperature=endpoint.temperature,
                    stop=prompts.stop_sequences(kind, endpoint.style) or None,
                )
                choice_chat = chat.choices[0]
                text = choice_chat.message.content or ""
                finish = str(choice_chat.finish_reason)
                usage = chat.usage
        prompt_tokens = usage.prompt_tokens if usage else 0
        completion_tokens = usage.completion_tokens if usage else 0
        return text, prompt_tokens, completion_tokens, finish

    async def close(self) -> None:
        for client in self._clients.values():
            await client.close()


async def _check_reachable(endpoints: Iterable[Endpoint], asker: _Asker) -> None:
    for endpoint in endpoints:
        try:
            await asker.client(endpoint.base_url).with_options(max_retries=0).models.list()
        except openai.APIError as exc:
            raise GradeError(
                f"{endpoint.role} competitor: cannot reach the OpenAI API at "
                f"{endpoint.base_url}: {type(exc).__name__}: {exc}"
            ) from None


def grade(
    *,
    experiment: str,
    spec: SupervisorSpec,
    supervisor: Supervisor,
    store: Store,
    endpoints: Sequence[Endpoint],
    items: Sequence[BenchmarkItem],
    few_shot: Sequence[BenchmarkItem],
    shard_index: int = 0,
    shard_count: int = 1,
    extractor: Endpoint | None = None,
    progress: Progress | None = None,
) -> GradeSummary:
    """Grade every owned item for every endpoint; resume from records already in the store.

    Raises:
        GradeError: an endpoint is unreachable, or some requests failed after their retries
            (what was graded is kept).
    """
    if not 0 <= shard_index < shard_count:
        raise GradeError(f"shard index {shard_index} is outside 0..{shard_count - 1}")
    owned = [item for item in items if shard_of(item.id, spec.shards) % shard_count == shard_index]
    ledger = ShardLedger(store)
    summary = GradeSummary()
    jobs = _plan(owned, endpoints, few_shot, spec.shards, ledger, summary, experiment)
    metrics.items_total.labels(experiment).set(len(items))
    log.info(
        "grading %d answers (%d items, shard %d of %d); %d already graded",
        len(jobs),
        len(owned),
        shard_index,
        shard_count,
        sum(summary.graded.values()),
    )
    if progress:
        for endpoint in endpoints:
            progress(endpoint.role, summary.graded[endpoint.role], summary.total[endpoint.role])

    async def ask_all() -> int:
        asker = _Asker(spec)
        try:
            if jobs:
                await _check_reachable([*endpoints, *([extractor] if extractor else [])], asker)
            return await _run_jobs(
                jobs, asker, supervisor, extractor, ledger, summary, experiment, progress
            )
        finally:
            await asker.close()

    try:
        failures = asyncio.run(ask_all())
    finally:
        ledger.flush()

    summary.asked = len(jobs)
    if failures:
        raise GradeError(
            f"{failures} of {len(jobs)} requests failed after {spec.retries} retries (first: "
            f"{summary.failed}); the {len(jobs) - failures} graded answers are kept and a rerun "
            "asks only for the rest"
        )
    return summary


def _plan(
    owned: Sequence[BenchmarkItem],
    endpoints: Sequence[Endpoint],
    few_shot: Sequence[BenchmarkItem],
    shards: int,
    ledger: ShardLedger,
    summary: GradeSummary,
    experiment: str,
) -> list[_Job]:
    done: set[tuple[str, str]] = set()
    loaded: set[str] = set()
    for endpoint in endpoints:
        summary.total[endpoint.role] = len(owned)
        summary.graded[endpoint.role] = 0
        summary.correct[endpoint.role] = 0
        summary.unparseable[endpoint.role] = 0
        summary.failed[endpoint.role] = 0

    wanted = {item.id for item in owned}
    for endpoint in endpoints:
        for shard in sorted({shard_of(item.id, shards) for item in owned}):
            key = shard_key(endpoint.role, shard)
            if key in loaded:
                continue
            loaded.add(key)
            for record in ledger.load(key):
                if record.item_id in wanted and record.key not in done:
                    done.add(record.key)
                    _count(summary, record, experiment, restored=True)

    jobs = []
    for item in owned:
        content = prompts.build_prompt(item, few_shot)  # the same content for every competitor
        for endpoint in endpoints:
            if (item.id, endpoint.role) in done:
                continue
            key = shard_key(endpoint.role, shard_of(item.id, shards))
            jobs.append(_Job(item, endpoint, key, content))
    return jobs


def _count(summary: GradeSummary, record: GradedRecord, experiment: str, *, restored: bool) -> None:
    role = record.role
    summary.graded[role] = summary.graded.get(role, 0) + 1
    if record.verdict is Verdict.CORRECT:
        summary.correct[role] = summary.correct.get(role, 0) + 1
    if record.verdict is Verdict.UNPARSEABLE:
        summary.unparseable[role] = summary.unparseable.get(role, 0) + 1
    if not restored:
        metrics.answers_graded_total.labels(experiment, role, record.verdict.value).inc()
        if record.verdict is Verdict.UNPARSEABLE:
            metrics.unparseable_answers_total.labels(experiment, role).inc()
        metrics.request_duration_seconds.labels(experiment, role).observe(record.latency_seconds)
        metrics.tokens_total.labels(experiment, role, "prompt").inc(record.prompt_tokens)
        metrics.tokens_total.labels(experiment, role, "completion").inc(record.completion_tokens)
    graded = summary.graded[role]
    metrics.accuracy_ratio.labels(experiment, role).set(summary.correct.get(role, 0) / graded)


async def _run_jobs(
    jobs: Sequence[_Job],
    asker: _Asker,
    supervisor: Supervisor,
    extractor: Endpoint | None,
    ledger: ShardLedger,
    summary: GradeSummary,
    experiment: str,
    progress: Progress | None,
) -> int:
    failures = 0

    async def one(job: _Job) -> GradedRecord | None:
        nonlocal failures
        started = time.perf_counter()
        try:
            text, prompt_tokens, completion_tokens, finish = await asker.ask(
                job.endpoint, job.prompt, kind=job.item.kind
            )
        except openai.APIError as exc:
            failures += 1
            summary.failed[job.endpoint.role] += 1
            metrics.request_errors_total.labels(experiment, job.endpoint.role).inc()
            log.warning("%s competitor: item %s failed: %s", job.endpoint.role, job.item.id, exc)
            return None
        latency = time.perf_counter() - started

        marking = supervisor.mark(job.item, text)
        if marking.verdict is Verdict.UNPARSEABLE and extractor is not None:
            marking = await _extract(asker, supervisor, extractor, job.item, text, marking)
        return GradedRecord(
            item_id=job.item.id,
            role=job.endpoint.role,
            model=job.endpoint.label,
            split=job.item.split,
            prompt=job.prompt,
            response=text,
            extracted=marking.extracted,
            gold=job.item.gold,
            verdict=marking.verdict,
            extraction=marking.extraction,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            latency_seconds=round(latency, 4),
            finish_reason=finish,
        )

    async def keyed(job: _Job) -> tuple[_Job, GradedRecord | None]:
        return job, await one(job)

    pending = [asyncio.ensure_future(keyed(job)) for job in jobs]
    try:
        for future in asyncio.as_completed(pending):
            job, record = await future
            if record is None:
                continue
            ledger.add(job.key, record)
            _count(summary, record, experiment, restored=False)
            if progress:
                progress(record.role, summary.graded[record.role], summary.total[record.role])
            if ledger.due():
                await asyncio.to_thread(ledger.flush)
    finally:
        for future in pending:
            future.cancel()
    return failures


async def _extract(
    asker: _Asker,
    supervisor: Supervisor,
    extractor: Endpoint,
    item: BenchmarkItem,
    response: str,
    fallback: Marking,
) -> Marking:
    """Ask the supervisory LLM to map an unparseable answer onto the answer space, then mark
    its output by code. Its failure leaves the answer unparseable."""
    if not response.strip():
        return fallback
    try:
        text, *_ = await asker.ask(
            extractor,
            prompts.extractor_prompt(item, response),
            kind=item.kind,
            max_tokens=extractor.max_tokens,
        )
    except openai.APIError as exc:
        log.warning("extractor failed on item %s: %s", item.id, exc)
        return fallback
    marking = supervisor.mark_extracted(item, text)
    if marking.extraction is not Extraction.EXTRACTOR or marking.extracted is None:
        return fallback
    return marking
