"""Auth0 side of an OtpChannel: the code we register and the library that keeps it in place.

    async with Auth0Sync(Auth0Credentials(domain, client_id, client_secret)) as sync:
        result = await sync.ensure(DesiredIntegration(...), recorded=status.get("auth0"))
        removed = await sync.remove(owner=..., integration=..., name=...)
"""

from .client import RetryPolicy
from .errors import (
                     BUILD_FAILED,
                     CONFLICT,
                     FORBIDDEN,
                     INVALID,
                     RATE_LIMITED,
                     REASONS,
                     UNAUTHORIZED,
                     UNAVAILABLE,
                     Auth0Error,
                     RoutingRefused,
)
from .model import INTEGRATIONS, Auth0Credentials, DesiredIntegration, Integration
from .routing import RoutingVerdict
from .sync import Auth0Sync, SyncResult
from .templates import TEMPLATE_VERSION, parse_marker, render

__all__ = [
    "Auth0Credentials", "Auth0Error", "Auth0Sync", "DesiredIntegration", "Integration",
    "INTEGRATIONS", "RetryPolicy", "SyncResult", "TEMPLATE_VERSION", "parse_marker", "render",
    "REASONS", "UNAUTHORIZED", "FORBIDDEN", "RATE_LIMITED", "UNAVAILABLE", "CONFLICT", "INVALID",
    "BUILD_FAILED", "RoutingVerdict", "RoutingRefused",
]
