"""Which Secrets the operator keeps track of, and how soon it looks again for a missing one (pure);
tests/chart/test_rbac_operator.py proves the behaviour against the API server."""

from __future__ import annotations

from otp_operator import names, render, secret_watch
from otp_operator.runtime import ObjectCache
from otp_operator.spec import parse_channel

SPEC = {
    "auth0": {"domain": "shop.eu.auth0.com", "credentialsSecretRef": {"name": "auth0-mgmt"}},
    "sms": {"subaccountId": "shop_otp", "apiKeySecretRef": {"name": "eightbyeight"}},
    "relay": {"publicUrl": "https://otp.shop.example/prod"},
}


def secret(name: str, labels: dict[str, str] | None = None) -> dict:
    return {"metadata": {"name": name, "namespace": "shop", "resourceVersion": "1", "labels": labels or {}},
            "data": {"k": "dg=="}}


def test_the_watch_selector_matches_exactly_the_labels_the_operator_sets() -> None:
    assert names.SECRET_WATCH_SELECTOR == "otprelay.io/secret in (referenced,relay)"
    ch = parse_channel("shop", "prod", SPEC)
    own = render.render_children(ch, image="i", signing_keys=("k",), secrets_checksum="c",
                                 owner=render.owner_reference("u", "prod")).apply[0]
    assert own["kind"] == "Secret" and secret_watch.watched(own)
    assert secret_watch.watched(secret("a", {names.LABEL_SECRET: names.SECRET_REFERENCED}))
    assert not secret_watch.watched(secret("a", {names.LABEL_SECRET: "other"}))
    assert not secret_watch.watched(secret("a")) and not secret_watch.watched(None)


def test_referenced_secrets_are_those_the_operator_reads() -> None:
    assert secret_watch.referenced("shop", "prod", SPEC) == {"auth0-mgmt", "eightbyeight"}
    assert secret_watch.referenced("shop", "prod", {"auth0": {}}) == frozenset()  # invalid: reads nothing


def test_only_watched_secrets_stay_cached() -> None:
    """A Secret outside the watch (or a missing one) is read again by GET every time: no event
    would say it changed or appeared."""
    cache = ObjectCache()
    for obj in (secret("plain"), None):
        cache.stored("Secret", "shop", "s", obj, cache.marker("Secret", "shop", "s"))
        assert not cache.known("Secret", "shop", "s")
    labelled = secret("s", {names.LABEL_SECRET: names.SECRET_REFERENCED})
    cache.stored("Secret", "shop", "s", labelled, cache.marker("Secret", "shop", "s"))
    assert cache.known("Secret", "shop", "s")
    cache.stored("Secret", "shop", "s", secret("s"), cache.marker("Secret", "shop", "s"))  # label gone
    assert not cache.known("Secret", "shop", "s")


def test_a_missing_secret_is_looked_for_soon_then_at_a_bounded_pace() -> None:
    grace = 300.0
    assert [secret_watch.recheck_missing(t, grace) for t in (0.0, 1.0, 2.0, 4.0, 8.0, 60.0)] == \
        [1.0, 1.0, 2.0, 4.0, 8.0, secret_watch.MISSING_RECHECK]
    assert secret_watch.recheck_missing(297.0, grace) == 3.5  # exactly when the grace ends
    assert secret_watch.recheck_missing(300.0, grace) == secret_watch.recheck_missing(9e9, grace) \
        == secret_watch.STALLED_RECHECK
    assert secret_watch.MISSING_RECHECK <= 10 and secret_watch.STALLED_RECHECK <= 30
