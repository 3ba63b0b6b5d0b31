"""The Grafana dashboard asks Prometheus only what it can answer, about metrics that exist.

Every panel's PromQL is sent to the real Prometheus of the test session after one stage of each
kind has pushed its metrics, so a misspelt metric, a label that no series carries or a syntax
error shows up as an error or as an empty panel.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fixtures.prometheus import Prometheus, Pushgateway, sample_names
from prospect import metrics
from prospect.records import Verdict

DASHBOARD = Path(__file__).resolve().parents[2] / "charts" / "prospect" / "dashboards"
EXPERIMENT = "dashboard"
# Grafana's variables, as Grafana expands them with this test's experiment selected.
VARIABLES = {"$experiment": EXPERIMENT, "$__rate_interval": "1m", "$__interval": "15s"}
METRIC = re.compile(r"\bprospect_[a-z0-9_]+")


def load() -> dict[str, Any]:
    dashboard: dict[str, Any] = json.loads((DASHBOARD / "prospect.json").read_text())
    return dashboard


def panels(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in node.get("panels", []):
        yield panel
        yield from panels(panel)


def queries() -> list[tuple[str, str]]:
    """(panel title and refId, PromQL) of every target of every panel."""
    return [
        (f"{panel['title']} {target['refId']}", target["expr"])
        for panel in panels(load())
        for target in panel.get("targets", [])
    ]


def expand(expr: str) -> str:
    for variable, value in VARIABLES.items():
        expr = expr.replace(variable, value)
    assert "$" not in expr, f"unknown variable in {expr!r}"
    return expr


def report_every_metric() -> None:
    """One experiment's worth of every metric, as the operator and each stage set them."""
    metrics.experiments.labels("Grading").set(1)
    metrics.experiments.labels("Succeeded").set(2)
    metrics.stage_duration_seconds.labels(EXPERIMENT, "grade").observe(240)
    metrics.reconcile_errors_total.labels("ApiError").inc()

    metrics.items_total.labels(EXPERIMENT).set(8)
    metrics.items_set_aside_total.labels(EXPERIMENT).inc(2)
    for role, verdict in [("large", Verdict.CORRECT), ("small", Verdict.INCORRECT)]:
        metrics.answers_graded_total.labels(EXPERIMENT, role, verdict.value).inc(3)
        metrics.answers_graded_total.labels(EXPERIMENT, role, Verdict.CORRECT.value).inc()
        metrics.accuracy_ratio.labels(EXPERIMENT, role).set(0.5)
        metrics.unparseable_answers_total.labels(EXPERIMENT, role).inc()
        metrics.request_duration_seconds.labels(EXPERIMENT, role).observe(1.5)
        metrics.request_errors_total.labels(EXPERIMENT, role).inc()
        for direction in ("prompt", "completion"):
            metrics.tokens_total.labels(EXPERIMENT, role, direction).inc(100)

    metrics.incorrect_answers_kept.labels(EXPERIMENT).set(5)
    metrics.kto_examples.labels(EXPERIMENT, "desirable").set(6)
    metrics.kto_examples.labels(EXPERIMENT, "undesirable").set(5)
    metrics.preference_pairs.labels(EXPERIMENT, "competitive").set(3)
    metrics.preference_pairs.labels(EXPERIMENT, "gold").set(2)
    metrics.dataset_bytes_written_total.labels(EXPERIMENT).inc(4096)

    metrics.training_step.labels(EXPERIMENT).set(20)
    metrics.training_loss.labels(EXPERIMENT).set(0.4)
    metrics.training_rewards.labels(EXPERIMENT, "chosen").set(0.2)
    metrics.training_rewards.labels(EXPERIMENT, "rejected").set(-0.3)
    metrics.training_reward_margin.labels(EXPERIMENT).set(0.5)
    metrics.training_kl.labels(EXPERIMENT).set(0.02)
    metrics.training_learning_rate.labels(EXPERIMENT).set(5e-6)
    metrics.training_tokens_per_second.labels(EXPERIMENT).set(900)

    metrics.held_out_accuracy_ratio.labels(EXPERIMENT, "before").set(0.4)
    metrics.held_out_accuracy_ratio.labels(EXPERIMENT, "after").set(0.55)


@pytest.fixture(scope="module")
def reported(prometheus: Prometheus, pushgateway: Pushgateway) -> Iterator[Prometheus]:
    """Prometheus once it has scraped every metric twice, so that rate() has two points."""
    from prometheus_client.metrics import MetricWrapperBase

    defined = [value for value in vars(metrics).values() if isinstance(value, MetricWrapperBase)]
    for metric in defined:
        metric.clear()
    report_every_metric()
    key = {"experiment": EXPERIMENT, "stage": "all"}
    metrics.push(pushgateway.address, job="prospect-stage", grouping=key)
    prometheus.wait_for(f'prospect_training_step{{experiment="{EXPERIMENT}"}}', bool)
    metrics.answers_graded_total.labels(EXPERIMENT, "large", "correct").inc(2)
    metrics.tokens_total.labels(EXPERIMENT, "large", "prompt").inc(50)
    metrics.request_duration_seconds.labels(EXPERIMENT, "large").observe(0.7)
    metrics.reconcile_errors_total.labels("ApiError").inc()
    metrics.push(pushgateway.address, job="prospect-stage", grouping=key)
    prometheus.wait_for(
        f'prospect_answers_graded_total{{experiment="{EXPERIMENT}", role="large", '
        'verdict="correct"}',
        lambda samples: list(samples.values()) == [6],
    )
    yield prometheus
    for metric in defined:
        metric.clear()


def test_the_dashboard_is_a_grafana_dashboard_with_an_experiment_variable() -> None:
    dashboard = load()
    assert dashboard["uid"] == "prospect-experiments"
    variables = {variable["name"]: variable for variable in dashboard["templating"]["list"]}
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["experiment"]["includeAll"] is True
    for panel in panels(dashboard):
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]


def test_the_dashboard_shows_what_a_researcher_follows() -> None:
    shown = {name for _, expr in queries() for name in METRIC.findall(expr)}
    assert shown >= {
        "prospect_experiments",
        "prospect_answers_graded_total",
        "prospect_items",
        "prospect_incorrect_answers_kept",
        "prospect_preference_pairs",
        "prospect_kto_examples",
        "prospect_training_loss",
        "prospect_training_rewards",
        "prospect_training_reward_margin",
        "prospect_training_kl",
        "prospect_training_tokens_per_second",
        "prospect_held_out_accuracy_ratio",
    }


@pytest.mark.parametrize(("panel", "expr"), queries(), ids=[title for title, _ in queries()])
def test_a_panel_queries_only_metrics_the_code_defines(panel: str, expr: str) -> None:
    names = set(METRIC.findall(expr))
    assert names, f"{panel}: {expr!r} names no prospect metric"
    assert names <= sample_names(), f"{panel}: {names - sample_names()} are not defined"


@pytest.mark.parametrize(("panel", "expr"), queries(), ids=[title for title, _ in queries()])
def test_a_panel_query_is_accepted_and_answered_by_prometheus(
    reported: Prometheus, panel: str, expr: str
) -> None:
    answer = reported.query(expand(expr))
    assert answer["result"], f"{panel}: {expr!r} returned nothing"


def test_the_experiment_variable_lists_the_experiments(reported: Prometheus) -> None:
    (variable,) = [v for v in load()["templating"]["list"] if v["name"] == "experiment"]
    match = re.fullmatch(r"label_values\((\w+), (\w+)\)", variable["definition"])
    assert match, variable["definition"]
    metric, label = match.groups()
    assert metric in sample_names()
    values = {dict(labels)[label] for labels in reported.samples(f"group by ({label}) ({metric})")}
    assert EXPERIMENT in values
