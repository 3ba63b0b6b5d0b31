"""Every Prometheus metric the project exports, in one place.

Names follow Prometheus conventions: base units (seconds, bytes), `_total` for counters, and
labels with a small, known set of values (experiment, role, verdict, label, kind, stage, phase).
No item ids, prompts or model outputs ever become label values.

The operator serves these on `/metrics`; short-lived stage processes push them to a Pushgateway
when one is configured (:func:`push`, or :func:`pushing` to push while a long stage runs), or
serve them on a port (:func:`serve`) so a local Prometheus or a PodMonitor can scrape a running
stage. The Grafana dashboard and the alerts in charts/prospect query these names; tests/metrics
checks that every name they use is defined here.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    push_to_gateway,
    start_http_server,
)

__all__ = [
    "REGISTRY",
    "push",
    "pushing",
    "serve",
]

log = logging.getLogger("prospect")

REGISTRY = CollectorRegistry(auto_describe=True)
_NS = "prospect"

# Operator.
experiments = Gauge(f"{_NS}_experiments", "Experiments by phase.", ["phase"], registry=REGISTRY)
stage_duration_seconds = Histogram(
    f"{_NS}_stage_duration_seconds",
    "Wall time of a finished stage.",
    ["experiment", "stage"],
    buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600),
    registry=REGISTRY,
)
reconcile_errors_total = Counter(
    f"{_NS}_reconcile_errors_total",
    "Reconciliations that raised an error.",
    ["reason"],
    registry=REGISTRY,
)

# Grading.
answers_graded_total = Counter(
    f"{_NS}_answers_graded_total",
    "Answers marked by the supervisor.",
    ["experiment", "role", "verdict"],
    registry=REGISTRY,
)
items_total = Gauge(
    f"{_NS}_items", "Benchmark items to grade per competitor.", ["experiment"], registry=REGISTRY
)
accuracy_ratio = Gauge(
    f"{_NS}_accuracy_ratio",
    "Share of correct answers so far, by competitor.",
    ["experiment", "role"],
    registry=REGISTRY,
)
unparseable_answers_total = Counter(
    f"{_NS}_unparseable_answers_total",
    "Answers from which no final answer could be read.",
    ["experiment", "role"],
    registry=REGISTRY,
)
request_duration_seconds = Histogram(
    f"{_NS}_request_duration_seconds",
    "Latency of a competitor's completion request.",
    ["experiment", "role"],
    buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 40, 80, 160, 320),
    registry=REGISTRY,
)
tokens_total = Counter(
    f"{_NS}_tokens_total",
    "Tokens processed by the competitors.",
    ["experiment", "role", "direction"],
    registry=REGISTRY,
)
request_errors_total = Counter(
    f"{_NS}_request_errors_total",
    "Completion requests that failed after their retries.",
    ["experiment", "role"],
    registry=REGISTRY,
)
items_set_aside_total = Counter(
    f"{_NS}_items_set_aside_total",
    "Benchmark rows set aside as malformed.",
    ["experiment"],
    registry=REGISTRY,
)

# Dataset writer.
incorrect_answers_kept = Gauge(
    f"{_NS}_incorrect_answers_kept",
    "Incorrect answers in the latest dataset version.",
    ["experiment"],
    registry=REGISTRY,
)
kto_examples = Gauge(
    f"{_NS}_kto_examples",
    "KTO examples in the latest dataset version, by label.",
    ["experiment", "label"],
    registry=REGISTRY,
)
preference_pairs = Gauge(
    f"{_NS}_preference_pairs",
    "Preference pairs in the latest dataset version, by kind.",
    ["experiment", "kind"],
    registry=REGISTRY,
)
dataset_bytes_written_total = Counter(
    f"{_NS}_dataset_bytes_written_total",
    "Bytes written to the store by the dataset writer.",
    ["experiment"],
    registry=REGISTRY,
)

# Trainer.
training_step = Gauge(
    f"{_NS}_training_step", "Last optimizer step logged.", ["experiment"], registry=REGISTRY
)
training_loss = Gauge(
    f"{_NS}_training_loss",
    "Training loss at the last logged step.",
    ["experiment"],
    registry=REGISTRY,
)
training_rewards = Gauge(
    f"{_NS}_training_rewards",
    "Mean implicit reward at the last logged step (chosen/rejected).",
    ["experiment", "side"],
    registry=REGISTRY,
)
training_reward_margin = Gauge(
    f"{_NS}_training_reward_margin",
    "Mean reward margin (chosen minus rejected) at the last logged step.",
    ["experiment"],
    registry=REGISTRY,
)
training_kl = Gauge(
    f"{_NS}_training_kl",
    "KL estimate at the last logged step (KTO).",
    ["experiment"],
    registry=REGISTRY,
)
training_learning_rate = Gauge(
    f"{_NS}_training_learning_rate",
    "Learning rate at the last logged step.",
    ["experiment"],
    registry=REGISTRY,
)
training_tokens_per_second = Gauge(
    f"{_NS}_training_tokens_per_second",
    "Training throughput in tokens per second.",
    ["experiment"],
    registry=REGISTRY,
)

# Evaluation.
held_out_accuracy_ratio = Gauge(
    f"{_NS}_held_out_accuracy_ratio",
    "Target's accuracy on held-out items, before and after training.",
    ["experiment", "when"],
    registry=REGISTRY,
)


def serve(port: int, *, addr: str = "127.0.0.1") -> WSGIServer:
    """Serve /metrics on a port in a daemon thread, until `shutdown()` on the returned server.

    Raises:
        OSError: the port is taken.
    """
    server, _thread = start_http_server(port, addr=addr, registry=REGISTRY)
    log.info("serving metrics on http://%s:%d/metrics", addr, port)
    return server


def push(gateway: str | None, *, job: str, grouping: dict[str, str]) -> None:
    """Push every metric to a Pushgateway; a failure is logged, never fatal to the stage."""
    if not gateway:
        return
    try:
        push_to_gateway(gateway, job=job, registry=REGISTRY, grouping_key=grouping)
    except OSError as exc:
        log.warning("could not push metrics to %s: %s", gateway, exc)


@contextmanager
def pushing(
    gateway: str | None, *, job: str, grouping: dict[str, str], every: float = 15.0
) -> Iterator[None]:
    """Push every `every` seconds while the block runs, and once more when it ends.

    A stage that pushes only when it is done shows nothing in Grafana while it works; this
    keeps a long grading or training stage visible. Without a gateway it does nothing. Each
    push replaces the group's previous one, so a group must belong to one process: put what
    tells parallel pods apart (the shard) in `grouping`.
    """
    if not gateway:
        yield
        return
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(every):
            push(gateway, job=job, grouping=grouping)

    thread = threading.Thread(target=loop, name="prospect-metrics-push", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        push(gateway, job=job, grouping=grouping)
