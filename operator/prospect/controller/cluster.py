"""The operator's reads and writes on the Kubernetes API, through the `kubernetes` client.

Only what the controller needs, and only what `prospect.controller.rbac.OPERATOR_RULES`
grants: list its children by label, get its ConfigMap, create, scale a Deployment, patch the
experiment's status. Manifests stay plain dicts end to end, so what is created is exactly what
`prospect render` prints. Label selectors are applied again on our side, and children are
matched to the experiment by the uid in their ownerReferences, so an object left behind by an
earlier experiment of the same name is never mistaken for this one's.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from prospect.controller import naming
from prospect.controller.observations import Observed
from prospect.spec import API_VERSION, KIND, PLURAL

__all__ = ["Cluster", "Connection", "Kind", "load_configuration"]

log = logging.getLogger("prospect")

Manifest = dict[str, Any]

_JSON = "application/json"
_MERGE_PATCH = "application/merge-patch+json"


@dataclass(frozen=True)
class Kind:
    """Where a kind lives in the API."""

    api_version: str
    kind: str
    plural: str

    def path(self, namespace: str, name: str | None = None, subresource: str | None = None) -> str:
        base = "/api/v1" if self.api_version == "v1" else f"/apis/{self.api_version}"
        path = f"{base}/namespaces/{namespace}/{self.plural}"
        if name is not None:
            path += f"/{name}"
        if subresource is not None:
            path += f"/{subresource}"
        return path


EXPERIMENT = Kind(API_VERSION, KIND, PLURAL)
CONFIG_MAP = Kind("v1", "ConfigMap", "configmaps")
SERVICE = Kind("v1", "Service", "services")
POD = Kind("v1", "Pod", "pods")
DEPLOYMENT = Kind("apps/v1", "Deployment", "deployments")
JOB = Kind("batch/v1", "Job", "jobs")
PYTORCHJOB = Kind("kubeflow.org/v1", "PyTorchJob", "pytorchjobs")
TRAINJOB = Kind("trainer.kubeflow.org/v1alpha1", "TrainJob", "trainjobs")
KINDS = {
    k.kind: k for k in (EXPERIMENT, CONFIG_MAP, SERVICE, POD, DEPLOYMENT, JOB, PYTORCHJOB, TRAINJOB)
}
_ENGINES = {"pytorchjob": PYTORCHJOB, "trainjob": TRAINJOB}


@dataclass
class Connection:
    """The client configuration the login handler loaded; shared through kopf's memo."""

    configuration: client.Configuration | None = None


def load_configuration() -> client.Configuration:
    """In-cluster credentials, or else the kubeconfig named by $KUBECONFIG *now*.

    The client library reads $KUBECONFIG once, when it is imported; reading it at login time
    lets an operator (or a test) point at a cluster chosen after the import.
    """
    configuration = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=configuration)
        log.debug("using the in-cluster service account")
    except config.ConfigException:
        config.load_kube_config(
            config_file=os.environ.get("KUBECONFIG") or None,
            client_configuration=configuration,
        )
        log.debug("using the kubeconfig")
    return configuration


def _matches(labels: Mapping[str, str] | None, selector: Mapping[str, str]) -> bool:
    labels = labels or {}
    return all(labels.get(key) == value for key, value in selector.items())


def _owned_by(obj: Mapping[str, Any], uid: str | None) -> bool:
    references = (obj.get("metadata") or {}).get("ownerReferences") or []
    return any(reference.get("uid") == uid for reference in references)


class Cluster:
    """One experiment's view of the API for one reconciliation."""

    def __init__(self, api: client.ApiClient) -> None:
        self.api = api

    def _call(
        self,
        method: str,
        path: str,
        *,
        query: list[tuple[str, str]] | None = None,
        body: Any = None,
        content_type: str = _JSON,
    ) -> Manifest:
        """One request; raises `ApiException` on any status but 2xx."""
        request = self.api.param_serialize(
            method=method,
            resource_path=path,
            query_params=query or [],
            header_params={"Accept": _JSON, "Content-Type": content_type},
            body=body,
            auth_settings=["BearerToken"],
        )
        response = self.api.call_api(*request)
        response.read()
        data = self.api.response_deserialize(response, {"2XX": "object"}).data
        return data if isinstance(data, dict) else {}

    def _list(self, kind: Kind, namespace: str, selector: str) -> list[Manifest]:
        wanted = dict(part.split("=", 1) for part in selector.split(","))
        found = self._call("GET", kind.path(namespace), query=[("labelSelector", selector)])
        items: list[Manifest] = found.get("items") or []
        return [item for item in items if _matches(item["metadata"].get("labels"), wanted)]

    def observe(self, body: Mapping[str, Any]) -> Observed:
        """List what this experiment owns: one request per kind, plus its ConfigMap."""
        metadata = body.get("metadata") or {}
        name, namespace, uid = metadata["name"], metadata["namespace"], metadata.get("uid")
        selector = naming.selector_string(name)
        observed = Observed()

        config_map_name = naming.name_for(name, naming.Component.CONFIG)
        try:
            config_map = self._call("GET", CONFIG_MAP.path(namespace, config_map_name))
        except ApiException as error:
            if error.status != 404:
                raise
        else:
            observed.config_map = config_map if _owned_by(config_map, uid) else None

        def owned(kind: Kind) -> dict[str, Manifest]:
            items = self._list(kind, namespace, selector)
            return {i["metadata"]["name"]: i for i in items if _owned_by(i, uid)}

        observed.deployments = owned(DEPLOYMENT)
        observed.services = owned(SERVICE)
        observed.workloads = owned(JOB)
        engine = ((body.get("spec") or {}).get("training") or {}).get("engine")
        if engine in _ENGINES:
            kind = _ENGINES[engine]
            try:
                observed.workloads.update(owned(kind))
            except ApiException as error:
                if error.status != 404:
                    raise
                observed.missing_kinds.add(kind.kind)
        observed.pods = self._list(POD, namespace, selector)
        if engine == "trainjob":
            # A TrainJob's pods carry the JobSet's labels, not the ones we gave the TrainJob.
            train = naming.name_for(name, naming.Component.TRAIN)
            observed.pods += self._list(POD, namespace, f"jobset.sigs.k8s.io/jobset-name={train}")
        return observed

    def create(self, manifest: Manifest, *, dry_run: bool = False) -> bool:
        """Create an object; False when it already exists (which is what we wanted).

        With `dry_run`, the API server checks the object (schema, admission) and stores nothing.
        """
        kind = KINDS[manifest["kind"]]
        namespace = manifest["metadata"]["namespace"]
        query = [("dryRun", "All")] if dry_run else None
        try:
            self._call("POST", kind.path(namespace), query=query, body=manifest)
        except ApiException as error:
            if error.status == 409:
                return False
            raise
        return True

    def scale(self, namespace: str, name: str, replicas: int) -> None:
        patch = {"spec": {"replicas": replicas}}
        self._call("PATCH", DEPLOYMENT.path(namespace, name), body=patch, content_type=_MERGE_PATCH)

    def patch_status(self, namespace: str, name: str, patch: Mapping[str, Any]) -> None:
        self._call(
            "PATCH",
            EXPERIMENT.path(namespace, name, "status"),
            body={"status": dict(patch)},
            content_type=_MERGE_PATCH,
        )
