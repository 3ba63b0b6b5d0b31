"""The by-hand install (examples/deploy/operator.yaml): valid, least-privilege, locked down."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import yaml

from prospect.controller.rbac import OPERATOR_RULES

ROOT = Path(__file__).resolve().parents[2]
INSTALL = ROOT / "examples" / "deploy" / "operator.yaml"


def documents() -> dict[str, dict[str, Any]]:
    return {d["kind"]: d for d in yaml.safe_load_all(INSTALL.read_text())}


def test_every_install_manifest_passes_strict_validation() -> None:
    for document in yaml.safe_load_all(INSTALL.read_text()):
        kubernetes_validate.validate(document, "1.33", strict=True)


def test_the_cluster_role_is_exactly_the_rules_the_operator_uses() -> None:
    assert documents()["ClusterRole"]["rules"] == OPERATOR_RULES
    binding = documents()["ClusterRoleBinding"]
    assert binding["roleRef"]["name"] == documents()["ClusterRole"]["metadata"]["name"]
    (subject,) = binding["subjects"]
    account = documents()["ServiceAccount"]["metadata"]
    assert (subject["name"], subject["namespace"]) == (account["name"], account["namespace"])


def test_no_rule_lets_the_operator_read_a_secret() -> None:
    for rule in OPERATOR_RULES:
        assert "secrets" not in rule["resources"]
        assert "*" not in rule["verbs"] and "*" not in rule["resources"]


def test_the_operator_runs_kopf_on_every_namespace_as_non_root_on_a_read_only_root() -> None:
    deployment = documents()["Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    assert deployment["spec"]["replicas"] == 1  # kopf runs standalone
    assert pod["serviceAccountName"] == documents()["ServiceAccount"]["metadata"]["name"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    (container,) = pod["containers"]
    assert "--all-namespaces" in container["args"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
