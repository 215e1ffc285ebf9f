"""Where a channel may make the operator (Auth0 credentials) and its relay (8x8 key) send secrets.

A channel author controls ``spec.auth0.domain``, ``spec.sms.baseUrl``, ``spec.relay.stateStore.url``
and ``spec.relay.podTemplate.spec.container.image``; the operator sends the namespace's Auth0
client secret to the first, the relay sends the 8x8 API key to the second and the state store's
password (and the recipients' rate-limit keys) to the third, and the image is what runs with the
8x8 key mounted. Only Auth0 tenant domains, 8x8's hosts over https and the operator's own relay
image repository are accepted, plus what the operator's administrator allows with
``--allow-auth0-domain`` / ``--allow-sms-base-url`` / ``--allow-state-store`` /
``--allow-relay-image`` (shell globs); no state store is allowed until one is listed. Admission
cannot know these allow-lists, so the operator checks before anything is sent or applied.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from . import podtemplate
from .spec import ChannelSpec, SpecError, StateStoreSpec

ALLOW_AUTH0_DOMAIN_FLAG = "--allow-auth0-domain"
ALLOW_SMS_BASE_URL_FLAG = "--allow-sms-base-url"
ALLOW_STATE_STORE_FLAG = "--allow-state-store"
ALLOW_RELAY_IMAGE_FLAG = "--allow-relay-image"
ALLOW_AUTH0_DOMAIN_ENV = "OTP_OPERATOR_ALLOW_AUTH0_DOMAINS"
ALLOW_SMS_BASE_URL_ENV = "OTP_OPERATOR_ALLOW_SMS_BASE_URLS"
ALLOW_STATE_STORE_ENV = "OTP_OPERATOR_ALLOW_STATE_STORES"
ALLOW_RELAY_IMAGE_ENV = "OTP_OPERATOR_ALLOW_RELAY_IMAGES"

# <tenant>.auth0.com and the regional <tenant>.<region>.auth0.com, on the default https port.
AUTH0_TENANT_DOMAIN = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.(us|eu|au|jp))?\.auth0\.com$")
# 8x8's regional SMS API hosts (sms.region): ap, us, eu, id.
EIGHT_BY_EIGHT_HOSTS = frozenset({"sms.8x8.com", "sms.us.8x8.com", "sms.8x8.uk", "sms.8x8.id"})
_HOST_PORT = re.compile(r"^[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:[0-9]{1,5})?$")
# An image reference (distribution's grammar, lower-case repository): repository[:tag][@digest].
_IMAGE = re.compile(
    r"^(?P<repository>[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?::[0-9]{1,5})?"
    r"(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*)"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@sha256:[0-9a-f]{64})?$")


class DisallowedEndpoint(SpecError):
    """The spec points a secret-bearing request at a host the operator does not allow."""

    reason = "DisallowedEndpoint"


@dataclass(frozen=True)
class EndpointPolicy:
    """The administrator's extra allowed endpoints (shell globs, e.g. ``localhost:*``)."""

    auth0_domains: tuple[str, ...] = ()
    sms_base_urls: tuple[str, ...] = ()  # matched against scheme://host[:port]
    state_stores: tuple[str, ...] = ()  # matched against host:port (port always written out)
    relay_images: tuple[str, ...] = ()  # matched against the image's repository (no tag, no digest)


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


def is_8x8_base_url(base_url: str) -> bool:
    """An https URL on one of 8x8's SMS hosts and the default port."""
    origin = _origin(base_url)
    if origin is None:
        return False
    parts = urlsplit(origin)
    return parts.scheme == "https" and parts.port in (None, 443) and parts.hostname in EIGHT_BY_EIGHT_HOSTS


def voice_base_url(sms_base_url: str) -> str:
    """Where the relay places calls: 8x8 serves Voice Messaging from voice.* beside each sms.*
    host; an allowed other SMS URL (an emulator, a proxy) serves both; "" is the region's own."""
    if sms_base_url and is_8x8_base_url(sms_base_url):
        return sms_base_url.replace("://sms.", "://voice.", 1)
    return sms_base_url


def check_sms_base_url(base_url: str, policy: EndpointPolicy) -> None:
    if not base_url or is_8x8_base_url(base_url):  # empty: the region's own 8x8 host
        return
    origin = _origin(base_url)
    if origin is not None and _matches(origin, policy.sms_base_urls):
        return
    raise DisallowedEndpoint(
        f"spec.sms.baseUrl {base_url!r} is not an 8x8 SMS API host over https "
        f"({', '.join(sorted(EIGHT_BY_EIGHT_HOSTS))}); the relay would send it the 8x8 API key. "
        f"An administrator can allow other URLs with {ALLOW_SMS_BASE_URL_FLAG} (env {ALLOW_SMS_BASE_URL_ENV})"
    )


def _allowed(patterns: tuple[str, ...]) -> str:
    return ", ".join(repr(p) for p in patterns) if patterns else "none"


def check_state_store(store: StateStoreSpec | None, policy: EndpointPolicy) -> None:
    if store is None or (_HOST_PORT.match(store.host_port) and _matches(store.host_port, policy.state_stores)):
        return
    raise DisallowedEndpoint(
        f"spec.relay.stateStore.url host {store.host_port!r} is not an allowed state store (allowed: "
        f"{_allowed(policy.state_stores)}); the relay would send it the store's password and the "
        f"recipients' rate-limit keys. An administrator can allow stores with {ALLOW_STATE_STORE_FLAG} "
        f"(host:port globs, env {ALLOW_STATE_STORE_ENV}; chart allowedEndpoints.stateStores)"
    )


def image_repository(image: str) -> str | None:
    """The repository of an image reference (no tag, no digest); None when it is not one."""
    match = _IMAGE.match(image)
    return match["repository"] if match else None


def relay_repositories(relay_image: str, policy: EndpointPolicy) -> tuple[str, ...]:
    """The operator's own relay image repository first, then the administrator's globs."""
    own = image_repository(relay_image)
    return (*((own,) if own else ()), *policy.relay_images)


def check_relay_image(image: str, policy: EndpointPolicy, relay_image: str) -> None:
    """``image``: spec.relay.podTemplate.spec.container.image ('' = the operator's own)."""
    if not image:
        return
    repository = image_repository(image)
    allowed = relay_repositories(relay_image, policy)
    if repository is not None and any(fnmatch.fnmatchcase(repository, pattern) for pattern in allowed):
        return
    raise DisallowedEndpoint(
        f"spec.relay.podTemplate.spec.container.image {image!r} is not from an allowed relay image "
        f"repository (allowed: {_allowed(allowed)}); the relay pods mount the 8x8 API key. An "
        f"administrator can allow repositories with {ALLOW_RELAY_IMAGE_FLAG} (globs on the repository "
        f"without tag or digest, env {ALLOW_RELAY_IMAGE_ENV}; chart allowedEndpoints.relayImages)"
    )


def check_channel(ch: ChannelSpec, policy: EndpointPolicy, relay_image: str) -> None:
    """Raise ``DisallowedEndpoint`` naming the first field that points somewhere not allowed;
    ``relay_image``: the operator's own (its repository is always allowed)."""
    check_auth0_domain(ch.auth0.domain, policy)
    check_sms_base_url(ch.sms.base_url, policy)
    check_state_store(ch.relay.state_store, policy)
    check_relay_image(podtemplate.image(ch.relay.pod_template), policy, relay_image)
