"""Against a real cluster: skipped unless $KUBECONFIG names one (docs/operator.md: kind).

These tests install the CRD (cluster-wide), work in a namespace of their own that they delete
afterwards, and run the operator in this process. They need no GPU and pull no image: the API
server checks what the operator builds (server-side dry-run, CEL rules, RBAC-free admission),
and the operator's own behaviour is followed up to the Serving phase and through a deletion,
where the real garbage collector removes what the experiment owned.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from prospect import crd
from prospect.controller import cluster, manifests, naming
from prospect.spec import GROUP, PLURAL, VERSION, ProspectExperiment

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.timeout(600),
    pytest.mark.skipif(
        not os.environ.get("KUBECONFIG"),
        reason="needs $KUBECONFIG pointing at a disposable cluster (see docs/operator.md)",
    ),
]


def wait_for(check: Callable[[], Any], *, timeout: float = 120, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def api() -> Iterator[client.ApiClient]:
    configuration = client.Configuration()
    config.load_kube_config(
        config_file=os.environ["KUBECONFIG"], client_configuration=configuration
    )
    with client.ApiClient(configuration) as api_client:
        yield api_client


@pytest.fixture(scope="module")
def installed_crd(api: client.ApiClient) -> None:
    extensions = client.ApiextensionsV1Api(api)
    definition = crd.build_crd()
    try:
        extensions.create_custom_resource_definition(definition)
    except ApiException as error:
        if error.status != 409:
            raise
        current = extensions.read_custom_resource_definition(crd.CRD_NAME)
        definition["metadata"]["resourceVersion"] = current.metadata.resource_version
        extensions.replace_custom_resource_definition(crd.CRD_NAME, definition)

    def established() -> bool:
        found = extensions.read_custom_resource_definition(crd.CRD_NAME)
        conditions = found.status.conditions or []
        return any(c.type == "Established" and c.status == "True" for c in conditions)

    wait_for(established, what="the CRD to be established")


@pytest.fixture
def namespace(api: client.ApiClient, installed_crd: None) -> Iterator[str]:
    name = f"prospect-test-{uuid.uuid4().hex[:6]}"
    core = client.CoreV1Api(api)
    core.create_namespace({"metadata": {"name": name}})
    try:
        yield name
    finally:
        core.delete_namespace(name)


def experiment_document(namespace: str, **spec: Any) -> dict[str, Any]:
    server = {"serving": {"resources": {"gpus": 0, "cpu": "100m", "memory": "256Mi"}}}
    document: dict[str, Any] = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ProspectExperiment",
        "metadata": {"name": "gsm8k", "namespace": namespace},
        "spec": {
            "benchmark": {"format": "gsm8k", "source": "hf://openai/gsm8k", "subset": "main"},
            "competitors": {
                "large": {"model": "hf://Qwen/Qwen2.5-1.5B-Instruct", **server},
                "small": {"model": "hf://Qwen/Qwen2.5-0.5B-Instruct", **server},
            },
            "storage": {"uri": "s3://prospect/runs", "credentialsSecret": "minio-credentials"},
            "training": {"resources": {"gpus": 0, "cpu": "100m", "memory": "256Mi"}},
        },
    }
    document["spec"].update(spec)
    return document


def test_the_api_server_accepts_every_manifest_the_operator_builds(
    api: client.ApiClient, namespace: str
) -> None:
    kube = cluster.Cluster(api)
    experiment = ProspectExperiment.model_validate(experiment_document(namespace))
    for manifest in manifests.render(experiment):
        manifest["metadata"]["namespace"] = namespace
        assert kube.create(manifest, dry_run=True)


def test_cel_rules_refuse_two_identical_competitors(api: client.ApiClient, namespace: str) -> None:
    same = {"model": "hf://Qwen/Qwen2.5-0.5B-Instruct"}
    document = experiment_document(namespace, competitors={"large": same, "small": same})
    custom = client.CustomObjectsApi(api)
    with pytest.raises(ApiException) as refused:
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, document)
    assert refused.value.status == 422
    assert "the two competitors must be two different models" in str(refused.value.body)


def test_the_operator_serves_an_experiment_and_its_deletion_removes_everything(
    api: client.ApiClient, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kopf.testing import KopfRunner

    monkeypatch.setenv("PROSPECT_RECONCILE_SECONDS", "1")
    core = client.CoreV1Api(api)
    apps = client.AppsV1Api(api)
    custom = client.CustomObjectsApi(api)
    core.create_namespaced_secret(
        namespace,
        {
            "metadata": {"name": "minio-credentials"},
            "stringData": {"accessKey": "prospect", "secretKey": "not-a-real-secret"},
        },
    )
    args = ["run", "--standalone", "--namespace", namespace, "-m", "prospect.controller.handlers"]
    with KopfRunner(args, timeout=60):
        custom.create_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, experiment_document(namespace)
        )

        def phase() -> str | None:
            found = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "gsm8k")
            return (found.get("status") or {}).get("phase")

        wait_for(lambda: phase() == "Serving", what="phase Serving")
        deployments = apps.list_namespaced_deployment(namespace).items
        assert {d.metadata.name for d in deployments} == {"gsm8k-large", "gsm8k-small"}
        for deployment in deployments:
            (owner,) = deployment.metadata.owner_references
            assert (owner.kind, owner.name, owner.controller) == (
                "ProspectExperiment",
                "gsm8k",
                True,
            )
        events = core.list_namespaced_event(namespace).items
        assert {"Accepted", "Serving"} <= {e.reason for e in events}

        custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "gsm8k")
        wait_for(
            lambda: (
                not custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)["items"]
            ),
            what="the experiment to be deleted",
        )
    config_map = naming.name_for("gsm8k", naming.Component.CONFIG)
    wait_for(
        lambda: (
            not apps.list_namespaced_deployment(namespace).items
            and config_map
            not in {c.metadata.name for c in core.list_namespaced_config_map(namespace).items}
        ),
        what="the garbage collector to remove what the experiment owned",
    )
