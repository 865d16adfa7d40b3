"""A deployment's `ssl_verify: /path/ca.pem` is read at load, so a missing or broken bundle is refused with its key
path (the previous config serving on) instead of failing every request later."""

from __future__ import annotations

import ssl

from routeiq_shared.config_schema import ConfigError

from routeiq_gateway.providers.http1 import tls_context


def check_ca_bundle(verify: bool | str | None, path: str) -> None:
    if not isinstance(verify, str):
        return
    try:
        tls_context(verify)
    except FileNotFoundError:
        raise ConfigError(path, f"CA bundle {verify} does not exist") from None
    except ssl.SSLError as exc:
        raise ConfigError(path, f"{verify} is not a CA bundle (PEM certificates): {exc.reason or exc}") from None
    except OSError as exc:
        raise ConfigError(path, f"cannot read the CA bundle {verify}: {exc.strerror or exc}") from None
