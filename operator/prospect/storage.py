"""Where stages keep what outlives them: a local folder, or an S3/MinIO prefix.

Both stores speak in keys ("dataset/v1/kto.parquet") relative to the store's root, so a stage
does not care whether it runs on a laptop or in a pod. S3 goes through the `minio` client.
Credentials come from the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY), which the
operator fills from the Secret the spec names; they never appear in a message or a log.
"""

from __future__ import annotations

import io
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from prospect.spec import StorageSpec

__all__ = ["DirStore", "S3Store", "StorageError", "Store", "open_store"]

log = logging.getLogger("prospect")

_UMASK = os.umask(0)
os.umask(_UMASK)


class StorageError(RuntimeError):
    """The store could not be reached or refused us; the message names where, never a secret."""


class Store(Protocol):
    def uri(self, key: str = "") -> str: ...
    def put_bytes(self, key: str, data: bytes) -> None: ...
    def get_bytes(self, key: str) -> bytes: ...
    def put_file(self, key: str, path: Path) -> None: ...
    def get_file(self, key: str, path: Path) -> None: ...
    def exists(self, key: str) -> bool: ...
    def list(self, prefix: str = "") -> list[str]: ...
    def delete(self, key: str) -> None: ...
    def check(self) -> None: ...


class DirStore:
    """A folder. Writes go to a temporary file first and are renamed into place, so a reader
    never sees half a file."""

    def __init__(self, root: Path) -> None:
        self.root = root.expanduser().resolve()

    def uri(self, key: str = "") -> str:
        return str(self.root / key) if key else str(self.root)

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root not in (path, *path.parents):
            raise StorageError(f"key {key!r} escapes the store at {self.root}")
        return path

    def put_bytes(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, delete=False, prefix=".tmp-") as tmp:
            tmp.write(data)
            tmp.flush()
            os.fsync(tmp.fileno())
        # Temporary files are private (0600); what the store keeps is read like any file.
        os.chmod(tmp.name, 0o666 & ~_UMASK)
        os.replace(tmp.name, path)

    def get_bytes(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise StorageError(f"{self.uri(key)} does not exist") from None

    def put_file(self, key: str, path: Path) -> None:
        target = self._path(key)
        if target == path.resolve():
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".tmp-{target.name}")
        shutil.copyfile(path, tmp)
        os.replace(tmp, target)

    def get_file(self, key: str, path: Path) -> None:
        source = self._path(key)
        if not source.exists():
            raise StorageError(f"{self.uri(key)} does not exist")
        if source != path.resolve():
            path.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, path)

    def exists(self, key: str) -> bool:
        return self._path(key).exists()

    def list(self, prefix: str = "") -> list[str]:
        base = self._path(prefix) if prefix else self.root
        if not base.exists():
            return []
        if base.is_file():
            return [prefix]
        return sorted(
            str(p.relative_to(self.root))
            for p in base.rglob("*")
            if p.is_file() and not p.name.startswith(".tmp-")
        )

    def delete(self, key: str) -> None:
        path = self._path(key)
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)

    def check(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if not os.access(self.root, os.W_OK):
            raise StorageError(f"cannot write to {self.root}")


class S3Store:
    """An s3://bucket/prefix on MinIO or any S3 endpoint."""

    def __init__(
        self,
        *,
        bucket: str,
        prefix: str,
        endpoint: str,
        access_key: str,
        secret_key: str,
        secure: bool,
        region: str | None = None,
    ) -> None:
        from minio import Minio

        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.endpoint = endpoint
        self._client = Minio(
            endpoint,
            access_key=access_key,
            secret_key=secret_key,
            secure=secure,
            region=region,
        )

    def uri(self, key: str = "") -> str:
        path = "/".join(p for p in (self.prefix, key) if p)
        return f"s3://{self.bucket}/{path}" if path else f"s3://{self.bucket}"

    def _name(self, key: str) -> str:
        return "/".join(p for p in (self.prefix, key.lstrip("/")) if p)

    def _fail(self, action: str, key: str, exc: Exception) -> StorageError:
        from minio.error import S3Error

        if isinstance(exc, S3Error):
            what = exc.code
            if exc.code in {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied"}:
                what = (
                    f"{exc.code}: the credentials were refused (check AWS_ACCESS_KEY_ID and "
                    "AWS_SECRET_ACCESS_KEY, or the Secret named in spec.storage.credentialsSecret)"
                )
        else:
            what = f"{type(exc).__name__}: {exc}"
        return StorageError(f"cannot {action} {self.uri(key)} at {self.endpoint}: {what}")

    def put_bytes(self, key: str, data: bytes) -> None:
        try:
            self._client.put_object(self.bucket, self._name(key), io.BytesIO(data), len(data))
        except Exception as exc:
            raise self._fail("write", key, exc) from None

    def get_bytes(self, key: str) -> bytes:
        try:
            response = self._client.get_object(self.bucket, self._name(key))
            try:
                return response.read()
            finally:
                response.close()
                response.release_conn()
        except Exception as exc:
            raise self._fail("read", key, exc) from None

    def put_file(self, key: str, path: Path) -> None:
        try:
            self._client.fput_object(self.bucket, self._name(key), str(path))
        except Exception as exc:
            raise self._fail("write", key, exc) from None

    def get_file(self, key: str, path: Path) -> None:
        try:
            self._client.fget_object(self.bucket, self._name(key), str(path))
        except Exception as exc:
            raise self._fail("read", key, exc) from None

    def exists(self, key: str) -> bool:
        from minio.error import S3Error

        try:
            self._client.stat_object(self.bucket, self._name(key))
            return True
        except S3Error as exc:
            if exc.code in {"NoSuchKey", "NoSuchObject", "ResourceNotFound"}:
                return False
            raise self._fail("stat", key, exc) from None
        except Exception as exc:
            raise self._fail("stat", key, exc) from None

    def _iter(self, prefix: str) -> Iterator[str]:
        base = self._name(prefix)
        strip = len(self.prefix) + 1 if self.prefix else 0
        for obj in self._client.list_objects(self.bucket, prefix=base, recursive=True):
            if obj.object_name is not None:
                yield obj.object_name[strip:]

    def list(self, prefix: str = "") -> list[str]:
        try:
            return sorted(self._iter(prefix))
        except Exception as exc:
            raise self._fail("list", prefix, exc) from None

    def delete(self, key: str) -> None:
        try:
            for name in self._iter(key):
                self._client.remove_object(self.bucket, self._name(name))
        except Exception as exc:
            raise self._fail("delete", key, exc) from None

    def check(self) -> None:
        """Reach the endpoint, check the credentials, and create the bucket if it is missing."""
        try:
            if not self._client.bucket_exists(self.bucket):
                self._client.make_bucket(self.bucket)
        except Exception as exc:
            raise self._fail("reach bucket", "", exc) from None


def open_store(spec: StorageSpec, *, default_root: Path) -> Store:
    """The store the spec names; a folder under the run directory when it names none.

    Raises:
        StorageError: S3 credentials are missing from the environment.
    """
    uri = spec.uri
    if not uri:
        return DirStore(default_root)
    if not uri.startswith("s3://"):
        return DirStore(Path(uri).expanduser())

    bucket, _, prefix = uri[len("s3://") :].partition("/")
    if not bucket:
        raise StorageError(f"spec.storage.uri {uri!r} names no bucket")
    access_key = os.environ.get("AWS_ACCESS_KEY_ID")
    secret_key = os.environ.get("AWS_SECRET_ACCESS_KEY")
    if not access_key or not secret_key:
        secret = spec.credentials_secret or "<spec.storage.credentialsSecret>"
        raise StorageError(
            f"no credentials for {uri}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
            f"(in the cluster they come from the Secret {secret!r})"
        )
    endpoint = spec.endpoint or "s3.amazonaws.com"
    log.debug("opening s3 store %s at %s", uri, endpoint)
    return S3Store(
        bucket=bucket,
        prefix=prefix,
        endpoint=endpoint,
        access_key=access_key,
        secret_key=secret_key,
        secure=spec.secure,
        region=spec.region,
    )
