"""The canary: one test number (``--canary-number``) the operator has Auth0 send a test message
to now and then, to prove the whole path (Auth0 -> relay -> 8x8 -> phone) works.

A send to it is not a user's: it is never counted in, nor refused by, the limits that protect
real users (global bucket, per-recipient window, prefix and country windows, client IP); it has
its own small fixed cap instead (``CAP``, shared through the state store when there is one), so
a leaked signing key cannot pump the canary number either. Every other check applies.

The relay keeps the canary's last attempt (shared through the store when there is one, so every
replica answers the same): when it was sent, its state, 8x8's error code, a reason from fixed
sets (never text a client or a receipt sender wrote) and, once delivered, how long delivery
took. ``GET /v1/delivery-summary`` shows it under ``"canary"``; the number itself is shown
nowhere (the record does not hold it).
"""

from __future__ import annotations

import time
from typing import Any, Protocol

from .config import Rate
from .policy import Window

CAP = Rate(limit=12, window=3600.0)  # canary sends per hour at most (the operator asks every >= 5m)
CAP_RULE = "canary"
STATES = ("sent", "rejected", "delivered", "undelivered")
# what a send's outcome says (the reason of a state set by the send itself)
REASONS = {
    "accepted": "", "rejected": "8x8 rejected the message", "failed": "8x8 failed or was unreachable",
    "unknown": "8x8 did not answer in time", "capped": f"canary cap of {CAP.limit}/h reached",
}
OUTCOMES = ("accepted", "rejected", "failed", "unknown", "capped")  # the metric's label values
RETENTION = 48 * 3600  # seconds the record lives after its last change (8x8's receipt window)
# 8x8 receipt states -> the canary's (queued, sent: nothing new)
_FROM_RECEIPT = {"delivered": "delivered", "undelivered": "undelivered",
                 "rejected": "undelivered"}


def rfc3339(at: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))


def cap_window() -> Window:
    """The canary's own fixed-window count (the only limit a canary send is charged to)."""
    return Window(CAP_RULE, CAP_RULE, CAP.limit, CAP.window, 1)


def record_of_send(outcome: str, at: float, umid: str = "", error_code: str = "") -> dict[str, str]:
    """The record a send leaves: ``outcome`` one of OUTCOMES."""
    state = "sent" if outcome == "accepted" else "rejected"
    return {"sentAt": repr(at), "state": state, "errorCode": error_code, "reason": REASONS[outcome],
            "umid": umid.lower()}


def after_receipt(record: dict[str, str], umid: str, state: str, error_code: str, reason: str,
                  now: float) -> dict[str, str] | None:
    """The record once a counted receipt of ``umid`` arrived, or None when it changes nothing
    (another message's receipt, a state that is not final, or a final state already set)."""
    new = _FROM_RECEIPT.get(state)
    if new is None or record.get("umid") != umid or record.get("state") != "sent":
        return None
    changed = {**record, "state": new, "errorCode": error_code, "reason": reason}
    if new == "delivered":
        changed["deliverySeconds"] = repr(max(0.0, now - float(record["sentAt"])))
    return changed


def shown(record: dict[str, str] | None) -> dict[str, Any] | None:
    """The summary's ``canary`` object (no umid: it is the relay's key, not the operator's)."""
    if not record:
        return None
    answer: dict[str, Any] = {"sentAt": rfc3339(float(record["sentAt"])), "state": record["state"],
                              "errorCode": record.get("errorCode", ""), "reason": record.get("reason", "")}
    if record.get("deliverySeconds"):
        answer["deliverySeconds"] = round(float(record["deliverySeconds"]), 3)
    return answer


class CanaryStore(Protocol):
    async def last(self) -> dict[str, str] | None: ...

    async def put(self, record: dict[str, str]) -> None: ...

    async def receipt(self, umid: str, state: str, error_code: str, reason: str) -> None: ...


class MemoryCanary:
    def __init__(self) -> None:
        self._record: dict[str, str] | None = None

    async def last(self) -> dict[str, str] | None:
        return self._record

    async def put(self, record: dict[str, str]) -> None:
        self._record = record

    async def receipt(self, umid: str, state: str, error_code: str, reason: str) -> None:
        if self._record is not None:
            changed = after_receipt(self._record, umid, state, error_code, reason, time.time())
            if changed is not None:
                self._record = changed


# KEYS: the record's hash; ARGV: umid, new state, error code, reason, now (s), retention s.
# Changes the record only while it is the "sent" record of that very umid.
_RECEIPT = """
local r = redis.call('HMGET', KEYS[1], 'umid', 'state', 'sentAt')
if r[1] ~= ARGV[1] or r[2] ~= 'sent' then return 0 end
redis.call('HSET', KEYS[1], 'state', ARGV[2], 'errorCode', ARGV[3], 'reason', ARGV[4])
if ARGV[2] == 'delivered' then
  redis.call('HSET', KEYS[1], 'deliverySeconds', tostring(math.max(0, tonumber(ARGV[5]) - tonumber(r[3]))))
end
redis.call('EXPIRE', KEYS[1], ARGV[6])
return 1
"""


class RedisCanary:
    """The record in the relay's state store: every replica shows the same last attempt. If the
    store does not answer, the summary leaves the canary out and a receipt changes nothing."""

    def __init__(self, client: Any, prefix: str) -> None:
        from redis.exceptions import RedisError  # noqa: PLC0415  redis only with a store

        self._client, self._key = client, f"{{{prefix}}}:canary"
        self._errors = (RedisError, OSError)
        self._receipt = client.register_script(_RECEIPT)

    async def last(self) -> dict[str, str] | None:
        try:
            return await self._client.hgetall(self._key) or None
        except self._errors:
            return None

    async def put(self, record: dict[str, str]) -> None:
        try:
            async with self._client.pipeline(transaction=True) as pipe:  # never a key without TTL
                pipe.delete(self._key)
                pipe.hset(self._key, mapping=record)
                pipe.expire(self._key, RETENTION)
                await pipe.execute()
        except self._errors:
            pass

    async def receipt(self, umid: str, state: str, error_code: str, reason: str) -> None:
        new = _FROM_RECEIPT.get(state)
        if new is None:
            return
        try:
            await self._receipt(keys=[self._key],
                                args=[umid, new, error_code, reason, repr(time.time()), RETENTION])
        except self._errors:
            pass


def store_for(state: Any, prefix: str) -> CanaryStore:
    client = getattr(state, "client", None)
    return RedisCanary(client, prefix) if client is not None else MemoryCanary()
