"""Start and drive the 8x8 emulator process (SMS and Voice) from tests, the demo and benchmarks."""

from __future__ import annotations

import json
import signal
import ssl
import subprocess
import sys
import threading
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..lifetime import die_with_this_process
from ..pki import CertificateAuthority

_START_TIMEOUT = 30.0


class EmulatorError(RuntimeError):
    pass


@dataclass(frozen=True)
class SentMessage:
    """A message as the emulator recorded it (destination in E.164 digits without the +;
    encoding as detected: GSM7 or UCS2)."""

    umid: str
    subaccount: str
    destination: str
    text: str
    source: str | None
    encoding: str
    sms_count: int
    client_message_id: str | None
    client_ip: str | None
    dlr_callback_url: str | None
    status: str
    batch_id: str | None
    expiry: str | None = None  # as the sender gave it (8x8 stops trying after it)
    track: str | None = None  # as the sender gave it: "Outcome", "None" or absent
    tracked: bool = False  # 8x8 tracks its conversion (track, or the subaccount's tracking)
    accepted_at: str | None = None  # ISO 8601 UTC on the emulator's clock (see advance_clock)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "SentMessage":
        return cls(
            umid=data["umid"], subaccount=data["subaccount"], destination=data["destination"],
            text=data["text"], source=data.get("source"), encoding=data["encoding"],
            sms_count=data["smsCount"], client_message_id=data.get("clientMessageId"),
            client_ip=data.get("clientIp"), dlr_callback_url=data.get("dlrCallbackUrl"),
            status=data["status"]["code"], batch_id=data.get("batchId"), expiry=data.get("expiry"),
            track=data.get("track"), tracked=bool(data.get("tracked")), accepted_at=data.get("acceptedAt"),
        )


@dataclass(frozen=True)
class ConversionFeedback:
    """Feedback 8x8 accepted (``POST .../messages/{umid}/feedback``): ``outcome`` success or
    failure, ``timestamp`` as the client gave it (None: absent), ``received_at`` on the
    emulator's clock, ``after_seconds`` since 8x8 accepted the message."""

    umid: str
    subaccount: str
    outcome: str
    timestamp: str | None
    received_at: str
    after_seconds: float
    destination: str
    client_message_id: str | None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "ConversionFeedback":
        return cls(umid=data["umid"], subaccount=data["subaccount"], outcome=data["outcome"],
                   timestamp=data["timestamp"], received_at=data["receivedAt"],
                   after_seconds=data["afterSeconds"], destination=data["destination"],
                   client_message_id=data["clientMessageId"])


@dataclass(frozen=True)
class PlacedCall:
    """A voice call (callflow session) as the emulator recorded it (numbers in E.164 digits
    without the +; ``text``/``voice_profile``/``repetition``/``speed`` of the first ``say``, all of
    them in ``says``; ``outcome``: what the emulator made of the call, with its ``kind``,
    ``sip_code`` (kept here: 8x8's session summary carries none) and ``duration_s``)."""

    session_id: str
    call_flow_request_id: str
    subaccount: str
    destination: str
    source: str
    text: str | None
    voice_profile: str | None
    repetition: int | None
    speed: float | None
    valid_until: str | None
    client_action_id: str | None
    says: tuple[dict[str, Any], ...]
    actions: tuple[dict[str, Any], ...]
    outcome: dict[str, Any]

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "PlacedCall":
        return cls(
            session_id=data["sessionId"], call_flow_request_id=data["callFlowRequestId"],
            subaccount=data["subaccount"], destination=data["destination"], source=data["source"],
            text=data["text"], voice_profile=data["voiceProfile"], repetition=data["repetition"],
            speed=data["speed"], valid_until=data["validUntil"], client_action_id=data["clientActionId"],
            says=tuple(data["says"]), actions=tuple(data["actions"]), outcome=data["outcome"],
        )


class EightByEightEmulator:
    """A running ``otp-sandbox sms-emulator`` process.

    ``base_url`` is what the relay gets as ``OTP_RELAY_SMS_BASE_URL``; clients trust the
    sandbox CA (``ca.cert_path``) through ``SSL_CERT_FILE``.
    """

    def __init__(self, process: subprocess.Popen, base_url: str, ca: CertificateAuthority,
                 log_path: Path) -> None:
        self.process = process
        self.base_url = base_url
        self.ca = ca
        self.log_path = log_path
        self._ssl = ssl.create_default_context(cafile=str(ca.cert_path))

    @classmethod
    def start(cls, ca: CertificateAuthority, workdir: Path, listen: str = "127.0.0.1:0") -> "EightByEightEmulator":
        workdir = Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        log_path = workdir / "sms-emulator.log"
        with open(log_path, "ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "otp_sandbox.eightbyeight", "--listen", listen,
                 "--state-dir", str(workdir), "--ca-dir", str(ca.directory)],
                stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL,
                preexec_fn=die_with_this_process(),
            )
        line = _read_line(process, _START_TIMEOUT)
        if not line:
            process.kill()
            process.wait()
            raise EmulatorError(f"the 8x8 emulator did not start; see {log_path}")
        return cls(process, json.loads(line)["url"], ca, log_path)

    # --- admin API ----------------------------------------------------------------------
    def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"{self.base_url}/__sandbox/{path}", data=data, method=method,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, context=self._ssl, timeout=10) as response:
            return json.loads(response.read() or b"null")

    def add_subaccount(self, subaccount_id: str, api_key: str, caller_ids: list[str] | tuple[str, ...] = ()) -> None:
        """Allow ``api_key`` for ``subaccount_id`` (a subaccount may hold several keys), and
        whitelist ``caller_ids`` as its voice call sources (as 8x8 does on request)."""
        self._call("POST", "subaccounts", {"id": subaccount_id, "api_key": api_key,
                                           "caller_ids": list(caller_ids)})

    def whitelist_caller_id(self, subaccount_id: str, number: str) -> list[str]:
        """Whitelist one more caller ID for the subaccount's calls; all of them, E.164 digits."""
        return self._call("POST", f"subaccounts/{subaccount_id}/caller-ids", {"caller_id": number})["caller_ids"]

    def calls(self) -> list[PlacedCall]:
        """Every voice call 8x8 created (since ``clear``), oldest first."""
        return [PlacedCall.from_json(c) for c in self._call("GET", "calls")]

    def set_call_outcome(self, destination: str, kind: str = "answered", *, after_ms: int = 0,
                         duration_s: int | None = None, sip_code: int | None = None,
                         error_code: int | None = None) -> None:
        """What happens to calls to ``destination`` from now on (until ``clear``).

        ``answered`` ``after_ms`` after 8x8 created the session, connected ``duration_s``
        (default: as long as its speech); ``no-answer`` or ``busy`` after ``after_ms``;
        ``failed`` with a SIP ``sip_code`` (default 503); ``error`` with one of 8x8's voice
        ``error_code`` values (default -9999); ``none``: no session summary. Without an outcome
        a call is answered at once. Summaries go only to a subaccount with a VSS webhook."""
        self._call("POST", "call-outcomes", {"destination": destination, "kind": kind, "after_ms": after_ms,
                                             "duration_s": duration_s, "sip_code": sip_code,
                                             "error_code": error_code})

    def set_voice_webhook(self, subaccount_id: str, url: str, http_auth_header: str | None = None, *,
                          kind: str = "VSS", enabled: bool = True) -> None:
        """Configure the subaccount's voice webhook of ``kind`` as 8x8's Webhooks API does
        (``POST .../webhooks``; ``http_auth_header`` is sent as the ``Authorization`` header).
        Until ``clear``."""
        self._call("POST", "voice-webhooks", {"subaccount": subaccount_id, "type": kind, "url": url,
                                              "httpAuthHeader": http_auth_header, "enabled": enabled})

    def add_speech_profile(self, code: str, description: str | None = None, gender: str | None = None) -> None:
        """Offer one more speech profile (``fr-FR-DeniseNeural``...) until ``clear``; the emulator
        starts with the profiles 8x8's documents name."""
        self._call("POST", "speech-profiles", {"code": code, "description": description, "gender": gender})

    def revoke_api_key(self, subaccount_id: str, api_key: str) -> None:
        self._call("POST", f"subaccounts/{subaccount_id}/revoke", {"api_key": api_key})

    def feedback(self) -> list[ConversionFeedback]:
        """Every conversion feedback 8x8 accepted (since ``clear``), oldest first; refused
        feedback is only in ``requests()`` (with its status)."""
        return [ConversionFeedback.from_json(f) for f in self._call("GET", "feedback")]

    def set_tracking(self, subaccount_id: str, enabled: bool = True) -> None:
        """Track conversion for the subaccount's sends that carry no ``track`` (8x8: "unless
        subaccount has been configured for tracking beforehand"); until ``clear``."""
        self._call("POST", "tracking", {"subaccount": subaccount_id, "enabled": enabled})

    def advance_clock(self, seconds: float) -> float:
        """Move the emulator's clock ``seconds`` ahead (the feedback window and ``accepted_at``
        use it; receipts and validation keep the wall clock); until ``clear``. The offset."""
        return self._call("POST", "clock", {"seconds": seconds})["clock_offset"]

    def messages(self) -> list[SentMessage]:
        return [SentMessage.from_json(m) for m in self._call("GET", "messages")]

    def requests(self) -> list[dict[str, Any]]:
        """Every request on an 8x8 send path: ``path``, ``status`` (int or "reset"),
        ``clientMessageId`` (and ``clientActionId`` for a callflow)."""
        return self._call("GET", "requests")

    def webhook_requests(self) -> list[dict[str, Any]]:
        """Every request on the Webhooks API (``.../webhooks``), oldest first: ``method``,
        ``path``, ``status`` (int or "reset"), and for a POST the body's ``type`` and ``url``."""
        return self._call("GET", "webhook-requests")

    def voice_webhooks(self, subaccount_id: str) -> dict[str, dict[str, Any]]:
        """The subaccount's voice webhooks by type as stored (``url``, ``enabled``...), read
        without going through (or being recorded by) the Webhooks API."""
        return {h["type"]: h for h in self._call("GET", f"subaccounts/{subaccount_id}/voice-webhooks")["webhooks"]}

    def clear(self) -> None:
        """Forget messages, calls, requests, faults, rejected destinations, outcomes, voice
        webhooks, added speech profiles, receipts, conversion feedback and subaccount tracking
        (pending receipts and summaries are cancelled, the time factor is back to 1, the clock
        back to the wall clock; keys and caller IDs stay)."""
        self._call("POST", "clear", {})

    def inject(self, kind: str, *, count: int | None = 1, ms: int = 0, status: int = 500,
               retry_after: int | None = None, code: int | None = None,
               after_accept: bool = False, api: str | None = None) -> None:
        """Inject a fault into the next ``count`` 8x8 requests (None: until cleared), to ``api``
        ``"sms"`` or ``"voice"`` only, or to either (None); ``"webhooks"``: the Webhooks API's
        requests (which no other fault touches).

        ``latency`` (``ms``), ``status`` (HTTP ``status``, optional ``retry_after`` seconds and
        8x8 ``code``), ``reset`` (connection reset; ``after_accept`` records the message as
        accepted first, i.e. the response is lost).
        """
        self._call("POST", "faults", {"kind": kind, "count": count, "ms": ms, "status": status,
                                      "retry_after": retry_after, "code": code,
                                      "after_accept": after_accept, "api": api})

    def clear_faults(self) -> None:
        self._call("DELETE", "faults")

    def reject_destination(self, destination: str) -> None:
        """Answer 200 with status REJECTED for this destination."""
        self._call("POST", "rejections", {"destination": destination})

    def set_outcome(self, destination: str, kind: str = "delivered", *, after_ms: int = 0,
                    error_code: int | None = None, error_message: str | None = None,
                    detail: str | None = None) -> None:
        """What happens to messages sent to ``destination`` from now on (until ``clear``).

        ``delivered`` or ``undelivered`` (with 8x8's delivery ``error_code``; ``error_message``
        is needed for codes the emulator does not name) ``after_ms`` after 8x8 accepted the
        message, or ``none``: no receipt. Without an outcome a message is delivered at once.
        Receipts go only to messages sent with a ``dlrCallbackUrl``.
        """
        self._call("POST", "outcomes", {"destination": destination, "kind": kind, "after_ms": after_ms,
                                        "error_code": error_code, "error_message": error_message,
                                        "detail": detail})

    def receipts(self) -> dict[str, Any]:
        """``attempts``: every receipt POST so far (``umid``, or ``sessionId`` for a voice
        session summary; ``attempt`` 1 = first, ``result``: HTTP status, "timeout", "connection
        error" or "not allowed", ``elapsed`` s since 8x8 accepted the message or call, ``body``);
        ``pending``: receipts and summaries still to be posted or retried; ``time_factor``: the
        current scale of the retry schedule (and of an answered call's connected time)."""
        return self._call("GET", "receipts")

    def set_receipt_time_factor(self, factor: float) -> None:
        """Scale the receipt retry schedule, attempt timeout and answered calls' connected time
        until ``clear`` (0 < factor <= 1; 1 is 8x8's schedule)."""
        self._call("POST", "receipts/settings", {"time_factor": factor})

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stdout:
            self.process.stdout.close()

    def __enter__(self) -> "EightByEightEmulator":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _read_line(process: subprocess.Popen, timeout: float) -> str:
    """First stdout line of ``process``, or "" on exit/timeout (bounded wait)."""
    result: list[bytes] = []
    stdout = process.stdout
    assert stdout is not None  # started with stdout=PIPE
    reader = threading.Thread(target=lambda: result.append(stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    return result[0].decode().strip() if result else ""


__all__ = ["ConversionFeedback", "EightByEightEmulator", "EmulatorError", "PlacedCall", "SentMessage"]
