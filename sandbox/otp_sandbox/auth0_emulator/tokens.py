"""``/oauth/token`` client credentials and the access tokens (HS256 JWTs) it hands out."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import secrets
import time
from dataclasses import dataclass
from typing import Any, Mapping

from .config import Client
from .errors import ApiError, insufficient_scope


@dataclass(frozen=True)
class OAuthError(Exception):
    """An Authentication API error: ``{error, error_description}``."""

    status: int
    error: str
    description: str

    def body(self) -> dict[str, str]:
        return {"error": self.error, "error_description": self.description}


@dataclass(frozen=True)
class Grant:
    client_id: str
    scopes: frozenset[str]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TokenIssuer:
    """Issues and verifies the tenant's Management API tokens; ``revoke_all`` rotates the key."""

    def __init__(self, domain: str, clients: tuple[Client, ...], lifetime_seconds: int) -> None:
        self.domain = domain
        self.audience = f"https://{domain}/api/v2/"
        self.lifetime_seconds = lifetime_seconds
        self._clients = {c.client_id: c for c in clients}
        self._key = secrets.token_bytes(32)

    def revoke_all(self) -> None:
        self._key = secrets.token_bytes(32)

    def issue(self, form: Mapping[str, Any], now: float | None = None) -> dict[str, Any]:
        now = time.time() if now is None else now
        grant_type = form.get("grant_type")
        if not grant_type:
            raise OAuthError(400, "invalid_request", "Missing required parameter: grant_type")
        if grant_type != "client_credentials":
            raise OAuthError(403, "unauthorized_client",
                             f"Grant type '{grant_type}' not allowed for the client.")
        client_id = str(form.get("client_id") or "")
        client = self._clients.get(client_id)
        if client is None:
            raise OAuthError(401, "invalid_client", "Unknown client or client not enabled")
        presented = str(form.get("client_secret") or "")
        if not hmac.compare_digest(presented.encode(), client.client_secret.encode()):
            raise OAuthError(401, "access_denied", "Unauthorized")
        audience = str(form.get("audience") or "")
        if audience != self.audience:
            raise OAuthError(403, "access_denied", f"Service not found: {audience}")
        if not client.granted:
            raise OAuthError(
                403, "access_denied",
                f'Client is not authorized to access "{self.audience}". You need to create a '
                '"client-grant" associated to this API.',
            )
        scope = " ".join(client.scopes)
        claims = {
            "iss": f"https://{self.domain}/",
            "sub": f"{client_id}@clients",
            "aud": self.audience,
            "iat": int(now),
            # Rounded up: a token lives at least its lifetime (never a fraction of a second).
            "exp": math.ceil(now + self.lifetime_seconds),
            "scope": scope,
            "gty": "client-credentials",
            "azp": client_id,
        }
        return {
            "access_token": self._sign(claims),
            "expires_in": self.lifetime_seconds,
            "scope": scope,
            "token_type": "Bearer",
        }

    def verify(self, authorization: str | None, now: float | None = None) -> Grant:
        now = time.time() if now is None else now
        if not authorization:
            raise ApiError(401, "Missing authentication")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise ApiError(401, "Bad HTTP authentication header format")
        try:
            header, payload, signature = token.split(".")
            expected = _b64(hmac.new(self._key, f"{header}.{payload}".encode(),
                                     hashlib.sha256).digest())
            if not hmac.compare_digest(expected, signature):
                raise ValueError("signature")
            claims = json.loads(_unb64(payload))
        except ValueError:
            raise ApiError(401, "Invalid token") from None
        if claims.get("aud") != self.audience:
            raise ApiError(401, "Bad audience: " + str(claims.get("aud")))
        if int(claims.get("exp", 0)) <= now:
            raise ApiError(401, "Expired token received for JSON Web Token validation")
        return Grant(str(claims["azp"]), frozenset(str(claims.get("scope", "")).split()))

    def _sign(self, claims: dict[str, Any]) -> str:
        header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
        payload = _b64(json.dumps(claims, separators=(",", ":")).encode())
        signature = hmac.new(self._key, f"{header}.{payload}".encode(), hashlib.sha256).digest()
        return f"{header}.{payload}.{_b64(signature)}"


def require_scope(grant: Grant, scope: str) -> None:
    if scope not in grant.scopes:
        raise insufficient_scope(scope)
