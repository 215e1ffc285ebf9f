"""Helpers for the operator's integration tests: the operator as a real process, a relay
started from a Deployment's own container spec, waiting on channel status."""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from kubernetes import client
from kubernetes.client.rest import ApiException

from otp_operator import names
from otp_sandbox.pki import CertificateAuthority
from tests.fixtures.relay import RelayProcess, replace_file

GROUP, VERSION, PLURAL = names.GROUP, names.VERSION, names.PLURAL


def wait_for(predicate: Callable[[], Any], timeout: float = 60.0, interval: float = 0.2,
             what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last value: {last!r}")


class OperatorProcess:
    """``otp-operator run`` as a subprocess; logs go to a file scanned for secrets at the end."""

    def __init__(self, kubeconfig: Path, ssl_cert_file: Path, log_path: Path, args: Iterable[str] = ()) -> None:
        self.log_path = log_path
        self.args = ["--all-namespaces", "--relay-image", "example.test/otp-relay:dev", "--rotation-grace", "2",
                     *args]
        self.env = {**os.environ, "KUBECONFIG": str(kubeconfig), "SSL_CERT_FILE": str(ssl_cert_file),
                    "PYTHONUNBUFFERED": "1"}
        self.process: subprocess.Popen | None = None

    def start(self) -> "OperatorProcess":
        script = Path(sys.executable).with_name("otp-operator")
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen([str(script), "run", *self.args], env=self.env, stdout=log,
                                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            start_new_session=True)
        return self

    def kill(self) -> None:
        """SIGKILL: no cleanup at all, as a crashed pod."""
        assert self.process is not None
        self.process.kill()
        self.process.wait()

    def stop(self, timeout: float = 20.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def assert_no_secrets_logged(self, secrets: Iterable[str]) -> None:
        text = self.logs()
        leaked = [s[:4] + "..." for s in secrets if s and s in text]
        assert not leaked, f"secrets found in the operator log: {leaked}"


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
    spec: dict[str, Any] = {
        "auth0": {"domain": domain, "credentialsSecretRef": {"name": "auth0-mgmt"}, "integration": integration},
        "sms": {"subaccountId": "shop_otp", "apiKeySecretRef": {"name": "eightbyeight", "key": "apikey"},
                "baseUrl": sms_base_url, "sender": "ShopOTP"},
        "policy": {"allowedCountries": ["SG", "MY"]},
        "relay": {"replicas": replicas, "publicUrl": public_url},
    }
    for key, value in extra.items():
        spec[key] = value
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "OtpChannel",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}


def custom(api: client.ApiClient) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(api)


def create_channel(api: client.ApiClient, manifest: Mapping[str, Any]) -> None:
    meta = manifest["metadata"]
    custom(api).create_namespaced_custom_object(GROUP, VERSION, meta["namespace"], PLURAL, dict(manifest))


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
        if found.get("status") == status and (reason is None or found.get("reason") == reason) \
                and found.get("observedGeneration") == generation:
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


# --- the relay, from the Deployment's own container spec -------------------------------------

class RelayFromDeployment:
    """Starts ``otp-relay`` locally exactly as the Deployment configures it.

    kwok marks pods Ready without running them, so this stands in for the kubelet: env from the
    container spec, every Secret volume resolved from the API server into a temp dir (mount
    paths rewritten), then kept in sync like the kubelet refreshes mounted Secrets; and TLS
    added on the public URL's port (standing in for the ingress).
    """

    def __init__(self, api: client.ApiClient, namespace: str, deployment: str, workdir: Path,
                 ca: CertificateAuthority, ssl_cert_file: Path, sync_interval: float = 0.2) -> None:
        self.api, self.namespace, self.deployment = api, namespace, deployment
        self.workdir, self.ca, self.ssl_cert_file = workdir, ca, ssl_cert_file
        self.sync_interval = sync_interval
        self.relay: RelayProcess | None = None
        self._mounts: dict[str, tuple[dict[str, Any], Path]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _read(self) -> dict[str, Any]:
        apps = client.AppsV1Api(self.api)
        return self.api.sanitize_for_serialization(apps.read_namespaced_deployment(self.deployment, self.namespace))

    def _sync_secret_files(self) -> None:
        core = client.CoreV1Api(self.api)
        for volume, target in self._mounts.values():
            secret = core.read_namespaced_secret(volume["secret"]["secretName"], self.namespace)
            data = secret.data or {}
            for item in volume["secret"].get("items") or [{"key": k, "path": k} for k in data]:
                if item["key"] in data:
                    text = base64.b64decode(data[item["key"]]).decode()
                    path = target / item["path"]
                    if not path.exists() or path.read_text() != text:
                        replace_file(path, text)

    def start(self, public_url: str) -> RelayProcess:
        deployment = self._read()
        pod = deployment["spec"]["template"]["spec"]
        container = pod["containers"][0]
        volumes = {v["name"]: v for v in pod.get("volumes") or []}
        env = {e["name"]: e["value"] for e in container.get("env") or [] if "value" in e}
        mounts: dict[str, str] = {}
        for mount in container.get("volumeMounts") or []:
            volume = volumes[mount["name"]]
            target = self.workdir / "mounts" / mount["name"]
            target.mkdir(parents=True, exist_ok=True)
            mounts[mount["mountPath"]] = str(target)
            if "secret" in volume:
                self._mounts[mount["name"]] = (volume, target)
        for key, value in list(env.items()):
            for mount_path, local in mounts.items():
                if value.startswith(mount_path + "/"):
                    env[key] = local + value[len(mount_path):]
        self._sync_secret_files()
        env["SSL_CERT_FILE"] = str(self.ssl_cert_file)
        env["OTP_RELAY_KEY_RELOAD_INTERVAL"] = "0.2"
        port = urlsplit(public_url).port
        tls = self.ca.issue("relay")
        command = container.get("command") or []
        assert command == ["otp-relay"], command
        self.relay = RelayProcess.start(self.workdir, env, container.get("args") or [], port=port, tls=tls,
                                        ca_file=self.ca.cert_path)
        self._thread = threading.Thread(target=self._sync_loop, daemon=True)
        self._thread.start()
        return self.relay

    def _sync_loop(self) -> None:
        while not self._stop.wait(self.sync_interval):
            try:
                self._sync_secret_files()
            except Exception:  # the Secret may be briefly absent; the kubelet keeps old files too
                pass

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self.relay is not None:
            self.relay.stop()
