"""Plain settings shared by the emulator process and its Python launcher (JSON on the wire)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

# Every scope the emulated endpoints check; a Client gets all of them unless told otherwise.
ALL_SCOPES: tuple[str, ...] = (
    "read:actions", "create:actions", "update:actions", "delete:actions",
    "read:hooks", "create:hooks", "update:hooks", "delete:hooks",
    "read:phone_providers", "create:phone_providers", "update:phone_providers",
    "delete:phone_providers",
    "read:guardian_factors", "update:guardian_factors",
    "read:tenant_settings", "update:tenant_settings",
    "read:connections", "update:connections",
    "read:connections_options", "update:connections_options",
    "read:mfa_policies", "update:mfa_policies",
    "read:log_streams", "create:log_streams", "update:log_streams", "delete:log_streams",
)


@dataclass(frozen=True)
class Client:
    """A machine-to-machine application with a client grant on the Management API."""

    client_id: str
    client_secret: str
    scopes: tuple[str, ...] = ALL_SCOPES
    # False models an application with no client grant for the Management API audience.
    granted: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "scopes", tuple(self.scopes))

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["scopes"] = list(self.scopes)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Client:
        return cls(
            client_id=str(data["client_id"]),
            client_secret=str(data["client_secret"]),
            scopes=tuple(data.get("scopes", ALL_SCOPES)),
            granted=bool(data.get("granted", True)),
        )

    def __repr__(self) -> str:  # never print the secret
        return f"Client(client_id={self.client_id!r}, scopes={len(self.scopes)} scopes)"


@dataclass(frozen=True)
class RateLimit:
    """The tenant's Management API token bucket: ``capacity`` (burst) requests, refilled at
    ``refill_per_second``. The default is a free tenant's: burst 2, 2 requests/s (Auth0's rate
    limit configurations, Free: Management API)."""

    capacity: int = 2
    refill_per_second: float = 2.0

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RateLimit:
        return cls(int(data["capacity"]), float(data["refill_per_second"]))


FREE = RateLimit()
# An Enterprise (public cloud) tenant: x-ratelimit-limit 50 at 50 requests/s, as such tenants
# report it (Auth0 Community "Rate Limits Exposition"; the per-minute bucket on top of it is not
# modelled). For tests that are not about rate limits: a paid tenant is a real kind of tenant.
ENTERPRISE = RateLimit(capacity=50, refill_per_second=50.0)


@dataclass(frozen=True)
class TenantConfig:
    name: str
    clients: tuple[Client, ...]
    latency_ms: int = 0
    rate_limit: RateLimit = field(default_factory=RateLimit)
    build_seconds: float = 0.3
    token_lifetime_seconds: int = 86400
    runner_timeout_seconds: float = 10.0
    deploy_seconds: float = 0.5
    # A new real tenant is on the Unified Phone Experience; None: the setting is absent.
    phone_consolidated_experience: bool | None = True
    # Tenant flags only Auth0 sets (see guardian.py): old tenants, or Auth0 Support.
    legacy_mfa_phone_provider: bool = False
    legacy_passwordless_phone_provider: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "clients": [c.to_dict() for c in self.clients],
            "latency_ms": self.latency_ms,
            "rate_limit": asdict(self.rate_limit),
            "build_seconds": self.build_seconds,
            "token_lifetime_seconds": self.token_lifetime_seconds,
            "runner_timeout_seconds": self.runner_timeout_seconds,
            "deploy_seconds": self.deploy_seconds,
            "phone_consolidated_experience": self.phone_consolidated_experience,
            "legacy_mfa_phone_provider": self.legacy_mfa_phone_provider,
            "legacy_passwordless_phone_provider": self.legacy_passwordless_phone_provider,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TenantConfig:
        clients = data.get("clients")
        if not isinstance(clients, list) or not clients:
            raise ValueError("a tenant needs at least one client")
        return cls(
            name=str(data["name"]),
            clients=tuple(Client.from_dict(c) for c in clients),
            latency_ms=int(data.get("latency_ms", 0)),
            rate_limit=RateLimit.from_dict(data.get("rate_limit") or asdict(RateLimit())),
            build_seconds=float(data.get("build_seconds", 0.3)),
            token_lifetime_seconds=int(data.get("token_lifetime_seconds", 86400)),
            runner_timeout_seconds=float(data.get("runner_timeout_seconds", 10.0)),
            deploy_seconds=float(data.get("deploy_seconds", 0.5)),
            phone_consolidated_experience=(None if data.get("phone_consolidated_experience", True) is None
                                           else bool(data.get("phone_consolidated_experience", True))),
            legacy_mfa_phone_provider=bool(data.get("legacy_mfa_phone_provider", False)),
            legacy_passwordless_phone_provider=bool(data.get("legacy_passwordless_phone_provider", False)),
        )
