"""Pure decisions of the Auth0 sync library: no I/O, no emulator."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from otp_operator.auth0.client import RetryPolicy
from otp_operator.auth0.errors import (FORBIDDEN, INVALID, RATE_LIMITED, UNAUTHORIZED, UNAVAILABLE,
                                       error_for_response, rate_limit_reset, redact)
from otp_operator.auth0.model import (Auth0Credentials, Conflict, DesiredIntegration,
                                      ObservedAction, ObservedBinding, ObservedHook,
                                      ObservedProvider, Recorded, SECRET_NAMES, binding_conflict,
                                      build_target, foreign_provider_binding, missing_scopes,
                                      pick_own_action, pick_own_hook, plan_provider_binding,
                                      plan_action, plan_binding_add, plan_binding_removal,
                                      plan_hook, plan_provider, secrets_hash)
from otp_operator.auth0.sync import SyncResult
from otp_operator.auth0.templates import TEMPLATE_VERSION, parse_marker, render

KEY = b"client-secret"
OWNER = "shop/prod"


def desired(integration: str = "phone-provider", **overrides: object) -> DesiredIntegration:
    fields = dict(owner=OWNER, integration=integration, name="otp-relay-shop-prod",
                  relay_url="https://otp.shop.example/prod", signing_key="k3y-v4lue-0001")
    fields.update(overrides)
    return DesiredIntegration(**fields)  # type: ignore[arg-type]


def target(integration: str = "phone-provider", **overrides: object):
    wanted = desired(integration, **overrides)
    return build_target(wanted, render(wanted.integration, wanted.owner), KEY)


def recorded_for(t, **overrides: object) -> Recorded:
    fields = dict(integration=t.integration, action_id="act-1", secrets_hash=t.secrets_hash,
                  fingerprint=t.fingerprint)
    fields.update(overrides)
    return Recorded(**fields)  # type: ignore[arg-type]


def observed_action(t, **overrides: object) -> ObservedAction:
    fields = dict(id="act-1", name=t.name, code=t.code, secret_names=frozenset(SECRET_NAMES),
                  status="built", deployed_version=1, deployed_code=t.code,
                  all_changes_deployed=True, owner=OWNER)
    fields.update(overrides)
    return ObservedAction(**fields)  # type: ignore[arg-type]


# --- validation ------------------------------------------------------------------------------


@pytest.mark.parametrize("field,value,message", [
    ("owner", "shop", "namespace/name"),
    ("integration", "sms", "integration must be one of"),
    ("name", "otp_relay.shop", "Auth0 name"),
    ("relay_url", "http://otp.shop.example", "https://"),
    ("relay_url", "https://otp.shop.example/p?x=1", "scheme://host"),
    ("signing_key", "", "signing_key"),
])
def test_bad_desired_input_is_refused_with_a_specific_message(field, value, message):
    with pytest.raises(ValueError, match=message):
        desired(**{field: value})


def test_loopback_http_relay_is_allowed_for_the_sandbox():
    assert desired(relay_url="http://127.0.0.1:8080").relay_url == "http://127.0.0.1:8080"


def test_secrets_never_show_in_reprs():
    wanted = desired(signing_key="super-secret-signing-key")
    creds = Auth0Credentials("tenant.eu.auth0.com", "cid", "super-secret-client")
    assert "super-secret" not in repr(wanted)
    assert "super-secret" not in repr(creds)
    assert "super-secret" not in repr(target())


@pytest.mark.parametrize("domain", ["https://tenant.auth0.com", "tenant.auth0.com/api", ""])
def test_domain_with_scheme_or_path_is_refused(domain):
    with pytest.raises(ValueError, match="host\\[:port\\]"):
        Auth0Credentials(domain, "cid", "secret")


# --- templates and marker ----------------------------------------------------------------------


@pytest.mark.parametrize("integration", ["phone-provider", "send-phone-message", "legacy-hook"])
def test_rendered_code_carries_the_owner_marker(integration):
    marker = parse_marker(render(integration, "shop/prod"))
    assert marker is not None
    assert (marker.owner, marker.template_version, marker.integration) == (
        "shop/prod", TEMPLATE_VERSION, integration)


def test_code_without_marker_has_no_owner():
    assert parse_marker("exports.onExecuteSendPhoneMessage = async () => {};") is None
    assert parse_marker(None) is None


# --- fingerprint and secrets hash -------------------------------------------------------------


def test_fingerprint_is_stable_and_changes_with_what_we_write():
    assert target().fingerprint == target().fingerprint
    assert target(relay_url="https://otp.shop.example/other").fingerprint != target().fingerprint
    assert target(signing_key="another-key-123").fingerprint != target().fingerprint
    assert target("send-phone-message").fingerprint != target().fingerprint


def test_secrets_hash_is_keyed_and_does_not_contain_values():
    secrets = {"RELAY_URL": "https://x.example", "RELAY_SIGNING_KEY": "abcd1234secret"}
    hashed = secrets_hash(secrets, b"key-1")
    assert hashed != secrets_hash(secrets, b"key-2")
    assert "abcd1234secret" not in hashed and "x.example" not in hashed


# --- actions -----------------------------------------------------------------------------------


def test_in_sync_action_needs_no_write():
    t = target()
    plan = plan_action(t, observed_action(t), recorded_for(t))
    assert not plan.writes_anything and plan.repaired == () and plan.updated == ()


def test_missing_action_is_created_and_deployed():
    t = target()
    plan = plan_action(t, None, None)
    assert plan.create and plan.deploy and plan.repaired == ()


def test_action_deleted_behind_our_back_is_a_repair():
    t = target()
    plan = plan_action(t, None, recorded_for(t))
    assert plan.create and plan.repaired == ("action was deleted outside the operator",)


def test_dashboard_code_edit_is_repaired():
    t = target()
    plan = plan_action(t, observed_action(t, code="// mine", all_changes_deployed=False), recorded_for(t))
    assert plan.write_code and plan.deploy and not plan.write_secrets
    assert plan.repaired == ("action code was edited outside the operator",)


def test_deleted_secret_is_rewritten():
    t = target()
    plan = plan_action(t, observed_action(t, secret_names=frozenset({"RELAY_URL"})), recorded_for(t))
    assert plan.write_secrets and plan.deploy and not plan.write_code
    assert plan.repaired == ("action secret RELAY_SIGNING_KEY was deleted",)


def test_relay_url_change_rewrites_secrets_only():
    old = target()
    new = target(relay_url="https://otp.shop.example/v2")
    plan = plan_action(new, observed_action(new), recorded_for(old))
    assert plan.write_secrets and plan.deploy and not plan.write_code
    assert plan.updated == ("action secrets",) and plan.repaired == ()


def test_unknown_recorded_state_rewrites_secrets_because_values_cannot_be_read_back():
    t = target()
    plan = plan_action(t, observed_action(t), None)
    assert plan.write_secrets and not plan.write_code


def test_rolled_back_deployment_is_redeployed():
    t = target()
    plan = plan_action(t, observed_action(t, deployed_code="// old"), recorded_for(t))
    assert plan.deploy and not plan.write_code and not plan.write_secrets
    assert plan.repaired == ("deployed action version differed from the draft",)


def test_only_an_action_bound_to_custom_phone_provider_holds_it():
    t = target()
    theirs = observed_action(t, id="act-9", name="otp-relay-shop-dev", owner="shop/dev")
    assert pick_own_action([theirs], t, None) is None  # unbound: Auth0 never runs it
    bound = [ObservedBinding("act-9", "otp-relay-shop-dev", "otp-relay-shop-dev")]
    decision = foreign_provider_binding(bound, {"act-9": "shop/dev"}, t, [])
    assert isinstance(decision, Conflict) and "shop/dev" in decision.message
    # Another channel's action is never replaced, even when foreign ones may be.
    replacing = target(replace_foreign_action=True)
    assert isinstance(foreign_provider_binding(bound, {"act-9": "shop/dev"}, replacing, []),
                      Conflict)


def test_foreign_bound_provider_action_is_refused_naming_it_and_reset_unless_told():
    bound = [ObservedBinding("act-7", "Custom Phone Provider", "Custom Phone Provider")]
    refused = foreign_provider_binding(bound, {"act-7": None}, target(), ["act-1"])
    assert isinstance(refused, Conflict)
    assert "'Custom Phone Provider'" in refused.message and "Reset" in refused.message
    assert "replaceForeignAction" in refused.message
    assert foreign_provider_binding(bound, {"act-7": None}, target(replace_foreign_action=True),
                                    ["act-1"]) is None
    ours = [ObservedBinding("act-1", "otp-relay-shop-prod", "otp-relay-shop-prod")]
    assert foreign_provider_binding(ours, {"act-1": OWNER}, target(), ["act-1"]) is None
    assert plan_provider_binding(ours, "act-1", "otp-relay-shop-prod") is None
    assert [b.action_id for b in plan_provider_binding(bound + ours, "act-1", "x")] == ["act-1"]


def test_unmanaged_action_with_our_name_is_a_conflict():
    t = target("send-phone-message")
    stranger = observed_action(t, id="act-9", owner=None)
    decision = pick_own_action([stranger], t, None)
    assert isinstance(decision, Conflict) and "not managed by otp-relay-operator" in decision.message


def test_recorded_action_whose_marker_was_wiped_is_still_ours():
    t = target()
    wiped = observed_action(t, code="// replaced in the dashboard", owner=None)
    assert pick_own_action([wiped], t, recorded_for(t)) == wiped


# --- bindings ----------------------------------------------------------------------------------


FOREIGN = ObservedBinding(action_id="act-foreign", action_name="Audit SMS", display_name="Audit SMS")


def test_binding_is_appended_keeping_every_other_binding():
    chain = plan_binding_add([FOREIGN], "act-1", "otp-relay-shop-prod")
    assert chain is not None
    assert [b.action_id for b in chain] == ["act-foreign", "act-1"]
    assert chain[0].display_name == "Audit SMS"


def test_already_bound_needs_no_patch():
    ours = ObservedBinding("act-1", "otp-relay-shop-prod", "otp-relay-shop-prod")
    assert plan_binding_add([FOREIGN, ours], "act-1", "otp-relay-shop-prod") is None


def test_removal_keeps_foreign_bindings_and_is_idempotent():
    ours = ObservedBinding("act-1", "otp-relay-shop-prod", "otp-relay-shop-prod")
    chain = plan_binding_removal([ours, FOREIGN], "act-1")
    assert chain is not None and [b.action_id for b in chain] == ["act-foreign"]
    assert plan_binding_removal([FOREIGN], "act-1") is None


def test_chain_bound_to_another_channel_is_a_conflict():
    theirs = ObservedBinding("act-2", "otp-relay-shop-dev", None)
    conflict = binding_conflict([FOREIGN, theirs], {"act-2": "shop/dev", "act-foreign": None}, OWNER)
    assert conflict is not None and "shop/dev" in conflict.message
    assert binding_conflict([FOREIGN], {"act-foreign": None}, OWNER) is None


@given(st.lists(st.text(alphabet="abcdef", min_size=1, max_size=4), unique=True, max_size=6))
def test_add_then_remove_restores_the_foreign_chain(ids):
    foreign = [ObservedBinding(f"x-{i}", f"n-{i}", f"n-{i}") for i in ids]
    added = plan_binding_add(foreign, "ours", "ours")
    assert added is not None
    as_observed = [ObservedBinding(b.action_id, b.display_name, b.display_name) for b in added]
    removed = plan_binding_removal(as_observed, "ours")
    assert removed is not None
    assert [b.action_id for b in removed] == [b.action_id for b in foreign]


# --- phone provider ----------------------------------------------------------------------------


def provider(**overrides: object) -> ObservedProvider:
    fields = dict(id="pro_1", name="custom", disabled=False, delivery_methods=("text",))
    fields.update(overrides)
    return ObservedProvider(**fields)  # type: ignore[arg-type]


def test_provider_is_created_when_absent_and_left_alone_when_right():
    assert plan_provider([], False, False).create
    plan = plan_provider([provider()], False, True)
    assert not plan.create and not plan.update


def test_disabled_provider_is_re_enabled():
    plan = plan_provider([provider(disabled=True)], False, True)
    assert plan.update and plan.repaired == ("phone provider was disabled",)


def test_foreign_provider_type_is_refused_unless_told_to_replace_it():
    refused = plan_provider([provider(name="twilio")], False, False)
    assert isinstance(refused, Conflict) and "twilio" in refused.message
    assert "replace_foreign_provider" in refused.message
    replaced = plan_provider([provider(name="twilio")], True, False)
    assert not isinstance(replaced, Conflict) and replaced.update


# --- hooks -------------------------------------------------------------------------------------


def hook(t, **overrides: object) -> ObservedHook:
    fields = dict(id="hook-1", name=t.name, script=t.code, enabled=True, owner=OWNER)
    fields.update(overrides)
    return ObservedHook(**fields)  # type: ignore[arg-type]


def test_in_sync_hook_needs_no_write():
    t = target("legacy-hook")
    plan = plan_hook(t, hook(t), frozenset(SECRET_NAMES), recorded_for(t, action_id=None, hook_id="hook-1"))
    assert plan == type(plan)()


def test_hook_secrets_post_new_patch_changed_delete_stale():
    old = target("legacy-hook")
    new = target("legacy-hook", signing_key="rotated-key-9999")
    plan = plan_hook(new, hook(new), frozenset({"RELAY_URL", "OLD_TOKEN"}),
                     recorded_for(old, action_id=None, hook_id="hook-1"))
    assert plan.add_secrets == ("RELAY_SIGNING_KEY",)
    assert plan.change_secrets == ("RELAY_URL",)
    assert plan.delete_secrets == ("OLD_TOKEN",)


def test_disabled_hook_is_re_enabled_and_new_hook_is_enabled_after_its_secrets():
    t = target("legacy-hook")
    plan = plan_hook(t, hook(t, enabled=False), frozenset(SECRET_NAMES),
                     recorded_for(t, action_id=None, hook_id="hook-1"))
    assert plan.enable and plan.repaired == ("hook was disabled",)
    fresh = plan_hook(t, None, frozenset(), None)
    assert fresh.create and fresh.enable and fresh.add_secrets == tuple(sorted(SECRET_NAMES))


def test_another_enabled_hook_on_the_trigger_is_a_conflict():
    t = target("legacy-hook")
    other = hook(t, id="hook-9", name="twilio-sms", owner=None)
    decision = pick_own_hook([other], t, None)
    assert isinstance(decision, Conflict) and "twilio-sms" in decision.message
    assert pick_own_hook([hook(t, id="hook-9", name="old", owner=None, enabled=False)], t, None) is None


# --- scopes, errors, retries -------------------------------------------------------------------


def test_missing_scopes_are_listed_and_unknown_grants_are_not_guessed():
    assert missing_scopes({"read:actions", "create:actions"}, {"read:actions"}) == ["create:actions"]
    assert missing_scopes({"read:actions"}, None) == []


def test_error_mapping_gives_stable_reasons():
    now = 1_000_000.0
    assert error_for_response(401, {}, {}, now=now, what="x", domain="d").reason == UNAUTHORIZED
    forbidden = error_for_response(
        403, {"statusCode": 403, "error": "Forbidden", "errorCode": "insufficient_scope",
              "message": "Insufficient scope, expected any of: create:actions"},
        {}, now=now, what="POST action", domain="d")
    assert forbidden.reason == FORBIDDEN and "create:actions" in forbidden.message
    limited = error_for_response(429, {"message": "Global limit has been reached"},
                                 {"x-ratelimit-reset": str(int(now) + 7)}, now=now, what="x", domain="d")
    assert limited.reason == RATE_LIMITED and limited.retry_after == pytest.approx(7)
    assert error_for_response(503, {}, {}, now=now, what="x", domain="d").reason == UNAVAILABLE
    assert error_for_response(400, {}, {}, now=now, what="x", domain="d").reason == INVALID


def test_redact_removes_secret_values():
    assert redact("bad value sekrit-123 here", ["sekrit-123"]) == "bad value [redacted] here"


def test_rate_limit_reset_prefers_auth0_header():
    assert rate_limit_reset({"X-RateLimit-Reset": "1010"}, 1000.0) == 10.0
    assert rate_limit_reset({"retry-after": "3"}, 1000.0) == 3.0
    assert rate_limit_reset({}, 1000.0) is None


def test_retry_policy_waits_for_short_resets_and_gives_up_on_long_ones():
    policy = RetryPolicy(attempts=3, max_rate_limit_wait=2.0)
    assert policy.delay(429, {"x-ratelimit-reset": "1001"}, 1, 1000.0) == pytest.approx(1.0)
    assert policy.delay(429, {"x-ratelimit-reset": "1030"}, 1, 1000.0) is None
    assert policy.delay(429, {"x-ratelimit-reset": "1001"}, 3, 1000.0) is None


def test_retry_policy_never_hot_loops_on_a_reset_already_due():
    assert RetryPolicy().delay(429, {"x-ratelimit-reset": "900"}, 1, 1000.0) >= 0.05


def test_retry_policy_retries_5xx_and_transport_errors_a_bounded_number_of_times():
    policy = RetryPolicy(attempts=3)
    # Exponential back-off with up to 20 % jitter: the first retry after ~backoff, the next ~2x.
    assert policy.backoff <= policy.delay(503, {}, 1, 0) <= 1.2 * policy.backoff
    assert 2 * policy.backoff <= policy.delay(None, {}, 2, 0) <= 2.4 * policy.backoff
    assert policy.delay(503, {}, 3, 0) is None
    assert policy.delay(400, {}, 1, 0) is None
    assert policy.delay(409, {}, 1, 0) is None


def test_status_round_trips_through_recorded():
    result = SyncResult(integration="phone-provider", action_id="act-1", hook_id=None,
                        provider_id="pro_1", deployed_version=3, secrets_hash="hmac-sha256:ab",
                        fingerprint="sha256:cd")
    status = result.as_status()
    assert status == {"integration": "phone-provider", "actionId": "act-1", "providerId": "pro_1",
                      "deployedVersion": 3, "secretsHash": "hmac-sha256:ab", "fingerprint": "sha256:cd"}
    back = Recorded.from_status(status)
    assert back is not None and (back.action_id, back.deployed_version, back.fingerprint) == (
        "act-1", 3, "sha256:cd")


def test_our_provider_switched_to_another_type_is_drift_not_a_foreign_provider():
    plan = plan_provider([provider(name="twilio")], False, True, recorded_id="pro_1")
    assert not isinstance(plan, Conflict) and plan.update
    assert plan.repaired == ("phone provider was switched to 'twilio'",)
