"""Helpers for the operator's integration tests: channels, Secrets, waiting on channel status.
(The operator and relay processes themselves are in ``otp_sandbox.processes``.)"""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Mapping
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException
from otp_operator import names
from otp_sandbox.controlplane.gomodules import KWOK_POD_READY_DELAY_ANNOTATION
from otp_sandbox.controlplane.node import RELAY_POD_READY_SECONDS

from tests.support.waiting import wait_for

GROUP, VERSION, PLURAL = names.GROUP, names.VERSION, names.PLURAL


# --- channels -------------------------------------------------------------------------------

def make_secret(api: client.ApiClient, namespace: str, name: str, data: Mapping[str, str]) -> None:
    body = client.V1Secret(metadata=client.V1ObjectMeta(name=name, namespace=namespace), string_data=dict(data))
    core = client.CoreV1Api(api)
    try:
        core.create_namespaced_secret(namespace, body)
    except ApiException as error:
        if error.status != 409:
            raise
        core.replace_namespaced_secret(name, namespace, body)


def channel_manifest(namespace: str, name: str, *, domain: str, public_url: str, sms_base_url: str,
                     integration: str = "phone-provider", replicas: int = 2, **extra: Any) -> dict[str, Any]:
    # kwok marks the relay pods Ready as late as the real node does (not at once).
    pod_template = {"metadata": {"annotations": {KWOK_POD_READY_DELAY_ANNOTATION: f"{RELAY_POD_READY_SECONDS}s"}}}
    spec: dict[str, Any] = {
        "auth0": {"domain": domain, "credentialsSecretRef": {"name": "auth0-mgmt"}, "integration": integration},
        "sms": {"subaccountId": "shop_otp", "apiKeySecretRef": {"name": "eightbyeight", "key": "apikey"},
                "baseUrl": sms_base_url, "sender": "ShopOTP"},
        "policy": {"allowedCountries": ["SG", "MY"]},
        "relay": {"replicas": replicas, "publicUrl": public_url, "podTemplate": pod_template},
    }
    for key, value in extra.items():
        spec[key] = value
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "OtpChannel",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}


def custom(api: client.ApiClient) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(api)


def create_channel(api: client.ApiClient, manifest: Mapping[str, Any]) -> dict[str, Any]:
    """Create the channel in its metadata's namespace; returns it as stored (defaults applied)."""
    meta = manifest["metadata"]
    return custom(api).create_namespaced_custom_object(GROUP, VERSION, meta["namespace"], PLURAL, dict(manifest))


def get_channel(api: client.ApiClient, namespace: str, name: str) -> dict[str, Any] | None:
    try:
        return custom(api).get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    except ApiException as error:
        if error.status == 404:
            return None
        raise


def patch_channel(api: client.ApiClient, namespace: str, name: str, patch: Mapping[str, Any]) -> None:
    custom(api).patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name, dict(patch))


def delete_channel(api: client.ApiClient, namespace: str, name: str) -> None:
    custom(api).delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)


def delete_all_channels(api: client.ApiClient, timeout: float = 90.0) -> None:
    """Delete every OtpChannel and wait until they are gone (an operator must be running).
    A deletion still blocked after half the time (the test broke Auth0 on purpose) is told to
    give up on its Auth0 side, so later tests never inherit a stuck namespace."""
    listed = custom(api).list_cluster_custom_object(GROUP, VERSION, PLURAL)["items"]
    keys = [(c["metadata"]["namespace"], c["metadata"]["name"]) for c in listed]
    for namespace, name in keys:
        try:
            delete_channel(api, namespace, name)
        except ApiException as error:
            if error.status != 404:
                raise
    deadline = time.monotonic() + timeout / 2
    while time.monotonic() < deadline and any(get_channel(api, ns, n) for ns, n in keys):
        time.sleep(0.3)
    for namespace, name in keys:
        if get_channel(api, namespace, name) is not None:
            try:
                patch_channel(api, namespace, name,
                              {"metadata": {"annotations": {names.ANNOTATION_ABANDON_CLEANUP: "true"}}})
            except ApiException as error:
                if error.status != 404:
                    raise
    wait_for(lambda: not any(get_channel(api, ns, n) for ns, n in keys), timeout / 2,
             what="every channel deleted at teardown")


def condition(channel: Mapping[str, Any] | None, type_: str) -> dict[str, Any]:
    for item in ((channel or {}).get("status") or {}).get("conditions") or []:
        if item.get("type") == type_:
            return item
    return {}


def wait_condition(api: client.ApiClient, namespace: str, name: str, type_: str = "Ready", status: str = "True",
                   reason: str | None = None, timeout: float = 60.0) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        channel = get_channel(api, namespace, name)
        found = condition(channel, type_)
        generation = ((channel or {}).get("metadata") or {}).get("generation")
        # Ready stays True during a routine rollout: a plain wait for Ready waits for it to settle.
        settled = not (type_ == "Ready" and status == "True" and condition(channel, "Reconciling"))
        if found.get("status") == status and (reason is None or found.get("reason") == reason) \
                and found.get("observedGeneration") == generation and settled:
            return channel
        return None

    try:
        return wait_for(check, timeout, what=f"{namespace}/{name} {type_}={status} {reason or ''}")
    except AssertionError as error:
        channel = get_channel(api, namespace, name)
        raise AssertionError(f"{error}\nstatus: {(channel or {}).get('status')}") from None


def events_for(api: client.ApiClient, namespace: str, name: str) -> list[client.CoreV1Event]:
    events = client.CoreV1Api(api).list_namespaced_event(namespace, field_selector=f"involvedObject.name={name}")
    return list(events.items)


def wait_for_event(api: client.ApiClient, namespace: str, name: str, reason: str,
                   timeout: float = 30) -> list[client.CoreV1Event]:
    """The object's Events once one has ``reason``: kopf posts Events from a background queue (in
    order), so they can lag behind the status that reports the same pass."""
    return wait_for(lambda: (events := events_for(api, namespace, name)) and
                    any(e.reason == reason for e in events) and events,
                    timeout, what=f"a {reason} Event on {namespace}/{name}")


def owned_actions(state: Mapping[str, Any], prefix: str = "otp-relay-") -> list[dict[str, Any]]:
    """The Auth0 actions an operator made (named by ``names.default_auth0_name``), from an
    emulated tenant's state."""
    return [a for a in state["actions"] if a["name"].startswith(prefix)]


def signing_keys(api: client.ApiClient, namespace: str, channel: str) -> list[str]:
    """The keys in the channel's signing-key Secret, newest last."""
    secret = client.CoreV1Api(api).read_namespaced_secret(names.signing_key_secret_name(channel), namespace)
    return [k for k in base64.b64decode(secret.data[names.SIGNING_KEY_SECRET_KEY]).decode().splitlines() if k]


def rotation_finished(api: client.ApiClient, namespace: str, channel: str, request: str, old_key: str) -> bool:
    """The operator reports rotation `request` done and only a new key is left in the Secret."""
    signing = ((get_channel(api, namespace, channel) or {}).get("status") or {}).get("signingKey") or {}
    keys = signing_keys(api, namespace, channel)
    return (signing.get("phase") == "Stable" and signing.get("rotationRequest") == request
            and len(keys) == 1 and keys != [old_key])


class OtpTraffic:
    """Auth0 sending OTPs through a channel back to back on a thread, from `with` entry to exit
    (at most `limit` seconds); `outcomes` holds "success" or what went wrong, per message."""

    def __init__(self, tenant: Any, limit: float = 600.0) -> None:
        self.tenant = tenant
        self.limit = limit
        self.outcomes: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        deadline = time.monotonic() + self.limit
        number = 0
        while not self._stop.is_set() and time.monotonic() < deadline:
            number += 1
            # A different number and number block each time, as real users' are: sequential numbers
            # would meet the relay's per-prefix window (20 an hour per 1,000 numbers) after 20.
            recipient = f"+659{number * 1009 % 10_000_000:07d}"
            result = self.tenant.fire_phone_message(recipient=recipient, text=f"code {number}", code=None)
            self.outcomes.append("success" if result.outcome == "success" else f"{result.outcome}: {result.reason}")

    def wait_for_more(self, count: int, what: str, timeout: float = 60.0) -> None:
        """Wait until `count` more messages went out than so far."""
        target = len(self.outcomes) + count
        wait_for(lambda: len(self.outcomes) >= target, timeout=timeout, what=what)

    def failures(self) -> list[str]:
        return [o for o in self.outcomes if o != "success"]

    def __enter__(self) -> OtpTraffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)
