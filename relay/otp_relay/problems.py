"""RFC 9457 problem details, the relay's only error shape."""

from __future__ import annotations

from dataclasses import dataclass, field

import orjson

CONTENT_TYPE = "application/problem+json"


@dataclass(frozen=True)
class Problem:
    status: int
    title: str
    detail: str
    headers: dict[str, str] = field(default_factory=dict)
    extra: dict[str, object] = field(default_factory=dict)

    def body(self, request_id: str) -> bytes:
        return orjson.dumps({
            "type": "about:blank", "title": self.title, "status": self.status,
            "detail": self.detail, "request_id": request_id, **self.extra,
        })
