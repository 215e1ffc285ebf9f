"""spec.conversion on the operator's pure side: validation, the CRD's agreement, the relay's
environment and token mount, the log-stream token Secret and its rotation, the condition."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
import yaml

from otp_operator import names, receipt_tokens, render, spec, status
from otp_operator.auth0.model import LOG_STREAM_FILTERS, DesiredLogStream, ObservedLogStream, plan_log_stream
from otp_operator.spec import SpecError, parse_channel
from tests.support.builders import OWNER, shop_spec

ROOT = Path(__file__).resolve().parents[2]
STORE = {"url": "redis://redis.cache.svc:6379/0"}


def conversion_channel(conversion: dict | None, **relay):
    body = shop_spec(**({"stateStore": STORE} | relay))
    if conversion is not None:
        body["conversion"] = conversion
    return parse_channel("shop", "prod", body)


def env_of(children) -> dict[str, str]:
    [deployment] = [m for m in children.apply if m["kind"] == "Deployment"]
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e["value"] for e in container["env"]}


def deployment_of(children) -> dict:
    return next(m for m in children.apply if m["kind"] == "Deployment")


def render_for(ch, tokens=(("tok-1",), "")):
    return render.render_children(ch, image="img:1", signing_keys=("k1",), secrets_checksum="abc", owner=OWNER,
                                  log_stream_tokens=tokens)


def crd_conversion() -> dict:
    crd = yaml.safe_load(ROOT.joinpath("crds", "otpchannels.otprelay.io.yaml").read_text())
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["conversion"]


def test_an_empty_block_turns_conversion_on_with_the_crd_defaults():
    ch = conversion_channel({})
    assert ch.conversion == spec.ConversionSpec(failure_after="10m", mode="monitor")
    props = crd_conversion()["properties"]
    assert props["enabled"]["default"] is True
    assert props["failureAfter"]["default"] == spec.CONVERSION_DEFAULT_FAILURE_AFTER
    blocking = props["blocking"]["properties"]
    assert blocking["mode"]["default"] == spec.CONVERSION_DEFAULT_MODE
    assert tuple(blocking["mode"]["enum"]) == spec.CONVERSION_MODES
    assert blocking["allow"]["maxItems"] == spec.CONVERSION_MAX_ALLOW
    assert blocking["minSample"]["minimum"] == spec.CONVERSION_MIN_SAMPLE
    assert (blocking["maxBlockedSharePercent"]["minimum"], blocking["maxBlockedSharePercent"]["maximum"]) == (1, 100)
    assert "duration('5m')" in blocking["blockFor"]["x-kubernetes-validations"][0]["rule"]
    assert "< duration('15m')" in props["failureAfter"]["x-kubernetes-validations"][0]["rule"]


def test_absent_or_disabled_is_off():
    assert conversion_channel(None).conversion is None
    assert conversion_channel({"enabled": False, "failureAfter": "20m"}).conversion is None


@pytest.mark.parametrize(("conversion", "relay", "says"), [
    ({"failureAfter": "15m"}, {}, "less than 15m (8x8 takes conversion feedback only within 15 minutes"),
    ({"failureAfter": "1d"}, {}, "spec.conversion.failureAfter '1d' is not a duration"),
    ({"blocking": {"mode": "block"}}, {}, "spec.conversion.blocking.mode must be one of off, monitor, enforce"),
    ({"blocking": {"allow": ["gb"]}}, {}, "'gb' is neither an ISO country code"),
    ({"blocking": {"allow": ["+123456789"]}}, {}, "+ and 1 to 8 digits"),
    ({"blocking": {"allow": ["+"]}}, {}, "'+' is neither"),
    ({"blocking": {"allow": [f"+{n}" for n in range(101)]}}, {}, "at most 100 entries"),
    ({"blocking": {"minSample": 4}}, {}, "minSample must be an integer of at least 5"),
    ({"blocking": {"blockFor": "4m"}}, {}, "blockFor must be at least 5m"),
    ({"blocking": {"maxBlockedSharePercent": 0}}, {}, "from 1 to 100"),
    ({}, {"stateStore": None}, "spec.conversion with 2 replicas needs spec.relay.stateStore: Auth0's log stream"),
])
def test_bad_conversion_settings_are_refused_naming_the_field(conversion, relay, says):
    with pytest.raises(SpecError) as error:
        conversion_channel(conversion, **relay)
    assert says in str(error.value)


def test_one_replica_needs_no_state_store_and_good_entries_pass():
    ch = conversion_channel({"blocking": {"mode": "enforce", "allow": ["GB", "+4477", "+1"], "minSample": 5,
                                          "blockFor": "1h", "maxBlockedSharePercent": 20}},
                            replicas=1, stateStore=None)
    assert ch.conversion == spec.ConversionSpec("10m", "enforce", ("GB", "+4477", "+1"), 5, "1h", 20)


def test_the_relay_gets_the_contract_env_and_the_token_mount_only_with_conversion():
    ch = conversion_channel({"failureAfter": "12m", "blocking": {"mode": "enforce", "allow": ["GB", "+4477"],
                                                                 "minSample": 30, "blockFor": "2h",
                                                                 "maxBlockedSharePercent": 10}})
    children = render_for(ch)
    env = env_of(children)
    assert {k: v for k, v in env.items() if "CONVERSION" in k or "LOG_TOKEN" in k} == {
        "OTP_RELAY_CONVERSION": "true",
        "OTP_RELAY_LOG_TOKEN_FILE": "/var/run/otp-relay/log-stream/tokens",
        "OTP_RELAY_CONVERSION_FAILURE_AFTER": "12m",
        "OTP_RELAY_CONVERSION_BLOCKING": "enforce",
        "OTP_RELAY_CONVERSION_ALLOW": "GB,+4477",
        "OTP_RELAY_CONVERSION_MIN_SAMPLE": "30",
        "OTP_RELAY_CONVERSION_BLOCK_FOR": "2h",
        "OTP_RELAY_CONVERSION_MAX_BLOCKED_SHARE": "10",
    }
    pod = deployment_of(children)["spec"]["template"]["spec"]
    [mount] = [m for m in pod["containers"][0]["volumeMounts"] if m["mountPath"] == names.LOG_TOKEN_MOUNT_DIR]
    [volume] = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    assert volume["secret"]["secretName"] == "prod-log-stream-token" and mount["readOnly"]
    secret = next(m for m in children.apply if m["metadata"]["name"] == "prod-log-stream-token")
    assert base64.b64decode(secret["data"]["tokens"]).decode() == "tok-1\n"
    assert secret["metadata"]["labels"][names.LABEL_SECRET] == names.SECRET_RELAY
    assert secret["metadata"]["ownerReferences"] == [OWNER]


def test_only_the_blocking_mode_is_always_sent():
    env = env_of(render_for(conversion_channel({})))
    assert {k for k in env if k.startswith("OTP_RELAY_CONVERSION")} == {
        "OTP_RELAY_CONVERSION", "OTP_RELAY_CONVERSION_FAILURE_AFTER", "OTP_RELAY_CONVERSION_BLOCKING"}


def test_without_conversion_nothing_is_mounted_and_a_left_over_secret_is_deleted():
    ch = conversion_channel(None)
    children = render_for(ch, tokens=(("old",), ""))
    env = env_of(children)
    assert not [k for k in env if "CONVERSION" in k or "LOG_TOKEN" in k]
    pod = deployment_of(children)["spec"]["template"]["spec"]
    assert all(v["name"] != "log-stream-token" for v in pod["volumes"])
    assert all(m["metadata"]["name"] != "prod-log-stream-token" for m in children.apply)
    assert render.ChildRef("v1", "Secret", "shop", "prod-log-stream-token") in children.delete
    # no such Secret: nothing to delete (and no read of it)
    assert all(ref.kind != "Secret" for ref in render_for(ch, tokens=None).delete)


def secret_of(kind: receipt_tokens.RotatingTokens, tokens: tuple[str, ...], rotation: str) -> dict:
    return {"data": {kind.token_key: base64.b64encode("".join(f"{t}\n" for t in tokens).encode()).decode(),
                     kind.rotation_key: base64.b64encode(rotation.encode()).decode()}}


def test_the_log_stream_token_rotates_once_per_annotation_value_keeping_the_previous():
    kind = receipt_tokens.LOG_STREAM
    assert kind.annotation == "otprelay.io/rotate-log-stream-token"
    assert kind.plan(None, None, generate=lambda: "t1") == (("t1",), "")
    assert kind.plan(secret_of(kind, ("t1",), ""), None, generate=lambda: "t2") == (("t1",), "")
    rotated = kind.plan(secret_of(kind, ("t1",), ""), "monday", generate=lambda: "t2")
    assert rotated == (("t1", "t2"), "monday")
    assert kind.plan(secret_of(kind, *rotated), "monday", generate=lambda: "t3") == rotated
    assert kind.requested({names.ANNOTATION_ROTATE_LOG_STREAM_TOKEN: "x"}) == "x"


DESIRED = DesiredLogStream("otp-relay-shop-prod", "https://otp.shop.example/prod/v1/auth0-logs", ("a", "b"))


def observed(**fields) -> ObservedLogStream:
    values = dict(id="lst_1", name=DESIRED.name, type="http", status="active", endpoint=DESIRED.endpoint,
                  authorization="Bearer b", content_format="JSONARRAY", content_type="application/json",
                  filters=tuple(sorted(LOG_STREAM_FILTERS)))
    return ObservedLogStream(**(values | fields))


def test_plan_writes_nothing_for_a_matching_stream_and_never_shows_a_token():
    assert not plan_log_stream(DESIRED, [observed()], relay_ready=True).writes
    plan = plan_log_stream(DESIRED, [observed(authorization="Bearer a")], relay_ready=True)
    assert plan.sink and plan.changed == ("bearer token",)
    assert "'a'" not in repr(DESIRED) and "Bearer" not in repr(observed())
    assert not plan_log_stream(DESIRED, [observed(authorization="Bearer a", status="paused")],
                               relay_ready=False).writes


def test_conversion_tracking_never_changes_ready():
    ok = status.true("Available", "up")
    conds = status.conditions([], 1, ok, status.true("Synced", "s"), "t",
                              conversion=status.false("LogStreamsNotAllowed", "plan"))
    by_type = {c["type"]: c for c in conds}
    assert by_type["Ready"]["status"] == "True"
    assert by_type[status.CONVERSION_TRACKING]["reason"] == "LogStreamsNotAllowed"
    assert status.CONVERSION_TRACKING not in {c["type"] for c in status.conditions([], 1, ok, ok, "t")}


class StubPool:
    """The Auth0 pool's log-stream calls, answered from a script."""

    def __init__(self, answers):
        self.answers, self.calls = list(answers), []

    async def ensure_log_stream(self, credentials, desired, relay_ready, guard=None):
        self.calls.append(("ensure", desired, relay_ready))
        return self.answers.pop(0)

    async def remove_log_stream(self, credentials, desired, guard=None):
        self.calls.append(("remove", desired, None))
        return ["log stream 'otp-relay-shop-prod' (lst_1)"]


def _conversion_pass(monkeypatch, ch, pool, rolled_out, previous=None, mem=None):
    import asyncio  # noqa: PLC0415
    import types  # noqa: PLC0415

    from otp_operator import reconcile, rotation  # noqa: PLC0415
    from otp_operator.auth0 import Auth0Credentials  # noqa: PLC0415
    from otp_operator.runtime import ChannelMemory, Clock  # noqa: PLC0415

    events: list[tuple[str, str]] = []
    monkeypatch.setattr(reconcile, "_event", lambda body, reason, message, warning=False: events.append(
        (reason, message)))
    if mem is None:
        mem = ChannelMemory()
        mem.auth0.credentials_secret = ch.auth0.credentials_secret  # protected already
    rt = types.SimpleNamespace(auth0=pool, kube=object(), config=types.SimpleNamespace(drift_interval=600.0),
                               clock=Clock())
    run = types.SimpleNamespace(body={}, mem=mem, guard=lambda rt: None)
    plan = rotation.SigningPlan(("k",), "k", rotation.SigningState.from_status(None))
    relay = reconcile.RelayPhase(status.true("Available", "up"), 2, rolled_out, "sum", plan, ("t1", "t2"))
    phase = reconcile.Auth0Phase(status.true("Synced", "s"), None, None, plan.state, [], previous)
    asyncio.run(reconcile._track_conversion(rt, run, ch, relay, Auth0Credentials("d", "id", "secret"), None,
                                            phase))
    return phase, events, mem


def test_the_auth0_phase_creates_the_stream_once_the_relay_is_ready_then_leaves_it(monkeypatch):
    from otp_operator.auth0 import sync as auth0_sync  # noqa: PLC0415

    ch = conversion_channel({})
    pool = StubPool([auth0_sync.LogStreamResult(False, auth0_sync.LOG_STREAM_WAITING, "later"),
                     auth0_sync.LogStreamResult(True, auth0_sync.LOG_STREAM_ACTIVE, "sends", "lst_1", created=True,
                                                writes=1)])
    phase, events, mem = _conversion_pass(monkeypatch, ch, pool, rolled_out=False)
    assert (phase.conversion.status, pool.calls[0][2]) == ("Unknown", False)
    phase, events, mem = _conversion_pass(monkeypatch, ch, pool, rolled_out=True, previous=phase.conversion, mem=mem)
    [(_, desired, ready)] = pool.calls[1:]
    assert ready and desired.tokens == ("t1", "t2") and desired.authorization == "Bearer t2"
    assert desired.endpoint == "https://otp.shop.example/prod/v1/auth0-logs"
    assert (phase.conversion.status, phase.conversion.reason) == ("True", "LogStreamActive")
    assert [reason for reason, _ in events] == ["LogStreamCreated"]
    assert all("t2" not in message for _, message in events)
    _conversion_pass(monkeypatch, ch, pool, rolled_out=True, previous=phase.conversion, mem=mem)
    assert len(pool.calls) == 2, "nothing changed: no Auth0 request before the drift interval"


def test_turning_conversion_off_deletes_the_stream_and_drops_the_condition(monkeypatch):
    pool = StubPool([])
    phase, events, _ = _conversion_pass(monkeypatch, conversion_channel(None), pool, rolled_out=True,
                                        previous=status.true("LogStreamActive", "sends"))
    assert [call[0] for call in pool.calls] == ["remove"] and phase.conversion is None
    assert [reason for reason, _ in events] == ["LogStreamDeleted"]
    phase, _, _ = _conversion_pass(monkeypatch, conversion_channel(None), pool, rolled_out=True)
    assert len(pool.calls) == 1 and phase.conversion is None, "never on: no Auth0 request at all"


def test_the_log_tokens_roll_the_relay_only_with_conversion():
    from otp_operator import reconcile  # noqa: PLC0415

    assert reconcile._checksum("key", ["k"], ()) == reconcile._checksum("key", ["k"])
    assert reconcile._checksum("key", ["k"], ("t1",)) != reconcile._checksum("key", ["k"], ("t1", "t2"))


def test_the_ingress_routes_the_log_stream_path_only_with_conversion():
    def paths(ch):
        ingress = next(m for m in render_for(ch).apply if m["kind"] == "Ingress")
        return [(p["path"], p["pathType"]) for p in ingress["spec"]["rules"][0]["http"]["paths"]]

    assert ("/prod/v1/auth0-logs", "Exact") in paths(conversion_channel({}))
    assert all("auth0-logs" not in path for path, _ in paths(conversion_channel(None)))


def test_a_pass_that_stops_early_keeps_conversion_tracking(monkeypatch):
    import asyncio  # noqa: PLC0415
    import types  # noqa: PLC0415

    from otp_operator import reconcile  # noqa: PLC0415
    from otp_operator.runtime import ChannelMemory, Clock  # noqa: PLC0415

    written = []

    class Kube:
        async def patch_channel_status(self, namespace, name, changed):
            written.append(changed)

    monkeypatch.setattr(reconcile, "_event", lambda *args, **kwargs: None)
    before = status.conditions([], 1, status.true("Available", "up"), status.true("Synced", "s"), "t",
                               conversion=status.true("LogStreamActive", "sends"))
    body = {"metadata": {"namespace": "shop", "name": "prod"}, "status": {"conditions": before}}
    run = reconcile.Pass(body, "shop", "prod", 2, body["status"], before, ChannelMemory(), "t2", {})
    missing = status.false("SecretNotFound", "8x8 API key missing")
    asyncio.run(reconcile._finish(types.SimpleNamespace(kube=Kube(), clock=Clock()), run,
                                  reconcile.Outcome(missing, missing)))
    [conversion] = [c for c in written[0]["conditions"] if c["type"] == status.CONVERSION_TRACKING]
    assert (conversion["status"], conversion["reason"]) == ("True", "LogStreamActive")


def test_deleting_the_channel_deletes_its_log_stream(monkeypatch):
    import asyncio  # noqa: PLC0415
    import types  # noqa: PLC0415

    from otp_operator import handlers  # noqa: PLC0415

    def b64(text: str) -> str:
        return base64.b64encode(text.encode()).decode()

    secrets = {"auth0-mgmt": {"data": {"client_id": b64("id"), "client_secret": b64("secret")}},
               "prod-log-stream-token": secret_of(receipt_tokens.LOG_STREAM, ("t1", "t2"), "")}

    class Kube:
        async def get(self, api_version, kind, namespace, name):
            return secrets.get(name)

    class Pool:
        removed: list = []

        async def remove(self, credentials, **kwargs):
            return []

        async def remove_log_stream(self, credentials, desired, guard=None):
            self.removed.append(desired)
            return ["log stream 'otp-relay-shop-prod' (lst_1)"]

    events = []
    monkeypatch.setattr(handlers.kopf, "info", lambda body, reason, message: events.append((reason, message)))
    rt = types.SimpleNamespace(kube=Kube(), auth0=Pool())
    body = {"metadata": {"namespace": "shop", "name": "prod"}, "status": {}}
    asyncio.run(handlers._clean_up(rt, conversion_channel({}), body, 0))
    [desired] = Pool.removed
    assert desired.tokens == ("t1", "t2") and desired.name == "otp-relay-shop-prod"
    assert events == [("Auth0Removed", "removed from Auth0: log stream 'otp-relay-shop-prod' (lst_1)")]
    Pool.removed.clear()
    asyncio.run(handlers._clean_up(rt, conversion_channel(None), body, 0))
    assert Pool.removed == [], "never had conversion: no log-stream request"
