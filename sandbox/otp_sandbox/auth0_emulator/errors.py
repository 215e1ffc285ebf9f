"""Auth0 Management API error bodies: ``{statusCode, error, message, errorCode}``."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any


class ApiError(Exception):
    """An error the emulated Management API answers with (status + Auth0's body shape)."""

    def __init__(self, status: int, message: str, error_code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_code = error_code

    def body(self) -> dict[str, Any]:
        return error_body(self.status, self.message, self.error_code)


def error_body(status: int, message: str, error_code: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "statusCode": status,
        "error": HTTPStatus(status).phrase,
        "message": message,
    }
    if error_code is not None:
        body["errorCode"] = error_code
    return body


def bad_request(message: str, error_code: str | None = "invalid_body") -> ApiError:
    return ApiError(400, message, error_code)


def payload_error(detail: str) -> ApiError:
    return bad_request(f"Payload validation error: '{detail}'.")


def not_found(message: str, error_code: str | None = None) -> ApiError:
    return ApiError(404, message, error_code)


def conflict(message: str, error_code: str | None = None) -> ApiError:
    return ApiError(409, message, error_code)


def insufficient_scope(scope: str) -> ApiError:
    return ApiError(403, f"Insufficient scope, expected any of: {scope}", "insufficient_scope")


RATE_LIMITED = ApiError(429, "Global limit has been reached", "too_many_requests")
