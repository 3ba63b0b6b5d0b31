"""The vLLM inference servers: a Deployment and a Service per competitor, one for the target.

Each server runs the upstream vLLM OpenAI-compatible image. A model is a Hugging Face id
(`hf://owner/name`), a path on the models PVC, or an `s3://` prefix that an init container
copies into an emptyDir before vLLM starts. Probes hit vLLM's `/health`; the startup probe waits
as long as the spec allows, because loading a large model takes minutes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from prospect.controller import naming, pods
from prospect.spec import Competitor, ProspectExperiment, Role, ServingSpec

__all__ = [
    "FETCHED_DIR",
    "PORT",
    "ModelSource",
    "baseline_deployment",
    "baseline_service",
    "baseline_url",
    "competitor_deployment",
    "competitor_service",
    "endpoint_url",
    "has_baseline",
    "resolve_model",
    "target_deployment",
    "target_name",
    "target_service",
    "target_url",
]

PORT = 8000
FETCHED_DIR = "/model"  # where an init container puts a model copied from S3
TARGET_SERVED_NAME = "target-after"
TARGET_BEFORE = "target-before"
# Time to pull a multi-gigabyte image, on top of the model's own startup time.
_IMAGE_PULL_SECONDS = 600

Manifest = pods.Manifest


@dataclass(frozen=True)
class ModelSource:
    """What vLLM is told to serve, and the S3 prefix to copy it from first (if any)."""

    argument: str
    fetch_from: str | None = None
    revision: str | None = None


def resolve_model(model: str) -> ModelSource:
    """Map a spec's model reference onto what a pod sees.

    `package://` references and local `.gguf` files belong to the local mode;
    :func:`prospect.checks.check_cluster` refuses them before anything is created.
    """
    if model.startswith("hf://"):
        repository, _, revision = model.removeprefix("hf://").partition("@")
        return ModelSource(repository, revision=revision or None)
    if model.startswith("s3://"):
        return ModelSource(FETCHED_DIR, fetch_from=model)
    path = model if model.startswith("/") else f"{pods.MODELS_DIR}/{model}"
    return ModelSource(path)


def _component(role: Role) -> naming.Component:
    return naming.Component.LARGE if role == Role.LARGE else naming.Component.SMALL


def endpoint_url(experiment: ProspectExperiment, role: Role) -> str:
    """The base URL the supervisor uses: the competitor's own endpoint, or our Service."""
    competitor = experiment.spec.competitors.by_role(role)
    if competitor.endpoint:
        return competitor.endpoint.rstrip("/")
    service = naming.name_for(experiment.name, _component(role))
    return f"http://{service}:{PORT}/v1"


def target_name(experiment: ProspectExperiment) -> str:
    return naming.name_for(experiment.name, naming.Component.TARGET)


def target_url(experiment: ProspectExperiment) -> str:
    return f"http://{target_name(experiment)}:{PORT}/v1"


def _probe(period: int, timeout: int, failures: int) -> Manifest:
    return {
        "httpGet": {"path": "/health", "port": "http"},
        "periodSeconds": period,
        "timeoutSeconds": timeout,
        "failureThreshold": failures,
    }


def _vllm_container(
    experiment: ProspectExperiment,
    *,
    source: ModelSource,
    served_name: str,
    serving: ServingSpec,
    mounts: list[Manifest],
) -> Manifest:
    command = [
        "vllm",
        "serve",
        source.argument,
        "--host=0.0.0.0",
        f"--port={PORT}",
        f"--served-model-name={served_name}",
        f"--max-model-len={serving.max_model_len}",
        f"--dtype={serving.dtype}",
        f"--tensor-parallel-size={serving.tensor_parallel_size}",
    ]
    if source.revision:
        command.append(f"--revision={source.revision}")
    command += serving.extra_args
    env = [*pods.stage_env(experiment.spec), {"name": "VLLM_NO_USAGE_STATS", "value": "1"}]
    server = pods.container(
        "vllm",
        experiment.spec.kubernetes.vllm_image,
        command=command,
        env=env,
        mounts=mounts,
        resources=pods.compute_resources(serving.resources),
    )
    server["ports"] = [{"name": "http", "containerPort": PORT, "protocol": "TCP"}]
    server["readinessProbe"] = _probe(10, 5, 3)
    server["livenessProbe"] = _probe(30, 10, 5)
    server["startupProbe"] = _probe(10, 5, math.ceil(serving.startup_timeout_seconds / 10))
    return server


def _fetch_container(
    experiment: ProspectExperiment, role: str | None, mounts: list[Manifest]
) -> Manifest:
    """Copies a model out of S3 before vLLM starts: the trained target when `role` is None."""
    command = ["prospect", "stage", "fetch-model", "-f", pods.EXPERIMENT_FILE]
    if role is not None:
        command += ["--role", role]
    command += ["--to", FETCHED_DIR]
    return pods.container(
        "fetch-model",
        experiment.spec.kubernetes.runner_image,
        command=command,
        env=pods.stage_env(experiment.spec),
        mounts=mounts,
        resources=pods.runner_resources(),
    )


def _deployment(
    experiment: ProspectExperiment,
    component: naming.Component,
    *,
    source: ModelSource,
    served_name: str,
    serving: ServingSpec,
    fetch: bool,
    fetch_role: str | None = None,
) -> Manifest:
    volumes = pods.Volumes.for_stage(experiment, shared_memory=True)
    if fetch:
        volumes.add("model", {"emptyDir": {}}, FETCHED_DIR)
    server = _vllm_container(
        experiment, source=source, served_name=served_name, serving=serving, mounts=volumes.mounts
    )
    init = [_fetch_container(experiment, fetch_role, volumes.mounts)] if fetch else None
    template = pods.pod_template(
        experiment,
        component,
        containers=[server],
        volumes=volumes,
        restart_policy="Always",
        resources=serving.resources,
        init_containers=init,
    )
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": naming.metadata(experiment, component),
        "spec": {
            "replicas": 1,
            # A second pod during a rollout would need a second set of GPUs.
            "strategy": {"type": "Recreate"},
            "progressDeadlineSeconds": serving.startup_timeout_seconds + _IMAGE_PULL_SECONDS,
            "selector": {"matchLabels": naming.selector(experiment.name, component)},
            "template": template,
        },
    }


def _service(experiment: ProspectExperiment, component: naming.Component) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": naming.metadata(experiment, component),
        "spec": {
            "type": "ClusterIP",
            "selector": naming.selector(experiment.name, component),
            "ports": [{"name": "http", "port": PORT, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def _served_name(competitor: Competitor, role: Role) -> str:
    if competitor.served_model_name:
        return competitor.served_model_name
    if competitor.model and competitor.model.startswith("hf://"):
        return competitor.model.removeprefix("hf://")
    return role.value


def competitor_deployment(experiment: ProspectExperiment, role: Role) -> Manifest:
    competitor = experiment.spec.competitors.by_role(role)
    if competitor.model is None:
        raise ValueError(f"competitor {role.value} uses an existing endpoint; nothing to serve")
    source = resolve_model(competitor.model)
    return _deployment(
        experiment,
        _component(role),
        source=source,
        served_name=_served_name(competitor, role),
        serving=competitor.serving,
        fetch=source.fetch_from is not None,
        fetch_role=role.value,
    )


def competitor_service(experiment: ProspectExperiment, role: Role) -> Manifest:
    return _service(experiment, _component(role))


def _target_serving(experiment: ProspectExperiment) -> ServingSpec:
    """The target is served like the competitor it was trained from (the small one otherwise)."""
    role = experiment.spec.training.target or Role.SMALL
    return experiment.spec.competitors.by_role(role).serving


def target_deployment(experiment: ProspectExperiment) -> Manifest:
    """The trained target, copied from the store by `prospect stage fetch-model`."""
    return _deployment(
        experiment,
        naming.Component.TARGET,
        source=ModelSource(FETCHED_DIR),
        served_name=TARGET_SERVED_NAME,
        serving=_target_serving(experiment),
        fetch=True,
    )


def target_service(experiment: ProspectExperiment) -> Manifest:
    return _service(experiment, naming.Component.TARGET)


def has_baseline(experiment: ProspectExperiment) -> bool:
    """Whether "before" needs its own server: the target is no competitor, so no competitor
    answered the held-out items as the untrained target."""
    return experiment.spec.training.target_model is not None


def baseline_url(experiment: ProspectExperiment) -> str:
    return f"http://{naming.name_for(experiment.name, naming.Component.BASELINE)}:{PORT}/v1"


def baseline_deployment(experiment: ProspectExperiment) -> Manifest:
    """The untrained `training.targetModel`, graded on the held-out items as "before"."""
    model = experiment.spec.training.target_model
    if model is None:
        raise ValueError("the training target is a competitor; its grading is the baseline")
    source = resolve_model(model)
    return _deployment(
        experiment,
        naming.Component.BASELINE,
        source=source,
        served_name=TARGET_BEFORE,
        serving=_target_serving(experiment),
        fetch=source.fetch_from is not None,
        fetch_role=TARGET_BEFORE,
    )


def baseline_service(experiment: ProspectExperiment) -> Manifest:
    return _service(experiment, naming.Component.BASELINE)
