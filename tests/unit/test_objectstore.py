"""routeiq_shared.objectstore: FileStore on a temp directory, S3Store against the real moto server.

Both stores answer the same calls the same way: a conditional get by ETag, a size limit checked before the
body is read, a missing object as ObjectMissing, a body that does not match the uploader's sha256 as
ObjectIncomplete (never a short body), streaming downloads, puts, and (S3 only) object versions and copies.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest
from harness.moto_s3 import MotoS3
from routeiq_shared.objectstore import (
    FileStore,
    NotSupported,
    ObjectIncomplete,
    ObjectMissing,
    ObjectStore,
    ObjectTooLarge,
    S3Store,
    StoreUnavailable,
    open_store,
    parse_store_uri,
)

T = TypeVar("T")
BODY = b"model_list: []\n" * 10  # 150 bytes
LIMIT = 1024


def run(make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    return asyncio.run(make())


@pytest.fixture
def aws_env(moto_s3: MotoS3, monkeypatch: pytest.MonkeyPatch) -> MotoS3:
    """Credentials and region for aioboto3 in this process, from the moto fixture (never ~/.aws)."""
    for name, value in moto_s3.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    return moto_s3


def s3_store(moto: MotoS3, bucket: str, prefix: str = "prod/") -> S3Store:
    store = open_store(f"s3://{bucket}/{prefix}", moto.endpoint_url)
    assert isinstance(store, S3Store)
    return store


async def with_store(store: ObjectStore, body: Callable[[ObjectStore], Awaitable[T]]) -> T:
    try:
        return await body(store)
    finally:
        await store.close()


# -- URIs -------------------------------------------------------------------------------------------


def test_parse_store_uri() -> None:
    loc = parse_store_uri("s3://bucket/prod")
    assert (loc.scheme, loc.bucket, loc.prefix, loc.key("config.yaml")) == ("s3", "bucket", "prod/", "prod/config.yaml")
    assert str(loc) == "s3://bucket/prod/"
    assert parse_store_uri("s3://bucket").prefix == ""
    assert parse_store_uri("file:///srv/config/").root == Path("/srv/config/")
    for bad in ("s3:///prod/", "file://host/dir/", "http://bucket/prod/", "bucket/prod"):
        with pytest.raises(ValueError):
            parse_store_uri(bad)


# -- FileStore --------------------------------------------------------------------------------------


def test_file_store_get_etag_and_conditional_get(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_bytes(BODY)
    store = open_store(f"file://{tmp_path}/")
    assert isinstance(store, FileStore)

    async def body(s: ObjectStore) -> None:
        obj = await s.get("config.yaml", max_bytes=LIMIT)
        assert obj is not None
        assert obj.body == BODY and obj.version_id is None
        assert obj.etag == f'"{hashlib.sha256(BODY).hexdigest()}"'
        assert await s.get("config.yaml", if_none_match=obj.etag, max_bytes=LIMIT) is None
        (tmp_path / "config.yaml").write_bytes(BODY + b"# changed\n")
        changed = await s.get("config.yaml", if_none_match=obj.etag, max_bytes=LIMIT)
        assert changed is not None and changed.etag != obj.etag

    run(lambda: with_store(store, body))


def test_file_store_too_large_missing_and_outside(tmp_path: Path) -> None:
    (tmp_path / "big.yaml").write_bytes(b"x" * (LIMIT + 1))
    store = open_store(f"file://{tmp_path}/")

    async def body(s: ObjectStore) -> None:
        with pytest.raises(ObjectTooLarge, match="over the 1024 limit") as too_large:
            await s.get("big.yaml", max_bytes=LIMIT)
        assert too_large.value.reason == "too_large"
        with pytest.raises(ObjectMissing) as missing:
            await s.get("config.yaml", max_bytes=LIMIT)
        assert missing.value.reason == "missing"
        with pytest.raises(ObjectMissing, match="outside the store"):
            await s.get("../escape.yaml", max_bytes=LIMIT)
        assert await s.exists("big.yaml") and not await s.exists("config.yaml")

    run(lambda: with_store(store, body))


def test_file_store_put_download_and_no_versions(tmp_path: Path) -> None:
    root = tmp_path / "store"
    root.mkdir()
    store = open_store(f"file://{root}/")
    src = tmp_path / "upload.bin"
    src.write_bytes(BODY * 3)

    async def body(s: ObjectStore) -> None:
        etag = await s.put("config.yaml", BODY)
        assert etag == f'"{hashlib.sha256(BODY).hexdigest()}"'
        assert (root / "config.yaml").read_bytes() == BODY
        await s.put_file("router/v1/model.pkl", src)
        dest = tmp_path / "downloaded.bin"
        assert await s.download("router/v1/model.pkl", dest, max_bytes=LIMIT) == len(BODY) * 3
        assert dest.read_bytes() == BODY * 3
        with pytest.raises(ObjectTooLarge):
            await s.download("router/v1/model.pkl", tmp_path / "small.bin", max_bytes=100)
        with pytest.raises(ObjectMissing):
            await s.download("nothing.pkl", tmp_path / "nothing.bin", max_bytes=LIMIT)
        await s.copy("config.yaml", "copy.yaml")
        assert (root / "copy.yaml").read_bytes() == BODY
        with pytest.raises(NotSupported):
            await s.versions("config.yaml")
        with pytest.raises(NotSupported):
            await s.copy("config.yaml", "copy.yaml", version_id="v1")

    run(lambda: with_store(store, body))
    assert sorted(p.name for p in root.iterdir()) == ["config.yaml", "copy.yaml", "router"]  # no temp files left


# -- S3Store on moto --------------------------------------------------------------------------------


def test_s3_get_and_conditional_get(aws_env: MotoS3, s3_bucket: str) -> None:
    client = aws_env.client()
    put = client.put_object(Bucket=s3_bucket, Key="prod/config.yaml", Body=BODY)

    async def body(s: ObjectStore) -> None:
        obj = await s.get("config.yaml", max_bytes=LIMIT)
        assert obj is not None
        assert obj.body == BODY and obj.etag == put["ETag"] and obj.name == "config.yaml"
        assert await s.get("config.yaml", if_none_match=obj.etag, max_bytes=LIMIT) is None
        client.put_object(Bucket=s3_bucket, Key="prod/config.yaml", Body=BODY + b"# v2\n")
        changed = await s.get("config.yaml", if_none_match=obj.etag, max_bytes=LIMIT)
        assert changed is not None and changed.body == BODY + b"# v2\n" and changed.etag != obj.etag
        assert await s.exists("config.yaml") and not await s.exists("llm_candidates.json")

    run(lambda: with_store(s3_store(aws_env, s3_bucket), body))


def test_s3_too_large_missing_and_no_bucket(aws_env: MotoS3, s3_bucket: str) -> None:
    aws_env.client().put_object(Bucket=s3_bucket, Key="prod/config.yaml", Body=b"x" * (LIMIT + 1))

    async def body(s: ObjectStore) -> None:
        with pytest.raises(ObjectTooLarge, match=re.escape("prod/config.yaml: 1025 bytes, over the 1024 limit")):
            await s.get("config.yaml", max_bytes=LIMIT)
        with pytest.raises(ObjectMissing, match=re.escape("prod/llm_candidates.json does not exist")):
            await s.get("llm_candidates.json", max_bytes=LIMIT)

    run(lambda: with_store(s3_store(aws_env, s3_bucket), body))

    async def no_bucket(s: ObjectStore) -> None:
        with pytest.raises(ObjectMissing, match="does not exist"):
            await s.get("config.yaml", max_bytes=LIMIT)

    run(lambda: with_store(s3_store(aws_env, f"{s3_bucket}-absent"), no_bucket))


def test_s3_sha256_metadata_is_checked(aws_env: MotoS3, s3_bucket: str) -> None:
    client = aws_env.client()
    full = BODY + b"# the rest of the file\n"
    half = full[: len(full) // 2]
    # A half-uploaded object: the uploader declared the digest of the whole file, the store holds half of it.
    client.put_object(Bucket=s3_bucket, Key="prod/config.yaml", Body=half, Metadata={"sha256": _sha(full)})
    client.put_object(Bucket=s3_bucket, Key="prod/good.yaml", Body=full, Metadata={"sha256": _sha(full)})
    client.put_object(Bucket=s3_bucket, Key="prod/upper.yaml", Body=full, Metadata={"sha256": _sha(full).upper()})

    async def body(s: ObjectStore) -> None:
        with pytest.raises(ObjectIncomplete, match="sha256 differs") as caught:
            await s.get("config.yaml", max_bytes=LIMIT)
        assert caught.value.reason == "incomplete"
        good = await s.get("good.yaml", max_bytes=LIMIT)
        assert good is not None and good.body == full
        upper = await s.get("upper.yaml", max_bytes=LIMIT)
        assert upper is not None and upper.body == full

    run(lambda: with_store(s3_store(aws_env, s3_bucket), body))


def test_s3_put_put_file_and_download(aws_env: MotoS3, s3_bucket: str, tmp_path: Path) -> None:
    client = aws_env.client()
    src = tmp_path / "model.pkl"
    src.write_bytes(bytes(range(256)) * 40)  # 10 KiB

    async def body(s: ObjectStore) -> None:
        etag = await s.put("config.yaml", BODY, metadata={"sha256": _sha(BODY)})
        head = client.head_object(Bucket=s3_bucket, Key="prod/config.yaml")
        assert head["ETag"] == etag and head["Metadata"] == {"sha256": _sha(BODY)}
        file_etag = await s.put_file("router/v1/model.pkl", src, metadata={"sha256": _sha(src.read_bytes())})
        assert client.head_object(Bucket=s3_bucket, Key="prod/router/v1/model.pkl")["ETag"] == file_etag
        dest = tmp_path / "downloaded.pkl"
        assert await s.download("router/v1/model.pkl", dest, max_bytes=1 << 20) == src.stat().st_size
        assert dest.read_bytes() == src.read_bytes()
        with pytest.raises(ObjectTooLarge):
            await s.download("router/v1/model.pkl", tmp_path / "small.pkl", max_bytes=1000)
        with pytest.raises(ObjectMissing):
            await s.download("router/v2/model.pkl", tmp_path / "missing.pkl", max_bytes=1 << 20)

    run(lambda: with_store(s3_store(aws_env, s3_bucket), body))
    got = client.get_object(Bucket=s3_bucket, Key="prod/config.yaml")["Body"].read()
    assert got == BODY


def test_s3_versions_and_copy_on_a_versioned_bucket(aws_env: MotoS3, s3_bucket: str) -> None:
    client = aws_env.client()
    client.put_bucket_versioning(Bucket=s3_bucket, VersioningConfiguration={"Status": "Enabled"})
    bodies = [b"v1\n", b"v2\n", b"v3\n"]
    ids = [client.put_object(Bucket=s3_bucket, Key="prod/config.yaml", Body=b)["VersionId"] for b in bodies]
    # A key that merely starts with the same name is not a version of config.yaml.
    client.put_object(Bucket=s3_bucket, Key="prod/config.yaml.bak", Body=b"other")

    async def body(s: ObjectStore) -> dict[str, Any]:
        versions = await s.versions("config.yaml")
        assert [v.version_id for v in versions] == ids[::-1]  # newest first
        assert [v.is_latest for v in versions] == [True, False, False]
        assert [v.size for v in versions] == [3, 3, 3]
        latest = await s.get("config.yaml", max_bytes=LIMIT)
        assert latest is not None and latest.body == b"v3\n" and latest.version_id == ids[2]
        # Restore v1 as the latest version: a copy of an old version onto the same key.
        await s.copy("config.yaml", "config.yaml", version_id=ids[0])
        restored = await s.get("config.yaml", max_bytes=LIMIT)
        assert restored is not None and restored.body == b"v1\n" and restored.version_id not in ids
        await s.copy("config.yaml", "promoted.yaml")
        with pytest.raises(ObjectMissing):
            await s.copy("config.yaml", "x.yaml", version_id=ids[0][:-4] + "0000")
        return {"count": len(await s.versions("config.yaml"))}

    result = run(lambda: with_store(s3_store(aws_env, s3_bucket), body))
    assert result["count"] == 4
    assert client.get_object(Bucket=s3_bucket, Key="prod/promoted.yaml")["Body"].read() == b"v1\n"


def test_s3_unreachable_store_is_store_unavailable(aws_env: MotoS3) -> None:
    from harness.processes import free_port

    store = open_store("s3://bucket/prod/", f"http://127.0.0.1:{free_port()}")

    async def body(s: ObjectStore) -> None:
        with pytest.raises(StoreUnavailable) as caught:
            await s.get("config.yaml", max_bytes=LIMIT)
        assert caught.value.reason == "store_unavailable"
        assert "prod/config.yaml" in str(caught.value)

    run(lambda: with_store(store, body))


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
