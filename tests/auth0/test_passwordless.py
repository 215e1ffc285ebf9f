"""Passwordless SMS login: each `strategy: sms` connection of the tenant is reported with where
its codes go (true | false | unknown and the deciding setting), and PhoneRouting is True only
when every flow of spec.auth0.flows reaches the channel. Unknown is never True."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from otp_operator import spec
from otp_operator.auth0.model import FLOWS
from otp_operator.auth0.routing import (FALSE, TRUE, UNKNOWN, ObservedConnection, ObservedRouting,
                                        passwordless_state, verdict)
from tests.support.auth0 import desired_for
from tests.fixtures.auth0 import route_phone_messages

CRD = Path(__file__).resolve().parents[2] / "crds" / "otpchannels.otprelay.io.yaml"
UPE = ObservedRouting(upe=True, sms_factor=True, message_types=("sms",), selected_provider=None)
TWILIO = {"provider": "twilio", "twilio_sid": "ACx", "twilio_token": "t0ken", "from": "+15550001111"}


def conn(**options) -> ObservedConnection:
    return ObservedConnection("con_1", "sms", options)


@pytest.mark.parametrize(("integration", "observed", "options", "routed", "fragment"), [
    ("phone-provider", UPE, {**TWILIO, "use_phone_provider": True}, TRUE, "Use Tenant-Level Messaging Provider"),
    ("phone-provider", UPE, {**TWILIO, "use_phone_provider": False}, FALSE, "Twilio"),
    ("phone-provider", UPE, TWILIO, UNKNOWN, "options.use_phone_provider absent"),
    ("phone-provider", UPE, {"provider": "sms_gateway", "gateway_url": "https://gw.example"}, UNKNOWN,
     "custom SMS gateway"),
    ("phone-provider", ObservedRouting(False, True, ("sms",), "phone-message-hook"),
     {**TWILIO, "use_phone_provider": True}, FALSE, "off the Unified Phone Experience"),
    ("send-phone-message", UPE, {**TWILIO, "use_phone_provider": True}, FALSE, "MFA only"),
])
def test_where_a_connections_codes_go(integration, observed, options, routed, fragment):
    state = passwordless_state(integration, observed, conn(**options))
    assert (state.routed, state.connection) == (routed, "sms")
    assert fragment in state.setting


def test_phone_routing_is_true_only_when_every_checked_flow_is_routed_and_never_on_unknown():
    def judge(options, flows=FLOWS):
        observed = ObservedRouting(True, True, ("sms",), None, connections=(conn(**options),))
        return verdict("phone-provider", "otp", "t.example", [], {}, flows, observed)

    routed = judge({**TWILIO, "use_phone_provider": True})
    assert routed.ok and "passwordless codes of 'sms'" in routed.message
    unknown = judge(TWILIO)
    assert (unknown.ok, unknown.unknown, unknown.reason) == (False, True, "PasswordlessRoutingUnknown")
    assert "Use Tenant-Level Messaging Provider" in unknown.message
    twilio = judge({**TWILIO, "use_phone_provider": False})
    assert (twilio.ok, twilio.unknown, twilio.reason) == (False, False, "PasswordlessNotRouted")
    only_mfa = judge(TWILIO, flows=("mfa",))
    assert only_mfa.ok and [f.checked for f in only_mfa.flows] == [True, False]


def test_flows_are_one_list_in_the_library_the_spec_and_the_crd():
    crd = yaml.safe_load(CRD.read_text())
    props = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]
    assert tuple(props["spec"]["properties"]["auth0"]["properties"]["flows"]["items"]["enum"]) == FLOWS
    assert spec.AUTH0_FLOWS == FLOWS


async def test_a_twilio_connection_is_reported_not_routed_and_the_toggle_routes_it(
        setup, relay, sms_emulator):
    route_phone_messages(setup.tenant, "phone-provider")
    setup.tenant.set_sms_connections({"name": "sms", "options": TWILIO})
    async with setup.sync() as sync:
        first = await sync.ensure(desired_for("phone-provider", relay.url))
        assert not first.routing.ok and first.routing.unknown  # the setting is absent: unknown
        flows = first.as_status()["routing"]
        assert [(f["flow"], f.get("connection"), f["routed"]) for f in flows] == [
            ("mfa", None, "true"), ("passwordless", "sms", "unknown")]
        sms_emulator.clear()
        sent = setup.tenant.fire_phone_message(connection="sms")
        assert sent.outcome == "no-handler" and "Twilio" in sent.reason and sms_emulator.messages() == []

        setup.tenant.set_sms_connections({"name": "sms", "options": {**TWILIO, "use_phone_provider": True}})
        second = await sync.ensure(desired_for("phone-provider", relay.url), recorded=first.as_status())
    assert second.routing.ok and second.writes == 0
    assert [f["routed"] for f in second.as_status()["routing"]] == ["true", "true"]
    assert setup.tenant.fire_phone_message(connection="sms", text="Your code is 424242",
                                           code="424242").outcome == "success"
    assert [m.text for m in sms_emulator.messages()] == ["Your code is 424242"]


async def test_passwordless_left_out_of_the_flows_reads_no_connections(setup, relay):
    route_phone_messages(setup.tenant, "phone-provider")
    setup.tenant.set_sms_connections({"name": "sms", "options": TWILIO})
    async with setup.sync() as sync:
        result = await sync.ensure(desired_for("phone-provider", relay.url, flows=("mfa",)))
    assert result.routing.ok
    assert not [r for r in setup.tenant.requests() if r.path == "/api/v2/connections"]


def test_an_unknown_flow_makes_phone_routing_unknown_and_ready_false_never_true():
    from otp_operator import reconcile, status  # noqa: PLC0415

    observed = ObservedRouting(True, True, ("sms",), None, connections=(conn(**TWILIO),))
    routing_v = reconcile._routing_verdict(verdict("phone-provider", "otp", "t.example", [], {}, FLOWS, observed))
    conds = {c["type"]: c for c in status.conditions(
        [], 1, status.true("Available", "2/2"), status.true("Synced", "ok"), "2026-12-07T00:00:00Z", routing_v)}
    assert conds["PhoneRouting"]["status"] == "Unknown"
    assert (conds["Ready"]["status"], conds["Ready"]["reason"]) == ("False", "PasswordlessRoutingUnknown")
    assert conds["Stalled"]["status"] == "True"
