"""What the cluster shows about one experiment's children, read the way the controller needs it.

Everything here is a pure function of objects as the API returns them: whether a Job (or a
PyTorchJob or TrainJob) finished or failed and why, whether a server Deployment is available or
gave up, and the one-line JSON summaries stage pods left in their termination messages.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from prospect.controller import naming

__all__ = [
    "Observed",
    "ServerState",
    "WorkloadState",
    "last_failure",
    "server_state",
    "summaries",
    "workload_state",
]

log = logging.getLogger("prospect")

Manifest = dict[str, Any]

_INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"
_JOBSET_LABEL = "jobset.sigs.k8s.io/jobset-name"
# Long enough for a Python error's last line, short enough for a status and an Event.
_MESSAGE_LIMIT = 600


@dataclass
class Observed:
    """One experiment's children as listed in one pass, by name."""

    config_map: Manifest | None = None
    deployments: dict[str, Manifest] = field(default_factory=dict)
    services: dict[str, Manifest] = field(default_factory=dict)
    workloads: dict[str, Manifest] = field(default_factory=dict)
    pods: list[Manifest] = field(default_factory=list)
    missing_kinds: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class WorkloadState:
    exists: bool = False
    complete: bool = False
    failed: bool = False
    reason: str = ""
    message: str = ""
    seconds: float | None = None


@dataclass(frozen=True)
class ServerState:
    exists: bool = False
    replicas: int = 0
    available: bool = False
    failed: bool = False
    message: str = ""


def _time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _conditions(obj: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    status = obj.get("status") or {}
    return {c.get("type", ""): c for c in status.get("conditions") or []}


def workload_state(obj: Mapping[str, Any] | None) -> WorkloadState:
    """A Job's outcome from its terminal conditions (Complete or Failed).

    PyTorchJobs report `Succeeded` and TrainJobs `Complete`; both report `Failed`. A Job that
    is still retrying a failed pod within its backoff limit is neither complete nor failed.
    """
    if obj is None:
        return WorkloadState()
    conditions = _conditions(obj)
    status = obj.get("status") or {}
    started = _time(status.get("startTime"))
    finished = _time(status.get("completionTime"))
    seconds = (finished - started).total_seconds() if started and finished else None
    failed = conditions.get("Failed", {})
    if failed.get("status") == "True":
        return WorkloadState(
            exists=True,
            failed=True,
            reason=str(failed.get("reason") or "Failed"),
            message=str(failed.get("message") or ""),
            seconds=seconds,
        )
    for kind in ("Complete", "Succeeded"):
        done = conditions.get(kind, {})
        if done.get("status") == "True":
            return WorkloadState(
                exists=True, complete=True, reason=kind, message="", seconds=seconds
            )
    return WorkloadState(exists=True)


def server_state(deployment: Mapping[str, Any] | None) -> ServerState:
    """Available once a pod passed its readiness probe; failed once the Deployment's progress
    deadline passed (the model never loaded, or the pod kept crashing)."""
    if deployment is None:
        return ServerState()
    replicas = int((deployment.get("spec") or {}).get("replicas", 1))
    status = deployment.get("status") or {}
    conditions = _conditions(deployment)
    progressing = conditions.get("Progressing", {})
    if progressing.get("status") == "False" and progressing.get("reason") == (
        "ProgressDeadlineExceeded"
    ):
        return ServerState(
            exists=True,
            replicas=replicas,
            failed=True,
            message=str(progressing.get("message") or "ProgressDeadlineExceeded"),
        )
    available = replicas > 0 and int(status.get("availableReplicas") or 0) >= replicas
    return ServerState(exists=True, replicas=replicas, available=available)


def _belongs(
    pod: Mapping[str, Any], experiment: str, component: naming.Component, name: str
) -> bool:
    labels = (pod.get("metadata") or {}).get("labels") or {}
    if labels.get(_JOBSET_LABEL) == name:
        return True
    selector = naming.selector(experiment, component)
    return all(labels.get(key) == value for key, value in selector.items())


def _terminated(pod: Mapping[str, Any]) -> Mapping[str, Any]:
    """The terminated state of the pod's stage container (its first container)."""
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    for container in statuses:
        terminated = (container.get("state") or {}).get("terminated")
        if terminated:
            return terminated
    return {}


def summaries(
    pods: Iterable[Mapping[str, Any]],
    *,
    experiment: str,
    component: naming.Component,
    name: str,
) -> dict[int, dict[str, Any]]:
    """The JSON summaries that succeeded pods of one workload left, by completion index.

    A non-indexed Job's pods all have index 0. A summary that is not a JSON object (a stage
    that died writing it) is skipped with a debug line; the stage's own logs say why.
    """
    found: dict[int, dict[str, Any]] = {}
    for pod in pods:
        if not _belongs(pod, experiment, component, name):
            continue
        if (pod.get("status") or {}).get("phase") != "Succeeded":
            continue
        annotations = (pod.get("metadata") or {}).get("annotations") or {}
        index = int(annotations.get(_INDEX_ANNOTATION, 0))
        message = _terminated(pod).get("message") or ""
        try:
            summary = json.loads(message)
        except ValueError:
            log.debug("pod %s left no JSON summary", (pod.get("metadata") or {}).get("name"))
            continue
        if isinstance(summary, dict):
            found[index] = summary
    return found


def last_failure(
    pods: Iterable[Mapping[str, Any]],
    *,
    experiment: str,
    component: naming.Component,
    name: str,
) -> str | None:
    """What the most recently failed pod of a workload said as it died, shortened."""
    failures = []
    for pod in pods:
        if not _belongs(pod, experiment, component, name):
            continue
        if (pod.get("status") or {}).get("phase") != "Failed":
            continue
        terminated = _terminated(pod)
        finished = _time(terminated.get("finishedAt")) or datetime.min.replace(tzinfo=UTC)
        failures.append((finished, pod, terminated))
    if not failures:
        return None
    _, pod, terminated = max(failures, key=lambda f: f[0])
    pod_name = (pod.get("metadata") or {}).get("name", "?")
    said = " ".join(str(terminated.get("message") or "").split())
    if len(said) > _MESSAGE_LIMIT:
        said = "…" + said[-_MESSAGE_LIMIT:]
    how = f"exit code {terminated.get('exitCode', '?')} ({terminated.get('reason', 'Error')})"
    return f"pod {pod_name} ended with {how}" + (f": {said}" if said else "")
