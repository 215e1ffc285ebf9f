"""The I/O edge: a Management API token source and the auth0-python `AsyncAuth0` client,
with one bounded retry policy and every failure turned into an `Auth0Error`.

The SDK's own retries are switched off (max_retries=0): they sleep until `x-ratelimit-reset`
for up to 60 s per attempt and also retry 409s, which would hang `ensure()` in a 429 storm.
`RetryPolicy` below waits for short resets only and hands long ones back as Auth0RateLimited.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import ssl
import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp
import httpx
from auth0.management.client import AsyncAuth0
from auth0.management.core.api_error import ApiError
from auth0.management.core.parse_error import ParsingError
from httpx_aiohttp import AiohttpTransport

from .errors import UNAVAILABLE, Auth0Error, error_for_response, rate_limit_reset, redact
from .model import Auth0Credentials
from .ratelimit import TenantRateLimit

log = logging.getLogger(__name__)
T = TypeVar("T")

_RETRYABLE = {408, 429, 500, 502, 503, 504}
# Connections: each costs a TLS handshake to open and its buffers while open (with a few hundred
# tenants busy at once, most of the operator's memory). So a tenant's credentials have at most
# TENANT_IN_FLIGHT requests (and connections) at a time, every tenant together at most
# Connections.in_flight, and an idle connection is closed after KEEPALIVE_SECONDS.
TENANT_IN_FLIGHT = 2
KEEPALIVE_SECONDS = 10.0

# Set by Auth0Pool around each call from its caller's guard: runs before every write request and
# raises to stop the operation, e.g. when the channel being synced started to be deleted.
before_write: ContextVar[Callable[[], None] | None] = ContextVar("before_write", default=None)


@dataclass(frozen=True)
class RetryPolicy:
    """At most `attempts` tries per request; a 429 is retried only when its reset is no more
    than `max_rate_limit_wait` away, otherwise it is returned at once with the reset time."""

    attempts: int = 3
    max_rate_limit_wait: float = 3.0
    # 429s per request whose reset is near: another client draining the tenant's bucket is
    # waited out this many times (each until its reset) before Auth0RateLimited.
    rate_limit_attempts: int = 10
    backoff: float = 0.25  # first wait after a 5xx/transport error; doubles per retry
    timeout: float = 10.0  # per HTTP request

    def delay(self, status: int | None, headers: dict[str, str], attempt: int, now: float) -> float | None:
        """Seconds to wait before attempt `attempt + 1`, or None to give up now.
        `status` None means the request never got an answer (connect error, timeout)."""
        if attempt >= self.attempts:
            return None
        if status == 429:
            reset = rate_limit_reset(headers, now)
            wait = self.backoff * 2 ** (attempt - 1) if reset is None else reset
            # A floor keeps a reset that is already due from turning into a hot loop.
            wait = max(wait, 0.05)
            return wait if wait <= self.max_rate_limit_wait else None
        if status is None or status in _RETRYABLE:
            return self.backoff * 2 ** (attempt - 1) * (1 + random.random() * 0.2)
        return None


class TokenSource:
    """Client-credentials token for the Management API, cached until shortly before expiry."""

    def __init__(self, credentials: Auth0Credentials, http: httpx.AsyncClient, policy: RetryPolicy,
                 leeway: float = 60.0) -> None:
        self._credentials = credentials
        self._http = http
        self._policy = policy
        self._leeway = leeway
        self._token: str | None = None
        self._expires_at = 0.0
        self._lock = asyncio.Lock()
        self.granted_scopes: frozenset[str] | None = None
        self.fetches = 0

    def cached(self) -> str:
        return self._token or ""

    def saved(self) -> tuple[str | None, float, frozenset[str] | None]:
        """The token to hand to the next TokenSource of these credentials (see `restore`)."""
        return self._token, self._expires_at, self.granted_scopes

    def restore(self, saved: tuple[str | None, float, frozenset[str] | None]) -> None:
        self._token, self._expires_at, self.granted_scopes = saved

    def invalidate(self, rejected: str) -> None:
        """Forget ``rejected`` (requests sent at once with it all fail: one new fetch, not one each)."""
        if self._token == rejected:
            self._token = None
            self._expires_at = 0.0

    async def token(self) -> str:
        if self._token and time.time() < self._expires_at:
            return self._token
        async with self._lock:
            if not (self._token and time.time() < self._expires_at):
                await self._fetch()
        assert self._token is not None
        return self._token

    async def _fetch(self) -> None:
        creds = self._credentials
        payload = {"grant_type": "client_credentials", "client_id": creds.client_id,
                   "client_secret": creds.client_secret, "audience": creds.audience}
        url = f"https://{creds.domain}/oauth/token"
        attempt = 0
        while True:
            attempt += 1
            self.fetches += 1
            try:
                response = await self._http.post(url, json=payload, timeout=self._policy.timeout)
            except httpx.HTTPError as exc:
                wait = self._policy.delay(None, {}, attempt, time.time())
                if wait is None:
                    raise Auth0Error(UNAVAILABLE, f"Auth0 tenant {creds.domain} is unreachable "
                                     f"(token request: {type(exc).__name__})") from None
                await asyncio.sleep(wait)
                continue
            if response.status_code == 200:
                break
            wait = self._policy.delay(response.status_code, dict(response.headers), attempt, time.time())
            if wait is None:
                raise self._token_error(response)
            await asyncio.sleep(wait)
        data = response.json()
        issued = time.time()
        self._token = data["access_token"]
        expires_in = float(data.get("expires_in") or 86400)
        self._expires_at = issued + max(expires_in - min(self._leeway, expires_in / 2), 0.0)
        scope = data.get("scope")
        self.granted_scopes = frozenset(scope.split()) if isinstance(scope, str) else None

    def _token_error(self, response: httpx.Response) -> Auth0Error:
        try:
            body: Any = response.json()
        except ValueError:
            body = response.text
        status = response.status_code
        # Auth0 answers a wrong client id/secret with 401, and also with 403 access_denied for
        # "Unauthorized"; a client without a grant for the Management API gets 403 too.
        if status == 403 and isinstance(body, dict) and "grant" not in str(body.get("error_description", "")):
            status = 401
        error = error_for_response(status, body, dict(response.headers), now=time.time(),
                                   what="token request", domain=self._credentials.domain)
        error.message = redact(error.message, [self._credentials.client_secret])
        return error


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """One TLS context for every tenant's client: building one per client costs ~0.7 MB each
    (the trust store is parsed again), which dominates the operator's memory at scale.
    Read once, so SSL_CERT_FILE is honoured as it is at the first client."""
    return httpx.create_ssl_context()


@dataclass
class Connections:
    """The connection pool every tenant shares (Auth0Pool owns it) and the bound on requests in
    flight through it. No connection limit in the connector itself: one can leave requests
    waiting for ever after a connect timed out (aio-libs/aiohttp#9670); the semaphore bounds them."""

    session: aiohttp.ClientSession
    in_flight: asyncio.Semaphore


def new_connections(in_flight: int = 64) -> Connections:
    connector = aiohttp.TCPConnector(ssl=_tls_context(), keepalive_timeout=KEEPALIVE_SECONDS, limit=0)
    return Connections(aiohttp.ClientSession(connector=connector), asyncio.Semaphore(in_flight))


class _SharedSessionTransport(AiohttpTransport):
    """httpx over a session owned by someone else: closing one tenant's client leaves it open."""

    async def aclose(self) -> None:
        pass


def _transport(connections: Connections | None) -> AiohttpTransport:
    """The SDK's httpx requests sent by aiohttp (measured: about a third of the CPU per request of
    httpx's own transport, see bench/operator/README.md), over the shared pool or one of its own."""
    if connections is not None:
        return _SharedSessionTransport(verify=_tls_context(), client=connections.session)
    return AiohttpTransport(verify=_tls_context(), limits=httpx.Limits(keepalive_expiry=KEEPALIVE_SECONDS))


async def _landed(write: Awaitable[T]) -> T:
    """A write already sent takes effect at Auth0 even when we stop waiting for it. If our task
    is cancelled (kopf cancels a deleted channel's loop), wait for the answer before unwinding,
    so whoever runs next under the channel's lock (the cleanup) reads a tenant that includes it."""
    task = asyncio.ensure_future(write)
    task.add_done_callback(lambda done: done.cancelled() or done.exception())  # retrieved either way
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        await asyncio.wait([task])  # bounded by the HTTP client's timeout
        raise


class ManagementApi:
    """`AsyncAuth0` for one tenant plus the retry/refresh/error policy around every call."""

    def __init__(self, credentials: Auth0Credentials, policy: RetryPolicy | None = None,
                 secrets: tuple[str, ...] = (), limit: TenantRateLimit | None = None,
                 connections: Connections | None = None) -> None:
        """``connections``: the pool shared with other tenants (default: one of its own)."""
        self.credentials = credentials
        self.policy = policy or RetryPolicy()
        # Every Management API request passes the tenant's limiter (shared by all syncs of the
        # tenant when given; see ratelimit.py), and every answer corrects it.
        self.limit = limit or TenantRateLimit(credentials.domain)
        self._http = httpx.AsyncClient(timeout=self.policy.timeout, transport=_transport(connections),
                                       event_hooks={"request": [self._before_request],
                                                    "response": [self._after_response]})
        self.tokens = TokenSource(credentials, self._http, self.policy)
        self.sdk = AsyncAuth0(
            base_url=f"https://{credentials.domain}/api/v2",
            token=self.tokens.cached,
            async_token=self.tokens.token,
            httpx_client=self._http,
            timeout=self.policy.timeout,
            max_retries=0,
        )
        self._secrets = (credentials.client_secret, *secrets)
        self._in_flight = asyncio.Semaphore(TENANT_IN_FLIGHT)
        self._shared_in_flight = connections.in_flight if connections is not None else None
        self.requests = 0
        self.writes = 0

    async def _before_request(self, request: httpx.Request) -> None:
        if request.url.path.startswith("/api/v2/"):  # the token endpoint has its own limits
            await self.limit.acquire(self.policy.max_rate_limit_wait)

    async def _after_response(self, response: httpx.Response) -> None:
        if response.request.url.path.startswith("/api/v2/"):
            self.limit.observe(response.status_code, response.headers)

    def add_secret(self, value: str) -> None:
        """Also keep `value` out of every error message."""
        self._secrets = (*self._secrets, value)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def call(self, what: str, request: Callable[[], Awaitable[T]], *, write: bool = False,
                   missing_scopes: tuple[str, ...] = ()) -> T | None:
        """Run one SDK request. Returns its result, or None when Auth0 answers 404."""
        attempt = 0
        limited = 0
        refreshed = False
        while True:
            attempt += 1
            check = before_write.get() if write else None
            if check is not None:
                check()
            used = await self.tokens.token()  # token errors surface as themselves, not as this request's
            self.requests += 1
            self.writes += write
            try:
                async with self._in_flight, self._shared_in_flight or contextlib.nullcontext():
                    return await (_landed(request()) if write else request())
            except ApiError as exc:
                status = exc.status_code or 0
                headers = {k.lower(): v for k, v in (exc.headers or {}).items()}
                if status == 404:
                    return None
                if status == 401 and not refreshed:
                    refreshed = True
                    attempt -= 1
                    self.tokens.invalidate(used)
                    continue
                if status == 429:
                    # The limiter holds every caller of the tenant until the reset; waiting here
                    # too would double it. Bounded separately: a drained bucket refills.
                    limited += 1
                    attempt -= 1
                    wait = self.policy.delay(status, headers, 1, time.time())
                    if wait is not None and limited < self.policy.rate_limit_attempts:
                        log.debug("Auth0 %s answered 429; retrying after the reset", what)
                        continue
                    wait = None
                else:
                    wait = self.policy.delay(status, headers, attempt, time.time())
                if wait is None:
                    error = error_for_response(status, exc.body, headers, now=time.time(), what=what,
                                               domain=self.credentials.domain, missing=missing_scopes)
                    if status == 401:
                        error.message += " (a fresh token was rejected too)"
                    raise Auth0Error(error.reason, redact(error.message, self._secrets),
                                     error.retry_after, status, error.error_code) from None
                log.debug("Auth0 %s answered %s; retrying in %.2f s", what, status, wait)
                await asyncio.sleep(wait)
            except ParsingError:
                raise Auth0Error(UNAVAILABLE, f"Auth0 tenant {self.credentials.domain} answered "
                                 f"{what} with a body the SDK could not parse") from None
            except httpx.HTTPError as exc:
                wait = self.policy.delay(None, {}, attempt, time.time())
                if wait is None:
                    raise Auth0Error(UNAVAILABLE, f"Auth0 tenant {self.credentials.domain} did not "
                                     f"answer {what} ({type(exc).__name__})") from None
                await asyncio.sleep(wait)
