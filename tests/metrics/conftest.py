"""Fixtures for the metrics tests: a registry as a fresh stage process has it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from prometheus_client.metrics import MetricWrapperBase

from prospect import metrics


@pytest.fixture
def fresh_registry() -> Iterator[None]:
    """Every prospect metric without series, as in a stage process that has just started.

    A stage pushes the whole registry under its experiment's grouping key, and the Pushgateway
    refuses a push whose series name another experiment; series left by other tests would.
    """
    defined = [value for value in vars(metrics).values() if isinstance(value, MetricWrapperBase)]
    for metric in defined:
        metric.clear()
    yield
    for metric in defined:
        metric.clear()
