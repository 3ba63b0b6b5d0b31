"""The alerting rules the chart ships pass promtool, fire when they should, and use real metrics."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from fixtures.prometheus import PROMTOOL, Prometheus, binary, sample_names
from prospect.controller.status import Phase

HERE = Path(__file__).resolve().parent
RULES = sorted((HERE.parents[1] / "charts" / "prospect" / "rules").glob("*.yaml"))


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [binary(PROMTOOL), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=HERE,
    )


def expressions() -> list[tuple[str, str]]:
    return [
        (rule.get("alert") or rule["record"], rule["expr"])
        for path in RULES
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
    ]


def test_the_chart_ships_rules() -> None:
    assert [path.name for path in RULES] == ["prospect.rules.yaml"]


@pytest.mark.parametrize("path", RULES, ids=lambda p: p.name)
def test_promtool_checks_the_rules(path: Path) -> None:
    result = promtool("check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_fires_on_its_story_and_not_on_its_neighbour() -> None:
    result = promtool("test", "rules", "prospect.rules.test.yaml")
    assert result.returncode == 0, result.stdout + result.stderr
    tested = set(re.findall(r"alertname: (\w+)", (HERE / "prospect.rules.test.yaml").read_text()))
    assert tested == {name for name, _ in expressions()}


def test_promtool_accepts_the_test_prometheus_config(prometheus: Prometheus) -> None:
    result = promtool("check", "config", str(prometheus.config))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(("name", "expr"), expressions(), ids=[n for n, _ in expressions()])
def test_a_rule_uses_only_metrics_the_code_defines(
    prometheus: Prometheus, name: str, expr: str
) -> None:
    names = set(re.findall(r"\bprospect_[a-z0-9_]+", expr))
    assert names, f"{name} names no prospect metric"
    assert names <= sample_names(), f"{name}: {names - sample_names()} are not defined"
    prometheus.query(expr)  # accepted by the Prometheus that runs the tests


def test_the_failed_phase_the_alert_matches_is_the_operators() -> None:
    (expr,) = [expr for name, expr in expressions() if name == "ProspectExperimentFailed"]
    assert f'phase="{Phase.FAILED.value}"' in expr
