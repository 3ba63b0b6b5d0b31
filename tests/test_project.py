"""What the project promises about itself: generated docs match their source, the README's
quick start is what CI runs, and the layout keeps the standard library importable."""

from __future__ import annotations

import re
from pathlib import Path

from prospect.reference import render_reference

REPO = Path(__file__).resolve().parents[1]


def test_the_spec_reference_is_generated_from_the_spec_model() -> None:
    committed = (REPO / "docs" / "spec-reference.md").read_text()
    assert committed == render_reference(), "run `make generate`"


def test_the_readme_quick_start_has_two_commands_and_ci_runs_the_test_one() -> None:
    readme = (REPO / "README.md").read_text()
    quick_start = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```sh\n(.*?)```", quick_start, re.S)
    assert block is not None
    commands = [line.split("#")[0].strip() for line in block.group(1).splitlines()]
    assert [c for c in commands if c] == ["make run", "make test"]
    assert "make test" in (REPO / ".ci" / "run").read_text()


def test_no_package_shadows_the_standard_librarys_operator_module() -> None:
    import operator

    assert not (REPO / "operator" / "__init__.py").exists()
    assert hasattr(operator, "itemgetter")


def test_the_readme_reports_measured_benchmark_figures() -> None:
    readme = (REPO / "README.md").read_text()
    assert "MEASURED_" not in readme
