"""The parts every pod the operator creates shares: security, environment, volumes, resources.

Every pod runs as a non-root user with a read-only root filesystem; what a process must write
(its home, caches, a downloaded model, shared memory for NCCL) goes to emptyDir volumes. Stage
pods get no service-account token: they talk to S3 and to the competitor Services, never to the
Kubernetes API. Credentials reach a pod only as `secretKeyRef`s: the operator names the Secret
and never reads it.
"""

from __future__ import annotations

from typing import Any

from prospect.controller import naming
from prospect.spec import ExperimentSpec, ProspectExperiment, Resources

__all__ = [
    "EXPERIMENT_FILE",
    "MODELS_DIR",
    "Volumes",
    "compute_resources",
    "container",
    "pod_template",
    "runner_resources",
    "stage_env",
]

EXPERIMENT_DIR = "/etc/prospect"
EXPERIMENT_FILE = f"{EXPERIMENT_DIR}/experiment.yaml"
MODELS_DIR = "/models"
SCRATCH_DIR = "/tmp"  # HOME and every cache: the root filesystem is read-only
TERMINATION_LOG = "/dev/termination-log"
# The UID our runner and trainer images are built with; vLLM runs as any UID given a HOME.
RUN_AS = 10001

Manifest = dict[str, Any]


def pod_security_context() -> Manifest:
    return {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS,
        "runAsGroup": RUN_AS,
        "fsGroup": RUN_AS,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context() -> Manifest:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }


def _secret_env(name: str, secret: str, key: str, *, optional: bool = False) -> Manifest:
    ref: Manifest = {"name": secret, "key": key}
    if optional:
        ref["optional"] = True
    return {"name": name, "valueFrom": {"secretKeyRef": ref}}


def stage_env(spec: ExperimentSpec) -> list[Manifest]:
    """What every stage and server process reads from its environment."""
    hf_home = (
        f"{MODELS_DIR}/.cache/huggingface"
        if spec.kubernetes.models_pvc
        else f"{SCRATCH_DIR}/huggingface"
    )
    env: list[Manifest] = [
        {"name": "HOME", "value": SCRATCH_DIR},
        {"name": "HF_HOME", "value": hf_home},
        {"name": "PYTHONUNBUFFERED", "value": "1"},
        # Where `prospect stage` writes its one-line JSON summary, which the operator reads.
        {"name": "PROSPECT_SUMMARY_FILE", "value": TERMINATION_LOG},
    ]
    if spec.storage.credentials_secret:
        secret = spec.storage.credentials_secret
        env.append(_secret_env("AWS_ACCESS_KEY_ID", secret, "accessKey"))
        env.append(_secret_env("AWS_SECRET_ACCESS_KEY", secret, "secretKey"))
    if spec.kubernetes.hf_token_secret:
        env.append(_secret_env("HF_TOKEN", spec.kubernetes.hf_token_secret, "token"))
    if spec.metrics.pushgateway:
        env.append({"name": "PROSPECT_PUSHGATEWAY", "value": spec.metrics.pushgateway})
    return env


METRICS_PORT = 9100


def serving_metrics(stage: Manifest, spec: ExperimentSpec) -> Manifest:
    """Without a Pushgateway a stage serves /metrics while it runs, on a port named `metrics`
    that the chart's PodMonitor scrapes."""
    if spec.metrics.pushgateway:
        return stage
    stage["env"] = [
        *stage["env"],
        {"name": "PROSPECT_METRICS_PORT", "value": str(METRICS_PORT)},
        {"name": "PROSPECT_METRICS_ADDR", "value": "0.0.0.0"},
    ]
    stage["ports"] = [{"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"}]
    return stage


def compute_resources(resources: Resources) -> Manifest:
    """Requests and limits for a GPU workload; GPUs must be requested and limited alike."""
    requests: dict[str, Any] = {"cpu": resources.cpu, "memory": resources.memory}
    limits: dict[str, Any] = {"memory": resources.memory}
    if resources.gpus:
        requests["nvidia.com/gpu"] = resources.gpus
        limits["nvidia.com/gpu"] = resources.gpus
    return {"requests": requests, "limits": limits}


def runner_resources() -> Manifest:
    """Supervisor, writer and reporter pods: network-bound Python, no accelerator."""
    return {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"memory": "4Gi"}}


class Volumes:
    """Collects a pod's volumes and one container's mounts of them, in the order added."""

    def __init__(self) -> None:
        self.volumes: list[Manifest] = []
        self.mounts: list[Manifest] = []

    def add(self, name: str, source: Manifest, path: str, *, read_only: bool = False) -> Volumes:
        self.volumes.append({"name": name, **source})
        mount: Manifest = {"name": name, "mountPath": path}
        if read_only:
            mount["readOnly"] = True
        self.mounts.append(mount)
        return self

    @classmethod
    def for_stage(cls, experiment: ProspectExperiment, *, shared_memory: bool = False) -> Volumes:
        """The experiment file, a scratch folder, the models PVC when named, /dev/shm if asked."""
        config_map = naming.name_for(experiment.name, naming.Component.CONFIG)
        volumes = cls()
        volumes.add(
            "experiment",
            {"configMap": {"name": config_map}},
            EXPERIMENT_DIR,
            read_only=True,
        )
        volumes.add("scratch", {"emptyDir": {}}, SCRATCH_DIR)
        if experiment.spec.kubernetes.models_pvc:
            claim = {"claimName": experiment.spec.kubernetes.models_pvc}
            volumes.add("models", {"persistentVolumeClaim": claim}, MODELS_DIR)
        if shared_memory:
            volumes.add("shm", {"emptyDir": {"medium": "Memory"}}, "/dev/shm")
        return volumes


def container(
    name: str,
    image: str,
    *,
    command: list[str],
    env: list[Manifest],
    mounts: list[Manifest],
    resources: Manifest,
) -> Manifest:
    """A container that writes its one-line JSON summary to the termination log on exit.

    `FallbackToLogsOnError` puts the last log lines there when a stage dies before writing its
    summary, so a failed stage still tells the operator (and the user) why.
    """
    return {
        "name": name,
        "image": image,
        "command": command,
        "workingDir": SCRATCH_DIR,
        "env": env,
        "volumeMounts": mounts,
        "resources": resources,
        "securityContext": container_security_context(),
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }


def pod_template(
    experiment: ProspectExperiment,
    component: naming.Component,
    *,
    containers: list[Manifest],
    volumes: Volumes,
    restart_policy: str,
    resources: Resources | None = None,
    init_containers: list[Manifest] | None = None,
) -> Manifest:
    """A pod template labelled for its component; node placement from `resources` if given."""
    spec: Manifest = {
        "restartPolicy": restart_policy,
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": pod_security_context(),
        "containers": containers,
        "volumes": volumes.volumes,
    }
    if init_containers:
        spec["initContainers"] = init_containers
    if resources is not None and resources.node_selector:
        spec["nodeSelector"] = dict(resources.node_selector)
    if resources is not None and resources.tolerations:
        spec["tolerations"] = [dict(t) for t in resources.tolerations]
    return {
        "metadata": {"labels": naming.labels(experiment.name, component)},
        "spec": spec,
    }
