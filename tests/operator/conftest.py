"""The real kopf operator against kmock, kopf's mock Kubernetes API, over HTTP on 127.0.0.1.

Fixtures:
    emulator: kmock's stateful API emulator, with the metadata a real API server adds.
    kubeconfig: $KUBECONFIG naming the emulator, as a user's would name a cluster.
    operator: the operator (`kopf run -A --standalone -m prospect.controller.handlers`).
    cluster: what a test does as the user and as the missing controllers (Deployments, Jobs).
    experiment_body: a valid experiment for the cluster, as a user writes it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import kmock
import pytest
import yaml
from emulated import NAMESPACE, RESOURCES, VERBS, Cluster, Emulator, Operator

from prospect.controller import handlers
from prospect.spec import API_VERSION, KIND


@pytest.fixture
async def emulator() -> AsyncIterator[Emulator]:
    async with Emulator() as handler, kmock.Server(handler, host="127.0.0.1"):
        for key, info in RESOURCES.items():
            handler.resources[key] = kmock.ResourceInfo(verbs=VERBS, **info)
        yield handler


@pytest.fixture
def kubeconfig(emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A kubeconfig for the emulator, named by $KUBECONFIG as a user's would be."""
    path = tmp_path / "kubeconfig"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "kmock", "cluster": {"server": str(emulator.url)}}],
                "users": [{"name": "tester", "user": {"token": "test-token"}}],
                "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "tester"}}],
                "current-context": "kmock",
            }
        )
    )
    monkeypatch.setenv("KUBECONFIG", str(path))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv(handlers.RECONCILE_SECONDS_ENV, "0.1")
    return path


@pytest.fixture
async def operator(kubeconfig: Path) -> AsyncIterator[Operator]:
    running = Operator()
    await running.start()
    try:
        yield running
    finally:
        await running.stop()


@pytest.fixture
def cluster(emulator: Emulator) -> Iterator[Cluster]:
    test_side = Cluster(emulator)
    try:
        yield test_side
    finally:
        test_side.api.close()


@pytest.fixture
def experiment_body() -> dict[str, Any]:
    """A small GSM8K experiment as a user applies it on a cluster with MinIO."""
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": "gsm8k", "namespace": NAMESPACE},
        "spec": {
            "benchmark": {
                "format": "gsm8k",
                "source": "hf://openai/gsm8k",
                "subset": "main",
                "split": "test",
                "limit": 40,
            },
            "competitors": {
                "large": {"model": "hf://Qwen/Qwen2.5-1.5B-Instruct"},
                "small": {"model": "hf://Qwen/Qwen2.5-0.5B-Instruct"},
            },
            "supervisor": {"shards": 2, "parallelism": 2},
            "storage": {
                "uri": "s3://prospect/runs",
                "endpoint": "minio.minio:9000",
                "secure": False,
                "credentialsSecret": "minio-credentials",
            },
            "training": {"method": "kto", "target": "small", "maxSteps": 4},
            "evaluation": {"heldOutFraction": 0.25},
        },
    }
