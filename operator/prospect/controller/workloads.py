"""The stage workloads: Jobs that run `prospect stage <name>`, and the training engines.

A stage pod runs the same command as the local mode, reads the experiment from the mounted
ConfigMap, and ends by writing a one-line JSON summary to its termination log; that summary is
how the operator learns a stage's results without doing any of its work.

Grading is an Indexed Job: index *i* grades shard *i* of `supervisor.shards`, so grading
scales out on Kubernetes itself and a failed shard is retried alone. Training is a Job (torchrun
inside one pod for several GPUs), or a Kubeflow PyTorchJob or TrainJob for several nodes.
"""

from __future__ import annotations

from prospect.controller import naming, pods, servers
from prospect.spec import ProspectExperiment, Role

__all__ = [
    "ENGINE_KINDS",
    "evaluate_job",
    "final_report_job",
    "grade_job",
    "report_job",
    "train_workload",
    "training_command",
    "write_job",
]

Manifest = pods.Manifest

# What each training engine creates: (apiVersion, kind).
ENGINE_KINDS: dict[str, tuple[str, str]] = {
    "job": ("batch/v1", "Job"),
    "pytorchjob": ("kubeflow.org/v1", "PyTorchJob"),
    "trainjob": ("trainer.kubeflow.org/v1alpha1", "TrainJob"),
}
# The container name Kubeflow's torch runtime expects in a TrainJob's pods.
_TRAINJOB_CONTAINER = "node"

_C = naming.Component


def _stage_command(stage: str, *flags: str) -> list[str]:
    return ["prospect", "stage", stage, "-f", pods.EXPERIMENT_FILE, *flags]


def _job(
    experiment: ProspectExperiment, component: naming.Component, template: Manifest
) -> Manifest:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": naming.metadata(experiment, component),
        "spec": {
            "backoffLimit": experiment.spec.kubernetes.backoff_limit,
            # A preempted or drained node is not the stage's fault: do not count it.
            "podFailurePolicy": {
                "rules": [
                    {
                        "action": "Ignore",
                        "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}],
                    }
                ]
            },
            "template": template,
        },
    }


def _runner_job(
    experiment: ProspectExperiment,
    component: naming.Component,
    command: list[str],
    *,
    extra_env: list[Manifest] | None = None,
) -> Manifest:
    volumes = pods.Volumes.for_stage(experiment)
    runner = pods.serving_metrics(
        pods.container(
            component.value,
            experiment.spec.kubernetes.runner_image,
            command=command,
            env=[*pods.stage_env(experiment.spec), *(extra_env or [])],
            mounts=volumes.mounts,
            resources=pods.runner_resources(),
        ),
        experiment.spec,
    )
    template = pods.pod_template(
        experiment, component, containers=[runner], volumes=volumes, restart_policy="Never"
    )
    return _job(experiment, component, template)


def grade_job(experiment: ProspectExperiment) -> Manifest:
    """The supervisor: an Indexed Job, one shard per index, both competitors per item."""
    shards = experiment.spec.supervisor.shards
    command = _stage_command(
        "grade",
        "--shard-index",
        "$(JOB_COMPLETION_INDEX)",
        "--shard-count",
        str(shards),
        "--endpoint",
        f"large={servers.endpoint_url(experiment, Role.LARGE)}",
        "--endpoint",
        f"small={servers.endpoint_url(experiment, Role.SMALL)}",
    )
    extractor = experiment.spec.supervisor.extractor
    if extractor is not None and extractor.competitor is not None:
        command += ["--extractor", servers.endpoint_url(experiment, extractor.competitor)]
    # The Job controller sets this too; declaring it makes the $(...) expansion explicit.
    index = {
        "name": "JOB_COMPLETION_INDEX",
        "valueFrom": {
            "fieldRef": {
                "fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"
            }
        },
    }
    job = _runner_job(experiment, _C.GRADE, command, extra_env=[index])
    spec = job["spec"]
    del spec["backoffLimit"]  # counted per index instead
    spec.update(
        {
            "completionMode": "Indexed",
            "completions": shards,
            "parallelism": min(experiment.spec.supervisor.parallelism, shards),
            "backoffLimitPerIndex": experiment.spec.kubernetes.backoff_limit,
            # One shard out of retries fails the Job now, not after every other shard ran.
            "maxFailedIndexes": 0,
        }
    )
    return job


def report_job(experiment: ProspectExperiment) -> Manifest:
    """Accuracy per competitor and whether the gap is significant, from the graded records."""
    return _runner_job(experiment, _C.REPORT, _stage_command("report"))


def write_job(experiment: ProspectExperiment) -> Manifest:
    """Graded records to the versioned dataset: incorrect answers, KTO examples, pairs."""
    return _runner_job(experiment, _C.WRITE, _stage_command("write"))


def evaluate_job(experiment: ProspectExperiment) -> Manifest:
    """Held-out items graded against the trained target (and the untrained one, when it is no
    competitor), each served by its own Deployment."""
    flags = ["--endpoint", f"target-after={servers.target_url(experiment)}"]
    if servers.has_baseline(experiment):
        flags += ["--endpoint", f"target-before={servers.baseline_url(experiment)}"]
    return _runner_job(experiment, _C.EVALUATE, _stage_command("evaluate", *flags))


def final_report_job(experiment: ProspectExperiment) -> Manifest:
    """The report again once training and evaluation are in the store, so it covers them."""
    return _runner_job(experiment, _C.FINAL_REPORT, _stage_command("report"))


def training_command(gpus: int, *, distributed: bool = False) -> list[str]:
    """`prospect stage train`, under torchrun when more than one process trains.

    In a PyTorchJob or TrainJob the engine sets torchrun's `PET_*` variables (nodes, rank,
    master address), so the same torchrun line spans nodes.
    """
    command = _stage_command("train")
    if distributed:
        return ["torchrun", "--no-python", *command]
    if gpus > 1:
        return ["torchrun", "--standalone", f"--nproc_per_node={gpus}", "--no-python", *command]
    return command


def _trainer_pod(experiment: ProspectExperiment, name: str, command: list[str]) -> Manifest:
    training = experiment.spec.training
    volumes = pods.Volumes.for_stage(experiment, shared_memory=True)
    trainer = pods.serving_metrics(
        pods.container(
            name,
            experiment.spec.kubernetes.trainer_image,
            command=command,
            env=pods.stage_env(experiment.spec),
            mounts=volumes.mounts,
            resources=pods.compute_resources(training.resources),
        ),
        experiment.spec,
    )
    return pods.pod_template(
        experiment,
        _C.TRAIN,
        containers=[trainer],
        volumes=volumes,
        restart_policy="Never",
        resources=training.resources,
    )


def _pytorchjob(experiment: ProspectExperiment) -> Manifest:
    training = experiment.spec.training
    command = training_command(training.resources.gpus, distributed=True)
    replica: Manifest = {
        "replicas": 1,
        "restartPolicy": "OnFailure",
        "template": _trainer_pod(experiment, "pytorch", command),
    }
    replica["template"]["spec"]["restartPolicy"] = "OnFailure"
    specs: Manifest = {"Master": replica}
    if training.nodes > 1:
        specs["Worker"] = {**replica, "replicas": training.nodes - 1}
    return {
        "apiVersion": "kubeflow.org/v1",
        "kind": "PyTorchJob",
        "metadata": naming.metadata(experiment, _C.TRAIN),
        "spec": {
            "nprocPerNode": str(max(training.resources.gpus, 1)),
            "runPolicy": {
                "backoffLimit": experiment.spec.kubernetes.backoff_limit,
                "cleanPodPolicy": "None",
            },
            "pytorchReplicaSpecs": specs,
        },
    }


def _trainjob(experiment: ProspectExperiment) -> Manifest:
    """A Kubeflow Trainer v2 TrainJob on the `torch-distributed` runtime."""
    training = experiment.spec.training
    pod = _trainer_pod(experiment, _TRAINJOB_CONTAINER, [])
    pod_spec = pod["spec"]
    overrides: Manifest = {
        "targetJobs": [{"name": _TRAINJOB_CONTAINER}],
        "volumes": pod_spec["volumes"],
        "containers": [
            {
                "name": _TRAINJOB_CONTAINER,
                "volumeMounts": pod_spec["containers"][0]["volumeMounts"],
            }
        ],
    }
    for key in ("nodeSelector", "tolerations"):
        if key in pod_spec:
            overrides[key] = pod_spec[key]
    return {
        "apiVersion": "trainer.kubeflow.org/v1alpha1",
        "kind": "TrainJob",
        "metadata": naming.metadata(experiment, _C.TRAIN),
        "spec": {
            "runtimeRef": {"name": "torch-distributed"},
            "labels": naming.labels(experiment.name, _C.TRAIN),
            "trainer": {
                "image": experiment.spec.kubernetes.trainer_image,
                "command": training_command(training.resources.gpus, distributed=True),
                "numNodes": training.nodes,
                "numProcPerNode": max(training.resources.gpus, 1),
                "resourcesPerNode": pods.compute_resources(training.resources),
                "env": pods.stage_env(experiment.spec),
            },
            "podSpecOverrides": [overrides],
        },
    }


def train_workload(experiment: ProspectExperiment) -> Manifest:
    """What trains the target: a Job, or the engine the spec chose for several nodes."""
    engine = experiment.spec.training.engine
    if engine == "pytorchjob":
        return _pytorchjob(experiment)
    if engine == "trainjob":
        return _trainjob(experiment)
    command = training_command(experiment.spec.training.resources.gpus)
    return _job(experiment, _C.TRAIN, _trainer_pod(experiment, "train", command))
