"""The Helm chart installs a valid, least-privilege operator with its monitoring around it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import yaml
from cloudcoil.models.prometheus_operator import v1 as monitoring

import prospect
from fixtures.chart import CHART, NAMESPACE, ROOT, Rendered, Renderer
from prospect.controller import naming
from prospect.controller.naming import Component
from prospect.controller.rbac import OPERATOR_RULES
from prospect.spec import StorageSpec

# The oldest Kubernetes the chart declares (Chart.yaml kubeVersion) and the newest known.
KUBERNETES_VERSIONS = ["1.27.0", kubernetes_validate.latest_version()]
# kubernetes-validate knows the built-in kinds only; these come from the Prometheus operator
# and are checked against its models instead.
MONITORING_KINDS = {
    "ServiceMonitor": monitoring.ServiceMonitor,
    "PodMonitor": monitoring.PodMonitor,
    "PrometheusRule": monitoring.PrometheusRule,
}


def validate(obj: dict[str, Any], version: str) -> None:
    """Strict validation: unknown fields and wrong types fail, whatever the kind."""
    if obj["apiVersion"].startswith("monitoring.coreos.com/"):
        model = MONITORING_KINDS[obj["kind"]].model_validate(obj)
        # The models drop unknown fields silently; a field lost on the way back was unknown.
        assert model.model_dump(by_alias=True, exclude_unset=True, mode="json") == obj
        return
    kubernetes_validate.validate(obj, version, strict=True)


def describe(obj: dict[str, Any]) -> str:
    return f"{obj['kind']}/{obj['metadata']['name']}"


def pod_specs(rendered: Rendered) -> dict[str, dict[str, Any]]:
    return {
        describe(obj): obj["spec"]["template"]["spec"]
        for obj in rendered.objects
        if obj["kind"] in {"Deployment", "StatefulSet", "DaemonSet", "Job"}
    }


# Rendering and validity.


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_default_values_render_manifests_that_kubernetes_accepts(
    rendered: Renderer, version: str
) -> None:
    objects = rendered().objects
    assert {obj["kind"] for obj in objects} >= {
        "Deployment",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Service",
        "ConfigMap",
    }
    for obj in objects:
        validate(obj, version)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_everything_enabled_renders_manifests_that_kubernetes_accepts(
    rendered: Renderer, everything: dict[str, Any], version: str
) -> None:
    objects = rendered(everything).objects
    kinds = {obj["kind"] for obj in objects}
    assert kinds >= {"ServiceMonitor", "PodMonitor", "PrometheusRule", "Secret"}
    assert kinds >= {"PersistentVolumeClaim"}
    for obj in objects:
        validate(obj, version)


def test_the_kubernetes_validate_command_accepts_the_rendered_chart(
    rendered: Renderer, everything: dict[str, Any], tmp_path: Path
) -> None:
    """The command line a user would run on `helm template` output, for the built-in kinds."""
    built_in = [
        obj
        for obj in rendered(everything).objects
        if not obj["apiVersion"].startswith("monitoring.coreos.com/")
    ]
    manifest = tmp_path / "rendered.yaml"
    manifest.write_text(yaml.safe_dump_all(built_in))
    result = subprocess.run(
        [sys.executable, "-m", "kubernetes_validate", "--strict", "--quiet", str(manifest)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "WARN" not in result.stdout, result.stdout


def test_a_wrong_field_fails_validation() -> None:
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "x"},
        "spec": {"ports": [{"port": 80, "targtPort": 8080}]},
    }
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(service, KUBERNETES_VERSIONS[-1])
    monitor = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": {"name": "x"},
        "spec": {"selector": {}, "endpoints": [{"port": "metrics", "intervall": "5s"}]},
    }
    with pytest.raises(AssertionError):
        validate(monitor, KUBERNETES_VERSIONS[-1])


@pytest.mark.parametrize("values", ["defaults", "everything"])
def test_helm_lint_finds_nothing_to_warn_about(values: str, everything: dict[str, Any]) -> None:
    report = helm.lint(
        CHART,
        everything if values == "everything" else None,
        strict=True,
        namespace=NAMESPACE,
        kube_version="v1.30.0",
    )
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert not problems, problems
    assert not report["errors"], report["errors"]


def test_the_chart_ships_the_crd_that_the_spec_generates(chart: helm.Chart) -> None:
    generated = ROOT / "crds" / "prospectexperiments.yaml"
    shipped = CHART / "crds" / "prospectexperiments.yaml"
    assert generated.is_file(), f"{generated} is missing: the CRD generator writes it"
    assert shipped.read_text() == generated.read_text(), (
        f"{shipped} differs from {generated}: copy the generated CRD into the chart"
    )
    assert [crd["filename"] for crd in chart.crds] == ["prospect/crds/prospectexperiments.yaml"]
    for crd in yaml.safe_load_all(shipped.read_text()):
        validate(crd, KUBERNETES_VERSIONS[0])


# Versions.


def test_chart_and_app_versions_follow_the_project_version(
    chart: helm.Chart, project_version: str
) -> None:
    assert chart.metadata["version"] == project_version
    assert chart.metadata["appVersion"] == project_version
    assert prospect.__version__ == project_version


def test_the_operator_image_tag_defaults_to_the_app_version(
    rendered: Renderer, project_version: str
) -> None:
    deployment = rendered().one("Deployment", "prospect-operator")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == f"ghcr.io/prospect-dev/prospect-operator:{project_version}"


def test_every_image_has_a_pinned_tag(rendered: Renderer, everything: dict[str, Any]) -> None:
    for name, spec in pod_specs(rendered(everything)).items():
        for container in spec["containers"]:
            repository, _, tag = container["image"].rpartition(":")
            assert repository and tag and tag != "latest", f"{name}: {container['image']}"


# Values and their schema.


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({"metrics": {"port": "eighty"}}, "port"),
        ({"pushgateway": {"enabled": "yes"}}, "enabled"),
        ({"operator": {"watchNamespaces": "research"}}, "watchNamespaces"),
        ({"operator": {"resources": {"requests": {"memory": True}}}}, "memory"),
        ({"minio": {"persistence": {"size": 100}}}, "size"),
        ({"metrics": {"serviceMonitor": {"interval": "often"}}}, "interval"),
    ],
)
def test_a_value_of_the_wrong_type_is_rejected_by_the_schema(
    rendered: Renderer, chart: helm.Chart, values: dict[str, Any], named: str
) -> None:
    with pytest.raises(helm.HelmValuesError, match=named):
        chart.validate_schema(chart.merge_values(values))
    with pytest.raises(helm.HelmError, match=named):
        rendered(values)


def test_a_misspelt_key_is_rejected_rather_than_ignored(chart: helm.Chart) -> None:
    with pytest.raises(helm.HelmValuesError, match="pushgatway"):
        chart.validate_schema(chart.merge_values({"pushgatway": {"enabled": True}}))


def test_every_value_is_described_by_the_schema(chart: helm.Chart) -> None:
    schema = chart.schema
    assert schema is not None

    def walk(values: dict[str, Any], node: dict[str, Any], path: str) -> None:
        for key, value in values.items():
            assert key in node.get("properties", {}), f"{path}{key} is not in the schema"
            child = node["properties"][key]
            if isinstance(value, dict) and "properties" in child:
                walk(value, child, f"{path}{key}.")

    walk(chart.values, schema, "")
    chart.validate_schema(chart.values)


def test_no_value_holds_a_credential() -> None:
    """Secrets are referenced by name; a key that looks like a credential must not have one."""
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    suspicious = ("password", "secretkey", "accesskey", "token", "apikey")

    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                lowered = key.lower()
                if any(word in lowered for word in suspicious):
                    pytest.fail(f"{path}{key} would put a credential in plain values")
                walk(value, f"{path}{key}.")

    walk(values, "")


# Safe defaults.


def test_every_pod_runs_as_non_root_with_requests_and_a_read_only_root(
    rendered: Renderer, everything: dict[str, Any]
) -> None:
    specs = pod_specs(rendered(everything))
    assert len(specs) == 3  # operator, Pushgateway, MinIO
    for name, spec in specs.items():
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["runAsUser"] != 0, name
        for container in spec["containers"]:
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["readOnlyRootFilesystem"] is True, name
            assert context["capabilities"]["drop"] == ["ALL"], name
            assert {"cpu", "memory"} <= set(container["resources"]["requests"]), name
            assert "memory" in container["resources"]["limits"], name


def test_defaults_install_no_secret_and_nothing_optional(rendered: Renderer) -> None:
    kinds = {obj["kind"] for obj in rendered().objects}
    assert "Secret" not in kinds
    assert not kinds & set(MONITORING_KINDS)
    assert "PersistentVolumeClaim" not in kinds


def test_the_operator_is_granted_exactly_the_rules_its_code_uses(rendered: Renderer) -> None:
    role = rendered().one("ClusterRole", "prospect-operator")
    assert role["rules"] == OPERATOR_RULES
    binding = rendered().one("ClusterRoleBinding", "prospect-operator")
    assert binding["roleRef"]["name"] == "prospect-operator"
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "prospect", "namespace": NAMESPACE}
    ]


def test_the_operator_watches_all_namespaces_or_the_listed_ones(
    rendered: Renderer, everything: dict[str, Any]
) -> None:
    def args(values: dict[str, Any] | None) -> list[str]:
        deployment = rendered(values).one("Deployment", "prospect-operator")
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        arguments: list[str] = container["args"]
        return arguments

    assert "--all-namespaces" in args(None)
    chosen = args(everything)
    assert "--all-namespaces" not in chosen
    assert {"--namespace=research", "--namespace=staging"} <= set(chosen)


def test_kopf_accepts_the_operator_command_line(rendered: Renderer) -> None:
    from kopf.cli import main

    entrypoint = _operator_entrypoint()
    assert entrypoint[:2] == ["kopf", "run"]
    deployment = rendered().one("Deployment", "prospect-operator")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    run = main.commands["run"]
    context = run.make_context("run", [*entrypoint[2:], *container["args"]])
    assert context.params["clusterwide"] is True
    assert context.params["standalone"] is True
    assert context.params["modules"] == ("prospect.controller.handlers",)
    assert context.params["liveness_endpoint"] == "http://0.0.0.0:8081/healthz"


def _operator_entrypoint() -> list[str]:
    for line in (ROOT / "images" / "operator" / "Dockerfile").read_text().splitlines():
        if line.startswith("ENTRYPOINT "):
            entrypoint: list[str] = json.loads(line.removeprefix("ENTRYPOINT "))
            return entrypoint
    raise AssertionError("images/operator/Dockerfile has no ENTRYPOINT")


# Metrics, monitors and the dashboard.


def test_the_metrics_service_reaches_the_operators_metrics_port(rendered: Renderer) -> None:
    output = rendered()
    service = output.one("Service", "prospect-operator-metrics")
    deployment = output.one("Deployment", "prospect-operator")
    pod = deployment["spec"]["template"]
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    (container,) = pod["spec"]["containers"]
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    (port,) = service["spec"]["ports"]
    assert port["targetPort"] == "metrics"
    assert ports["metrics"] == port["port"] == 8080
    env = {item["name"]: item["value"] for item in container["env"]}
    assert env["PROSPECT_METRICS_PORT"] == "8080"


def test_the_service_monitor_scrapes_the_operator_and_the_pushgateway(
    rendered: Renderer, everything: dict[str, Any]
) -> None:
    output = rendered(everything)
    (monitor,) = output.of_kind("ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    selector = monitor["spec"]["selector"]
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["honorLabels"] is True
    for name in ("prospect-operator-metrics", "prospect-pushgateway"):
        service = output.one("Service", name)
        labels = service["metadata"]["labels"]
        assert selector["matchLabels"].items() <= labels.items(), name
        (expression,) = selector["matchExpressions"]
        assert labels[expression["key"]] in expression["values"], name
        assert endpoint["port"] in {port["name"] for port in service["spec"]["ports"]}, name


def test_the_pod_monitor_looks_in_the_namespaces_the_operator_watches(
    rendered: Renderer, everything: dict[str, Any]
) -> None:
    (monitor,) = rendered(everything).of_kind("PodMonitor")
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["research", "staging"]}
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] == "metrics"
    (monitor,) = rendered({"metrics": {"podMonitor": {"enabled": True}}}).of_kind("PodMonitor")
    assert monitor["spec"]["namespaceSelector"] == {"any": True}


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    if not selector.get("matchLabels", {}).items() <= labels.items():
        return False
    for expression in selector.get("matchExpressions", []):
        assert expression["operator"] == "In", expression
        if labels.get(expression["key"]) not in expression["values"]:
            return False
    return True


def test_the_pod_monitor_selects_stage_pods_and_not_the_competitor_servers(
    rendered: Renderer, everything: dict[str, Any]
) -> None:
    (monitor,) = rendered(everything).of_kind("PodMonitor")
    selector = monitor["spec"]["selector"]
    stages = {
        Component.GRADE,
        Component.WRITE,
        Component.TRAIN,
        Component.EVALUATE,
        Component.REPORT,
        Component.FINAL_REPORT,
    }
    for component in Component:
        pod_labels = naming.labels("gsm8k-qwen", component)
        assert _selects(selector, pod_labels) == (component in stages), component


def test_the_prometheus_rule_carries_the_rules_file_unchanged(
    rendered: Renderer, everything: dict[str, Any]
) -> None:
    (rule,) = rendered(everything).of_kind("PrometheusRule")
    shipped = yaml.safe_load((CHART / "rules" / "prospect.rules.yaml").read_text())
    assert rule["spec"] == shipped
    alert = shipped["groups"][0]["rules"][0]
    assert "{{ $value }}" in alert["annotations"]["summary"]  # not eaten by Helm's templating


def test_the_dashboard_config_map_carries_the_dashboard_and_the_sidecar_label(
    rendered: Renderer, everything: dict[str, Any]
) -> None:
    (config_map,) = rendered(everything).of_kind("ConfigMap")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert config_map["metadata"]["annotations"] == {"grafana_folder": "Prospect"}
    dashboard = json.loads(config_map["data"]["prospect.json"])
    assert dashboard == json.loads((CHART / "dashboards" / "prospect.json").read_text())
    moved = rendered({"dashboard": {"namespace": "monitoring"}}).of_kind("ConfigMap")
    assert moved[0]["metadata"]["namespace"] == "monitoring"


def test_no_dashboard_when_disabled(rendered: Renderer) -> None:
    assert not rendered({"dashboard": {"enabled": False}}).of_kind("ConfigMap")


# What helm status tells the user.


def _spec_blocks(notes: str) -> list[dict[str, Any]]:
    """The `spec:` snippets that NOTES.txt tells users to paste into an experiment."""
    blocks, lines = [], notes.splitlines()
    for index, line in enumerate(lines):
        if line.strip() == "spec:":
            indent = len(line) - len(line.lstrip())
            snippet = [line]
            for following in lines[index + 1 :]:
                if not following.strip() or len(following) - len(following.lstrip()) <= indent:
                    break
                snippet.append(following)
            blocks.append(yaml.safe_load("\n".join(snippet))["spec"])
    return blocks


def test_the_notes_show_a_storage_block_that_the_spec_accepts(
    rendered: Renderer, everything: dict[str, Any]
) -> None:
    output = rendered(everything)
    storage = next(block["storage"] for block in _spec_blocks(output.notes) if "storage" in block)
    parsed = StorageSpec.model_validate(storage)
    assert parsed.is_s3
    assert parsed.credentials_secret == "prospect-minio"
    assert output.one("Secret", "prospect-minio")["type"] == "Opaque"
    host, _, port = (parsed.endpoint or "").partition(":")
    assert host == f"prospect-minio.{NAMESPACE}.svc"
    service = output.one("Service", "prospect-minio")
    assert int(port) in {p["port"] for p in service["spec"]["ports"]}


def test_an_existing_object_store_is_named_not_created(rendered: Renderer) -> None:
    values = {"storage": {"endpoint": "s3.lab:9000", "credentialsSecret": "lab-s3"}}
    output = rendered(values)
    assert not output.of_kind("Secret")
    (block,) = [block for block in _spec_blocks(output.notes) if "storage" in block]
    parsed = StorageSpec.model_validate(block["storage"])
    assert (parsed.endpoint, parsed.credentials_secret) == ("s3.lab:9000", "lab-s3")


def test_an_existing_minio_secret_replaces_the_generated_one(rendered: Renderer) -> None:
    output = rendered({"minio": {"enabled": True, "existingSecret": "my-minio"}})
    assert not output.of_kind("Secret")
    (container,) = output.one("Deployment", "prospect-minio")["spec"]["template"]["spec"][
        "containers"
    ]
    secrets = {item["valueFrom"]["secretKeyRef"]["name"] for item in container["env"][1:]}
    assert secrets == {"my-minio"}


def test_the_notes_give_the_pushgateway_url_of_the_installed_service(
    rendered: Renderer, everything: dict[str, Any]
) -> None:
    output = rendered(everything)
    (block,) = [block for block in _spec_blocks(output.notes) if "metrics" in block]
    url = block["metrics"]["pushgateway"]
    service = output.one("Service", "prospect-pushgateway")
    (port,) = service["spec"]["ports"]
    assert url == f"http://prospect-pushgateway.{NAMESPACE}.svc:{port['port']}"
