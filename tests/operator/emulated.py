"""A Kubernetes API for the operator's tests: kmock, kopf's mock API server, on 127.0.0.1.

kmock knows nothing of uids, resourceVersions, generations or creation times, and answers
`generateName` with a nameless object; the adapter adds them as an API server would, since
ownerReferences and Events need uids. kmock also ignores label selectors; the operator filters
on its side too. The `kubernetes` client is synchronous, and kmock serves in this event loop, so
every client call goes through a thread.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import jsonpointer
import kmock
from kopf.testing import KopfRunner
from kubernetes import client

from prospect.controller import naming
from prospect.spec import GROUP, KIND, PLURAL, VERSION

NAMESPACE = "research"
SECRET_VALUE = "s3cr3t-Access-Key-9f2b"  # what must never leak into a status, Event or log
EXPERIMENT = f"{GROUP}/{VERSION}/{PLURAL}"
RESOURCES = {
    EXPERIMENT: {"kind": KIND, "namespaced": True, "subresources": ["status"]},
    "v1/namespaces": {"kind": "Namespace", "namespaced": False},
    "v1/pods": {"kind": "Pod", "namespaced": True},
    "v1/services": {"kind": "Service", "namespaced": True},
    "v1/configmaps": {"kind": "ConfigMap", "namespaced": True},
    "v1/secrets": {"kind": "Secret", "namespaced": True},
    "v1/events": {"kind": "Event", "namespaced": True},
    "apps/v1/deployments": {"kind": "Deployment", "namespaced": True},
    "batch/v1/jobs": {"kind": "Job", "namespaced": True},
}
VERBS = ["create", "delete", "get", "list", "patch", "update", "watch"]


@dataclass(frozen=True)
class Call:
    """One request the emulator served, in RBAC terms."""

    verb: str
    group: str
    resource: str  # plural, with "/subresource" when one was addressed
    path: str
    body: Any
    agent: str

    @property
    def by_operator(self) -> bool:
        """kopf's own requests, and those of the `kubernetes` client inside the operator."""
        return self.agent.startswith(("kopf/", "OpenAPI-Generator/"))


class Emulator(kmock.KubernetesEmulator):
    """kmock's emulator with uids, resourceVersions, generations and timestamps."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.calls: list[Call] = []
        self._versions = itertools.count(1)

    async def _handle(self, request: kmock.Request) -> Any:
        if request.resource is not None:
            self._record(request)
            if isinstance(request.data, dict):
                if request.action == kmock.action.CREATE:
                    self._stamp_created(request)
                elif request.action == kmock.action.UPDATE:
                    self._stamp_changed(request)
            elif isinstance(request.data, list) and request.action == kmock.action.UPDATE:
                self._test_json_patch(request)
        return await super()._handle(request)

    def _test_json_patch(self, request: kmock.Request) -> None:
        """Answer a JSON patch whose `test` fails with 422, as the API server does (kmock
        answers 500), so kopf retries on its next cycle with a fresher object."""
        key = (request.resource, request.namespace, request.name)
        if key not in self.objects or self.objects[key].deleted:
            return
        current = self.objects[key].raw
        for operation in request.data:
            if operation.get("op") != "test":
                continue
            try:
                found = jsonpointer.resolve_pointer(current, operation["path"])
            except jsonpointer.JsonPointerException:
                found = None
            if found != operation.get("value"):
                raise kmock.KubernetesError(
                    status=422, reason="Invalid", message=f"test of {operation['path']} failed"
                )

    def _record(self, request: kmock.Request) -> None:
        verbs = {
            kmock.action.LIST: "list",
            kmock.action.WATCH: "watch",
            kmock.action.FETCH: "get",
            kmock.action.CREATE: "create",
            kmock.action.DELETE: "delete",
        }
        verb = verbs.get(request.action) or (
            "update" if request.method == kmock.method.PUT else "patch"
        )
        resource = request.resource.plural or ""
        if request.subresource:
            resource += f"/{request.subresource}"
        self.calls.append(
            Call(
                verb,
                request.resource.group or "",
                resource,
                str(request.url.path),
                request.data,
                request.headers.get("User-Agent", ""),
            )
        )

    def _stamp_created(self, request: kmock.Request) -> None:
        metadata = request.data.setdefault("metadata", {})
        if not metadata.get("name") and metadata.get("generateName"):
            metadata["name"] = metadata["generateName"] + uuid.uuid4().hex[:5]
        if request.namespace:
            metadata.setdefault("namespace", request.namespace)
        metadata.setdefault("uid", str(uuid.uuid4()))
        metadata.setdefault("creationTimestamp", _now())
        metadata["resourceVersion"] = str(next(self._versions))
        if "spec" in request.data:
            metadata["generation"] = 1

    def _stamp_changed(self, request: kmock.Request) -> None:
        metadata = request.data.setdefault("metadata", {})
        metadata["resourceVersion"] = str(next(self._versions))
        key = (request.resource, request.namespace, request.name)
        if "spec" in request.data and not request.subresource and key in self.objects:
            stored = self.objects[key]
            if not stored.deleted:
                generation = stored.raw.get("metadata", {}).get("generation", 1)
                metadata["generation"] = generation + 1


def _now() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


class Operator:
    """The operator as `kopf run -A --standalone -m prospect.controller.handlers` runs it.

    kopf's KopfRunner runs it in a thread with its own event loop; stopping it waits in a
    thread too, because kmock serves in the test's event loop and kopf's shutdown still talks
    to the API.
    """

    ARGS = ["run", "--all-namespaces", "--standalone", "-m", "prospect.controller.handlers"]

    def __init__(self) -> None:
        self._runner: KopfRunner | None = None
        self.outputs: list[str] = []
        self.starts = 0

    async def start(self) -> None:
        self._runner = KopfRunner(self.ARGS, timeout=30)
        self._runner.__enter__()
        self.starts += 1

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await asyncio.to_thread(runner.__exit__, None, None, None)
            self.outputs.append(runner.output)

    async def restart(self) -> None:
        await self.stop()
        await self.start()

    @property
    def output(self) -> str:
        return "".join(self.outputs)


class Cluster:
    """The test's side of the API: the user's requests, and the controllers kmock lacks."""

    def __init__(self, emulator: Emulator) -> None:
        self.emulator = emulator
        configuration = client.Configuration(host=str(emulator.url))
        self.api = client.ApiClient(configuration)
        self.api.user_agent = "prospect-tests"  # tells the user's requests from the operator's
        self.custom = client.CustomObjectsApi(self.api)
        self.core = client.CoreV1Api(self.api)

    # Reading.

    def objects(self, plural: str) -> list[dict[str, Any]]:
        found = []
        for (resource, _, _), obj in self.emulator.objects.items():
            if resource.plural == plural and not obj.deleted:
                found.append(copy.deepcopy(obj.raw))
        return found

    def get(self, plural: str, name: str) -> dict[str, Any] | None:
        return next((o for o in self.objects(plural) if o["metadata"]["name"] == name), None)

    def names(self, plural: str) -> set[str]:
        return {o["metadata"]["name"] for o in self.objects(plural)}

    def experiment(self, name: str) -> dict[str, Any]:
        found = self.get(PLURAL, name)
        assert found is not None, f"no experiment {name}"
        return found

    def status(self, name: str) -> dict[str, Any]:
        return self.experiment(name).get("status") or {}

    def condition(self, name: str, kind: str) -> dict[str, Any]:
        conditions = self.status(name).get("conditions") or []
        return next((c for c in conditions if c["type"] == kind), {})

    def events(self) -> list[dict[str, Any]]:
        return self.objects("events")

    def event_reasons(self) -> list[str]:
        return [e.get("reason", "") for e in self.events()]

    def creations(self, plural: str) -> list[str]:
        """Names of the objects of a kind the operator asked to create (POSTed), in order."""
        names = []
        for call in self.emulator.calls:
            if not (call.by_operator and call.verb == "create" and call.resource == plural):
                continue
            if isinstance(call.body, dict):
                names.append(call.body["metadata"]["name"])
        return names

    def passes(self) -> int:
        """Reconciliations so far: each lists the experiment's pods once."""
        return len([c for c in self.emulator.calls if c.by_operator and c.resource == "pods"])

    async def wait_for_passes(self, count: int) -> None:
        """Let the operator reconcile `count` more times."""
        target = self.passes() + count
        await self.wait_for(lambda: self.passes() >= target, what=f"{count} more passes")

    async def wait_for(
        self, check: Callable[[], Any], *, timeout: float = 20, what: str = ""
    ) -> Any:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            result = check()
            if result:
                return result
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"timed out waiting for {what or check}")
            await asyncio.sleep(0.05)

    async def wait_for_phase(self, name: str, phase: str, *, timeout: float = 20) -> None:
        await self.wait_for(
            lambda: self.status(name).get("phase") == phase,
            timeout=timeout,
            what=f"phase {phase} (now {self.status(name).get('phase')})",
        )

    async def wait_for_object(self, plural: str, name: str) -> dict[str, Any]:
        result: dict[str, Any] = await self.wait_for(
            lambda: self.get(plural, name), what=f"{plural} {name}"
        )
        return result

    # The user, through the kubernetes client.

    async def create_secret(self, name: str) -> None:
        body = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "namespace": NAMESPACE},
            "stringData": {"accessKey": SECRET_VALUE, "secretKey": SECRET_VALUE + "-secret"},
        }
        await asyncio.to_thread(self.core.create_namespaced_secret, NAMESPACE, body)

    async def create_experiment(self, body: dict[str, Any]) -> None:
        await asyncio.to_thread(
            self.custom.create_namespaced_custom_object, GROUP, VERSION, NAMESPACE, PLURAL, body
        )

    async def patch_spec(self, name: str, spec: dict[str, Any]) -> None:
        await asyncio.to_thread(
            self.custom.patch_namespaced_custom_object,
            GROUP,
            VERSION,
            NAMESPACE,
            PLURAL,
            name,
            {"spec": spec},
        )

    async def delete_experiment(self, name: str) -> None:
        await asyncio.to_thread(
            self.custom.delete_namespaced_custom_object, GROUP, VERSION, NAMESPACE, PLURAL, name
        )

    # The controllers kmock lacks, over HTTP like the real ones.

    async def _patch(self, path: str, patch: dict[str, Any]) -> None:
        headers = {"Content-Type": "application/merge-patch+json"}
        async with self.emulator.patch(path, json=patch, headers=headers) as response:
            assert response.status == 200, await response.text()

    async def make_available(self, name: str) -> None:
        """The Deployment controller: the server's pod passed its readiness probe."""
        await self.wait_for_object("deployments", name)
        status = {
            "availableReplicas": 1,
            "readyReplicas": 1,
            "conditions": [{"type": "Available", "status": "True", "reason": "Ready"}],
        }
        path = f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/{name}/status"
        await self._patch(path, {"status": status})

    async def give_up_deployment(self, name: str) -> None:
        await self.wait_for_object("deployments", name)
        condition = {
            "type": "Progressing",
            "status": "False",
            "reason": "ProgressDeadlineExceeded",
            "message": f'ReplicaSet "{name}-5d9f" has timed out progressing.',
        }
        path = f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/{name}/status"
        await self._patch(path, {"status": {"conditions": [condition]}})

    async def run_pod(
        self,
        job: str,
        *,
        index: int = 0,
        succeeded: bool = True,
        message: str = "",
        attempt: int = 0,
    ) -> None:
        """The Job controller and the kubelet: one pod of a Job ran and ended."""
        spec = await self.wait_for_object("jobs", job)
        labels = dict(spec["spec"]["template"]["metadata"]["labels"])
        labels["batch.kubernetes.io/job-name"] = job
        terminated = {
            "exitCode": 0 if succeeded else 1,
            "reason": "Completed" if succeeded else "Error",
            "message": message,
            "finishedAt": _now(),
        }
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": f"{job}-{index}-{attempt}-{uuid.uuid4().hex[:5]}",
                "namespace": NAMESPACE,
                "labels": labels,
                "annotations": {"batch.kubernetes.io/job-completion-index": str(index)},
            },
            "spec": spec["spec"]["template"]["spec"],
            "status": {
                "phase": "Succeeded" if succeeded else "Failed",
                "containerStatuses": [{"name": "stage", "state": {"terminated": terminated}}],
            },
        }
        async with self.emulator.post(f"/api/v1/namespaces/{NAMESPACE}/pods", json=pod) as response:
            assert response.status in (200, 201), await response.text()

    async def finish_job(self, name: str, *, failed: str | None = None, message: str = "") -> None:
        """The Job controller: mark a Job Complete, or Failed with the given reason."""
        await self.wait_for_object("jobs", name)
        if failed:
            condition = {"type": "Failed", "status": "True", "reason": failed, "message": message}
        else:
            condition = {"type": "Complete", "status": "True", "reason": "CompletionsReached"}
        status = {
            "startTime": "2025-01-01T00:00:00Z",
            "completionTime": "2025-01-01T00:01:00Z",
            "conditions": [condition],
        }
        path = f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs/{name}/status"
        await self._patch(path, {"status": status})

    async def collect_garbage(self, owner_uid: str) -> list[str]:
        """The garbage collector: delete what the deleted owner owned."""
        deleted = []
        for (resource, _, name), obj in list(self.emulator.objects.items()):
            if obj.deleted:
                continue
            references = obj.raw.get("metadata", {}).get("ownerReferences") or []
            if any(r.get("uid") == owner_uid for r in references):
                obj.delete()
                deleted.append(f"{resource.plural}/{name}")
        return deleted


def name_of(experiment: str, component: naming.Component) -> str:
    return naming.name_for(experiment, component)
