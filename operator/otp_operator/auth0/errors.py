"""Auth0 failures as stable reasons for status conditions.

`error_for_response` is pure: it maps one HTTP answer from Auth0 to an `Auth0Error`.
Messages name what went wrong and what to do; they never carry a secret.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any, Final

UNAUTHORIZED: Final = "Auth0Unauthorized"
FORBIDDEN: Final = "Auth0Forbidden"
RATE_LIMITED: Final = "Auth0RateLimited"
UNAVAILABLE: Final = "Auth0Unavailable"
CONFLICT: Final = "Auth0Conflict"
INVALID: Final = "Auth0Invalid"
BUILD_FAILED: Final = "Auth0BuildFailed"
REASONS: Final = (UNAUTHORIZED, FORBIDDEN, RATE_LIMITED, UNAVAILABLE, CONFLICT, INVALID, BUILD_FAILED)

_MAX_DETAIL = 300
_EXPECTED_SCOPES = re.compile(r"expected (?:any|all) of:\s*([\w:, ]+)", re.IGNORECASE)


class Auth0Error(Exception):
    """An Auth0 operation failed; `reason` is one of REASONS, `retry_after` in seconds if known."""

    def __init__(self, reason: str, message: str, retry_after: float | None = None,
                 status: int | None = None, error_code: str | None = None) -> None:
        if reason not in REASONS:
            raise ValueError(f"unknown Auth0 error reason {reason!r}")
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.retry_after = retry_after
        self.status = status  # Auth0's HTTP status and errorCode, when it answered
        self.error_code = error_code

    def __str__(self) -> str:
        return f"{self.reason}: {self.message}"

    def __repr__(self) -> str:
        return f"Auth0Error({self.reason!r}, {self.message!r}, retry_after={self.retry_after!r})"


class RoutingRefused(Auth0Error):
    """spec.auth0.manageRouting cannot make the tenant route to us (e.g. the legacy phone flag is
    missing): refused before any write. `verdict` is the PhoneRouting verdict to show."""

    def __init__(self, verdict: Any, message: str) -> None:
        super().__init__(CONFLICT, message)
        self.verdict = verdict


def redact(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "[redacted]")
    return text


def _detail(body: Any) -> str:
    """Auth0's own explanation from an error body ({statusCode, error, message, errorCode} or
    the OAuth {error, error_description})."""
    if isinstance(body, Mapping):
        parts = [str(body[k]) for k in ("errorCode", "error") if body.get(k)][:1]
        text = body.get("message") or body.get("error_description")
        if text:
            parts.append(str(text))
        detail = ": ".join(parts)
    else:
        detail = str(body or "")
    return detail[:_MAX_DETAIL]


def rate_limit_reset(headers: Mapping[str, str], now: float) -> float | None:
    """Seconds until Auth0's bucket refills, from x-ratelimit-reset (UNIX seconds) or
    Retry-After (seconds); None when neither header says."""
    lowered = {k.lower(): v for k, v in headers.items()}
    reset = lowered.get("x-ratelimit-reset")
    if reset is not None:
        try:
            return max(0.0, float(reset) - now)
        except ValueError:
            pass
    retry_after = lowered.get("retry-after")
    if retry_after is not None:
        try:
            return max(0.0, float(retry_after))
        except ValueError:
            pass
    return None


def scopes_named_in(body: Any) -> list[str]:
    match = _EXPECTED_SCOPES.search(_detail(body))
    if not match:
        return []
    return sorted({s.strip() for s in match.group(1).split(",") if s.strip()})


def error_for_response(status: int, body: Any, headers: Mapping[str, str], *, now: float,
                       what: str, domain: str, missing: Iterable[str] = ()) -> Auth0Error:
    """Map Auth0's answer `status`/`body` to our request `what` (e.g. "PATCH action") to an error."""
    error = _error_for_response(status, body, headers, now=now, what=what, domain=domain,
                                missing=missing)
    error.status = status
    code = body.get("errorCode") if isinstance(body, Mapping) else None
    error.error_code = str(code) if code else None
    return error


def _error_for_response(status: int, body: Any, headers: Mapping[str, str], *, now: float,
                        what: str, domain: str, missing: Iterable[str]) -> Auth0Error:
    detail = _detail(body)
    if status == 401:
        return Auth0Error(UNAUTHORIZED, f"Auth0 tenant {domain} rejected the client credentials "
                          f"({what}: HTTP 401 {detail}); check the credentials Secret")
    if status == 403:
        scopes = sorted(set(missing) | set(scopes_named_in(body)))
        needed = f"; grant the client the scopes: {', '.join(scopes)}" if scopes else ""
        return Auth0Error(FORBIDDEN, f"Auth0 tenant {domain} refused {what} (HTTP 403 {detail})"
                          f"{needed}")
    if status == 429:
        wait = rate_limit_reset(headers, now)
        when = f"; the limit resets in {wait:.1f} s" if wait is not None else ""
        return Auth0Error(RATE_LIMITED, f"Auth0 tenant {domain} rate-limited {what} "
                          f"(HTTP 429 {detail}){when}", retry_after=wait)
    if status == 409:
        return Auth0Error(CONFLICT, f"Auth0 tenant {domain} reported a conflict on {what} "
                          f"(HTTP 409 {detail})")
    if status >= 500 or status == 408:
        return Auth0Error(UNAVAILABLE, f"Auth0 tenant {domain} failed {what} (HTTP {status} {detail})",
                          retry_after=rate_limit_reset(headers, now))
    return Auth0Error(INVALID, f"Auth0 tenant {domain} rejected {what} (HTTP {status} {detail})")
