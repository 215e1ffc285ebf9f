"""The 8x8 client: one pooled keep-alive pyreqwest client (Rust's reqwest/hyper; chosen by
figures in bench/relay, see relay/README.md), with a retry policy that never risks a second SMS.

Retry policy (the SMS must never be sent twice, and 8x8 documents no idempotency key):
- retried, with full-jitter exponential backoff: the connection could not be established
  (refused, DNS, connect timeout) — the request never left; 503 — 8x8 refused to take it;
  429 — waiting the ``Retry-After`` it names, if that fits in the deadline;
- never retried: anything after the request may have reached 8x8 (reset or disconnect
  mid-exchange, read timeout, an unreadable 2xx) — ``Unknown``; any other answer (3xx, 4xx,
  500, 502, 504, 200 REJECTED) — 8x8 decided, the relay reports it.
The same client and policy place voice calls (``POST .../callflows``, 8x8's Voice Messaging):
only the path and the reading of the answer (``interpret_voice``) differ. Each call carries
``clientActionId`` (the message's idempotency key) for 8x8's records, but 8x8 documents no
de-duplication on it, so a call is never retried once the request may have left either.
``call`` is one plain request on the same client and key (the Webhooks API, see ``webhook``).
Redirects are never followed (a 3xx is a refusal: following one would re-send the number, the
text and the API key, possibly to another host). All attempts together stay within
``deadline`` seconds; what 8x8 says is capped before it reaches a caller or a log.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, TypeGuard

import orjson

# pyreqwest's allocator (mimalloc) commits each arena it reserves up front by default: ~9 MB of an
# idle relay's resident memory it never touches. Committed on demand instead. mimalloc reads its
# options once, when the extension loads: set for the import only (a value from the environment
# wins), so nothing the process starts inherits it.
_EAGER_COMMIT = "MIMALLOC_ARENA_EAGER_COMMIT"
_ours = _EAGER_COMMIT not in os.environ
if _ours:
    os.environ[_EAGER_COMMIT] = "0"
from pyreqwest import exceptions as http_errors  # noqa: E402
from pyreqwest.client import Client, ClientBuilder  # noqa: E402

if _ours:
    del os.environ[_EAGER_COMMIT]


@dataclass(frozen=True)
class Accepted:
    umid: str


@dataclass(frozen=True)
class Rejected:
    """8x8 answered and refused (HTTP status >= 400 other than 429/503, or 200 REJECTED)."""

    http_status: int
    code: str
    description: str


@dataclass(frozen=True)
class NotSent:
    """8x8 surely did not take the message: unreachable after retries, 429, 503."""

    reason: str
    retry_after: float | None = None


@dataclass(frozen=True)
class Unknown:
    """8x8 may have taken the message (the request left, no verdict came back in time)."""

    reason: str


Outcome = Accepted | Rejected | NotSent | Unknown
MAX_CODE = 16
MAX_ANSWER = 64 * 1024  # bytes of an 8x8 answer read at most
MIN_ATTEMPT = 0.2  # seconds: with less left, a first attempt is not started
MAX_DESCRIPTION = 200
MAX_UMID = 64
_UMID_CHARS = frozenset("0123456789abcdefABCDEF-")  # 8x8's umids are UUIDs


def valid_umid(value: object) -> TypeGuard[str]:
    """A umid fit for keys and logs: 1-64 hex digits and dashes (8x8 sends UUIDs)."""
    return isinstance(value, str) and 0 < len(value) <= MAX_UMID and _UMID_CHARS.issuperset(value)


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 3
    base_delay: float = 0.1
    max_delay: float = 1.0
    deadline: float = 6.0
    attempt_timeout: float = 5.5  # one attempt; the deadline (6 s) bounds them all
    connect_timeout: float = 2.0

    def backoff(self, attempt: int, rng: Callable[[], float] = random.random) -> float:
        """Full jitter: uniform in [0, min(max_delay, base * 2^(attempt-1))]."""
        return rng() * min(self.max_delay, self.base_delay * 2 ** (attempt - 1))


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - now)
    except (TypeError, ValueError, IndexError):
        return None


def _capped(value: object, limit: int) -> str:
    """Printable ASCII only, at most ``limit`` characters."""
    return "".join(c for c in str(value)[: limit * 4] if " " <= c <= "~")[:limit]


def _answers(read: Callable[[int, dict[str, Any]], Outcome]) -> Callable[[int, bytes], Outcome | None]:
    """An interpreter of one 8x8 API's answers: None for the ones worth another attempt (429,
    503), a redirect refused (never followed), else ``read`` of the status and the body as a JSON
    object ({} when it is not one). The rules before ``read`` are the same for SMS and voice."""
    def interpret_answer(status: int, body: bytes) -> Outcome | None:
        if status in (429, 503):
            return None
        if 300 <= status < 400:
            return Rejected(status, "REDIRECT", "8x8 answered with a redirect; not followed")
        try:
            data: Any = orjson.loads(body)
        except orjson.JSONDecodeError:
            data = None
        return read(status, data if isinstance(data, dict) else {})
    return interpret_answer


def _sms_answer(status: int, data: dict[str, Any]) -> Outcome:
    """What an answer of 8x8's SMS API means."""
    if 200 <= status < 300:
        raw_state = data.get("status")
        state: dict[str, Any] = raw_state if isinstance(raw_state, dict) else {}
        if str(state.get("code", "")).upper() == "REJECTED":
            return Rejected(status, "REJECTED", _capped(state.get("description", ""), MAX_DESCRIPTION))
        umid = data.get("umid")
        if not valid_umid(umid):
            return Unknown("8x8 answered without a usable message id; outcome unknown")
        return Accepted(umid)
    return Rejected(status, _capped(data.get("code", status), MAX_CODE) or str(status),
                    _capped(data.get("message", ""), MAX_DESCRIPTION))


_VOICE_CREATED = "CREATED"


def _voice_answer(status: int, data: dict[str, Any]) -> Outcome:
    """What an answer of 8x8's callflows API means (``sessionStatus`` CREATED with a
    ``sessionId``, or a ``CallflowErrorResponse`` with a negative ``statusCode`` such as -1014
    for a caller ID 8x8 has not whitelisted). The call's ``sessionId`` plays the umid's part
    (replays, call outcomes)."""
    code = _capped(data.get("statusCode", status), MAX_CODE) or str(status)
    description = _capped(data.get("statusMessage", ""), MAX_DESCRIPTION)
    if 200 <= status < 300:
        session = data.get("sessionId")
        if data.get("sessionStatus") == _VOICE_CREATED and valid_umid(session):
            return Accepted(session)
        if data.get("sessionStatus") == "NOT_CREATED":
            return Rejected(status, code, description)
        return Unknown("8x8 answered without a usable session id; outcome unknown")
    return Rejected(status, code, description)


interpret = _answers(_sms_answer)
interpret_voice = _answers(_voice_answer)


class EightByEight:
    """Sends one request per call to ``{base_url}/api/v1/subaccounts/{id}/{path}``: ``messages``
    (SMS, read by ``interpret``) or ``callflows`` (voice calls, read by ``interpret_voice``)."""

    def __init__(self, base_url: str, subaccount: str, policy: RetryPolicy,
                 observe: Callable[[str, float], None], pool_size: int = 100,
                 path: str = "messages",
                 interpret: Callable[[int, bytes], Outcome | None] = interpret) -> None:
        self.base = f"{base_url}/api/v1/subaccounts/{subaccount}"
        self.url = f"{self.base}/{path}"
        self._interpret = interpret
        self.policy = policy
        self._observe = observe  # (status label, seconds) per attempt, for metrics
        self._pool_size = pool_size
        self._client: Client | None = None
        self._auth: tuple[str, dict[str, str]] = ("", {})  # (key, its headers), rebuilt on rotation

    async def start(self) -> None:
        builder = (
            ClientBuilder()
            .follow_redirects(False)
            .gzip(False).brotli(False).zstd(False).deflate(False)
            .pool_max_idle_per_host(self._pool_size)
            .pool_idle_timeout(timedelta(seconds=10))
            .connect_timeout(timedelta(seconds=self.policy.connect_timeout))
            .user_agent("otp-relay")
            .default_headers({"Content-Type": "application/json"})
        )
        trusted = os.environ.get("SSL_CERT_FILE")  # the design's trust setting, as for Python's ssl
        if trusted and Path(trusted).is_file():
            builder = builder.add_root_certificate_pem(Path(trusted).read_bytes())
        self._client = builder.build()

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()

    async def send(self, api_key: str, payload: dict[str, Any],
                   deadline: float | None = None) -> tuple[Outcome, int]:
        """The outcome and the number of attempts made, by ``deadline`` (monotonic clock;
        default: the policy's deadline from now)."""
        policy = self.policy
        body = orjson.dumps(payload)
        if self._auth[0] != api_key:
            self._auth = (api_key, {"Authorization": f"Bearer {api_key}"})
        headers = self._auth[1]
        if deadline is None:
            deadline = time.monotonic() + policy.deadline
        if deadline - time.monotonic() < MIN_ATTEMPT:
            return NotSent("no time left before the deadline"), 0
        assert self._client is not None, "start() first"
        attempt = 0
        while True:
            attempt += 1
            wait, outcome = await self._attempt(body, headers, deadline - time.monotonic())
            if outcome is not None:
                return outcome, attempt
            assert wait is not None
            delay = wait.retry_after if wait.retry_after is not None else policy.backoff(attempt)
            remaining = deadline - time.monotonic()
            if attempt >= policy.max_attempts or delay + policy.connect_timeout > remaining:
                return wait, attempt
            await asyncio.sleep(delay)

    async def call(self, method: str, path: str, api_key: str, payload: Any = None,
                   timeout: float = 5.0) -> tuple[int, bytes]:
        """One request to ``{base}/{path}`` on the same client and key handling (no retry; no
        redirect followed; at most ``timeout`` seconds and ``MAX_ANSWER`` bytes): the status and
        the answer. Raises what the client raises (``PyreqwestError``, ``OSError``)."""
        assert self._client is not None, "start() first"
        if self._auth[0] != api_key:
            self._auth = (api_key, {"Authorization": f"Bearer {api_key}"})
        builder = {"GET": self._client.get, "POST": self._client.post}[method]
        request = builder(f"{self.base}/{path}").headers(self._auth[1]).timeout(timedelta(seconds=timeout))
        if payload is not None:
            request = request.body_bytes(orjson.dumps(payload))
        async with request.build_streamed() as response:
            return response.status, await _read_capped(response.body_reader, MAX_ANSWER,
                                                       response.get_header("Content-Length"))

    async def _attempt(self, body: bytes, headers: dict[str, str],
                       remaining: float) -> tuple[NotSent | None, Outcome | None]:
        """(retryable reason, None) or (None, final outcome) for one request."""
        assert self._client is not None
        t0 = time.perf_counter()
        total = timedelta(seconds=max(0.01, min(self.policy.attempt_timeout, remaining)))
        request = self._client.post(self.url).headers(headers).body_bytes(body).timeout(total)
        try:
            async with request.build_streamed() as response:
                status = response.status
                retry_after = response.get_header("Retry-After")
                content = await _read_capped(response.body_reader, MAX_ANSWER,
                                             response.get_header("Content-Length"))
        except (http_errors.PyreqwestError, OSError) as exc:
            causes = _causes(exc)
            if _CONNECT_PHASE not in causes:  # the request may have left: never retried
                self._observe("no_answer", time.perf_counter() - t0)
                return None, Unknown("no answer from 8x8 in time; outcome unknown, not retried")
            if "certificate" in causes:
                self._observe("tls_error", time.perf_counter() - t0)
                return None, NotSent("8x8's TLS certificate is not trusted")
            self._observe("connect_error", time.perf_counter() - t0)
            return NotSent("8x8 unreachable"), None
        self._observe(str(status), time.perf_counter() - t0)
        outcome = self._interpret(status, content)
        if outcome is not None:
            return None, outcome
        seconds = parse_retry_after(retry_after, time.time())
        reason = "8x8 rate limit" if status == 429 else "8x8 unavailable (503)"
        return NotSent(reason, seconds), None


async def _read_capped(reader: Any, limit: int, length: str | None) -> bytes:
    """At most ``limit`` bytes of a body (the rest is never read: the connection is dropped).
    With a ``Content-Length``, reading stops at it (no extra wait for the end of the stream)."""
    if length is not None and length.isdigit():
        limit = min(limit, int(length))
    parts, size = [], 0
    while size < limit:
        chunk = await reader.read(limit - size)
        if chunk is None:
            break
        parts.append(bytes(chunk))
        size += len(parts[-1])
    return b"".join(parts)


# hyper's name for a failure while establishing the connection (TCP, TLS), before any byte of
# the request was written. pyreqwest raises ConnectError both for it and for a pooled
# connection reset after the request went out ("client error (SendRequest)"), so the phase is
# read from the cause chain; anything not recognised counts as "may have been sent".
_CONNECT_PHASE = "client error (Connect)"


def _causes(error: Exception) -> str:
    details = getattr(error, "details", None) or {}
    return "\n".join(str(cause.get("message", "")) for cause in details.get("causes") or ())
