"""Teams and virtual keys as the hot path sees them: frozen, built from database rows, swapped whole.

The limits and budget are carried here so a rate limiter or budget check reads them from the key's record
without a database call (`VirtualKey.limits`, `VirtualKey.team.limits`)."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

KEY_PREFIX = "sk-riq-"


def new_secret() -> str:
    """A fresh virtual key: shown once to whoever created it, stored only as its sha256."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def key_hash(secret: bytes) -> bytes:
    return hashlib.sha256(secret).digest()


@dataclass(frozen=True, slots=True)
class Limits:
    rpm: int | None = None
    tpm: int | None = None
    max_parallel: int | None = None
    budget: float | None = None  # in the price unit of llm_candidates.json (USD)
    budget_period: str | None = None  # e.g. "30d", "1h"; None: the budget never resets
    budget_reset_at: float | None = None  # epoch seconds

    @classmethod
    def of_row(cls, row: dict[str, Any]) -> Limits:
        return cls(
            rpm=row["rpm"],
            tpm=row["tpm"],
            max_parallel=row["max_parallel"],
            budget=row["budget"],
            budget_period=row["budget_period"],
            budget_reset_at=_epoch(row["budget_reset_at"]),
        )


@dataclass(frozen=True, slots=True)
class Team:
    id: str
    alias: str | None
    models: frozenset[str]  # empty: every model
    limits: Limits
    spend: float

    @classmethod
    def of_row(cls, row: dict[str, Any]) -> Team:
        return cls(row["id"], row["alias"], frozenset(row["models"]), Limits.of_row(row), float(row["spend"]))


@dataclass(frozen=True, slots=True)
class VirtualKey:
    id: str
    alias: str | None
    team: Team | None
    models: frozenset[str]  # empty: what the team allows
    limits: Limits
    spend: float
    expires_at: float | None
    revoked: bool

    @classmethod
    def of_row(cls, row: dict[str, Any], teams: dict[str, Team]) -> VirtualKey:
        team = teams.get(row["team_id"]) if row["team_id"] else None
        return cls(
            id=row["id"],
            alias=row["alias"],
            team=team,
            models=frozenset(row["models"]),
            limits=Limits.of_row(row),
            spend=float(row["spend"]),
            expires_at=_epoch(row["expires_at"]),
            revoked=bool(row["revoked"]),
        )

    @property
    def team_id(self) -> str | None:
        return self.team.id if self.team is not None else None

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and now >= self.expires_at


def _epoch(value: datetime | None) -> float | None:
    return value.timestamp() if value is not None else None
