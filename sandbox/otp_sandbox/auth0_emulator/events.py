"""The objects Auth0 hands to phone-message code: Action events and the Hook context."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from .errors import bad_request

MESSAGE_TYPES = ("otp_verify", "otp_enroll", "blocked_account", "change_password",
                 "password_breach")
DELIVERY_METHODS = ("text", "voice")
# Auth0 hands send-phone-message code "a phone number", not always E.164 (1-808-555-5555).
_PHONE_NUMBER = re.compile(r"^\+?[0-9][0-9 ().-]{5,20}$")


@dataclass(frozen=True)
class PhoneMessage:
    recipient: str
    text: str
    code: str | None = None
    message_type: str = "otp_verify"
    delivery_method: str = "text"
    locale: str = "en"
    client_ip: str = "203.0.113.9"
    # A passwordless login's code: the name of the `sms` connection it is sent for (None: MFA,
    # or the other phone messages of the tenant).
    connection: str | None = None

    @classmethod
    def from_dict(cls, data: Any) -> PhoneMessage:
        if not isinstance(data, dict):
            raise bad_request("expected a JSON object", None)
        recipient, text = data.get("recipient"), data.get("text")
        if not isinstance(recipient, str) or not _PHONE_NUMBER.match(recipient):
            raise bad_request("recipient must be a phone number, E.164 such as +6591234567 or "
                              "as Auth0's older examples write it (1-808-555-5555)", None)
        if not isinstance(text, str) or not text:
            raise bad_request("text is required", None)
        message = cls(
            recipient=recipient, text=text, code=data.get("code"),
            message_type=data.get("message_type") or "otp_verify",
            delivery_method=data.get("delivery_method") or "text",
            locale=data.get("locale") or "en",
            client_ip=data.get("client_ip") or "203.0.113.9",
            connection=data.get("connection") or None,
        )
        if message.message_type not in MESSAGE_TYPES:
            raise bad_request(f"message_type must be one of {', '.join(MESSAGE_TYPES)}", None)
        if message.delivery_method not in DELIVERY_METHODS:
            raise bad_request("delivery_method must be text or voice", None)
        return message


def _common(tenant: str, message: PhoneMessage, secrets: dict[str, str]) -> dict[str, Any]:
    return {
        "tenant": {"id": tenant},
        "client": {"client_id": "sandboxLoginApp0000000000000000", "name": "Sandbox Login App",
                   "metadata": {}},
        "request": {
            "ip": message.client_ip,
            "hostname": f"{tenant}.auth0.sandbox",
            "language": message.locale,
            "method": "POST",
            "user_agent": "Mozilla/5.0 (X11; Linux x86_64) otp-sandbox",
            "geoip": {"countryCode": "SG", "countryName": "Singapore", "cityName": "Singapore",
                      "timeZone": "Asia/Singapore", "continentCode": "AS"},
        },
        "user": {"user_id": "auth0|sandbox-user-1", "phone_number": message.recipient,
                 "email": "user@example.com", "app_metadata": {}, "user_metadata": {}},
        "secrets": dict(secrets),
        "configuration": {},
    }


def action_event(trigger: str, tenant: str, message: PhoneMessage,
                 secrets: dict[str, str]) -> dict[str, Any]:
    event = _common(tenant, message, secrets)
    if trigger == "custom-phone-provider":
        notification: dict[str, Any] = {
            "recipient": message.recipient,
            "as_text": message.text,
            "as_voice": f"<Response><Say>{message.text}</Say></Response>",
            "delivery_method": message.delivery_method,
            "locale": message.locale,
            "message_type": message.message_type,
        }
        if message.code is not None:
            notification["code"] = message.code
        event["notification"] = notification
    else:
        event["message_options"] = {
            "action": ("enrollment" if message.message_type == "otp_enroll"
                       else "second-factor-authentication"),
            "code": message.code,
            "message_type": "voice" if message.delivery_method == "voice" else "sms",
            "recipient": message.recipient,
            "text": message.text,
        }
    return event


def hook_args(tenant: str, message: PhoneMessage, secrets: dict[str, str]) -> dict[str, Any]:
    common = _common(tenant, message, secrets)
    context = {
        "message_type": "voice" if message.delivery_method == "voice" else "sms",
        "action": ("enrollment" if message.message_type == "otp_enroll"
                   else "second-factor-authentication"),
        "language": message.locale,
        "code": message.code,
        "ip": message.client_ip,
        "user_agent": common["request"]["user_agent"],
        "client_id": common["client"]["client_id"],
        "name": common["client"]["name"],
        "client_metadata": {},
        "user": common["user"],
        "webtask": {"secrets": dict(secrets)},
    }
    return {"recipient": message.recipient, "text": message.text, "context": context}
