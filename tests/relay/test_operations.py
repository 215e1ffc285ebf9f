"""Key rotation under traffic, graceful shutdown, limits across replicas."""

from __future__ import annotations

import itertools
import json
import threading
import time

import httpx

from tests.fixtures.relay import RelayProcess, otp_body, replace_file, signed_headers

from .conftest import SIGNING_KEYS, assert_no_secrets, fresh_number, wait_for

OLD, NEW = SIGNING_KEYS



class Traffic:
    """Signed requests from ``workers`` threads until stopped; records every status."""

    def __init__(self, relay: RelayProcess, key: list[str], workers: int = 3) -> None:
        self.relay, self.key = relay, key
        self.statuses: list[int] = []
        self._stop = threading.Event()
        self._ids = itertools.count()
        self._number = fresh_number()
        self._threads = [threading.Thread(target=self._run) for _ in range(workers)]

    def _run(self) -> None:
        with httpx.Client(timeout=30) as client:
            while not self._stop.is_set():
                raw = json.dumps(otp_body(self._number, code=f"{next(self._ids):06d}")).encode()
                try:
                    status = client.post(self.relay.url + "/v1/messages", content=raw,
                                         headers=signed_headers(self.key[0], raw)).status_code
                except httpx.HTTPError:
                    status = -1
                self.statuses.append(status)

    def __enter__(self) -> "Traffic":
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)


def test_key_rotation_under_traffic_fails_no_request(make_relay, emulator) -> None:
    emulator.add_subaccount("rotation_sub", "rot-api-key-1")
    relay = make_relay(SUBACCOUNT="rotation_sub", api_key="rot-api-key-1", signing_keys=(OLD,))
    api_key_file = relay.log_path.parent / "apikey"
    signing_key_file = relay.log_path.parent / "signing-keys"

    def loads(file: str) -> float:
        return relay.metric("otp_relay_key_reloads_total", file=file, result="ok")

    current_key = [OLD]
    with Traffic(relay, current_key) as traffic:
        time.sleep(0.5)
        # Signing key: add the new one, switch the callers, retire the old one.
        before = loads("signing_key")
        replace_file(signing_key_file, f"{OLD}\n{NEW}\n")
        wait_for(lambda: loads("signing_key") > before)
        current_key[0] = NEW
        time.sleep(0.5)
        before = loads("signing_key")
        replace_file(signing_key_file, f"{NEW}\n")
        wait_for(lambda: loads("signing_key") > before)
        # 8x8 API key: 8x8 accepts both, the relay picks up the new one, the old is revoked.
        emulator.add_subaccount("rotation_sub", "rot-api-key-2")
        before = loads("api_key")
        replace_file(api_key_file, "rot-api-key-2\n")
        wait_for(lambda: loads("api_key") > before)
        time.sleep(0.5)  # grace for requests that picked up the old key just before the swap
        emulator.revoke_api_key("rotation_sub", "rot-api-key-1")
        time.sleep(0.5)
    assert len(traffic.statuses) > 50
    assert set(traffic.statuses) == {202}, {s: traffic.statuses.count(s) for s in set(traffic.statuses)}
    assert relay.post(otp_body(fresh_number()), OLD).status_code == 401  # retired
    assert relay.post(otp_body(fresh_number()), NEW).status_code == 202  # with the new API key
    assert len(emulator.messages()) == len(traffic.statuses) + 1
    assert_no_secrets(relay.logs(), ["rot-api-key-1", "rot-api-key-2", OLD, NEW])


def test_sigterm_finishes_in_flight_requests(make_relay, emulator) -> None:
    relay = make_relay()
    emulator.inject("latency", ms=5000, count=8)
    results: list[int] = []

    def send(index: int) -> None:
        results.append(relay.post(otp_body(fresh_number(), code=f"77{index:04d}"), NEW).status_code)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    wait_for(lambda: len(emulator.requests()) == 8)
    relay.process.send_signal(15)
    # No longer accepting while the eight are still in flight (8x8 answers after 5 s).
    refused = False
    deadline = time.monotonic() + 2.0
    while not refused and time.monotonic() < deadline:
        try:
            httpx.get(relay.url + "/healthz", timeout=0.5)
            time.sleep(0.05)
        except httpx.HTTPError:
            refused = True
    assert results == []  # nothing answered yet: the requests were in flight at SIGTERM
    for thread in threads:
        thread.join(timeout=30)
    assert relay.process.wait(timeout=30) == 0
    assert refused
    assert results == [202] * 8
    assert len(emulator.messages()) == 8
    assert '"msg":"stopped"' in relay.logs()


def test_per_recipient_budget_across_replicas(make_relay, emulator) -> None:
    """Limits live in each process: N replicas let a recipient have up to N x the limit,
    and each replica alone holds its own limit exactly."""
    replicas = [make_relay(PER_RECIPIENT="2/10m"), make_relay(PER_RECIPIENT="2/10m")]
    number = fresh_number()
    statuses: dict[int, list[int]] = {0: [], 1: []}
    for attempt in range(6):
        which = attempt % 2
        response = replicas[which].post(otp_body(number, code=f"55{attempt:04d}"), NEW)
        statuses[which].append(response.status_code)
    assert statuses == {0: [202, 202, 429], 1: [202, 202, 429]}
    assert len(emulator.messages()) == 4  # = replicas x limit
