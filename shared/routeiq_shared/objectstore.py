"""The object store the sidecars read from: `s3://bucket/prefix/` (S3, MinIO, any S3 API) or `file:///dir/`.

One small interface for both, so an air-gapped pod on a mounted directory behaves as a pod on S3. Keys are
names under the location's prefix (`config.yaml`, `router/v3/model.pkl`). Endpoint, region and credentials
come from the standard AWS variables (`AWS_ENDPOINT_URL_S3`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`, …).

Integrity: a read returns only a body whose length matches what the store declared, and, when the uploader
attached `x-amz-meta-sha256` (`aws s3 cp --metadata sha256=…`), whose digest matches it. A partial or
half-uploaded object is an error, never a short body.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from .egress import check_setting_url

READ_CHUNK = 1024 * 1024


class StoreError(Exception):
    """Base of every object-store failure. `reason` is a short code for metrics and health."""

    reason = "store_error"


class StoreUnavailable(StoreError):
    reason = "store_unavailable"


class ObjectMissing(StoreError):
    reason = "missing"


class ObjectTooLarge(StoreError):
    reason = "too_large"


class ObjectIncomplete(StoreError):
    reason = "incomplete"


class NotSupported(StoreError):
    reason = "not_supported"


class LocalWriteError(StoreError):
    """Writing the download to the local file failed (a full or read-only volume): not the store's fault."""

    reason = "volume_error"


@dataclass(frozen=True, slots=True)
class StoreLocation:
    scheme: str  # "s3" or "file"
    bucket: str  # s3 only
    prefix: str  # "" or ending in "/"
    root: Path | None  # file only

    def key(self, name: str) -> str:
        return f"{self.prefix}{name}"

    def __str__(self) -> str:
        if self.scheme == "s3":
            return f"s3://{self.bucket}/{self.prefix}"
        return f"file://{self.root}/"


def parse_store_uri(uri: str) -> StoreLocation:
    parts = urlsplit(uri)
    if parts.scheme == "s3":
        if not parts.netloc:
            raise ValueError(f"{uri!r}: an s3 URI needs a bucket: s3://bucket/prefix/")
        prefix = parts.path.lstrip("/")
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        return StoreLocation("s3", parts.netloc, prefix, None)
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise ValueError(f"{uri!r}: a file URI is file:///absolute/dir/")
        return StoreLocation("file", "", "", Path(parts.path or "/"))
    raise ValueError(f"{uri!r}: expected s3://bucket/prefix/ or file:///dir/")


@dataclass(frozen=True, slots=True)
class StoredObject:
    name: str
    body: bytes
    etag: str
    version_id: str | None


@dataclass(frozen=True, slots=True)
class ObjectVersion:
    version_id: str
    is_latest: bool
    last_modified: float
    size: int


@dataclass(frozen=True, slots=True)
class PutOptions:
    """How S3 keeps a written object: server-side encryption and Object Lock retention (the bucket must have been
    created with Object Lock). A file:// store has neither and ignores them."""

    sse: str | None = None  # "AES256" or "aws:kms"
    kms_key_id: str | None = None
    lock_mode: str | None = None  # "GOVERNANCE" or "COMPLIANCE", with retain_until
    retain_until: datetime | None = None

    def s3_args(self) -> dict[str, Any]:
        args: dict[str, Any] = {}
        if self.sse:
            args["ServerSideEncryption"] = self.sse
        if self.kms_key_id:
            args["SSEKMSKeyId"] = self.kms_key_id
        if self.lock_mode and self.retain_until is not None:
            args["ObjectLockMode"] = self.lock_mode
            args["ObjectLockRetainUntilDate"] = self.retain_until
        return args


class ObjectStore(Protocol):
    location: StoreLocation

    async def get(
        self, name: str, *, if_none_match: str | None = None, max_bytes: int, version_id: str | None = None
    ) -> StoredObject | None:
        """The object (that version of it, when given), or None when its ETag still equals `if_none_match`."""
        ...

    async def download(self, name: str, dest: Path, *, max_bytes: int) -> int:
        """Stream the object into `dest` (an open-for-write path the caller owns); return its size."""
        ...

    async def put(
        self, name: str, data: bytes, *, metadata: dict[str, str] | None = None, options: PutOptions | None = None
    ) -> str: ...

    async def put_file(self, name: str, path: Path, *, metadata: dict[str, str] | None = None) -> str: ...

    async def exists(self, name: str) -> bool: ...

    async def versions(self, name: str) -> list[ObjectVersion]: ...

    async def copy(self, src_name: str, dest_name: str, *, version_id: str | None = None) -> str: ...

    async def close(self) -> None: ...


def _check_declared(name: str, body_len: int, declared_len: int | None, digest: str | None, want: str | None) -> None:
    if declared_len is not None and body_len != declared_len:
        raise ObjectIncomplete(f"{name}: read {body_len} bytes of {declared_len}")
    if want and digest and want.lower() != digest:
        raise ObjectIncomplete(f"{name}: sha256 differs from the uploader's x-amz-meta-sha256")


class S3Store:
    """aioboto3 client kept open for the agent's life (one connection pool, no per-poll handshake)."""

    def __init__(self, location: StoreLocation, endpoint_url: str | None = None) -> None:
        self.location = location
        self._endpoint_url = endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or None
        if self._endpoint_url:  # never let an S3 client be pointed at a metadata address (any spelling)
            check_setting_url("S3 endpoint", self._endpoint_url)
        self._stack = contextlib.AsyncExitStack()
        self._client: Any = None

    async def _s3(self) -> Any:
        if self._client is None:
            import aioboto3
            from botocore.config import Config

            session = aioboto3.Session()
            # No botocore retries (its max_attempts counts retries, total_max_attempts counts tries): the
            # callers retry with their own jittered backoff and count what happened.
            config = Config(retries={"total_max_attempts": 1}, connect_timeout=5, read_timeout=30)
            self._client = await self._stack.enter_async_context(
                session.client("s3", endpoint_url=self._endpoint_url, config=config)
            )
        return self._client

    @contextlib.asynccontextmanager
    async def _errors(self, name: str) -> AsyncIterator[None]:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            yield
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in ("NoSuchKey", "404", "NotFound", "NoSuchVersion"):
                raise ObjectMissing(f"{self.location.key(name)} does not exist") from None
            if code == "NoSuchBucket":
                raise ObjectMissing(f"bucket {self.location.bucket} does not exist") from None
            raise StoreUnavailable(f"{self.location.key(name)}: S3 error {code}") from None
        except (BotoCoreError, OSError) as exc:
            raise StoreUnavailable(f"{self.location.key(name)}: {type(exc).__name__}: {exc}") from None

    async def get(
        self, name: str, *, if_none_match: str | None = None, max_bytes: int, version_id: str | None = None
    ) -> StoredObject | None:
        from botocore.exceptions import ClientError

        s3 = await self._s3()
        kwargs: dict[str, Any] = {"Bucket": self.location.bucket, "Key": self.location.key(name)}
        if version_id:
            kwargs["VersionId"] = version_id
        if if_none_match:
            kwargs["IfNoneMatch"] = if_none_match
        async with self._errors(name):
            try:
                resp = await s3.get_object(**kwargs)
            except ClientError as exc:
                status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
                if status == 304 or exc.response.get("Error", {}).get("Code") in ("304", "NotModified"):
                    return None
                raise
            declared = resp.get("ContentLength")
            if declared is not None and declared > max_bytes:
                resp["Body"].close()
                raise ObjectTooLarge(f"{self.location.key(name)}: {declared} bytes, over the {max_bytes} limit")
            body = await resp["Body"].read()
        digest = hashlib.sha256(body).hexdigest()
        _check_declared(name, len(body), declared, digest, resp.get("Metadata", {}).get("sha256"))
        return StoredObject(name, body, str(resp.get("ETag", "")), resp.get("VersionId"))

    async def download(self, name: str, dest: Path, *, max_bytes: int) -> int:
        from botocore.exceptions import ClientError

        s3 = await self._s3()
        key = self.location.key(name)
        async with self._errors(name):
            try:
                # A ranged GET: the store sends at most max_bytes + 1 bytes, however large the object is.
                resp = await s3.get_object(Bucket=self.location.bucket, Key=key, Range=f"bytes=0-{max_bytes}")
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") != "InvalidRange":
                    raise
                _write_local(dest, [])  # no byte 0: the object is empty
                return 0
            declared = resp.get("ContentLength")
            total = _range_total(resp.get("ContentRange")) or declared
            if total is not None and total > max_bytes:
                resp["Body"].close()
                raise ObjectTooLarge(f"{key}: {total} bytes, over the {max_bytes} limit")
            size = 0
            fh = _open_local(dest)
            with fh:
                async for chunk in resp["Body"].iter_chunks(READ_CHUNK):
                    size += len(chunk)
                    if size > max_bytes:
                        resp["Body"].close()
                        raise ObjectTooLarge(f"{key}: over the {max_bytes} limit")
                    _local(fh.write, dest, chunk)
                _local(fh.flush, dest)
                _local(os.fsync, dest, fh.fileno())
        _check_declared(name, size, declared, None, None)
        return size

    async def put(
        self, name: str, data: bytes, *, metadata: dict[str, str] | None = None, options: PutOptions | None = None
    ) -> str:
        s3 = await self._s3()
        extra = options.s3_args() if options is not None else {}
        async with self._errors(name):
            resp = await s3.put_object(
                Bucket=self.location.bucket, Key=self.location.key(name), Body=data, Metadata=metadata or {}, **extra
            )
        return str(resp.get("ETag", ""))

    async def put_file(self, name: str, path: Path, *, metadata: dict[str, str] | None = None) -> str:
        s3 = await self._s3()
        async with self._errors(name):
            with path.open("rb") as fh:
                await s3.upload_fileobj(
                    fh, self.location.bucket, self.location.key(name), ExtraArgs={"Metadata": metadata or {}}
                )
            head = await s3.head_object(Bucket=self.location.bucket, Key=self.location.key(name))
        return str(head.get("ETag", ""))

    async def exists(self, name: str) -> bool:
        s3 = await self._s3()
        try:
            async with self._errors(name):
                await s3.head_object(Bucket=self.location.bucket, Key=self.location.key(name))
        except ObjectMissing:
            return False
        return True

    async def versions(self, name: str) -> list[ObjectVersion]:
        s3 = await self._s3()
        key = self.location.key(name)
        async with self._errors(name):
            resp = await s3.list_object_versions(Bucket=self.location.bucket, Prefix=key)
        out = [
            ObjectVersion(v["VersionId"], bool(v.get("IsLatest")), v["LastModified"].timestamp(), int(v["Size"]))
            for v in resp.get("Versions", [])
            if v["Key"] == key and v.get("VersionId") not in (None, "null")
        ]
        return sorted(out, key=lambda v: v.last_modified, reverse=True)

    async def copy(self, src_name: str, dest_name: str, *, version_id: str | None = None) -> str:
        s3 = await self._s3()
        source: dict[str, str] = {"Bucket": self.location.bucket, "Key": self.location.key(src_name)}
        if version_id:
            source["VersionId"] = version_id
        async with self._errors(src_name):
            resp = await s3.copy_object(
                Bucket=self.location.bucket, Key=self.location.key(dest_name), CopySource=source
            )
        return str(resp.get("CopyObjectResult", {}).get("ETag", ""))

    async def close(self) -> None:
        await self._stack.aclose()
        self._client = None


class FileStore:
    """A directory as a store. The ETag is the content's sha256, so an unchanged file is seen as unchanged.
    File work runs in a thread: a model artifact may be hundreds of MB, and the event loop serves health."""

    def __init__(self, location: StoreLocation) -> None:
        assert location.root is not None
        self.location = location
        self._root = location.root

    def _path(self, name: str) -> Path:
        path = (self._root / name).resolve()
        if self._root.resolve() not in path.parents:
            raise ObjectMissing(f"{name}: outside the store")
        return path

    def _get(self, name: str, if_none_match: str | None, max_bytes: int) -> StoredObject | None:
        path = self._path(name)
        try:
            size = path.stat().st_size
            if size > max_bytes:
                raise ObjectTooLarge(f"{path}: {size} bytes, over the {max_bytes} limit")
            body = path.read_bytes()
        except FileNotFoundError:
            raise ObjectMissing(f"{path} does not exist") from None
        except OSError as exc:
            raise StoreUnavailable(f"{path}: {exc.strerror or exc}") from None
        etag = f'"{hashlib.sha256(body).hexdigest()}"'
        if if_none_match == etag:
            return None
        return StoredObject(name, body, etag, None)

    def _download(self, name: str, dest: Path, max_bytes: int) -> int:
        src = self._path(name)
        size = 0
        try:
            fin = src.open("rb")
        except FileNotFoundError:
            raise ObjectMissing(f"{src} does not exist") from None
        with fin, _open_local(dest) as fout:
            while chunk := fin.read(min(READ_CHUNK, max_bytes + 1 - size)):
                size += len(chunk)
                if size > max_bytes:
                    raise ObjectTooLarge(f"{src}: over the {max_bytes} limit")
                _local(fout.write, dest, chunk)
            _local(fout.flush, dest)
            _local(os.fsync, dest, fout.fileno())
        return size

    def _put(self, name: str, data: bytes) -> str:
        from .atomic import atomic_write

        atomic_write(self._path(name), data)
        return f'"{hashlib.sha256(data).hexdigest()}"'

    async def get(
        self, name: str, *, if_none_match: str | None = None, max_bytes: int, version_id: str | None = None
    ) -> StoredObject | None:
        if version_id:
            raise NotSupported("a file:// store keeps no object versions")
        return await asyncio.to_thread(self._get, name, if_none_match, max_bytes)

    async def download(self, name: str, dest: Path, *, max_bytes: int) -> int:
        return await asyncio.to_thread(self._download, name, dest, max_bytes)

    async def put(
        self, name: str, data: bytes, *, metadata: dict[str, str] | None = None, options: PutOptions | None = None
    ) -> str:
        return await asyncio.to_thread(self._put, name, data)

    async def put_file(self, name: str, path: Path, *, metadata: dict[str, str] | None = None) -> str:
        data = await asyncio.to_thread(path.read_bytes)
        return await self.put(name, data, metadata=metadata)

    async def exists(self, name: str) -> bool:
        return await asyncio.to_thread(self._path(name).is_file)

    async def versions(self, name: str) -> list[ObjectVersion]:
        raise NotSupported("a file:// store keeps no object versions")

    async def copy(self, src_name: str, dest_name: str, *, version_id: str | None = None) -> str:
        if version_id:
            raise NotSupported("a file:// store keeps no object versions")
        data = await asyncio.to_thread(self._path(src_name).read_bytes)
        return await self.put(dest_name, data)

    async def close(self) -> None:
        return None


def _range_total(content_range: str | None) -> int | None:
    """The object's full size from `bytes 0-N/TOTAL` (None when absent or `*`)."""
    if not content_range or "/" not in content_range:
        return None
    total = content_range.rsplit("/", 1)[1].strip()
    return int(total) if total.isdigit() else None


def _open_local(dest: Path) -> Any:
    try:
        return dest.open("wb")
    except OSError as exc:
        raise LocalWriteError(f"{dest}: {exc.strerror or exc}") from None


def _local(op: Any, dest: Path, *args: Any) -> Any:
    try:
        return op(*args)
    except OSError as exc:
        raise LocalWriteError(f"{dest}: {exc.strerror or exc}") from None


def _write_local(dest: Path, chunks: list[bytes]) -> None:
    with _open_local(dest) as fh:
        for chunk in chunks:
            _local(fh.write, dest, chunk)
        _local(fh.flush, dest)
        _local(os.fsync, dest, fh.fileno())


def open_store(uri: str, endpoint_url: str | None = None) -> ObjectStore:
    location = parse_store_uri(uri)
    if location.scheme == "s3":
        return S3Store(location, endpoint_url)
    return FileStore(location)
