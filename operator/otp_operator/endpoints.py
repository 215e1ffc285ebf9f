"""Where a channel may make the operator (Auth0 credentials) and its relay (8x8 key) send secrets.

A channel author controls ``spec.auth0.domain`` and ``spec.sms.baseUrl``; the operator sends the
namespace's Auth0 client secret to the first and the relay sends the 8x8 API key to the second.
Only Auth0 tenant domains and 8x8's hosts over https are accepted, plus what the operator's
administrator allows with ``--allow-auth0-domain`` / ``--allow-sms-base-url`` (shell globs).
Admission cannot know that allow-list, so the operator checks before anything is sent.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from .spec import ChannelSpec, SpecError

ALLOW_AUTH0_DOMAIN_FLAG = "--allow-auth0-domain"
ALLOW_SMS_BASE_URL_FLAG = "--allow-sms-base-url"
ALLOW_AUTH0_DOMAIN_ENV = "OTP_OPERATOR_ALLOW_AUTH0_DOMAINS"
ALLOW_SMS_BASE_URL_ENV = "OTP_OPERATOR_ALLOW_SMS_BASE_URLS"

# <tenant>.auth0.com and the regional <tenant>.<region>.auth0.com, on the default https port.
AUTH0_TENANT_DOMAIN = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.(us|eu|au|jp))?\.auth0\.com$")
# 8x8's regional SMS API hosts (sms.region): ap, us, eu, id.
EIGHT_BY_EIGHT_HOSTS = frozenset({"sms.8x8.com", "sms.us.8x8.com", "sms.8x8.uk", "sms.8x8.id"})
_HOST_PORT = re.compile(r"^[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:[0-9]{1,5})?$")


class DisallowedEndpoint(SpecError):
    """The spec points a secret-bearing request at a host the operator does not allow."""

    reason = "DisallowedEndpoint"


@dataclass(frozen=True)
class EndpointPolicy:
    """The administrator's extra allowed endpoints (shell globs, e.g. ``localhost:*``)."""

    auth0_domains: tuple[str, ...] = ()
    sms_base_urls: tuple[str, ...] = ()  # matched against scheme://host[:port]


def split_patterns(value: str | None) -> list[str]:
    """Comma-separated patterns from an environment variable."""
    return [part.strip() for part in (value or "").split(",") if part.strip()]


def _matches(value: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(value, pattern.lower()) for pattern in patterns)


def check_auth0_domain(domain: str, policy: EndpointPolicy) -> None:
    normalized = domain.lower()
    if _HOST_PORT.match(normalized) and (
        AUTH0_TENANT_DOMAIN.match(normalized) or _matches(normalized, policy.auth0_domains)
    ):
        return
    raise DisallowedEndpoint(
        f"spec.auth0.domain {domain!r} is not an Auth0 tenant domain (<tenant>.auth0.com or "
        f"<tenant>.<us|eu|au|jp>.auth0.com); the operator would send it the Auth0 client secret. "
        f"An administrator can allow other domains with {ALLOW_AUTH0_DOMAIN_FLAG} "
        f"(env {ALLOW_AUTH0_DOMAIN_ENV})"
    )


def _origin(url: str) -> str | None:
    """``scheme://host[:port]`` of a URL without userinfo, query or fragment; None otherwise."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if parts.username is not None or parts.query or parts.fragment or not parts.hostname:
        return None
    if parts.scheme not in ("http", "https") or not _HOST_PORT.match(parts.hostname):
        return None
    return f"{parts.scheme}://{parts.hostname}" + ("" if port is None else f":{port}")


def check_sms_base_url(base_url: str, policy: EndpointPolicy) -> None:
    if not base_url:  # the region's own 8x8 host
        return
    origin = _origin(base_url)
    if origin is not None:
        parts = urlsplit(origin)
        if parts.scheme == "https" and parts.port in (None, 443) and parts.hostname in EIGHT_BY_EIGHT_HOSTS:
            return
        if _matches(origin, policy.sms_base_urls):
            return
    raise DisallowedEndpoint(
        f"spec.sms.baseUrl {base_url!r} is not an 8x8 SMS API host over https "
        f"({', '.join(sorted(EIGHT_BY_EIGHT_HOSTS))}); the relay would send it the 8x8 API key. "
        f"An administrator can allow other URLs with {ALLOW_SMS_BASE_URL_FLAG} (env {ALLOW_SMS_BASE_URL_ENV})"
    )


def check_channel(ch: ChannelSpec, policy: EndpointPolicy) -> None:
    """Raise ``DisallowedEndpoint`` naming the first field that points somewhere not allowed."""
    check_auth0_domain(ch.auth0.domain, policy)
    check_sms_base_url(ch.sms.base_url, policy)
