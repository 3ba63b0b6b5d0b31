"""The CRD: generated from the spec model, structural, valid, and the same as the committed file."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from prospect import crd
from prospect.controller.status import ExperimentStatus, Phase
from prospect.spec import ProspectExperiment

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "crds" / "prospectexperiments.yaml"
EXAMPLES = [*sorted((ROOT / "examples").glob("*.yaml")), ROOT / "examples/deploy/experiment.yaml"]
KUBERNETES_VERSION = "1.33"


def nodes(schema: Any, path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every schema node with its path."""
    if isinstance(schema, dict):
        yield path, schema
        for key, value in schema.get("properties", {}).items():
            yield from nodes(value, f"{path}.{key}")
        if isinstance(schema.get("items"), dict):
            yield from nodes(schema["items"], f"{path}[]")
        if isinstance(schema.get("additionalProperties"), dict):
            yield from nodes(schema["additionalProperties"], f"{path}{{}}")


def test_the_committed_crd_is_what_the_spec_model_generates() -> None:
    generated = subprocess.run(
        [sys.executable, "-m", "prospect.crd"], check=True, capture_output=True, text=True
    ).stdout
    assert generated == COMMITTED.read_text(), (
        "crds/prospectexperiments.yaml is stale: run `python -m prospect.crd > "
        "crds/prospectexperiments.yaml` (and copy it to charts/prospect/crds/)"
    )


def test_the_crd_passes_strict_validation_for_a_recent_kubernetes() -> None:
    kubernetes_validate.validate(crd.build_crd(), KUBERNETES_VERSION, strict=True)


def test_the_schema_is_structural() -> None:
    schema = crd.openapi_schema()
    text = yaml.safe_dump(schema)
    for word in ("$ref", "anyOf", "allOf", "oneOf", "title:", "const:", "$defs"):
        assert word not in text
    for path, node in nodes(schema):
        assert "type" in node, f"{path or 'root'} has no type"
        if node["type"] == "object" and "properties" in node:
            assert "additionalProperties" not in node, path
        if "exclusiveMinimum" in node:
            assert node["exclusiveMinimum"] is True and "minimum" in node, path


def test_kubectl_explain_finds_a_description_for_every_part_of_the_spec() -> None:
    spec = crd.openapi_schema()["properties"]["spec"]
    assert spec["description"]
    for name, part in spec["properties"].items():
        assert part.get("description") or name == "metrics", name
    competitor = spec["properties"]["competitors"]["properties"]["large"]["properties"]
    assert "hf://owner/name" in competitor["model"]["description"]


def test_defaults_in_the_schema_are_the_models_defaults() -> None:
    spec = crd.openapi_schema()["properties"]["spec"]["properties"]
    assert spec["supervisor"]["properties"]["shards"]["default"] == 16
    assert spec["training"]["properties"]["method"]["default"] == "kto"
    assert spec["training"]["default"] == {}
    assert spec["kubernetes"]["properties"]["backoffLimit"]["default"] == 3
    assert "default" not in spec["competitors"]  # required, so never defaulted
    assert spec["benchmark"]["properties"]["fields"]["nullable"] is True


def test_kubectl_get_pex_shows_phase_accuracies_incorrect_count_and_age() -> None:
    version = crd.build_crd()["spec"]["versions"][0]
    columns = [(c["name"], c["jsonPath"]) for c in version["additionalPrinterColumns"]]
    assert columns[:5] == [
        ("Phase", ".status.phase"),
        ("Large", ".status.accuracy.large"),
        ("Small", ".status.accuracy.small"),
        ("Incorrect", ".status.incorrect"),
        ("Age", ".metadata.creationTimestamp"),
    ]
    assert crd.build_crd()["spec"]["names"]["shortNames"] == ["pex"]
    assert version["subresources"] == {"status": {}}


def test_the_status_schema_accepts_what_the_operator_writes() -> None:
    status_schema = crd.validation_schema()["properties"]["status"]
    written = ExperimentStatus(phase=Phase.GRADING, incorrect=3)
    written.accuracy.large = 0.5
    jsonschema.Draft4Validator(status_schema).validate(written.dump())
    conditions = crd.openapi_schema()["properties"]["status"]["properties"]["conditions"]
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]


def test_cel_rules_say_that_the_two_competitors_must_differ() -> None:
    competitors = crd.openapi_schema()["properties"]["spec"]["properties"]["competitors"]
    rules = competitors["x-kubernetes-validations"]
    assert any("must be two different models" in r["message"] for r in rules)
    assert "self.large.model" in rules[0]["rule"] and "self.small.model" in rules[0]["rule"]
    large = competitors["properties"]["large"]
    assert large["x-kubernetes-validations"][0]["rule"] == "has(self.model) != has(self.endpoint)"


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: str(p.relative_to(ROOT)))
def test_the_examples_validate_against_the_crd_schema(path: Path) -> None:
    document = yaml.safe_load(path.read_text())
    jsonschema.Draft4Validator(crd.validation_schema()).validate(document)
    ProspectExperiment.model_validate(document)


def test_the_crd_schema_refuses_a_misspelt_field() -> None:
    document = yaml.safe_load((ROOT / "examples/deploy/experiment.yaml").read_text())
    document["spec"]["training"]["maxStep"] = 10
    with pytest.raises(jsonschema.ValidationError, match="maxStep"):
        jsonschema.Draft4Validator(crd.validation_schema()).validate(document)
