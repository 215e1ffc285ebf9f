"""Key files and the serving certificate as Kubernetes delivers them: strict parsing, the
kubelet's ``..data`` symlink swap, revocation, reload without a restart."""

from __future__ import annotations

import socket
import ssl

from cryptography import x509

from otp_sandbox.pki import CertPair
from tests.fixtures.relay import RelayProcess, kubelet_volume, otp_body, relay_env, replace_file

from .conftest import API_KEY, SIGNING_KEYS, SUBACCOUNT, fresh_number, wait_for

OLD, NEW = SIGNING_KEYS



def test_kubelet_symlink_swap_rotates_signing_keys(make_relay, emulator, tmp_path) -> None:
    mount = tmp_path / "signing-mount"
    kubelet_volume(mount, {"keys": f"{OLD}\n"})
    relay = make_relay(SIGNING_KEY_FILE=str(mount / "keys"))
    assert relay.post(otp_body(fresh_number()), OLD).status_code == 202
    assert relay.post(otp_body(fresh_number()), NEW).status_code == 401
    kubelet_volume(mount, {"keys": f"# rotated\n{NEW}\n"})
    wait_for(lambda: relay.post(otp_body(fresh_number()), NEW).status_code == 202)
    assert relay.post(otp_body(fresh_number()), OLD).status_code == 401
    assert relay.post(otp_body(fresh_number()), "# rotated").status_code == 401  # a comment is no key


def test_empty_signing_key_file_revokes_every_key(make_relay, emulator) -> None:
    relay = make_relay()
    signing_file = relay.log_path.parent / "signing-keys"
    assert relay.post(otp_body(fresh_number()), NEW).status_code == 202
    replace_file(signing_file, "# all keys revoked\n\n")
    wait_for(lambda: relay.get("/readyz").status_code == 503)
    assert relay.get("/readyz").json()["reasons"] == {"signing_key": "no key in the file"}
    for key in SIGNING_KEYS:
        assert relay.post(otp_body(fresh_number()), key).status_code == 503
    assert len(emulator.requests()) == 1


def test_api_key_file_with_two_keys_is_not_ready(make_relay, emulator, tmp_path) -> None:
    api_key_file = tmp_path / "two-keys"
    api_key_file.write_text(f"{API_KEY}\nsk-another-key\n")
    relay = make_relay(wait_ready=False, API_KEY_FILE=str(api_key_file))
    ready = relay.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["reasons"] == {"api_key": "expected exactly one API key, found 2"}
    assert relay.post(otp_body(fresh_number()), NEW).status_code == 503
    assert emulator.requests() == []
    replace_file(api_key_file, f"# the 8x8 key\n{API_KEY}\n")
    wait_for(lambda: relay.get("/readyz").status_code == 200)
    assert relay.post(otp_body(fresh_number()), NEW).status_code == 202


def _served_common_name(relay: RelayProcess, ca_file) -> str:
    port = int(relay.url.rsplit(":", 1)[1].split("/")[0])
    context = ssl.create_default_context(cafile=str(ca_file))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            der = tls.getpeercert(binary_form=True)
    return x509.load_der_x509_certificate(der).subject.rfc4514_string()


def test_serving_certificate_is_reloaded_on_change(emulator, sandbox_ca, relay_factory, ssl_cert_file,
                                                  tmp_path) -> None:
    first, second = sandbox_ca.issue("relay-cert-one"), sandbox_ca.issue("relay-cert-two")
    served = CertPair(tmp_path / "tls.crt", tmp_path / "tls.key")
    replace_file(served.cert, first.cert.read_text())
    replace_file(served.key, first.key.read_text())
    env = relay_env(tmp_path / "relay", base_url=emulator.base_url, ssl_cert_file=ssl_cert_file,
                    api_key=API_KEY, signing_keys=SIGNING_KEYS, SUBACCOUNT=SUBACCOUNT)
    relay = relay_factory(env, tls=served, ca_file=sandbox_ca.cert_path)
    assert _served_common_name(relay, sandbox_ca.cert_path) == "CN=relay-cert-one"
    replace_file(served.key, second.key.read_text())
    replace_file(served.cert, second.cert.read_text())
    wait_for(lambda: _served_common_name(relay, sandbox_ca.cert_path) == "CN=relay-cert-two")
    assert relay.post(otp_body(fresh_number()), NEW).status_code == 202
