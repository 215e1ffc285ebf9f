"""Relay test helpers: a relay process wired to the session's 8x8 emulator."""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import phonenumbers
import pytest

from otp_sandbox.eightbyeight import EightByEightEmulator
from tests.fixtures.relay import RelayProcess, relay_env

SUBACCOUNT = "shop_otp"
API_KEY = "sk-live-8x8-3f9a1c77e2b04d5f"
SIGNING_KEYS = ("sig-old-5b2e9d14c8a7", "sig-new-a81f3c6e0d92")
# The tests' "no global limit" (100000/s) over the retention needs 180.8 M keys; the store's
# memory grows only with the keys it holds, so a cap this high is what "no limit" means here.
UNLIMITED_KEYS = "1000000000"
# fresh_number() hands out sequential numbers of one country: the policy's prefix and country
# windows are set out of reach unless a test is about them
NO_POLICY_WINDOWS = {"PER_PREFIX": "100000/s", "COUNTRY_HOUR": "1000000000/1h", "COUNTRY_DAY": "1000000000/24h"}

_numbers = itertools.count(100_000)


def fresh_number(prefix: str = "+6591") -> str:
    """A valid number no other test uses (keeps per-recipient windows apart)."""
    while True:
        candidate = f"{prefix}{next(_numbers):06d}"
        if phonenumbers.is_valid_number(phonenumbers.parse(candidate)):
            return candidate


def wait_for(predicate: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def assert_no_secrets(text: str, secrets: Iterable[str]) -> None:
    """Fail naming the kind of leak, never printing the secret itself."""
    for index, secret in enumerate(secrets):
        variants = {secret}
        if secret.startswith("+"):
            variants.add(secret[1:])  # the number without its plus, as 8x8 writes it
        for variant in variants:
            assert variant not in text, f"secret #{index} (len {len(secret)}) found in the logs"


@pytest.fixture(scope="session")
def emulator_keys(sms_emulator: EightByEightEmulator) -> EightByEightEmulator:
    sms_emulator.add_subaccount(SUBACCOUNT, API_KEY)
    return sms_emulator


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
              **settings: str) -> RelayProcess:
        workdir = tmp_path / f"relay{next(counter)}"
        settings.setdefault("GLOBAL_LIMIT", "100000/s")
        settings.setdefault("PER_RECIPIENT", "100000/s")
        settings.setdefault("MAX_IDEMPOTENCY_KEYS", UNLIMITED_KEYS)
        for name, value in NO_POLICY_WINDOWS.items():
            settings.setdefault(name, value)
        env = relay_env(workdir, base_url=base_url or emulator_keys.base_url,
                        ssl_cert_file=ssl_cert_file, subaccount=SUBACCOUNT, api_key=api_key,
                        signing_keys=signing_keys, **settings)
        return relay_factory(env, workdir=workdir, wait_ready=wait_ready)

    return start


@pytest.fixture(scope="module")
def shared_relay(emulator_keys: EightByEightEmulator, ssl_cert_file: Path,
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayProcess]:
    """One relay for the read-only contract rows of a module (fast)."""
    workdir = tmp_path_factory.mktemp("shared-relay")
    env = relay_env(workdir, base_url=emulator_keys.base_url, ssl_cert_file=ssl_cert_file,
                    subaccount=SUBACCOUNT, api_key=API_KEY, signing_keys=SIGNING_KEYS,
                    SENDER="ShopOTP", ENCODING="GSM7", ALLOWED_COUNTRIES="SG,MY",
                    GLOBAL_LIMIT="100000/s", PER_RECIPIENT="3/10m", PATH_PREFIX="/prod",
                    MAX_IDEMPOTENCY_KEYS=UNLIMITED_KEYS, **NO_POLICY_WINDOWS)
    relay = RelayProcess.start(workdir, env)
    try:
        yield relay
    finally:
        relay.stop()
        assert_no_secrets(relay.logs(), [API_KEY, *SIGNING_KEYS])


def problem(response: Any) -> dict[str, Any]:
    assert response.headers["content-type"].startswith("application/problem+json"), response.text
    return json.loads(response.text)
