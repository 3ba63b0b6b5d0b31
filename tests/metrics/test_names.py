"""Every metric follows Prometheus' naming conventions and keeps its label values bounded."""

from __future__ import annotations

import re

import prometheus_client
import pytest
from prometheus_client.metrics import MetricWrapperBase

from prospect import metrics

DEFINED = {
    name: value for name, value in vars(metrics).items() if isinstance(value, MetricWrapperBase)
}
# Labels whose values come from a small set the code knows (roles, verdicts, phases, stages,
# reasons...). An item id, a prompt or a model output here would make one series per item.
BOUNDED_LABELS = {
    "experiment",
    "phase",
    "stage",
    "reason",
    "role",
    "verdict",
    "direction",
    "label",
    "kind",
    "side",
    "when",
}
UNIT_WORDS = {
    "duration": "_seconds",
    "latency": "_seconds",
    "bytes": "_bytes",
}


def family(metric: MetricWrapperBase) -> prometheus_client.Metric:
    (collected,) = metric.describe()
    return collected


def labels(metric: MetricWrapperBase) -> tuple[str, ...]:
    # prometheus_client has no public accessor for a metric's label names.
    names: tuple[str, ...] = metric._labelnames
    return names


def test_the_module_defines_the_metrics_the_issue_lists() -> None:
    names = {family(metric).name for metric in DEFINED.values()}
    assert names >= {
        "prospect_experiments",
        "prospect_stage_duration_seconds",
        "prospect_reconcile_errors",
        "prospect_answers_graded",
        "prospect_accuracy_ratio",
        "prospect_unparseable_answers",
        "prospect_request_duration_seconds",
        "prospect_tokens",
        "prospect_items_set_aside",
        "prospect_incorrect_answers_kept",
        "prospect_kto_examples",
        "prospect_preference_pairs",
        "prospect_dataset_bytes_written",
        "prospect_training_step",
        "prospect_training_loss",
        "prospect_training_rewards",
        "prospect_training_reward_margin",
        "prospect_training_kl",
        "prospect_training_learning_rate",
        "prospect_training_tokens_per_second",
        "prospect_held_out_accuracy_ratio",
    }


@pytest.mark.parametrize("attribute", sorted(DEFINED))
def test_a_metric_is_named_and_documented_by_convention(attribute: str) -> None:
    metric = DEFINED[attribute]
    described = family(metric)
    name = described.name
    assert re.fullmatch(r"prospect_[a-z][a-z0-9_]*[a-z0-9]", name), name
    assert described.documentation.endswith("."), f"{name} needs a one-sentence help text"

    if described.type == "counter":
        # prometheus_client keeps the family name bare and exposes the sample as <name>_total.
        assert attribute.endswith("_total"), f"the counter {name} is held by {attribute}"
    else:
        assert not name.endswith("_total"), f"{name} is a {described.type}, not a counter"
    for word, unit in UNIT_WORDS.items():
        if word in name:
            assert name.endswith(unit) or f"{unit}_" in name, f"{name} needs the unit {unit}"
    if "accuracy" in name:
        assert name.endswith("_ratio"), f"{name} is a share between 0 and 1: end it in _ratio"
    for wrong in ("_ms", "millis", "minutes", "_hours", "kilobytes", "megabytes", "percent"):
        assert wrong not in name, f"{name} is not in base units"


@pytest.mark.parametrize("attribute", sorted(DEFINED))
def test_a_metric_has_only_bounded_labels(attribute: str) -> None:
    metric = DEFINED[attribute]
    unbounded = set(labels(metric)) - BOUNDED_LABELS
    assert not unbounded, f"{family(metric).name} has labels {unbounded}"


def test_every_metric_lives_in_the_project_registry_and_not_the_global_one() -> None:
    ours = {collected.name for collected in metrics.REGISTRY.collect()}
    assert ours == {family(metric).name for metric in DEFINED.values()}
    theirs = {collected.name for collected in prometheus_client.REGISTRY.collect()}
    assert not {name for name in theirs if name.startswith("prospect_")}
