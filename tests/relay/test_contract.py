"""Every row of the relay's HTTP contract, against the real process and the 8x8 emulator; the
rows on the shared relay also against a relay pod on the real node (the image as shipped)."""

from __future__ import annotations

import json
import re
import time

import pytest
from otp_relay.signing import sign
from otp_sandbox.eightbyeight import EightByEightEmulator

from tests.fixtures.relay import (
    RelayProcess,
    free_port,
    otp_body,
    relay_env,
    signed_headers,
)

from .conftest import (
    API_KEY,
    SIGNING_KEYS,
    SUBACCOUNT,
    assert_no_secrets,
    fresh_number,
    problem,
)

NEW_KEY = SIGNING_KEYS[1]
RELAY_TARGETS = ["process", pytest.param("pod", marks=[pytest.mark.cluster, pytest.mark.container,
                                                       pytest.mark.kubelet])]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "shared_relay" in metafunc.fixturenames:
        metafunc.parametrize("relay_target", RELAY_TARGETS, indirect=True, scope="module")


@pytest.fixture(scope="module")
def relay_target(request: pytest.FixtureRequest) -> tuple[RelayProcess, EightByEightEmulator]:
    """(relay, the 8x8 emulator it sends to) for the target this row runs on."""
    if request.param == "process":
        return request.getfixturevalue("process_shared_relay"), request.getfixturevalue("emulator_keys")
    return request.getfixturevalue("pod_shared_relay")


@pytest.fixture(scope="module")
def shared_relay(relay_target: tuple[RelayProcess, EightByEightEmulator]) -> RelayProcess:
    return relay_target[0]


@pytest.fixture
def emulator(request: pytest.FixtureRequest, emulator_keys: EightByEightEmulator) -> EightByEightEmulator:
    """The emulator of this row's relay (a row on the shared relay may run on the pod's), cleared."""
    target = request.getfixturevalue("relay_target")[1] if "relay_target" in request.fixturenames else emulator_keys
    target.clear()
    return target


def test_accepted_message_reaches_8x8_exactly(shared_relay: RelayProcess, emulator) -> None:
    number = fresh_number()
    response = shared_relay.post(otp_body(number, code="731904", client_ip="203.0.113.9"), NEW_KEY)
    assert response.status_code == 202, response.text
    answer = response.json()
    assert answer["status"] == "queued"
    [sent] = emulator.messages()
    assert answer["id"] == sent.umid
    assert (sent.subaccount, sent.destination, sent.text) == (SUBACCOUNT, number[1:], "Your verification code is 731904")
    assert (sent.source, sent.encoding, sent.client_ip) == ("ShopOTP", "GSM7", "203.0.113.9")
    assert re.fullmatch(r"[0-9a-f]{32}", sent.client_message_id)  # the request id (8x8 allows up to 50)
    assert response.headers["X-Request-Id"] == sent.client_message_id


def test_every_signing_key_in_the_file_is_accepted(shared_relay: RelayProcess, emulator) -> None:
    for key in SIGNING_KEYS:
        assert shared_relay.post(otp_body(fresh_number()), key).status_code == 202
    assert len(emulator.messages()) == 2


def test_path_prefix_serves_the_same_endpoint(shared_relay: RelayProcess, emulator) -> None:
    assert shared_relay.url.endswith("/prod")
    root = shared_relay.url.removesuffix("/prod")
    raw = json.dumps(otp_body(fresh_number())).encode()
    response = shared_relay.client.post(root + "/v1/messages", content=raw, headers=signed_headers(NEW_KEY, raw))
    assert response.status_code == 202


def test_public_listener_serves_only_the_send_endpoint(shared_relay: RelayProcess) -> None:
    root = shared_relay.url.removesuffix("/prod")
    for base in (root, shared_relay.url):
        for path in ("/healthz", "/readyz", "/metrics"):
            assert shared_relay.client.get(base + path).status_code == 404, base + path
            assert shared_relay.get(path).status_code == 200  # on the admin listener
    assert shared_relay.client.get(root + "/v1/messages").status_code == 405


@pytest.mark.parametrize(
    ("change", "detail_word"),
    [
        (lambda b: b.pop("recipient"), "recipient"),
        (lambda b: b.pop("text"), "text"),
        (lambda b: b.pop("message_type"), "message_type"),
        (lambda b: b.update(delivery_method="pigeon"), "delivery_method"),
        (lambda b: b.update(recipient="6591234567"), "E.164"),
        (lambda b: b.update(recipient="+65 9123 4567"), "E.164"),
        (lambda b: b.update(recipient="+6500000000"), "valid"),
        (lambda b: b.update(recipient=6591234567), "recipient"),
        (lambda b: b.update(text=""), "text"),
        (lambda b: b.update(client_ip="not-an-ip"), "client_ip"),
        (lambda b: b.update(code=123456), "code"),
    ],
)
def test_invalid_fields_are_400(shared_relay: RelayProcess, emulator, change, detail_word) -> None:
    body = otp_body(fresh_number(), code="555123")
    change(body)
    response = shared_relay.post(body, NEW_KEY)
    assert response.status_code == 400
    details = problem(response)
    assert detail_word in details["detail"]
    assert "555123" not in response.text and "6591" not in response.text
    assert emulator.messages() == []


@pytest.mark.parametrize("raw", [b"{not json", b"[]", b'"text"', b"", "{\"recipient\": \"\u00e9".encode()])
def test_malformed_json_is_400(shared_relay: RelayProcess, emulator, raw: bytes) -> None:
    response = shared_relay.post(raw, NEW_KEY)
    assert response.status_code == 400
    assert problem(response)["status"] == 400
    assert emulator.messages() == []


def test_signature_failures_are_401(shared_relay: RelayProcess, emulator) -> None:
    body = otp_body(fresh_number())
    raw = json.dumps(body).encode()
    url = shared_relay.url + "/v1/messages"
    ct = {"Content-Type": "application/json"}
    now = int(time.time())
    attempts = {
        "no headers": shared_relay.client.post(url, content=raw, headers=ct),
        "wrong key": shared_relay.post(body, "not-a-configured-key"),
        "too old": shared_relay.post(body, NEW_KEY, timestamp=int(time.time()) - 301),
        # whole-second timestamps: +302 from a fresh clock stays over 300 s ahead however
        # far into the current second the relay reads its clock
        "too new": shared_relay.post(body, NEW_KEY, timestamp=int(time.time()) + 302),
        "tampered body": shared_relay.client.post(
            url, content=raw.replace(b"verification", b"verificatioN"),
            headers={**ct, "X-Otp-Timestamp": str(now),
                     "X-Otp-Signature": _sig(raw, now)}),
        "not v1": shared_relay.client.post(url, content=raw, headers={
            **ct, "X-Otp-Timestamp": str(now), "X-Otp-Signature": _sig(raw, now).replace("v1=", "v2=")}),
    }
    for name, response in attempts.items():
        assert response.status_code == 401, name
        assert problem(response)["status"] == 401
    assert emulator.messages() == []


def _sig(raw: bytes, ts: int) -> str:
    return sign(NEW_KEY, ts, raw)


def test_inside_the_window_is_accepted(shared_relay: RelayProcess, emulator) -> None:
    assert shared_relay.post(otp_body(fresh_number()), NEW_KEY, timestamp=int(time.time()) - 290).status_code == 202
    assert shared_relay.post(otp_body(fresh_number()), NEW_KEY, timestamp=int(time.time()) + 290).status_code == 202


def test_replayed_request_sends_nothing_more(shared_relay: RelayProcess, emulator) -> None:
    """A captured request sent again (byte for byte, same signature) is the same message."""
    raw = json.dumps(otp_body(fresh_number())).encode()
    ts = int(time.time())
    first = shared_relay.post(raw, NEW_KEY, timestamp=ts)
    assert first.status_code == 202 and "Idempotent-Replayed" not in first.headers
    replay = shared_relay.post(raw, NEW_KEY, timestamp=ts)
    assert replay.status_code == 202 and replay.headers["Idempotent-Replayed"] == "true"
    assert replay.json() == first.json()
    assert len(emulator.messages()) == 1


def test_country_outside_the_allowlist_is_403(shared_relay: RelayProcess, emulator) -> None:
    response = shared_relay.post(otp_body("+14155552671"), NEW_KEY)
    assert response.status_code == 403
    assert "US" in problem(response)["detail"] and "4155552671" not in response.text
    assert shared_relay.post(otp_body("+60123456789"), NEW_KEY).status_code == 202  # MY allowed
    assert [m.destination for m in emulator.messages()] == ["60123456789"]


def test_oversized_body_is_413(shared_relay: RelayProcess, emulator) -> None:
    body = otp_body(fresh_number(), padding="x" * 16 * 1024)
    response = shared_relay.post(body, NEW_KEY)
    assert response.status_code == 413
    assert problem(response)["status"] == 413


def test_non_json_content_type_is_415(shared_relay: RelayProcess, emulator) -> None:
    response = shared_relay.post(otp_body(fresh_number()), NEW_KEY, headers={"Content-Type": "text/plain"})
    assert response.status_code == 415
    assert emulator.messages() == []


def test_voice_is_422_on_a_relay_without_voice(shared_relay: RelayProcess, emulator) -> None:
    response = shared_relay.post(otp_body(fresh_number(), delivery_method="voice"), NEW_KEY)
    assert response.status_code == 422
    assert problem(response)["detail"] == "voice delivery is not configured on this channel; use 'text'"
    assert emulator.messages() == [] and emulator.calls() == []


def test_per_recipient_limit_is_429_with_retry_after(shared_relay: RelayProcess, emulator) -> None:
    number = fresh_number()
    codes = [shared_relay.post(otp_body(number, code=f"10000{i}"), NEW_KEY).status_code for i in range(4)]
    assert codes == [202, 202, 202, 429]  # shared relay: 3/10m
    limited = shared_relay.post(otp_body(number, code="100009"), NEW_KEY)
    assert 590 <= int(limited.headers["Retry-After"]) <= 600
    assert shared_relay.post(otp_body(fresh_number()), NEW_KEY).status_code == 202  # others unaffected
    assert shared_relay.metric("otp_relay_limit_rejections_total", limit="recipient") >= 2


def test_global_limit_is_429_with_retry_after(make_relay, emulator) -> None:
    relay = make_relay(GLOBAL_LIMIT="2/m")
    codes = [relay.post(otp_body(fresh_number()), NEW_KEY).status_code for _ in range(3)]
    assert codes == [202, 202, 429]
    limited = relay.post(otp_body(fresh_number()), NEW_KEY)
    assert 1 <= int(limited.headers["Retry-After"]) <= 30
    assert relay.metric("otp_relay_limit_rejections_total", limit="global") == 2


def test_8x8_rejected_200_is_502_with_its_code(shared_relay: RelayProcess, emulator) -> None:
    number = fresh_number()
    emulator.reject_destination(number)
    response = shared_relay.post(otp_body(number), NEW_KEY)
    assert response.status_code == 502
    details = problem(response)
    assert details["upstream_code"] == "REJECTED" and details["upstream_status"] == 200
    assert number[1:] not in response.text


def test_8x8_http_error_is_502_with_its_code(make_relay, emulator) -> None:
    relay = make_relay(api_key="a-key-8x8-does-not-know")
    response = relay.post(otp_body(fresh_number()), NEW_KEY)
    assert response.status_code == 502
    details = problem(response)
    assert (details["upstream_status"], details["upstream_code"]) == (401, "1200")
    assert len(emulator.requests()) == 1  # a 4xx is 8x8's verdict: not retried


def test_8x8_500_is_502_and_not_retried(shared_relay: RelayProcess, emulator) -> None:
    emulator.inject("status", status=500)
    response = shared_relay.post(otp_body(fresh_number()), NEW_KEY)
    assert response.status_code == 502
    assert problem(response)["upstream_code"] == "2000"
    assert len(emulator.requests()) == 1


def test_not_ready_without_credentials_is_503(make_relay, emulator, tmp_path) -> None:
    relay = make_relay(wait_ready=False, API_KEY_FILE=str(tmp_path / "missing"))
    assert relay.get("/healthz").status_code == 200
    ready = relay.get("/readyz")
    assert ready.status_code == 503 and ready.json()["missing"] == ["api_key"]
    response = relay.post(otp_body(fresh_number()), NEW_KEY)
    assert response.status_code == 503 and "Retry-After" in response.headers
    assert emulator.requests() == []


def test_unreachable_8x8_is_503_after_bounded_retries(make_relay, emulator) -> None:
    relay = make_relay(base_url=f"https://127.0.0.1:{free_port()}")
    started = time.monotonic()
    response = relay.post(otp_body(fresh_number()), NEW_KEY)
    assert response.status_code == 503 and response.headers["Retry-After"] == "1"
    assert time.monotonic() - started < 30  # bounded (the relay's deadline is 6 s)
    assert relay.metric("otp_relay_upstream_responses_total", status="connect_error") == 3


def test_8x8_503_is_retried(shared_relay: RelayProcess, emulator) -> None:
    emulator.inject("status", status=503)
    response = shared_relay.post(otp_body(fresh_number()), NEW_KEY)
    assert response.status_code == 202
    assert [r["status"] for r in emulator.requests()] == [503, 200]
    assert len(emulator.messages()) == 1
    ids = {r["clientMessageId"] for r in emulator.requests()}
    assert len(ids) == 1  # the same clientMessageId on every attempt


def test_8x8_429_retry_after_is_honoured(shared_relay: RelayProcess, emulator) -> None:
    emulator.inject("status", status=429, retry_after=1)
    started = time.monotonic()
    response = shared_relay.post(otp_body(fresh_number()), NEW_KEY)
    assert response.status_code == 202
    assert time.monotonic() - started >= 1.0
    assert [r["status"] for r in emulator.requests()] == [429, 200]


def test_8x8_429_beyond_the_deadline_is_503_with_retry_after(shared_relay: RelayProcess, emulator) -> None:
    emulator.inject("status", status=429, retry_after=60)
    response = shared_relay.post(otp_body(fresh_number()), NEW_KEY)
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "60"
    assert len(emulator.requests()) == 1


def test_lost_answer_is_never_retried(shared_relay: RelayProcess, emulator) -> None:
    """8x8 took the message but the connection died before the answer: a retry could send a
    second SMS, so the relay answers 504 (outcome unknown), also to the caller's retry, and 8x8
    holds exactly one message."""
    emulator.inject("reset", after_accept=True)
    body = otp_body(fresh_number())
    response = shared_relay.post(body, NEW_KEY)
    assert response.status_code == 504
    assert "unknown" in problem(response)["detail"]
    assert shared_relay.post(body, NEW_KEY).status_code == 504
    assert len(emulator.messages()) == 1 and len(emulator.requests()) == 1


def test_probes_and_metrics(shared_relay: RelayProcess, emulator) -> None:
    before = shared_relay.metric("otp_relay_requests_total", outcome="accepted")
    assert shared_relay.post(otp_body(fresh_number()), NEW_KEY).status_code == 202
    assert shared_relay.get("/healthz").json() == {"status": "ok"}
    assert shared_relay.get("/readyz").json() == {"status": "ready", "state": "process"}
    text = shared_relay.get("/metrics").text
    for name in ("otp_relay_requests_total", "otp_relay_upstream_request_duration_seconds_bucket",
                 "otp_relay_upstream_responses_total", "otp_relay_limit_rejections_total",
                 "otp_relay_ready 1.0"):
        assert name in text
    assert shared_relay.metric("otp_relay_requests_total", outcome="accepted") == before + 1


def test_serves_https_with_its_own_certificate(emulator, sandbox_ca, relay_factory, tmp_path) -> None:
    pair = sandbox_ca.issue("relay-under-test")
    env = relay_env(tmp_path / "tls", base_url=emulator.base_url,
                    ssl_cert_file=sandbox_ca.directory / "trust-bundle.pem", api_key=API_KEY,
                    signing_keys=SIGNING_KEYS, SUBACCOUNT=SUBACCOUNT)
    relay = relay_factory(env, tls=pair, ca_file=sandbox_ca.cert_path)
    assert relay.url.startswith("https://")
    assert relay.post(otp_body(fresh_number()), NEW_KEY).status_code == 202


def test_logs_hold_no_secret_code_or_number(make_relay, emulator) -> None:
    """Drive every path that logs, then scan everything the process wrote."""
    relay = make_relay(PER_RECIPIENT="1/10m", ALLOWED_COUNTRIES="SG", LOG_LEVEL="DEBUG")
    numbers, codes = [fresh_number() for _ in range(4)], ["918273", "645321", "102938", "564738"]
    emulator.reject_destination(numbers[1])
    paths = [
        ("accepted", 202, lambda: relay.post(otp_body(numbers[0], code=codes[0]), NEW_KEY)),
        ("replayed", 202, lambda: relay.post(otp_body(numbers[0], code=codes[0]), NEW_KEY)),
        ("rate_limited", 429, lambda: relay.post(otp_body(numbers[0], code=codes[1]), NEW_KEY)),
        ("upstream_rejected", 502, lambda: relay.post(otp_body(numbers[1], code=codes[2]), NEW_KEY)),
        ("forbidden", 403, lambda: relay.post(otp_body("+14155552671", code=codes[3]), NEW_KEY)),
        ("unauthorized", 401, lambda: relay.post(otp_body(numbers[2], code=codes[3]), "wrong-key")),
        ("bad_request", 400, lambda: relay.post(otp_body("+1 415 555 2671", code=codes[3]), NEW_KEY)),
        ("outcome_unknown", 504, lambda: (emulator.inject("reset", after_accept=True),
                                          relay.post(otp_body(numbers[3], code=codes[3]), NEW_KEY))[1]),
    ]
    for outcome, status, send in paths:
        assert send().status_code == status, outcome
    assert relay.stop() == 0
    logs = relay.logs()
    logged = [r.get("outcome") for r in relay.log_records() if r.get("msg") == "send"]
    assert logged == [outcome for outcome, _, _ in paths]
    assert '"recipient":"***' in logs
    assert_no_secrets(logs, [API_KEY, *SIGNING_KEYS, *codes, *numbers, "+14155552671",
                             "Your verification code"])
