"""`FakeIssuer`: starts oidc_issuer.py as a real process, holds its signing keys (generated with `cryptography`)
and signs tokens with them; `rotate()` publishes a new key, `stop()`/`restart()` take the issuer down and up at the
same address."""

from __future__ import annotations

import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import jwt
import orjson
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from .processes import ManagedProcess, child_env, free_port

ISSUER_SCRIPT = Path(__file__).with_name("oidc_issuer.py")
AUDIENCE = "routeiq-admin"


class FakeIssuer:
    def __init__(self, directory: Path, host: str = "127.0.0.1") -> None:
        self.dir = directory
        self.host = host
        self.port = free_port(host)
        self.url = f"http://{host}:{self.port}"
        self.jwks_path = directory / "jwks.json"
        self.private: dict[str, tuple[str, Any]] = {}  # kid -> (alg, private key)
        self.published: list[dict[str, Any]] = []
        self._jwks: dict[str, dict[str, Any]] = {}
        self.process: ManagedProcess | None = None

    def start(self) -> FakeIssuer:
        self.dir.mkdir(parents=True, exist_ok=True)
        if not self.private:
            self.add_key("RS256")
            self.add_key("ES256")
        argv = [sys.executable, str(ISSUER_SCRIPT), "--host", self.host, "--port", str(self.port)]
        self.process = ManagedProcess(
            [*argv, "--jwks", str(self.jwks_path)], self.dir / "issuer.log", env=child_env(), name="oidc_issuer"
        )
        self.process.start_http_ok(f"{self.url}/_stats")
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    def add_key(self, alg: str, *, publish: bool = True) -> str:
        """Generate a key pair and (unless told not to) publish its public half in the JWKS; returns its kid."""
        kid = f"{alg.lower()}-{uuid.uuid4().hex[:8]}"
        private: Any = (
            ec.generate_private_key(ec.SECP256R1())
            if alg.startswith("ES")
            else rsa.generate_private_key(public_exponent=65537, key_size=2048)
        )
        algo = jwt.get_algorithm_by_name(alg)
        public_jwk = orjson.loads(algo.to_jwk(private.public_key()))
        self.private[kid] = (alg, private)
        self._jwks[kid] = {**public_jwk, "kid": kid, "alg": alg, "use": "sig"}
        if publish:
            self.publish(kid)
        return kid

    def publish(self, kid: str) -> None:
        self.published.append(self._jwks[kid])
        self.jwks_path.write_bytes(orjson.dumps({"keys": self.published}))

    def public_jwk(self, kid: str) -> dict[str, Any]:
        return self._jwks[kid]

    def claims(self, groups: list[str] | None = None, **overrides: Any) -> dict[str, Any]:
        now = int(time.time())
        base: dict[str, Any] = {"iss": self.url, "aud": AUDIENCE, "sub": "alice", "iat": now, "exp": now + 300}
        if groups is not None:
            base["groups"] = groups
        base.update(overrides)
        return {k: v for k, v in base.items() if v is not None}

    def token(self, claims: dict[str, Any], kid: str | None = None) -> str:
        kid = kid or next(iter(self.private))
        alg, private = self.private[kid]
        return jwt.encode(claims, private, algorithm=alg, headers={"kid": kid})

    def jwks_fetches(self) -> int:
        return int(httpx.get(f"{self.url}/_stats", trust_env=False).json()["jwks"])
