"""The kopf handlers: `kopf run --standalone -m prospect.controller.handlers --all-namespaces`.

One daemon per experiment reconciles it every few seconds (`PROSPECT_RECONCILE_SECONDS`,
default 10): it lists what the experiment owns, decides the next step
(:func:`prospect.controller.reconciliation.plan`), creates and scales what that step needs,
patches the status, and posts an Event for every stage transition and every failure. Because
each pass starts from the cluster's state, a restarted operator simply carries on.

kopf keeps its own bookkeeping in annotations, so the status belongs to the experiment alone,
and Events carry our reasons rather than log lines (posting of log records is limited to
errors). The `kubernetes` client shares kopf's login: in-cluster credentials, or the kubeconfig
$KUBECONFIG names at login time.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import os
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, cast

import kopf
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from prospect import metrics
from prospect.controller import cluster, manifests, reconciliation
from prospect.controller.status import Phase
from prospect.spec import GROUP, PLURAL, VERSION

__all__ = ["configure", "login", "reconcile"]

RECONCILE_SECONDS_ENV = "PROSPECT_RECONCILE_SECONDS"
_DEFAULT_RECONCILE_SECONDS = 10.0
_phases: dict[str, Phase] = {}


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    # Our Events are posted explicitly, with reasons a user can act on; kopf's own log
    # records become Events only when they are errors.
    settings.posting.level = logging.ERROR
    memo.connection = cluster.Connection()
    port = os.environ.get("PROSPECT_METRICS_PORT")
    if port:
        metrics.serve(int(port), addr="0.0.0.0")


@kopf.on.login()
def login(memo: kopf.Memo, **_: Any) -> kopf.ConnectionInfo:
    """One login for kopf and for the `kubernetes` client the controller uses."""
    configuration = cluster.load_configuration()
    memo.connection.configuration = configuration
    header = configuration.get_api_key_with_prefix("BearerToken") or (
        configuration.get_api_key_with_prefix("authorization")
    )
    parts = header.split(" ", 1) if header else []
    scheme, token = (parts[0], parts[1]) if len(parts) == 2 else (None, header or None)
    return kopf.ConnectionInfo(
        server=configuration.host,
        ca_path=configuration.ssl_ca_cert,
        insecure=not configuration.verify_ssl,
        username=configuration.username or None,
        password=configuration.password or None,
        scheme=scheme,
        token=token,
        certificate_path=configuration.cert_file,
        private_key_path=configuration.key_file,
    )


def _interval() -> float:
    return float(os.environ.get(RECONCILE_SECONDS_ENV) or _DEFAULT_RECONCILE_SECONDS)


@kopf.daemon(GROUP, VERSION, PLURAL, id="reconcile", cancellation_timeout=30)
async def reconcile(
    body: kopf.Body,
    uid: str,
    memo: kopf.Memo,
    logger: kopf.Logger,
    stopped: kopf.DaemonStopped,
    **_: Any,
) -> None:
    """Reconcile one experiment until it is deleted or the operator stops.

    This daemon is the only writer of the status, so it trusts the status it wrote last over
    a watch event that has not caught up yet. An error (the API refused a request, the network
    failed) is posted once as a Warning Event and retried on the next pass.
    """
    written: dict[str, Any] | None = None
    last_error: str | None = None
    try:
        while not stopped:
            snapshot = copy.deepcopy(dict(body))
            if written is not None:
                snapshot["status"] = written
            try:
                written = await asyncio.to_thread(
                    _reconcile_once, snapshot, connection=memo.connection, logger=logger
                )
                last_error = None
            except Exception as error:  # every failure is retried; none may stop the daemon
                message = _describe(error)
                metrics.reconcile_errors_total.labels(type(error).__name__).inc()
                if message != last_error:
                    logger.warning("reconciling failed, retrying: %s", message)
                    kopf.event(body, type="Warning", reason="ReconcileError", message=message)
                last_error = message
            await stopped.wait(_interval())
    finally:
        _phases.pop(uid, None)
        _count_phases()


def _describe(error: Exception) -> str:
    if isinstance(error, ApiException):
        return f"the API answered {error.status} {error.reason}: {_api_message(error)}"
    return f"{type(error).__name__}: {error}"


def _api_message(error: ApiException) -> str:
    try:
        return str(json.loads(error.body or "{}").get("message") or "")
    except ValueError:
        return ""


def _reconcile_once(
    body: dict[str, Any], *, connection: cluster.Connection, logger: kopf.Logger
) -> dict[str, Any]:
    """One pass, in a worker thread (the `kubernetes` client blocks). Returns the status."""
    experiment = kopf.Body(cast(kopf.RawBody, body))  # what Events are posted about
    metadata = body["metadata"]
    namespace, name = metadata["namespace"], metadata["name"]
    with client.ApiClient(connection.configuration) as api:
        kube = cluster.Cluster(api)
        observed = kube.observe(body)
        decided = reconciliation.plan(body, observed, now=datetime.now(UTC))

        for manifest in decided.creates:
            if kube.create(manifests.owned(manifest, body)):
                what = f"{manifest['kind']} {manifest['metadata']['name']}"
                logger.info("created %s", what)
                kopf.event(experiment, type="Normal", reason="Created", message=f"created {what}")
        for deployment, replicas in decided.scales.items():
            kube.scale(namespace, deployment, replicas)
            what = f"scaled Deployment {deployment} to {replicas}"
            logger.info("%s", what)
            kopf.event(experiment, type="Normal", reason="Scaled", message=what)

        status = decided.status.dump()
        old = body.get("status") or {}
        if status != old:
            patch = {key: status.get(key) for key in {*old, *status}}
            kube.patch_status(namespace, name, patch)

    for event in decided.events:
        level = logging.WARNING if event.type == "Warning" else logging.INFO
        logger.log(level, "%s: %s", event.reason, event.message)
        kopf.event(experiment, type=event.type, reason=event.reason, message=event.message)
    for stage, seconds in decided.durations.items():
        metrics.stage_duration_seconds.labels(name, stage).observe(seconds)
    _phases[metadata.get("uid", name)] = decided.status.phase
    _count_phases()
    return status


def _count_phases() -> None:
    counts: Mapping[Phase, int] = {p: list(_phases.values()).count(p) for p in Phase}
    for phase, count in counts.items():
        metrics.experiments.labels(phase.value).set(count)
