"""The dataset writer against a real S3 server (SeaweedFS), through `open_store`."""

from __future__ import annotations

import hashlib
from pathlib import Path

import datasets
import pytest

from prospect.spec import StorageSpec
from prospect.stages import write
from prospect.storage import S3Store, StorageError, open_store

SPEC = "d" * 64
BENCH = "e" * 64


def spec_for(server, bucket: str) -> StorageSpec:
    return StorageSpec(
        uri=f"s3://{bucket}/experiments/gsm8k-qwen", endpoint=server.endpoint, secure=False
    )


def test_a_dataset_written_to_s3_reads_back_byte_for_byte(
    s3_env, s3_bucket, standard_exam, tmp_path
):
    store = open_store(spec_for(s3_env, s3_bucket), default_root=tmp_path / "unused")
    assert isinstance(store, S3Store)
    store.check()
    standard_exam.store_into(store)

    manifest = write.write_dataset(
        store=store, experiment="gsm8k-qwen", spec_digest=SPEC, benchmark_digest=BENCH
    )

    assert write.latest_version(store) == manifest
    assert store.get_bytes("dataset/LATEST") == b"v1\n"
    objects = {o.object_name for o in s3_env.client().list_objects(s3_bucket, recursive=True)}
    for name, entry in manifest.files.items():
        assert f"experiments/gsm8k-qwen/dataset/v1/{name}" in objects
        data = store.get_bytes(manifest.key(name))
        assert hashlib.sha256(data).hexdigest() == entry.sha256
    assert "experiments/gsm8k-qwen/dataset/v1/manifest.json" in objects

    local = tmp_path / "download" / "kto.parquet"
    store.get_file(manifest.key("kto.parquet"), local)
    kto = datasets.load_dataset(
        "parquet", data_files=str(local), split="train", cache_dir=str(tmp_path / "hf-cache")
    )
    assert kto.num_rows == manifest.files["kto.parquet"].rows


def test_a_rerun_on_s3_returns_the_version_already_there(
    s3_env, s3_bucket, standard_exam, tmp_path
):
    store = open_store(spec_for(s3_env, s3_bucket), default_root=tmp_path)
    store.check()
    standard_exam.store_into(store)
    arguments = {"experiment": "gsm8k-qwen", "spec_digest": SPEC, "benchmark_digest": BENCH}
    first = write.write_dataset(store=store, **arguments)
    keys = store.list("dataset/")

    again = write.write_dataset(store=store, **arguments)

    assert again == first
    assert store.list("dataset/") == keys


def test_an_interrupted_version_on_s3_is_replaced_by_the_next_writer(
    s3_env, s3_bucket, standard_exam, tmp_path
):
    store = open_store(spec_for(s3_env, s3_bucket), default_root=tmp_path)
    store.check()
    standard_exam.store_into(store)
    store.put_bytes("dataset/v1/kto.parquet", b"half a file")

    assert write.latest_version(store) is None
    manifest = write.write_dataset(
        store=store, experiment="gsm8k-qwen", spec_digest=SPEC, benchmark_digest=BENCH
    )

    assert manifest.version == "v1"
    data = store.get_bytes("dataset/v1/kto.parquet")
    assert hashlib.sha256(data).hexdigest() == manifest.files["kto.parquet"].sha256


@pytest.mark.parametrize("wrong", ["secret", "access key"])
def test_wrong_credentials_are_refused_by_name_without_the_secret(
    s3_server, s3_bucket, monkeypatch, tmp_path, wrong
):
    wrong_secret = "not-the-secret-" + s3_server.secret_key[:6]
    monkeypatch.setenv(
        "AWS_ACCESS_KEY_ID", s3_server.access_key if wrong == "secret" else "nobody-we-know"
    )
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", wrong_secret)
    store = open_store(spec_for(s3_server, s3_bucket), default_root=tmp_path)

    failures = []
    for attempt in (
        store.check,
        lambda: write.read_items(store),
        lambda: store.put_bytes("dataset/v1/kto.parquet", b"x"),
    ):
        with pytest.raises(StorageError) as raised:
            attempt()
        failures.append(str(raised.value))

    for message in failures:
        assert s3_server.endpoint in message
        assert f"s3://{s3_bucket}" in message
        assert "the credentials were refused" in message
        assert wrong_secret not in message
        assert s3_server.secret_key not in message


def test_missing_credentials_are_a_clear_error(s3_server, s3_bucket, monkeypatch, tmp_path):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID", raising=False)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "")

    with pytest.raises(StorageError) as raised:
        open_store(spec_for(s3_server, s3_bucket), default_root=Path(tmp_path))

    message = str(raised.value)
    assert f"s3://{s3_bucket}/experiments/gsm8k-qwen" in message
    assert "AWS_ACCESS_KEY_ID" in message and "AWS_SECRET_ACCESS_KEY" in message
