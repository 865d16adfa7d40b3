"""Artifact manifests and their Ed25519 signatures: strict parsing, the canonical signed bytes, every way a
signature or an artifact must fail, and the key files' modes."""

from __future__ import annotations

import hashlib
import io
import os
import stat
from pathlib import Path
from typing import Any

import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from routeiq_shared import signing
from routeiq_shared.manifest import (
    Manifest,
    ManifestError,
    canonical_bytes,
    sha256_file,
    sha256_fileobj,
    utc_now_rfc3339,
)
from routeiq_shared.signing import (
    ArtifactMismatch,
    KeyFileError,
    SignatureError,
    key_id,
    load_private_key,
    load_public_key,
    sign_manifest,
    verify_artifact,
    verify_manifest,
    write_keypair,
)

ARTIFACT = b"not really a pickle, only bytes\n" * 1000


def manifest_dict(artifact: bytes = ARTIFACT) -> dict[str, Any]:
    return {
        "name": "auto-router",
        "version": "2024-06-01.1",
        "created_at": "2024-06-01T12:00:00Z",
        "artifact": {"sha256": hashlib.sha256(artifact).hexdigest(), "size": len(artifact), "format": "joblib"},
        "library_versions": {"python": "3.11.9", "scikit-learn": "1.5.0", "joblib": "1.4.2", "numpy": "1.26.4"},
        "training_data": {"digest": "sha256:" + "ab" * 32, "rows": 50_000},
        "metrics": {"accuracy": 0.91, "macro_f1": 0.875},
    }


def make_manifest(**changes: Any) -> Manifest:
    return Manifest.from_json(orjson.dumps(manifest_dict() | changes))


@pytest.fixture(scope="module")
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture(scope="module")
def signed(key: Ed25519PrivateKey) -> Manifest:
    return sign_manifest(make_manifest(), key)


# -- parsing ---------------------------------------------------------------------------------------------------


def test_good_manifest_parses_and_round_trips_through_to_json() -> None:
    manifest = make_manifest()
    assert manifest.name == "auto-router"
    assert manifest.artifact.size == len(ARTIFACT)
    assert manifest.metrics["accuracy"] == 0.91
    assert manifest.signature is None
    assert "signature" not in orjson.loads(manifest.to_json())  # absent stays absent
    assert Manifest.from_json(manifest.to_json()) == manifest


def test_manifest_is_immutable() -> None:
    manifest = make_manifest()
    with pytest.raises(ValueError):
        manifest.name = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        manifest.metrics["accuracy"] = 1.0  # type: ignore[index]
    with pytest.raises(TypeError):
        manifest.library_versions["numpy"] = "2.0"  # type: ignore[index]


@pytest.mark.parametrize(
    ("mutate", "path", "message"),
    [
        (lambda d: d.update(extra=1), "extra", "unknown key"),
        (lambda d: d["artifact"].update(compression="gz"), "artifact.compression", "unknown key"),
        (lambda d: d["signature"].update(comment="x"), "signature.comment", "unknown key"),
        (lambda d: d.pop("version"), "version", "Field required"),
        (lambda d: d["artifact"].pop("sha256"), "artifact.sha256", "Field required"),
        (lambda d: d["training_data"].pop("rows"), "training_data.rows", "Field required"),
        (lambda d: d.update(name="../etc"), "name", "should match pattern"),
        (lambda d: d.update(name="a/b"), "name", "should match pattern"),
        (lambda d: d.update(name="Upper"), "name", "should match pattern"),
        (lambda d: d.update(name=".hidden"), "name", "should match pattern"),
        (lambda d: d.update(name="x" * 65), "name", "should match pattern"),
        (lambda d: d.update(version=".."), "version", "should match pattern"),
        (lambda d: d.update(version="v1/../../x"), "version", "should match pattern"),
        (lambda d: d.update(version=""), "version", "should match pattern"),
        (lambda d: d["artifact"].update(sha256="AB" * 32), "artifact.sha256", "should match pattern"),
        (lambda d: d["artifact"].update(size="12"), "artifact.size", "valid integer"),
        (lambda d: d["artifact"].update(size=-1), "artifact.size", "greater than or equal to 0"),
        (lambda d: d["training_data"].update(rows=True), "training_data.rows", "valid integer"),
        (lambda d: d["metrics"].update(accuracy="0.9"), "metrics.accuracy", "valid number"),
        (lambda d: d.update(created_at="2024-06-01 12:00:00"), "created_at", "RFC 3339"),
        (lambda d: d.update(created_at="2024-06-01T12:00:00+02:00"), "created_at", "RFC 3339"),
        (lambda d: d.update(created_at="2024-02-30T12:00:00Z"), "created_at", "not a real date"),
    ],
)
def test_from_json_rejects_bad_manifests_naming_the_key(mutate: Any, path: str, message: str) -> None:
    data = manifest_dict() | {"signature": {"algorithm": "ed25519", "key_id": "0" * 16, "value": "AAAA"}}
    mutate(data)
    with pytest.raises(ManifestError) as info:
        Manifest.from_json(orjson.dumps(data))
    assert info.value.path == path
    assert message in info.value.message
    assert str(info.value).startswith(f"manifest.json: {path}: ")


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"", "not valid JSON"),
        (b"{not json", "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        (b"[1, 2]", "top level must be a JSON object"),
    ],
)
def test_from_json_rejects_non_manifests(raw: bytes, message: str) -> None:
    with pytest.raises(ManifestError) as info:
        Manifest.from_json(raw)
    assert message in str(info.value)


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity", b"1e999"])
def test_non_finite_metrics_are_rejected(literal: bytes) -> None:
    # Python's and pydantic's JSON readers accept these; they are not JSON and would not survive a round trip.
    raw = orjson.dumps(manifest_dict()).replace(b'"accuracy":0.91', b'"accuracy":' + literal)
    assert literal in raw
    with pytest.raises(ManifestError) as info:
        Manifest.from_json(raw)
    assert info.value.path == "metrics.accuracy"


def test_utc_now_is_accepted_as_created_at() -> None:
    assert make_manifest(created_at=utc_now_rfc3339()).created_at.endswith("Z")


# -- canonical bytes -------------------------------------------------------------------------------------------


def test_canonical_bytes_are_sorted_compact_and_exclude_the_signature(signed: Manifest) -> None:
    raw = canonical_bytes(signed)
    assert raw == canonical_bytes(signed.with_signature(None))
    assert b"signature" not in raw
    assert b" " not in raw and b"\n" not in raw
    assert raw.startswith(b'{"artifact":{"format":"joblib","sha256":"')
    assert b'"library_versions":{"joblib":"1.4.2","numpy":"1.26.4","python":"3.11.9","scikit-learn":"1.5.0"}' in raw
    assert b'"training_data":{"digest":"sha256:' in raw and raw.endswith(b'"rows":50000},"version":"2024-06-01.1"}')


def test_canonical_bytes_do_not_depend_on_input_key_order_or_whitespace() -> None:
    data = manifest_dict()
    reordered = {k: (dict(reversed(v.items())) if isinstance(v, dict) else v) for k, v in reversed(data.items())}
    assert list(reordered) != list(data)
    pretty = orjson.dumps(reordered, option=orjson.OPT_INDENT_2)
    assert canonical_bytes(Manifest.from_json(pretty)) == canonical_bytes(Manifest.from_json(orjson.dumps(data)))


def test_canonical_metrics_are_floats_even_when_written_as_integers() -> None:
    as_int = make_manifest(metrics={"accuracy": 1})
    as_float = make_manifest(metrics={"accuracy": 1.0})
    assert canonical_bytes(as_int) == canonical_bytes(as_float)
    assert b'"metrics":{"accuracy":1.0}' in canonical_bytes(as_int)


# -- signatures ------------------------------------------------------------------------------------------------


def test_sign_then_verify_round_trips_through_json(key: Ed25519PrivateKey, signed: Manifest) -> None:
    assert signed.signature is not None
    assert signed.signature.algorithm == "ed25519"
    assert signed.signature.key_id == key_id(key.public_key())
    reread = Manifest.from_json(signed.to_json())
    verify_manifest(reread, key.public_key())
    pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    verify_manifest(reread, load_public_key(pem))


@pytest.mark.parametrize(
    "tamper",
    [
        lambda d: d.update(name="other-router"),
        lambda d: d.update(version="2024-06-01.2"),
        lambda d: d.update(created_at="2024-06-01T12:00:01Z"),
        lambda d: d["artifact"].update(sha256=hashlib.sha256(b"evil").hexdigest()),
        lambda d: d["artifact"].update(size=d["artifact"]["size"] + 1),
        lambda d: d["artifact"].update(format="pickle"),
        lambda d: d["library_versions"].update(numpy="2.0.0"),
        lambda d: d["library_versions"].pop("joblib"),
        lambda d: d["training_data"].update(rows=49_999),
        lambda d: d["training_data"].update(digest="sha256:" + "cd" * 32),
        lambda d: d["metrics"].update(accuracy=0.99),
        lambda d: d["metrics"].update(recall=0.5),
    ],
    ids=[
        "name",
        "version",
        "created_at",
        "sha256",
        "size",
        "format",
        "library_version",
        "library_removed",
        "rows",
        "data_digest",
        "metric_value",
        "metric_added",
    ],
)
def test_tampering_with_any_field_breaks_the_signature(key: Ed25519PrivateKey, signed: Manifest, tamper: Any) -> None:
    data = orjson.loads(signed.to_json())
    tamper(data)
    tampered = Manifest.from_json(orjson.dumps(data))
    assert canonical_bytes(tampered) != canonical_bytes(signed)
    with pytest.raises(SignatureError) as info:
        verify_manifest(tampered, key.public_key())
    assert info.value.reason == "bad_signature"


def test_unsigned_manifest_is_refused(key: Ed25519PrivateKey) -> None:
    with pytest.raises(SignatureError) as info:
        verify_manifest(make_manifest(), key.public_key())
    assert info.value.reason == "unsigned"


def test_signature_by_another_key_is_unknown_key(key: Ed25519PrivateKey, signed: Manifest) -> None:
    # Decision: a key_id that is not our key's id means "signed by a key we don't trust" -> unknown_key.
    other = Ed25519PrivateKey.generate()
    with pytest.raises(SignatureError) as info:
        verify_manifest(signed, other.public_key())
    assert info.value.reason == "unknown_key"
    resigned = sign_manifest(signed, other)  # re-signing replaces the old signature
    verify_manifest(resigned, other.public_key())
    with pytest.raises(SignatureError) as info:
        verify_manifest(resigned, key.public_key())
    assert info.value.reason == "unknown_key"


def test_other_keys_signature_claiming_our_key_id_is_bad_signature(key: Ed25519PrivateKey) -> None:
    # Decision: same key_id but bytes that don't verify -> bad_signature (forged or corrupted, not a foreign key).
    forged = sign_manifest(make_manifest(), Ed25519PrivateKey.generate())
    assert forged.signature is not None
    claims_ours = forged.signature.model_copy(update={"key_id": key_id(key.public_key())})
    with pytest.raises(SignatureError) as info:
        verify_manifest(forged.with_signature(claims_ours), key.public_key())
    assert info.value.reason == "bad_signature"


@pytest.mark.parametrize("value", ["not base64!", "QUJD", ""])
def test_corrupt_signature_value_is_bad_signature(key: Ed25519PrivateKey, signed: Manifest, value: str) -> None:
    data = orjson.loads(signed.to_json())
    data["signature"]["value"] = value
    if not value:
        with pytest.raises(ManifestError, match=r"signature\.value"):
            Manifest.from_json(orjson.dumps(data))
        return
    with pytest.raises(SignatureError) as info:
        verify_manifest(Manifest.from_json(orjson.dumps(data)), key.public_key())
    assert info.value.reason == "bad_signature"


def test_unsupported_algorithm(key: Ed25519PrivateKey, signed: Manifest) -> None:
    data = orjson.loads(signed.to_json())
    data["signature"]["algorithm"] = "rsa-pss-sha256"
    with pytest.raises(SignatureError) as info:
        verify_manifest(Manifest.from_json(orjson.dumps(data)), key.public_key())
    assert info.value.reason == "unsupported_algorithm"


# -- artifacts -------------------------------------------------------------------------------------------------


def test_sha256_file_streams_a_multi_mib_file(tmp_path: Path) -> None:
    blob = os.urandom(3 * 1024 * 1024 + 12345)  # several chunks plus a partial one
    path = tmp_path / "model.pkl"
    path.write_bytes(blob)
    assert sha256_file(path) == (hashlib.sha256(blob).hexdigest(), len(blob))
    assert sha256_file(path, chunk=4096) == (hashlib.sha256(blob).hexdigest(), len(blob))
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    assert sha256_file(empty) == (hashlib.sha256(b"").hexdigest(), 0)


def test_sha256_fileobj_hashes_the_file_it_holds_open_whatever_is_renamed_over_its_path(tmp_path: Path) -> None:
    path = tmp_path / "router.pkl"
    path.write_bytes(b"the verified bytes")
    with path.open("rb") as fh:
        other = tmp_path / ".new"
        other.write_bytes(b"bytes swapped in afterwards")
        os.replace(other, path)
        assert sha256_fileobj(fh) == (hashlib.sha256(b"the verified bytes").hexdigest(), 18)
    # Not a real file (no descriptor): the read loop, from the start.
    stream = io.BytesIO(b"x" * 5000)
    stream.read(10)
    assert sha256_fileobj(stream, chunk=1024) == (hashlib.sha256(b"x" * 5000).hexdigest(), 5000)


def test_verify_artifact_accepts_the_exact_bytes(tmp_path: Path) -> None:
    path = tmp_path / "model.pkl"
    path.write_bytes(ARTIFACT)
    verify_artifact(make_manifest(), path)


def test_truncated_artifact_is_size_mismatch(tmp_path: Path) -> None:
    path = tmp_path / "model.pkl"
    path.write_bytes(ARTIFACT[:-1])
    with pytest.raises(ArtifactMismatch) as info:
        verify_artifact(make_manifest(), path)
    assert info.value.reason == "size_mismatch"
    assert (info.value.expected, info.value.actual) == (len(ARTIFACT), len(ARTIFACT) - 1)


def test_size_is_checked_before_hashing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A truncated 500 MB download must cost a stat, not a full read.
    def must_not_hash(*args: object, **kwargs: object) -> tuple[str, int]:
        raise AssertionError("hashed a file whose size was already wrong")

    monkeypatch.setattr(signing, "sha256_file", must_not_hash)
    path = tmp_path / "model.pkl"
    path.write_bytes(ARTIFACT + b"extra")
    with pytest.raises(ArtifactMismatch) as info:
        verify_artifact(make_manifest(), path)
    assert info.value.reason == "size_mismatch"


def test_same_size_different_bytes_is_sha256_mismatch(tmp_path: Path) -> None:
    path = tmp_path / "model.pkl"
    path.write_bytes(ARTIFACT[:-1] + b"X")
    with pytest.raises(ArtifactMismatch) as info:
        verify_artifact(make_manifest(), path)
    assert info.value.reason == "sha256_mismatch"
    assert info.value.expected == hashlib.sha256(ARTIFACT).hexdigest()


def test_manifest_with_wrong_sha256_is_sha256_mismatch(tmp_path: Path) -> None:
    path = tmp_path / "model.pkl"
    path.write_bytes(ARTIFACT)
    wrong = manifest_dict()
    wrong["artifact"]["sha256"] = hashlib.sha256(b"something else").hexdigest()
    with pytest.raises(ArtifactMismatch) as info:
        verify_artifact(Manifest.from_json(orjson.dumps(wrong)), path)
    assert info.value.reason == "sha256_mismatch"


# -- key files -------------------------------------------------------------------------------------------------


def test_write_keypair_modes_and_load(tmp_path: Path) -> None:
    old_umask = os.umask(0o022)
    try:
        private_path, public_path = write_keypair(tmp_path / "keys")
    finally:
        os.umask(old_umask)
    assert (private_path.name, public_path.name) == ("signing.key", "signing.pub")
    assert stat.S_IMODE(private_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(public_path.stat().st_mode) == 0o644
    private = load_private_key(private_path)
    public = load_public_key(public_path)
    assert key_id(private.public_key()) == key_id(public)
    assert key_id(load_public_key(public_path.read_bytes())) == key_id(public)
    assert key_id(load_public_key(public_path.read_text())) == key_id(public)  # PEM text, as an env var holds it
    verify_manifest(sign_manifest(make_manifest(), private), public)


def test_write_keypair_modes_under_a_permissive_umask(tmp_path: Path) -> None:
    old_umask = os.umask(0)
    try:
        private_path, public_path = write_keypair(tmp_path)
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(private_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(public_path.stat().st_mode) == 0o644


@pytest.mark.parametrize("existing", ["signing.key", "signing.pub"])
def test_write_keypair_refuses_to_overwrite(tmp_path: Path, existing: str) -> None:
    (tmp_path / existing).write_bytes(b"keep me")
    with pytest.raises(FileExistsError):
        write_keypair(tmp_path)
    assert (tmp_path / existing).read_bytes() == b"keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == [existing]  # no half pair left behind


def test_load_rejects_non_keys_and_swapped_files(tmp_path: Path) -> None:
    private_path, public_path = write_keypair(tmp_path)
    with pytest.raises(KeyFileError):
        load_private_key(public_path)
    with pytest.raises(KeyFileError):
        load_public_key(private_path)
    with pytest.raises(KeyFileError):
        load_public_key(b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
