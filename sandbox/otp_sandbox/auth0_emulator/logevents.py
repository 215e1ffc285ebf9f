"""The tenant log events a real tenant writes around a phone message, in Auth0's log format.

Event types and fields: auth0/docs-v2 ``main/docs/oas/tenant-logs/logs-schema.json`` (one schema
per type; the tests validate every emitted event against a copy, tests/auth0_emulator/spec/) and
``deploy-monitor/logs/log-event-type-codes.mdx``:

- MFA (``otp_verify``/``otp_enroll`` without a connection): ``gd_send_sms`` / ``gd_send_voice``
  when the code went out, ``gd_send_sms_failure`` / ``gd_send_voice_failure`` when it did not;
  ``gd_auth_succeed`` / ``gd_auth_failed`` when the user enters the code (launcher ``use_code``);
  for an enrolment code (``otp_enroll``) the right code logs ``gd_enrollment_complete`` "A first
  time MFA user has successfully enrolled" (category ``user.notification``), a wrong one
  ``gd_auth_failed`` ("a wrong code entered for SMS/Voice...").
- Passwordless SMS (a ``strategy: sms`` connection): ``cs`` "Passwordless login code has been
  sent" (``cls`` is the email code/link one: its schema requires ``email``); ``s`` (successful
  login) or ``f`` (failed login) with the connection, ``strategy: sms``, ``strategy_type:
  passwordless`` when the user enters the code.

Chosen where the sources are silent (stricter for a reader of the logs):

- Nothing is logged when nothing of ours ran (``no-handler``: the factor is off, or Auth0 or
  Twilio sends it) and for the non-MFA message types (blocked account, password reset...): the
  emulator does not model Auth0's own delivery. A passwordless code that fails to go out is not
  logged either (no documented type for it).
- ``gd_auth_failed`` must carry ``details.request.body.code`` (required by the schema): the
  emulator writes it masked (``******``), never the code typed.
- ``failure_details.errorCode`` of a failed send is the action's outcome (``drop``, ``retry``,
  ``error``), ``message`` its reason.
- ``environment_name`` is ``sandbox``; ``hostname`` ``{tenant}.auth0.sandbox``; the user and
  client are the fixed ones the Action event carries (``events.py``).
"""

from __future__ import annotations

import hashlib
import itertools
import secrets
import time
from dataclasses import dataclass
from typing import Any

from .clock import iso
from .events import PhoneMessage

USER_ID = "auth0|sandbox-user-1"
CLIENT_ID = "sandboxLoginApp0000000000000000"
CLIENT_NAME = "Sandbox Login App"
USER_AGENT = "Mozilla/5.0 (X11; Linux x86_64) otp-sandbox"
ENVIRONMENT = "sandbox"
MASKED_CODE = "******"
DESCRIPTIONS = {
    "gd_send_sms": "SMS for MFA successfully sent.",
    "gd_send_sms_failure": "Attempt to send SMS for MFA failed.",
    "gd_send_voice": "Voice call for MFA successfully made.",
    "gd_send_voice_failure": "Attempt to make Voice call for MFA failed.",
    "gd_auth_succeed": "Multi-factor authentication success.",
    "gd_auth_failed": "Multi-factor authentication failed.",
    "gd_enrollment_complete": "A first time MFA user has successfully enrolled using one of the factors.",
    "cs": "Passwordless login code has been sent",
    "s": "Successful login",
    "f": "Wrong phone number or verification code.",
}
_counter = itertools.count(1)


def log_id(ts: float) -> str:
    """56 digits like Auth0's (``900`` + date and time + a sequence), increasing over time."""
    stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime(ts)) + f"{int(ts * 1000) % 1000:03d}"
    return f"900{stamp}{next(_counter):036d}"[:56]


@dataclass
class SentCode:
    """A phone message the tenant logged as sent or failed, for ``use_code`` to refer to."""

    message: PhoneMessage
    sent: bool
    transaction_id: str
    connection_id: str | None
    used: bool = False


def _base(tenant: str, event_type: str, ts: float, ip: str) -> dict[str, Any]:
    return {"date": iso(ts), "type": event_type, "description": DESCRIPTIONS[event_type],
            "ip": ip, "user_agent": USER_AGENT, "tenant_name": tenant,
            "environment_name": ENVIRONMENT, "$event_schema": {"version": "1.0.0"},
            "log_id": log_id(ts)}


def _enrollment(tenant: str, message: PhoneMessage) -> tuple[dict[str, Any], dict[str, Any]]:
    ident = "sms|dev_" + hashlib.sha256(message.recipient.encode()).hexdigest()[:16]
    method = "voice" if message.delivery_method == "voice" else "sms"
    authenticator = {"id": ident, "type": method, "phone_number": message.recipient}
    enrollment = {"_id": ident, "tenant": tenant, "user_id": USER_ID, "phone_number": message.recipient,
                  "identifier": message.recipient, "name": message.recipient}
    return authenticator, enrollment


def _mfa(tenant: str, event_type: str, ts: float, message: PhoneMessage, transaction_id: str,
         extra: dict[str, Any] | None = None) -> dict[str, Any]:
    event = _base(tenant, event_type, ts, message.client_ip)
    authenticator, enrollment = _enrollment(tenant, message)
    event.update({"client_id": CLIENT_ID, "client_name": CLIENT_NAME, "user_id": USER_ID,
                  "user_name": message.recipient, "hostname": f"{tenant}.auth0.sandbox",
                  "details": {"authenticator": authenticator, "enrollment": enrollment,
                              "session_id": transaction_id, **(extra or {})}})
    return event


def sent_event(tenant: str, ts: float, code: SentCode, outcome: str, reason: str | None) -> dict[str, Any]:
    """The event of a phone message that ran our code (``outcome`` of the run)."""
    message = code.message
    if message.connection is not None:
        event = _base(tenant, "cs", ts, message.client_ip)
        event.update({
            "client_id": CLIENT_ID, "client_name": CLIENT_NAME, "connection": message.connection,
            "connection_id": code.connection_id or "", "strategy": "sms", "strategy_type": "passwordless",
            "user_name": message.recipient, "hostname": f"{tenant}.auth0.sandbox",
            "details": {"transaction_id": code.transaction_id, "body": {
                "authParams": {"audience": "", "redirect_uri": "", "response_type": "code",
                               "scope": "openid", "state": ""},
                "client_id": CLIENT_ID, "connection": message.connection, "ip": message.client_ip,
                "phone_number": message.recipient, "request_language": message.locale, "send": "code",
                "tenant": tenant, "user-agent": USER_AGENT, "username": message.recipient}}})
        return event
    voice = message.delivery_method == "voice"
    event_type = ("gd_send_voice" if voice else "gd_send_sms") + ("" if code.sent else "_failure")
    extra = None if code.sent else {"failure_details": {"errorCode": outcome,
                                                        "message": reason or "the phone provider failed"}}
    return _mfa(tenant, event_type, ts, message, code.transaction_id, extra)


def used_event(tenant: str, ts: float, code: SentCode, ok: bool) -> dict[str, Any]:
    """The event of the user entering the code (right or wrong)."""
    message = code.message
    if message.connection is None:
        extra: dict[str, Any] = {}
        if not ok:
            extra = {"request": {"auth": {"scopes": [], "strategy": "mfa"}, "body": {"code": MASKED_CODE},
                                 "ip": message.client_ip, "method": "POST", "path": "/mfa/challenge",
                                 "query": "", "userAgent": USER_AGENT},
                     "response": {"statusCode": 403, "body": {"error": "invalid_grant",
                                                              "error_description": "Invalid otp_code."}}}
        success = "gd_enrollment_complete" if message.message_type == "otp_enroll" else "gd_auth_succeed"
        return _mfa(tenant, success if ok else "gd_auth_failed", ts, message, code.transaction_id, extra)
    event = _base(tenant, "s" if ok else "f", ts, message.client_ip)
    details: dict[str, Any] = {"transaction_id": code.transaction_id, "prompts": []}
    if not ok:
        details["error"] = {"message": DESCRIPTIONS["f"], "oauthError": "access_denied"}
    event.update({"client_id": CLIENT_ID, "client_name": CLIENT_NAME, "connection": message.connection,
                  "connection_id": code.connection_id or "", "strategy": "sms",
                  "strategy_type": "passwordless", "hostname": f"{tenant}.auth0.sandbox",
                  "user_name": message.recipient, "details": details})
    if ok:
        event["user_id"] = "sms|" + hashlib.sha256(message.recipient.encode()).hexdigest()[:24]
    return event


def new_transaction() -> str:
    return secrets.token_urlsafe(24)
