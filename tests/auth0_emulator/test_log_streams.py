"""Log streams (``/api/v2/log-streams``, type http) and the tenant log events a phone message
and a code entered write, delivered to a real HTTPS sink; every event is checked against
Auth0's tenant-logs schema (spec/log-events.schema.json). Rules: logstreams.py, logevents.py."""

from __future__ import annotations

import contextlib
import json
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest

from tests.fixtures.auth0 import make_client

from .conftest import deployed_action, token_for

SCHEMA = json.loads((Path(__file__).parent / "spec" / "log-events.schema.json").read_text())
FACTOR = 0.001  # batching 1 ms, retries 1-2 ms, round backoff from 30 ms
NUMBER = "+6591234567"
# Sends unless the code says otherwise.
PROVIDER = r"""
exports.onExecuteCustomPhoneProvider = async (event, api) => {
  if (event.notification.code === '333333') api.notification.drop('recipient refused');
};
"""
TWILIO_OPTIONS = {"provider": "twilio", "twilio_sid": "ACx", "twilio_token": "t0ken", "from": "+15550001111",
                  "use_phone_provider": True}


def valid_event(event: dict[str, Any]) -> dict[str, Any]:
    jsonschema.Draft202012Validator({**SCHEMA, "$ref": f"#/$defs/{event['type']}"}).validate(event)
    return event


@dataclass
class Sink:
    url: str
    received: list[dict[str, Any]] = field(default_factory=list)  # {headers, body}
    answers: list[int] = field(default_factory=list)  # statuses for the next POSTs, then 200
    delays: list[float] = field(default_factory=list)  # seconds to wait before answering the next POSTs
    fail_all: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    def items(self) -> list[dict[str, Any]]:
        """Every ``{log_id, data}`` item received, whatever the format."""
        out = []
        with self.lock:
            for post in self.received:
                if post["status"] // 100 != 2:
                    continue
                body = post["body"]
                if post["format"] == "array":
                    out += json.loads(body)
                elif body.strip():
                    out += [json.loads(line) for line in body.splitlines()]
        return out

    def wait_items(self, count: int, timeout: float = 15.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.items()
            if len(got) >= count:
                return got
            time.sleep(0.02)
        raise AssertionError(f"{len(self.items())} of {count} log events arrived")


@contextlib.contextmanager
def serve_sink(ca) -> Iterator[Sink]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
            with sink.lock:
                status = 500 if sink.fail_all else (sink.answers.pop(0) if sink.answers else 200)
                delay = sink.delays.pop(0) if sink.delays else 0.0
            time.sleep(delay)
            with sink.lock:
                sink.received.append({"headers": dict(self.headers), "body": body, "status": status,
                                      "path": self.path,
                                      "format": "array" if body.lstrip().startswith("[") else "lines"})
            try:
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()
            except OSError:
                pass  # the emulator stopped waiting

        def log_message(self, *args: Any) -> None:
            pass

    pair = ca.issue("log-sink")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(pair.cert), str(pair.key))
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    server.socket = context.wrap_socket(server.socket, server_side=True)
    sink = Sink(f"https://127.0.0.1:{server.server_address[1]}/logs")
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield sink
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def sink(sandbox_ca) -> Iterator[Sink]:
    with serve_sink(sandbox_ca) as state:
        yield state


@pytest.fixture
def tenant(tenant):
    tenant.set_log_stream_time_factor(FACTOR)
    return tenant


def http_stream(sink: Sink, name: str = "relay-audit", **sink_fields: Any) -> dict[str, Any]:
    return {"name": name, "type": "http",
            "sink": {"httpEndpoint": sink.url, "httpContentType": "application/json",
                     "httpContentFormat": "JSONLINES", "httpAuthorization": "Bearer sink-token",
                     **sink_fields}}


async def phone_provider(api, tenant) -> None:
    action = await deployed_action(api, "cpp", "custom-phone-provider", PROVIDER)
    await api.patch("/actions/triggers/custom-phone-provider/bindings",
                    json={"bindings": [{"ref": {"type": "action_id", "value": action["id"]}}]})
    created = await api.post("/branding/phone/providers", json={
        "name": "custom", "configuration": {"delivery_methods": ["text", "voice"]}, "credentials": {}})
    assert created.status_code == 201, created.text
    tenant.route_phone_messages_to("phone-provider")
    tenant.set_phone(message_types=["sms", "voice"])


# ---- the API ------------------------------------------------------------------------------
async def test_create_read_update_delete(api, sink):
    created = await api.post("/log-streams", json=http_stream(sink))
    assert created.status_code == 200  # as a real tenant answers (not 201)
    stream = created.json()
    assert stream["id"].startswith("lst_") and len(stream["id"]) == 20
    assert stream == {"id": stream["id"], "name": "relay-audit", "type": "http", "status": "active",
                      "sink": {"httpEndpoint": sink.url, "httpContentType": "application/json",
                               "httpContentFormat": "JSONLINES", "httpAuthorization": "Bearer sink-token"},
                      "isPriority": False}
    assert (await api.get(f"/log-streams/{stream['id']}")).json() == stream
    assert (await api.get("/log-streams")).json() == [stream]
    paused = await api.patch(f"/log-streams/{stream['id']}", json={"status": "paused"})
    assert paused.status_code == 200 and paused.json()["status"] == "paused"
    resink = await api.patch(f"/log-streams/{stream['id']}", json={
        "sink": {"httpEndpoint": sink.url, "httpContentFormat": "JSONARRAY"},
        "filters": [{"type": "category", "name": "other"}]})
    assert resink.json()["sink"] == {"httpEndpoint": sink.url, "httpContentFormat": "JSONARRAY",
                                     "httpContentType": "application/json"}  # replaced as a whole
    assert resink.json()["filters"] == [{"type": "category", "name": "other"}]
    assert (await api.delete(f"/log-streams/{stream['id']}")).status_code == 204
    gone = await api.get(f"/log-streams/{stream['id']}")
    assert gone.status_code == 404 and gone.json()["statusCode"] == 404


@pytest.mark.parametrize("change", [
    {"name": None}, {"name": ""}, {"type": "datadog"}, {"sink": None},
    {"sink": {"httpContentFormat": "JSONLINES"}},
    {"sink": {"httpEndpoint": "http://127.0.0.1:9/logs"}},
    {"sink": {"httpEndpoint": "https://127.0.0.1:9/logs", "httpContentFormat": "CSV"}},
    {"sink": {"httpEndpoint": "https://127.0.0.1:9/logs", "extra": 1}},
    {"sink": {"httpEndpoint": "https://127.0.0.1:9/logs", "httpCustomHeaders": [{"header": "Authorization",
                                                                                 "value": "x"}]}},
    {"filters": [{"type": "category", "name": "auth.ancillary.fail"}]},
    {"filters": [{"type": "event", "name": "other"}]},
    {"status": "paused"}, {"startFrom": "2026-01-01T00:00:00Z"}, {"pii_config": {}},
], ids=["no-name", "empty-name", "other-type", "no-sink", "no-endpoint", "plain-http", "bad-format",
        "sink-extra", "auth-custom-header", "unknown-category", "filter-type", "status-on-create",
        "start-from", "pii"])
async def test_create_validation(api, change):
    body = {"name": "s", "type": "http", "sink": {"httpEndpoint": "https://127.0.0.1:9/logs"}}
    body.update(change)
    body = {k: v for k, v in body.items() if v is not None}
    refused = await api.post("/log-streams", json=body)
    assert refused.status_code == 400, refused.text
    assert set(refused.json()) >= {"statusCode", "error", "message"} and refused.json()["statusCode"] == 400
    assert (await api.get("/log-streams")).json() == []


async def test_update_validation_names_and_the_limit(api, sink):
    first = (await api.post("/log-streams", json=http_stream(sink, "one"))).json()
    for change in ({"status": "suspended"}, {"type": "http"}, {}, {"sink": {"httpEndpoint": "ftp://x"}}):
        assert (await api.patch(f"/log-streams/{first['id']}", json=change)).status_code == 400, change
    assert (await api.post("/log-streams", json=http_stream(sink, "one"))).status_code == 409
    assert (await api.post("/log-streams", json=http_stream(sink, "two"))).status_code == 200
    third = await api.post("/log-streams", json=http_stream(sink, "three"))
    assert third.status_code == 400 and "maximum number of log streams" in third.json()["message"]
    assert (await api.patch(f"/log-streams/{first['id']}", json={"name": "two"})).status_code == 409


async def test_prioritized_streams_do_not_count_towards_the_limit(api, tenant, sink):
    tenant.set_log_stream_limit(1)
    assert (await api.post("/log-streams", json=http_stream(sink, "plain"))).status_code == 200
    assert (await api.post("/log-streams", json=http_stream(sink, "second"))).status_code == 400
    priority = await api.post("/log-streams", json={**http_stream(sink, "security"), "isPriority": True})
    assert priority.status_code == 200 and priority.json()["isPriority"] is True
    demoted = await api.patch(f"/log-streams/{priority.json()['id']}", json={"isPriority": False})
    assert demoted.status_code == 400  # it would count, over the limit


@pytest.mark.parametrize(("method", "path", "scope"), [
    ("GET", "/log-streams", "read:log_streams"), ("POST", "/log-streams", "create:log_streams"),
    ("GET", "/log-streams/lst_0000000000000001", "read:log_streams"),
    ("PATCH", "/log-streams/lst_0000000000000001", "update:log_streams"),
    ("DELETE", "/log-streams/lst_0000000000000001", "delete:log_streams"),
])
async def test_scopes(auth0_tenant, method, path, scope):
    others = ("read:log_streams", "create:log_streams", "update:log_streams", "delete:log_streams")
    tenant = auth0_tenant(clients=[make_client(scopes=tuple(s for s in others if s != scope))])
    async with httpx.AsyncClient(base_url=f"{tenant.base_url}/api/v2", verify=tenant.ssl_context,
                                 headers={"Authorization": f"Bearer {token_for(tenant)}"}) as http:
        answer = await http.request(method, path, json={} if method in ("POST", "PATCH") else None)
    assert answer.status_code == 403 and answer.json()["errorCode"] == "insufficient_scope"
    assert scope in answer.json()["message"]


# ---- the events and their delivery --------------------------------------------------------
async def test_mfa_events_reach_the_sink_with_its_headers(api, tenant, sink):
    await api.post("/log-streams", json=http_stream(sink, httpCustomHeaders=[{"header": "X-Env", "value": "prod"}]))
    await phone_provider(api, tenant)
    assert tenant.fire_phone_message(code="111111").outcome == "success"
    assert tenant.fire_phone_message(code="333333").outcome == "drop"
    assert tenant.fire_phone_message(code="111111", delivery_method="voice").outcome == "success"
    items = sink.wait_items(3)
    assert [i["data"]["type"] for i in items] == ["gd_send_sms", "gd_send_sms_failure", "gd_send_voice"]
    for item in items:
        assert item["log_id"] == item["data"]["log_id"]
        valid_event(item["data"])
    failure = items[1]["data"]["details"]["failure_details"]
    assert failure == {"errorCode": "drop", "message": "recipient refused"}
    assert items[0]["data"]["details"]["authenticator"]["phone_number"] == NUMBER
    assert items[0]["data"]["user_id"] and items[0]["data"]["client_id"] and items[0]["data"]["ip"]
    headers = sink.received[0]["headers"]
    assert headers["Authorization"] == "Bearer sink-token" and headers["X-Env"] == "prod"
    assert headers["Content-Type"] == "application/json"
    assert [e["type"] for e in tenant.logs()] == ["gd_send_sms", "gd_send_sms_failure", "gd_send_voice"]


async def test_nothing_is_logged_when_nothing_of_ours_ran(api, tenant, sink):
    await api.post("/log-streams", json=http_stream(sink))
    assert tenant.fire_phone_message().outcome == "no-handler"  # factor off on a new tenant
    assert tenant.logs() == []


async def test_the_formats(api, tenant, sink):
    await phone_provider(api, tenant)
    tenant.set_log_stream_time_factor(1.0)  # the real 1 s batch window: both events in one batch
    array = (await api.post("/log-streams", json=http_stream(sink, "array", httpContentFormat="JSONARRAY"))).json()
    tenant.fire_phone_message(code="111111")
    tenant.fire_phone_message(code="111111")
    sink.wait_items(2)
    assert len(sink.received) == 1 and sink.received[0]["format"] == "array"
    await api.delete(f"/log-streams/{array['id']}")
    sink.received.clear()
    await api.post("/log-streams", json=http_stream(sink, "object", httpContentFormat="JSONOBJECT"))
    tenant.fire_phone_message(code="111111")
    tenant.fire_phone_message(code="111111")
    sink.wait_items(2)
    assert len(sink.received) == 2  # JSONOBJECT: one event per POST
    assert all(isinstance(json.loads(post["body"]), dict) for post in sink.received)


async def test_filters_follow_auth0s_categories(api, tenant, sink):
    await phone_provider(api, tenant)
    tenant.set_sms_connections({"name": "sms", "options": TWILIO_OPTIONS})
    await api.post("/log-streams", json={**http_stream(sink), "filters": [
        {"type": "category", "name": "user.notification"}, {"type": "category", "name": "auth.login.fail"}]})
    tenant.fire_phone_message(code="111111")  # gd_send_sms: category "other"
    tenant.fire_phone_message(code="111111", connection="sms")  # cs: user.notification
    tenant.use_code(NUMBER, ok=False, connection="sms")  # f: auth.login.fail
    tenant.use_code(NUMBER, ok=True, connection="sms")  # s: auth.login.success
    items = sink.wait_items(2)
    time.sleep(0.2)
    assert [i["data"]["type"] for i in sink.items()] == ["cs", "f"]
    assert [e["type"] for e in tenant.logs()] == ["gd_send_sms", "cs", "f", "s"]
    cs = valid_event(items[0]["data"])
    assert (cs["connection"], cs["strategy"], cs["strategy_type"]) == ("sms", "sms", "passwordless")
    assert cs["details"]["body"]["phone_number"] == NUMBER and cs["details"]["transaction_id"]


async def test_events_before_the_stream_are_not_sent(api, tenant, sink):
    await phone_provider(api, tenant)
    tenant.fire_phone_message(code="111111")
    await api.post("/log-streams", json=http_stream(sink))
    tenant.fire_phone_message(code="333333")
    assert [i["data"]["type"] for i in sink.wait_items(1)] == ["gd_send_sms_failure"]


async def test_a_failing_sink_is_retried_three_times_a_round(api, tenant, sink):
    await phone_provider(api, tenant)
    stream = (await api.post("/log-streams", json=http_stream(sink))).json()
    sink.answers = [500, 503, 200]
    tenant.fire_phone_message(code="111111")
    sink.wait_items(1)
    attempts = tenant.log_stream_deliveries()["attempts"]
    assert [(a["attempt"], a["result"]) for a in attempts] == [(1, 500), (2, 503), (3, 200)]
    sink.answers = [500, 500, 500, 500, 200]  # a failed round, then a later round delivers
    tenant.fire_phone_message(code="111111")
    assert len(sink.wait_items(2)) == 2
    state = tenant.log_stream_deliveries()["streams"][0]
    assert state["id"] == stream["id"] and state["status"] == "active"
    assert state["delivered"] == 2 and state["pending"] == 0
    assert [e["result"] for e in state["errors"]] == [500]  # the failed round is in its health


async def test_no_answer_and_no_sink_are_failures(api, tenant, sink):
    await phone_provider(api, tenant)
    await api.post("/log-streams", json=http_stream(sink))
    sink.delays = [2.0]  # longer than an attempt may take (0.5 s at this time factor)
    tenant.fire_phone_message(code="111111")
    sink.wait_items(1)
    assert [a["result"] for a in tenant.log_stream_deliveries()["attempts"]] == ["timeout", 200]
    closed = "https://127.0.0.1:9/logs"  # nothing listens there
    await api.post("/log-streams", json={**http_stream(sink, "nowhere"), "sink": {"httpEndpoint": closed}})
    tenant.fire_phone_message(code="111111")
    deadline = time.monotonic() + 10
    while not any(a["result"] == "connection error" for a in tenant.log_stream_deliveries()["attempts"]):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    nowhere = [s for s in tenant.log_stream_deliveries()["streams"] if s["name"] == "nowhere"][0]
    assert nowhere["delivered"] == 0 and nowhere["pending"] == 1


async def test_a_paused_stream_keeps_its_events(api, tenant, sink):
    await phone_provider(api, tenant)
    stream = (await api.post("/log-streams", json=http_stream(sink))).json()
    await api.patch(f"/log-streams/{stream['id']}", json={"status": "paused"})
    tenant.fire_phone_message(code="111111")
    time.sleep(0.3)
    assert sink.received == []
    await api.patch(f"/log-streams/{stream['id']}", json={"status": "active"})
    assert [i["data"]["type"] for i in sink.wait_items(1)] == ["gd_send_sms"]


async def test_seven_days_of_failure_suspend_the_stream(api, tenant, sink):
    await phone_provider(api, tenant)
    tenant.set_log_stream_time_factor(5e-6)  # 7 days in about 3 s
    stream = (await api.post("/log-streams", json=http_stream(sink))).json()
    sink.fail_all = True
    tenant.fire_phone_message(code="111111")
    deadline = time.monotonic() + 20
    while (await api.get(f"/log-streams/{stream['id']}")).json()["status"] != "suspended":
        assert time.monotonic() < deadline, "never suspended"
        time.sleep(0.1)
    state = tenant.log_stream_deliveries()["streams"][0]
    assert state["pending"] == 1 and state["delivered"] == 0
    assert state["failing_since"] is not None
    failing = [a for a in tenant.log_stream_deliveries()["attempts"] if a["result"] == 500]
    assert failing[-1]["nominal"] - failing[0]["nominal"] >= 6 * 24 * 3600
    tenant.fire_phone_message(code="333333")  # dropped: the stream is suspended
    sink.fail_all = False
    tenant.set_log_stream_time_factor(FACTOR)
    restarted = await api.patch(f"/log-streams/{stream['id']}", json={"status": "active"})
    assert restarted.json()["status"] == "active"
    assert [i["data"]["type"] for i in sink.wait_items(1)] == ["gd_send_sms"]
    time.sleep(0.2)
    assert len(sink.items()) == 1


# ---- a code entered -----------------------------------------------------------------------
async def test_use_code_mfa(api, tenant, sink):
    await api.post("/log-streams", json=http_stream(sink))
    await phone_provider(api, tenant)
    tenant.fire_phone_message(code="111111")
    wrong = valid_event(tenant.use_code(NUMBER, ok=False))
    right = valid_event(tenant.use_code(NUMBER))
    assert (wrong["type"], right["type"]) == ("gd_auth_failed", "gd_auth_succeed")
    assert wrong["details"]["request"]["body"]["code"] == "******"  # never the code
    sent = tenant.logs()[0]
    assert right["details"]["session_id"] == sent["details"]["session_id"]  # one transaction
    assert right["user_id"] == sent["user_id"] and right["client_id"] == sent["client_id"]
    with pytest.raises(RuntimeError, match="409"):
        tenant.use_code(NUMBER)  # a code is good once
    with pytest.raises(RuntimeError, match="404"):
        tenant.use_code("+6599999999")
    tenant.fire_phone_message(code="333333")
    with pytest.raises(RuntimeError, match="409"):
        tenant.use_code(NUMBER)  # that one never went out
    assert tenant.use_code(NUMBER, ok=False)["type"] == "gd_auth_failed"
    assert [i["data"]["type"] for i in sink.wait_items(5)] == [
        "gd_send_sms", "gd_auth_failed", "gd_auth_succeed", "gd_send_sms_failure", "gd_auth_failed"]
    assert "111111" not in json.dumps(tenant.logs())


async def test_an_enrolment_code_completes_the_enrolment(api, tenant, sink):
    await phone_provider(api, tenant)
    await api.post("/log-streams", json={**http_stream(sink), "filters": [
        {"type": "category", "name": "user.notification"}]})
    enrol = tenant.fire_phone_message(code="111111", message_type="otp_enroll")
    assert tenant.logs()[0]["type"] == "gd_send_sms"
    assert valid_event(tenant.use_code(enrol, ok=False))["type"] == "gd_auth_failed"
    assert valid_event(tenant.use_code(enrol))["type"] == "gd_enrollment_complete"
    assert [i["data"]["type"] for i in sink.wait_items(1)] == ["gd_enrollment_complete"]  # user.notification


async def test_use_code_by_the_fired_message(api, tenant):
    await phone_provider(api, tenant)
    first = tenant.fire_phone_message(code="111111")
    second = tenant.fire_phone_message(code="111111", recipient="+6598765432")
    assert first.transaction_id and second.transaction_id and first.transaction_id != second.transaction_id
    event = tenant.use_code(first)  # the first, though the second is the latest
    assert event["details"]["session_id"] == first.transaction_id
    assert event["details"]["authenticator"]["phone_number"] == NUMBER
    assert tenant.fire_phone_message().transaction_id is not None
    tenant.route_phone_messages_to("phone-provider")
    tenant.set_phone(sms_factor=False)
    nothing = tenant.fire_phone_message()
    assert nothing.outcome == "no-handler" and nothing.transaction_id is None
    with pytest.raises(ValueError):
        tenant.use_code(nothing)


async def test_use_code_passwordless(api, tenant):
    await phone_provider(api, tenant)
    tenant.set_sms_connections({"name": "sms", "options": TWILIO_OPTIONS})
    tenant.fire_phone_message(code="111111", connection="sms")
    with pytest.raises(RuntimeError, match="404"):
        tenant.use_code(NUMBER)  # no MFA message was sent
    failed = valid_event(tenant.use_code(NUMBER, ok=False, connection="sms"))
    ok = valid_event(tenant.use_code(connection="sms"))
    assert (failed["type"], ok["type"]) == ("f", "s")
    connection_id = tenant.state()["connections"][0]["id"]
    for event in (failed, ok):
        assert (event["connection"], event["connection_id"], event["strategy"]) == ("sms", connection_id, "sms")
    assert ok["details"]["transaction_id"] == tenant.logs()[0]["details"]["transaction_id"]
    assert ok["user_id"].startswith("sms|") and failed["details"]["error"]["message"]
