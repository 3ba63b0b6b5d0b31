"""One reconciliation as a pure function: the decisions that need no API server to show."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from prospect.controller import manifests, naming, reconciliation, servers, workloads
from prospect.controller.naming import Component as C
from prospect.controller.observations import Observed
from prospect.controller.status import ConditionType
from prospect.spec import ProspectExperiment, Role

NOW = datetime(2025, 5, 1, 12, 0, tzinfo=UTC)


def body(**spec_changes: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "benchmark": {"format": "gsm8k", "source": "hf://openai/gsm8k"},
        "competitors": {
            "large": {"model": "hf://Qwen/Qwen2.5-7B-Instruct"},
            "small": {"model": "hf://Qwen/Qwen2.5-0.5B-Instruct"},
        },
        "supervisor": {"shards": 1},
        "storage": {"uri": "s3://prospect/runs", "credentialsSecret": "minio"},
    }
    spec.update(spec_changes)
    return {
        "apiVersion": "prospect.dev/v1alpha1",
        "kind": "ProspectExperiment",
        "metadata": {"name": "gsm8k", "namespace": "research", "uid": "u-1", "generation": 1},
        "spec": spec,
    }


def experiment_of(document: dict[str, Any]) -> ProspectExperiment:
    return manifests.parse_experiment(document)


def finished(manifest: dict[str, Any], summary: dict[str, Any] | None = None) -> list[Any]:
    """A workload that completed, and the pod that left its summary."""
    job = dict(manifest, status={"conditions": [{"type": "Complete", "status": "True"}]})
    labels = manifest["spec"]["template"]["metadata"]["labels"]
    pod = {
        "metadata": {"name": f"{manifest['metadata']['name']}-0", "labels": labels},
        "status": {
            "phase": "Succeeded",
            "containerStatuses": [
                {"state": {"terminated": {"message": json.dumps(summary or {})}}}
            ],
        },
    }
    return [job, pod]


def available(manifest: dict[str, Any], replicas: int = 1) -> dict[str, Any]:
    manifest = dict(manifest, spec=dict(manifest["spec"], replicas=replicas))
    manifest["status"] = {"availableReplicas": replicas}
    return manifest


def graded_cluster(experiment: ProspectExperiment, report: dict[str, Any]) -> Observed:
    """The cluster once both competitors served and grading and the report finished."""
    observed = Observed(config_map=manifests.experiment_config_map(experiment))
    for role in Role:
        deployment = servers.competitor_deployment(experiment, role)
        observed.deployments[deployment["metadata"]["name"]] = available(deployment)
        service = servers.competitor_service(experiment, role)
        observed.services[service["metadata"]["name"]] = service
    grade = {"graded": 20, "total": 20, "correct": {"large": 7, "small": 3}}
    for manifest, summary in (
        (workloads.grade_job(experiment), grade),
        (workloads.report_job(experiment), report),
    ):
        job, pod = finished(manifest, summary)
        observed.workloads[job["metadata"]["name"]] = job
        observed.pods.append(pod)
    return observed


def add_finished(observed: Observed, manifest: dict[str, Any], summary: dict[str, Any]) -> None:
    job, pod = finished(manifest, summary)
    observed.workloads[job["metadata"]["name"]] = job
    observed.pods.append(pod)


def names(plan: reconciliation.Plan) -> list[str]:
    return [m["metadata"]["name"] for m in plan.creates]


def test_a_new_experiment_gets_its_config_map_and_servers_and_nothing_else() -> None:
    plan = reconciliation.plan(body(), Observed(), now=NOW)
    assert names(plan) == [
        "gsm8k-experiment",
        "gsm8k-large",
        "gsm8k-large",
        "gsm8k-small",
        "gsm8k-small",
    ]
    assert plan.status.phase == "Serving"
    assert plan.status.spec_digest == experiment_of(body()).spec.digest()
    assert [e.reason for e in plan.events] == ["Accepted", "Serving"]


def test_planning_again_on_what_was_created_plans_no_creation_and_no_event() -> None:
    document = body()
    first = reconciliation.plan(document, Observed(), now=NOW)
    observed = Observed(config_map=first.creates[0])
    for manifest in first.creates[1:]:
        plural = {"Deployment": observed.deployments, "Service": observed.services}
        plural[manifest["kind"]][manifest["metadata"]["name"]] = manifest
    document["status"] = first.status.dump()

    second = reconciliation.plan(document, observed, now=NOW)

    assert second.creates == [] and second.events == [] and second.scales == {}
    assert second.status.dump() == first.status.dump()


def test_a_gap_that_is_not_significant_warns_and_carries_on() -> None:
    experiment = experiment_of(body())
    report = {
        "competitorsDistinct": False,
        "accuracy": {"large": 0.35, "small": 0.15},
        "gapLow": -0.04,
        "gapHigh": 0.44,
    }
    plan = reconciliation.plan(body(), graded_cluster(experiment, report), now=NOW)

    distinct = plan.status.condition(ConditionType.COMPETITORS_DISTINCT)
    assert distinct is not None and distinct.status == "False"
    assert distinct.reason == "GapNotSignificant"
    assert ("Warning", "GapNotSignificant") in [(e.type, e.reason) for e in plan.events]
    assert plan.status.phase == "WritingDataset"
    assert names(plan) == ["gsm8k-write"]
    assert plan.scales == {"gsm8k-large": 0, "gsm8k-small": 0}


def test_a_dataset_without_an_incorrect_answer_fails_before_training() -> None:
    experiment = experiment_of(body())
    observed = graded_cluster(experiment, {"competitorsDistinct": True})
    add_finished(observed, workloads.write_job(experiment), {"incorrect": 0, "pairs": 0})

    plan = reconciliation.plan(body(), observed, now=NOW)

    assert plan.status.phase == "Failed"
    assert plan.status.reason == "NothingToTrainOn"
    assert names(plan) == []
    trained = plan.status.condition(ConditionType.TRAINED)
    assert trained is not None and trained.reason == "NothingToTrainOn"


def test_without_training_the_experiment_succeeds_after_the_dataset_and_the_report() -> None:
    document = body(training={"enabled": False})
    experiment = experiment_of(document)
    observed = graded_cluster(experiment, {"competitorsDistinct": True})
    add_finished(observed, workloads.write_job(experiment), {"incorrect": 4, "pairs": 2})
    add_finished(observed, workloads.final_report_job(experiment), {"competitorsDistinct": True})

    plan = reconciliation.plan(document, observed, now=NOW)

    assert plan.status.phase == "Succeeded"
    assert names(plan) == []
    trained = plan.status.condition(ConditionType.TRAINED)
    assert trained is not None and trained.reason == "Disabled"


def test_a_training_engine_the_cluster_lacks_fails_the_experiment_before_anything_starts() -> None:
    document = body(training={"engine": "pytorchjob", "nodes": 2})
    plan = reconciliation.plan(document, Observed(missing_kinds={"PyTorchJob"}), now=NOW)
    assert plan.status.phase == "Failed"
    assert plan.status.reason == "TrainingEngineMissing"
    assert plan.creates == []


def test_a_finished_experiment_only_lets_go_of_gpus() -> None:
    document = body()
    document["status"] = {"phase": "Failed", "reason": "GradingFailed"}
    experiment = experiment_of(document)
    large = available(servers.competitor_deployment(experiment, Role.LARGE))
    observed = Observed(deployments={"gsm8k-large": large})

    plan = reconciliation.plan(document, observed, now=NOW)

    assert plan.creates == [] and plan.events == []
    assert plan.scales == {"gsm8k-large": 0}
    assert plan.status.phase == "Failed"


def test_a_lost_config_map_is_recreated_only_if_the_spec_is_unchanged() -> None:
    document = body()
    first = reconciliation.plan(document, Observed(), now=NOW)
    document["status"] = first.status.dump()

    again = reconciliation.plan(document, Observed(), now=NOW)
    assert names(again)[0] == naming.name_for("gsm8k", C.CONFIG)

    document["spec"]["supervisor"] = {"shards": 4}
    refused = reconciliation.plan(document, Observed(), now=NOW)
    assert refused.status.phase == "Failed"
    assert refused.status.reason == "ConfigMapLost"
    assert refused.creates == []


def test_a_refused_spec_is_looked_at_again_once_it_is_edited() -> None:
    document = body(storage={"uri": "runs/store"})
    refused = reconciliation.plan(document, Observed(), now=NOW)
    assert (refused.status.phase, refused.status.reason) == ("Failed", "InvalidSpec")
    document["status"] = refused.status.dump()

    unchanged = reconciliation.plan(document, Observed(), now=NOW)
    assert unchanged.status.phase == "Failed" and unchanged.creates == []

    document["spec"]["storage"] = {"uri": "s3://prospect/runs", "credentialsSecret": "minio"}
    document["metadata"]["generation"] = 2
    corrected = reconciliation.plan(document, Observed(), now=NOW)
    assert corrected.status.phase == "Serving"
    assert corrected.status.accepted_generation == 2
    assert names(corrected)[0] == "gsm8k-experiment"
