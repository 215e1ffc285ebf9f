"""Passwordless SMS login: each `strategy: sms` connection of the tenant is reported with where
its codes go (true | false | unknown and the deciding setting), and PhoneRouting is True only
when every flow of spec.auth0.flows reaches the channel. Unknown is never True."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from otp_operator import spec
from otp_operator.auth0.model import FLOWS
from otp_operator.auth0 import RoutingRefused
from otp_operator.auth0.routing import (CONNECTIONS_KEY, FALSE, TRUE, UNKNOWN, ObservedConnection,
                                        ObservedRouting, after_changes, change_names,
                                        connection_problems, passwordless_state, unfixable,
                                        verdict)
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


@pytest.mark.parametrize(("integration", "options", "fixable", "fragment"), [
    ("phone-provider", TWILIO, True, "PATCH /api/v2/connections/con_1"),
    ("phone-provider", {**TWILIO, "use_phone_provider": False}, True, "use_phone_provider: true"),
    ("phone-provider", {"provider": "sms_gateway", "gateway_url": "https://gw.example",
                        "gateway_authentication": {"method": "bearer", "secret": "s3cr3t"}}, True, "PATCH"),
    # A credential the read left out would be erased by a PATCH (it replaces the whole options).
    ("phone-provider", {k: v for k, v in TWILIO.items() if k != "twilio_token"}, False,
     "would erase that credential"),
    ("phone-provider", {"provider": "sms_gateway", "gateway_url": "https://gw.example",
                        "gateway_authentication": {"method": "bearer"}}, False,
     "gateway_authentication.secret"),
    ("send-phone-message", TWILIO, False, "MFA only"),
    ("legacy-hook", TWILIO, False, "MFA only"),
])
def test_which_connections_manage_routing_may_move_to_the_tenant_provider(
        integration, options, fixable, fragment):
    observed = ObservedRouting(True, True, ("sms",), None, connections=(conn(**options),))
    [problem] = connection_problems(integration, observed, FLOWS)
    assert bool(unfixable([problem])) is not fixable
    assert (problem.key == CONNECTIONS_KEY) is fixable and fragment in problem.message
    assert connection_problems(integration, observed, ("mfa",)) == []  # not the channel's flow
    routed = ObservedRouting(True, True, ("sms",), None,
                             connections=(conn(**{**options, "use_phone_provider": True}),))
    assert (connection_problems(integration, routed, FLOWS) == []) is (integration == "phone-provider")


def test_a_connection_answered_without_options_is_unknown_and_names_the_scope():
    unread = ObservedConnection("con_1", "sms", {}, options_read=False)
    observed = ObservedRouting(True, True, ("sms",), None, connections=(unread,))
    state = passwordless_state("phone-provider", observed, unread)
    assert state.routed == UNKNOWN and "read:connections_options" in state.setting
    assert unfixable(connection_problems("phone-provider", observed, FLOWS))


def test_after_the_changes_the_moved_connections_and_the_experience_are_judged_as_written():
    observed = ObservedRouting(False, True, ("sms",), None,
                               connections=(conn(**TWILIO), ObservedConnection("con_2", "other", TWILIO)))
    moves = connection_problems("phone-provider", observed, FLOWS)
    after = after_changes(observed, moves[:1])
    assert after.connections[0].options["use_phone_provider"] is True
    assert after.connections[0].options["twilio_token"] == "t0ken"
    assert "use_phone_provider" not in after.connections[1].options and after.upe is False
    assert change_names({"smsFactor": False, CONNECTIONS_KEY: {"con_1": None, "con_2": False}}) == [
        "smsFactor", "usePhoneProvider/con_1", "usePhoneProvider/con_2"]


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


async def test_manage_routing_moves_a_connection_to_the_tenant_provider_and_removal_puts_it_back(
        setup, relay, sms_emulator):
    route_phone_messages(setup.tenant, "phone-provider")
    setup.tenant.set_sms_connections({"name": "sms", "options": TWILIO},
                                     {"name": "sms-eu", "options": {**TWILIO, "use_phone_provider": False}})
    before = {c["name"]: c for c in setup.tenant.state()["connections"]}
    async with setup.sync() as sync:
        result = await sync.ensure(desired_for("phone-provider", relay.url, manage_routing=True))
        assert result.routing.ok, result.routing
        changed = result.as_status()["routingChanges"][CONNECTIONS_KEY]
        assert changed == {before["sms"]["id"]: None, before["sms-eu"]["id"]: False}
        after = {c["name"]: c["options"] for c in setup.tenant.state()["connections"]}
        # Only the flag changed: the Twilio credentials stay (PATCH replaces the whole options).
        assert after == {name: {**c["options"], "use_phone_provider": True} for name, c in before.items()}
        sms_emulator.clear()
        login = setup.tenant.fire_phone_message(connection="sms", text="Your code is 434343", code="434343")
        assert login.outcome == "success", login.reason
        assert [m.text for m in sms_emulator.messages()] == ["Your code is 434343"]

        setup.tenant.clear_requests()
        again = await sync.ensure(desired_for("phone-provider", relay.url, manage_routing=True),
                                  recorded=result.as_status())
        assert again.writes == 0 and again.as_status()["routingChanges"] == result.as_status()["routingChanges"]
        removed = await sync.remove("shop/prod", "phone-provider", "otp-relay-shop-prod",
                                    recorded=again.as_status())
    assert sum("restored" in note and "passwordless connection" in note for note in removed) == 2
    assert {c["name"]: c for c in setup.tenant.state()["connections"]} == before


@pytest.mark.parametrize("mode", ["send-phone-message", "legacy-hook"])
async def test_manage_routing_with_a_passwordless_flow_it_cannot_route_changes_nothing(mode, setup, relay):
    """Auth0 runs send-phone-message and hook code for MFA only: with passwordless in the
    flows the channel can never be routed, so manageRouting makes no change at all."""
    setup.tenant.set_phone(legacy_mfa_phone_provider=True)
    setup.tenant.set_sms_connections({"name": "sms", "options": TWILIO})
    before = setup.tenant.state()
    async with setup.sync() as sync:
        with pytest.raises(RoutingRefused) as caught:
            await sync.ensure(desired_for(mode, relay.url, manage_routing=True))
    assert caught.value.verdict.reason == "PasswordlessNotRouted"
    assert "changed nothing" in caught.value.message and "'sms'" in caught.value.message
    assert setup.tenant.writes() == [] and setup.tenant.state() == before


async def test_without_the_connection_options_scopes_nothing_is_asked(auth0_tenant, relay):
    """Auth0 answers connections without `options` unless the client has
    read:connections_options: the pre-check names it before any request."""
    from otp_operator.auth0 import FORBIDDEN, Auth0Credentials, Auth0Error, Auth0Sync
    from otp_sandbox.auth0_emulator import ALL_SCOPES
    from tests.fixtures.auth0 import make_client

    for missing, manage in (("read:connections_options", False), ("update:connections_options", True)):
        client = make_client(scopes=tuple(s for s in ALL_SCOPES if s != missing))
        tenant = auth0_tenant(clients=[client])
        async with Auth0Sync(Auth0Credentials(tenant.domain, client.client_id, client.client_secret)) as sync:
            with pytest.raises(Auth0Error) as caught:
                await sync.ensure(desired_for("phone-provider", relay.url, manage_routing=manage))
        assert caught.value.reason == FORBIDDEN and missing in caught.value.message
        assert [r.path for r in tenant.requests()] == ["/oauth/token"]


@pytest.mark.parametrize(("policies", "scopes_extra", "shown"), [
    ([], True, "never"), (["all-applications"], True, "all-applications"),
    (["confidence-score"], True, "confidence-score"), (["all-applications"], False, "unknown")])
async def test_the_mfa_policy_is_shown_when_the_client_may_read_it(
        policies, scopes_extra, shown, auth0_tenant, relay):
    from otp_operator.auth0 import Auth0Credentials, Auth0Sync
    from otp_sandbox.auth0_emulator import ALL_SCOPES
    from tests.fixtures.auth0 import make_client

    client = make_client(scopes=tuple(s for s in ALL_SCOPES if scopes_extra or s != "read:mfa_policies"))
    tenant = auth0_tenant(clients=[client])
    route_phone_messages(tenant, "phone-provider")
    tenant.set_phone(mfa_policies=policies)
    async with Auth0Sync(Auth0Credentials(tenant.domain, client.client_id, client.client_secret)) as sync:
        result = await sync.ensure(desired_for("phone-provider", relay.url, flows=("mfa",)))
    [mfa] = result.as_status()["routing"]
    assert mfa["mfaPolicy"] == shown and result.routing.ok  # shown, never a reason
    assert any(r.path == "/api/v2/guardian/policies" for r in tenant.requests()) is scopes_extra
