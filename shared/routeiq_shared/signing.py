"""Ed25519 signatures over the canonical manifest, and the size/sha256 check of an artifact against its manifest.

The publisher holds the private key; pods hold only the public key. Every failure carries a `reason` code
(for metrics, health and logs) on a `VerificationError`:

- `SignatureError`: "unsigned", "unsupported_algorithm", "unknown_key" (the signature's key_id is not the
  id of the key we verify with: signed by another key), "bad_signature" (same key_id, but the bytes do not
  verify: the manifest was changed after signing, or the value is corrupt).
- `ArtifactMismatch`: "size_mismatch" (checked first: a truncated download costs a stat, not a hash),
  "sha256_mismatch".

Nothing here unpickles or imports the artifact: it is only ever read as bytes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from pathlib import Path
from typing import Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .manifest import CurrentPointer, Manifest, Signature, canonical_bytes, sha256_file

ALGORITHM = "ed25519"
PRIVATE_KEY_FILE = "signing.key"
PUBLIC_KEY_FILE = "signing.pub"
_PEM_MARKER = b"-----BEGIN"

SignatureReason = Literal["unsigned", "bad_signature", "unknown_key", "unsupported_algorithm"]
ArtifactReason = Literal["size_mismatch", "sha256_mismatch"]


class VerificationError(Exception):
    """A manifest or artifact that must not be put into place. `reason` is a short stable code."""

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        self.message = message
        super().__init__(f"{reason}: {message}")


class SignatureError(VerificationError):
    reason: SignatureReason

    def __init__(self, reason: SignatureReason, message: str) -> None:
        super().__init__(reason, message)


class ArtifactMismatch(VerificationError):
    reason: ArtifactReason

    def __init__(self, reason: ArtifactReason, message: str, expected: str | int, actual: str | int) -> None:
        self.expected = expected
        self.actual = actual
        super().__init__(reason, message)


class KeyFileError(ValueError):
    """A key file or PEM that is not an unencrypted Ed25519 key of the expected kind."""


# -- keys ------------------------------------------------------------------------------------------------------


def generate_keypair() -> tuple[bytes, bytes]:
    """(private PEM in PKCS8, unencrypted; public PEM in SubjectPublicKeyInfo)."""
    private_key = Ed25519PrivateKey.generate()
    private_pem = private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return private_pem, _public_pem(private_key.public_key())


def _public_pem(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def write_keypair(directory: Path | str) -> tuple[Path, Path]:
    """Generate a pair and write `signing.key` (mode 0600) and `signing.pub` (0644) into `directory`.

    Refuses (FileExistsError) if either file exists, and never leaves half a pair behind. Returns the two paths.
    """
    directory = Path(directory)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    private_path, public_path = directory / PRIVATE_KEY_FILE, directory / PUBLIC_KEY_FILE
    for path in (private_path, public_path):
        if path.exists():
            raise FileExistsError(f"{path} already exists; refusing to overwrite a signing key")
    private_pem, public_pem = generate_keypair()
    _write_new_file(private_path, private_pem, 0o600)
    try:
        _write_new_file(public_path, public_pem, 0o644)
    except BaseException:
        private_path.unlink(missing_ok=True)
        raise
    _fsync_dir(directory)
    return private_path, public_path


def _write_new_file(path: Path, data: bytes, mode: int) -> None:
    # O_EXCL: never replace an existing file, even one created since the check above. The private key is
    # born with 0600 (umask can only narrow it), so it is never readable by others, not even for an instant;
    # fchmod pins the exact mode against a restrictive umask before any byte is written.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), mode)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb", closefd=False) as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        os.close(fd)
        path.unlink(missing_ok=True)
        raise
    os.close(fd)


def _fsync_dir(directory: Path) -> None:
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def load_private_key(path: Path | str) -> Ed25519PrivateKey:
    pem = Path(path).read_bytes()
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:  # TypeError: the file is password-protected
        raise KeyFileError(f"{path}: not an unencrypted PEM private key ({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{path}: not an Ed25519 private key ({type(key).__name__})")
    return key


def load_public_key(path_or_pem: Path | str | bytes) -> Ed25519PublicKey:
    """From PEM text (bytes, or a str starting with "-----BEGIN", as MODEL_SIGNING_PUBLIC_KEY may hold it)
    or from a path to a PEM file."""
    pem, where = _pem_and_origin(path_or_pem)
    try:
        key = serialization.load_pem_public_key(pem)
    except ValueError as exc:
        raise KeyFileError(f"{where}: not a PEM public key ({exc})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFileError(f"{where}: not an Ed25519 public key ({type(key).__name__})")
    return key


def _pem_and_origin(path_or_pem: Path | str | bytes) -> tuple[bytes, str]:
    if isinstance(path_or_pem, bytes):
        return path_or_pem, "PEM"
    if isinstance(path_or_pem, str) and path_or_pem.lstrip().startswith(_PEM_MARKER.decode()):
        return path_or_pem.encode(), "PEM"
    return Path(path_or_pem).read_bytes(), str(path_or_pem)


def key_id(public_key: Ed25519PublicKey) -> str:
    """First 16 hex digits of sha256 over the 32 raw public key bytes: names the key, reveals nothing."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


# -- manifests -------------------------------------------------------------------------------------------------


def _sign(canonical: bytes, private_key: Ed25519PrivateKey) -> Signature:
    return Signature(
        algorithm=ALGORITHM,
        key_id=key_id(private_key.public_key()),
        value=base64.b64encode(private_key.sign(canonical)).decode("ascii"),
    )


def _verify(signature: Signature | None, canonical: bytes, public_key: Ed25519PublicKey, what: str) -> None:
    if signature is None:
        raise SignatureError("unsigned", f"{what} has no signature")
    if signature.algorithm != ALGORITHM:
        raise SignatureError("unsupported_algorithm", f"algorithm {signature.algorithm!r}, expected {ALGORITHM!r}")
    expected_id = key_id(public_key)
    if not hmac.compare_digest(signature.key_id, expected_id):
        raise SignatureError("unknown_key", f"signed by key {signature.key_id!r}, we trust {expected_id!r}")
    try:
        value = base64.b64decode(signature.value, validate=True)
    except (binascii.Error, ValueError):
        raise SignatureError("bad_signature", "signature value is not valid base64") from None
    try:
        public_key.verify(value, canonical)
    except InvalidSignature:
        raise SignatureError("bad_signature", f"signature does not match {what}") from None


def sign_manifest(manifest: Manifest, private_key: Ed25519PrivateKey) -> Manifest:
    """A copy of `manifest` carrying an Ed25519 signature over `canonical_bytes(manifest)` (any old
    signature is ignored and replaced)."""
    return manifest.with_signature(_sign(canonical_bytes(manifest), private_key))


def verify_manifest(manifest: Manifest, public_key: Ed25519PublicKey) -> None:
    """Return if `manifest` is signed by `public_key`; raise `SignatureError` with the reason otherwise."""
    _verify(manifest.signature, canonical_bytes(manifest), public_key, f"{manifest.name}/{manifest.version}")


def sign_pointer(pointer: CurrentPointer, private_key: Ed25519PrivateKey) -> CurrentPointer:
    """A copy of a CURRENT pointer signed like a manifest (same key, same canonical form)."""
    return pointer.with_signature(_sign(canonical_bytes(pointer), private_key))


def verify_pointer(pointer: CurrentPointer, public_key: Ed25519PublicKey) -> None:
    """Return if the CURRENT pointer is signed by `public_key`; raise `SignatureError` otherwise."""
    what = f"{pointer.name}/CURRENT (sequence {pointer.sequence}, {pointer.version})"
    _verify(pointer.signature, canonical_bytes(pointer), public_key, what)


# -- artifacts -------------------------------------------------------------------------------------------------


def verify_artifact(manifest: Manifest, path: Path | str) -> None:
    """Check the file at `path` against the manifest's size, then sha256; raise `ArtifactMismatch` if off."""
    expected_size, expected_sha = manifest.artifact.size, manifest.artifact.sha256
    actual_size = os.stat(path).st_size
    if actual_size != expected_size:
        raise ArtifactMismatch(
            "size_mismatch", f"{path}: {actual_size} bytes, manifest says {expected_size}", expected_size, actual_size
        )
    actual_sha, hashed_size = sha256_file(path)
    if hashed_size != expected_size:  # the file changed between stat and read
        raise ArtifactMismatch(
            "size_mismatch",
            f"{path}: read {hashed_size} bytes, manifest says {expected_size}",
            expected_size,
            hashed_size,
        )
    if not hmac.compare_digest(actual_sha, expected_sha):
        raise ArtifactMismatch(
            "sha256_mismatch", f"{path}: sha256 {actual_sha}, manifest says {expected_sha}", expected_sha, actual_sha
        )
