"""What the relay learns about each code it sent, and the rule that listens to it.

The conversion tracker (``conversion.py``) records every accepted send, learns from the tenant's
log stream which codes were used, and tells 8x8. The conversion rule (``pumping.py``) is told
of each send and each conversion and, before a send, says whether the recipient's number prefix
or country is blocked. This module is the contract between the two: nothing else.

A listener never stores or logs ``Sent.recipient``; it keeps only what it derives from it
(the country and a number prefix).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class Sent:
    message_id: str  # 8x8's umid of the accepted send
    recipient: str  # E.164; a listener keeps only its country and prefix
    country: str  # ISO 3166 alpha-2 region of the recipient ("ZZ": unknown)
    at: float  # epoch seconds


@dataclass(frozen=True)
class Allowed:
    pass


@dataclass(frozen=True)
class Blocked:
    key: str  # what is blocked: a country ("GB") or a number prefix ("+4477009")
    until: float  # epoch seconds
    enforced: bool  # False: monitor mode, counted and logged, never refused


Gate = Allowed | Blocked


class ConversionListener(Protocol):
    async def check(self, recipient: str, country: str, now: float) -> Gate: ...

    async def sent(self, sent: Sent) -> None: ...

    async def converted(self, message_id: str, now: float) -> None: ...

    async def lift(self, key: str, now: float) -> bool: ...

    async def summary(self, now: float) -> dict[str, Any]: ...


class NoRule:
    """The listener when conversion blocking is off: allows everything, remembers nothing."""

    async def check(self, recipient: str, country: str, now: float) -> Gate:
        return Allowed()

    async def sent(self, sent: Sent) -> None:
        return None

    async def converted(self, message_id: str, now: float) -> None:
        return None

    async def lift(self, key: str, now: float) -> bool:
        return False

    async def summary(self, now: float) -> dict[str, Any]:
        return {"mode": "off", "prefixes": [], "blocks": []}
