"""Relay test helpers: a relay process wired to the session's 8x8 emulator."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from otp_sandbox.eightbyeight import EightByEightEmulator

from tests.fixtures.cluster import temporary_namespace
from otp_sandbox.processes import metric_samples
from tests.fixtures.relay import RelayProcess, free_port, kubelet_volume, fresh_number, relay_env  # noqa: F401  (fresh_number: the relay tests import it from here)
from tests.support.leaks import assert_no_secrets  # noqa: F401  (the relay tests import it from here)
from tests.support.waiting import wait_for as support_wait_for

SUBACCOUNT = "shop_otp"
API_KEY = "sk-live-8x8-3f9a1c77e2b04d5f"
SIGNING_KEYS = ("sig-old-5b2e9d14c8a7", "sig-new-a81f3c6e0d92")
CALLER_ID = "+6568332048"  # whitelisted for SUBACCOUNT's calls on the emulator
# The tests' "no global limit" (100000/s) over the retention needs 180.8 M keys; the store's
# memory grows only with the keys it holds, so a cap this high is what "no limit" means here.
UNLIMITED_KEYS = "1000000000"
# fresh_number() hands out sequential numbers of one country: the policy's prefix and country
# windows are set out of reach unless a test is about them
NO_POLICY_WINDOWS = {"PER_PREFIX": "100000/s", "COUNTRY_HOUR": "1000000000/1h", "COUNTRY_DAY": "1000000000/24h"}


def wait_for(predicate: Callable[[], Any], timeout: float = 15.0) -> Any:
    """The suite's ``wait_for`` at the pace of a local relay (polls every 50 ms)."""
    return support_wait_for(predicate, timeout, interval=0.05)


@pytest.fixture(scope="session")
def emulator_keys(sms_emulator: EightByEightEmulator) -> EightByEightEmulator:
    sms_emulator.add_subaccount(SUBACCOUNT, API_KEY, caller_ids=[CALLER_ID])
    return sms_emulator


def voice_settings(emulator: EightByEightEmulator, **settings: str) -> dict[str, str]:
    """A relay's settings with voice on, calling through ``emulator`` from ``CALLER_ID``."""
    return {"VOICE": "true", "VOICE_BASE_URL": emulator.base_url, "VOICE_CALLER_ID": CALLER_ID, **settings}


@pytest.fixture
def emulator(emulator_keys: EightByEightEmulator) -> EightByEightEmulator:
    emulator_keys.clear()
    return emulator_keys


@pytest.fixture
def make_relay(relay_factory: Callable[..., RelayProcess], emulator_keys: EightByEightEmulator,
               ssl_cert_file: Path, tmp_path: Path) -> Callable[..., RelayProcess]:
    """Start a relay on the emulator with the test keys; settings as keyword suffixes."""
    counter = itertools.count()

    def start(*, base_url: str | None = None, api_key: str = API_KEY,
              signing_keys: tuple[str, ...] = SIGNING_KEYS, wait_ready: bool = True,
              workdir: Path | None = None, port: int | None = None, **settings: str) -> RelayProcess:
        workdir = workdir or tmp_path / f"relay{next(counter)}"
        settings.setdefault("GLOBAL_LIMIT", "100000/s")
        settings.setdefault("PER_RECIPIENT", "100000/s")
        settings.setdefault("VOICE_PER_RECIPIENT", "100000/s")
        settings.setdefault("MAX_IDEMPOTENCY_KEYS", UNLIMITED_KEYS)
        for name, value in NO_POLICY_WINDOWS.items():
            settings.setdefault(name, value)
        env = relay_env(workdir, base_url=base_url or emulator_keys.base_url,
                        ssl_cert_file=ssl_cert_file, subaccount=SUBACCOUNT, api_key=api_key,
                        signing_keys=signing_keys, **settings)
        return relay_factory(env, workdir=workdir, wait_ready=wait_ready, port=port)

    return start


TOKENS = ("rcpt-old-Q2d8xV1mZ0aT7kLp", "rcpt-new-9fJw3Hs6Ye4RbN1c")  # receipt tokens, newest last


@pytest.fixture
def receipt_relay(make_relay: Callable[..., RelayProcess], tmp_path: Path) -> Callable[..., RelayProcess]:
    """``receipt_relay(**settings)``: a relay (``make_relay``) whose sends ask 8x8 for receipts
    on its own port (``port``, or a free one), with the receipt tokens ``TOKENS`` in a
    kubelet-style volume. With voice on, the relay points the subaccount's VSS webhook there."""
    counter = itertools.count()

    def start(tokens: tuple[str, ...] = TOKENS, port: int | None = None, **settings: str) -> RelayProcess:
        workdir = tmp_path / f"receipt-relay{next(counter)}"
        port = port or free_port()
        kubelet_volume(workdir / "receipts", {"tokens": "".join(f"{t}\n" for t in tokens)})
        return make_relay(workdir=workdir, port=port, RECEIPT_URL=f"http://127.0.0.1:{port}/v1/receipts",
                          RECEIPT_TOKEN_FILE=str(workdir / "receipts" / "tokens"), **settings)

    return start


def samples(relay: RelayProcess, name: str) -> dict[tuple, float]:
    """Every sample of ``name`` on the relay's /metrics, by its sorted labels."""
    return metric_samples(relay.get("/metrics").text, name)


def post_receipt(relay: RelayProcess, body: object, token: str = TOKENS[1]):
    """POST a receipt (or a voice session summary) to the relay's receipt path with ``token``."""
    kwargs = {"content": body} if isinstance(body, bytes) else {"json": body}
    return relay.client.post(f"{relay.url}/v1/receipts/{token}", **kwargs)


# The shared relay's settings (as OTP_RELAY_* variables without the prefix), for the local
# process and the relay pod alike.
SHARED_RELAY_SETTINGS = {"SUBACCOUNT": SUBACCOUNT, "SENDER": "ShopOTP", "ENCODING": "GSM7",
                         "ALLOWED_COUNTRIES": "SG,MY", "GLOBAL_LIMIT": "100000/s", "PER_RECIPIENT": "3/10m",
                         "PATH_PREFIX": "/prod", "MAX_IDEMPOTENCY_KEYS": UNLIMITED_KEYS, **NO_POLICY_WINDOWS}


@pytest.fixture(scope="module")
def process_shared_relay(emulator_keys: EightByEightEmulator, ssl_cert_file: Path,
                         tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayProcess]:
    """One relay process for the read-only contract rows of a module (fast)."""
    workdir = tmp_path_factory.mktemp("shared-relay")
    settings = {k: v for k, v in SHARED_RELAY_SETTINGS.items() if k != "SUBACCOUNT"}
    env = relay_env(workdir, base_url=emulator_keys.base_url, ssl_cert_file=ssl_cert_file,
                    subaccount=SUBACCOUNT, api_key=API_KEY, signing_keys=SIGNING_KEYS, **settings)
    relay = RelayProcess.start(workdir, env)
    try:
        yield relay
    finally:
        relay.stop()
        assert_no_secrets(relay.logs(), [API_KEY, *SIGNING_KEYS])


@pytest.fixture(scope="module")
def shared_relay(process_shared_relay: RelayProcess) -> RelayProcess:
    return process_shared_relay


@pytest.fixture(scope="module")
def pod_shared_relay(k8s_api: Any, relay_pod: Callable[..., RelayProcess],
                     node_sms_emulator: EightByEightEmulator) -> Iterator[tuple[RelayProcess, EightByEightEmulator]]:
    """The shared relay as a pod on the real node (the image, its settings as the pod's
    environment), with the 8x8 emulator it reaches across the node's bridge."""
    node_sms_emulator.add_subaccount(SUBACCOUNT, API_KEY)
    with temporary_namespace(k8s_api) as namespace:
        relay = relay_pod(namespace, {**SHARED_RELAY_SETTINGS, "SMS_BASE_URL": node_sms_emulator.base_url},
                          API_KEY, SIGNING_KEYS)
        try:
            yield relay, node_sms_emulator
        finally:
            logs = relay.logs()
            relay.stop()
            assert_no_secrets(logs, [API_KEY, *SIGNING_KEYS])


def problem(response: Any) -> dict[str, Any]:
    assert response.headers["content-type"].startswith("application/problem+json"), response.text
    return json.loads(response.text)
