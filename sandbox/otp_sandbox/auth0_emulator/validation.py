"""Small checks for request bodies and query strings, with Auth0's wording."""

from __future__ import annotations

from typing import Any, Mapping

from .errors import ApiError, payload_error


def body_object(body: Any, allowed: frozenset[str], required: tuple[str, ...] = ()) -> dict:
    """A JSON object whose keys are in ``allowed``, ``null`` values treated as absent."""
    if not isinstance(body, dict):
        raise payload_error("Expected type object but found type " + _json_type(body))
    extra = sorted(set(body) - allowed)
    if extra:
        raise payload_error("Additional properties not allowed: " + ",".join(extra))
    cleaned = {k: v for k, v in body.items() if v is not None}
    for key in required:
        if key not in cleaned:
            raise payload_error(f"Missing required property: {key}")
    return cleaned


def string(value: Any, name: str, *, allow_empty: bool = False) -> str:
    if not isinstance(value, str):
        raise payload_error(f"Expected type string but found type {_json_type(value)} ({name})")
    if not allow_empty and not value:
        raise payload_error(f"String is too short (0 chars), minimum 1 ({name})")
    return value


def boolean(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise payload_error(f"Expected type boolean but found type {_json_type(value)} ({name})")
    return value


def array(value: Any, name: str) -> list:
    if not isinstance(value, list):
        raise payload_error(f"Expected type array but found type {_json_type(value)} ({name})")
    return value


def page_params(query: Mapping[str, str], default_per_page: int = 50) -> tuple[int, int]:
    page = _query_int(query, "page", 0, minimum=0)
    per_page = _query_int(query, "per_page", default_per_page, minimum=1, maximum=100)
    return page, per_page


def query_bool(query: Mapping[str, str], name: str) -> bool | None:
    raw = query.get(name)
    if raw is None or raw == "":
        return None
    if raw.lower() in ("true", "1"):
        return True
    if raw.lower() in ("false", "0"):
        return False
    raise ApiError(400, f"Query validation error: 'Expected type boolean but found type string' "
                        f"on property {name}.", "invalid_query_string")


def _query_int(query: Mapping[str, str], name: str, default: int, *, minimum: int,
               maximum: int | None = None) -> int:
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, f"Query validation error: 'Expected type integer but found type "
                            f"string' on property {name}.", "invalid_query_string") from None
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"minimum {minimum}" if value < minimum else f"maximum {maximum}"
        raise ApiError(400, f"Query validation error: 'Value {value} is out of range, {bound}' "
                            f"on property {name}.", "invalid_query_string")
    return value


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"
