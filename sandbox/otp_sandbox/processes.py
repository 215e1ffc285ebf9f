"""The project's own programs as real processes, for the demo, tests and benchmarks.

``RelayProcess`` runs ``otp-relay``; ``OperatorProcess`` runs ``otp-operator run``;
``RelayFromDeployment`` starts the relay exactly as a relay Deployment configures it (kwok marks
Pods Ready without running them, so this stands in for the kubelet and the ingress).
"""

from __future__ import annotations

import base64
import json
import os
import signal
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from kubernetes import client

from otp_relay.signing import sign

from .controlplane.node import POD_NETWORKS_GLOB
from .controlplane.process import free_port
from .image import REPOSITORY as IMAGE_REPOSITORY
from .lifetime import die_with_this_process
from .pki import CertificateAuthority, CertPair

_START_TIMEOUT = 30.0
# The sandbox's emulators listen on loopback (the 8x8 one on a real node's bridge when relay pods
# must reach it); the operator accepts only Auth0 and 8x8 hosts unless told otherwise, so every
# sandbox and test operator is started with this allow-list.
SANDBOX_ENDPOINT_ARGS = (
    "--allow-auth0-domain", "localhost:*", "--allow-auth0-domain", "127.0.0.1:*",
    "--allow-sms-base-url", "https://localhost:*", "--allow-sms-base-url", "https://127.0.0.1:*",
    "--allow-sms-base-url", f"https://{POD_NETWORKS_GLOB}",
    # the image built from this tree, which the demo and the real-node tests run as the relay
    "--allow-relay-image", IMAGE_REPOSITORY,
)


def relay_command() -> list[str]:
    script = Path(sys.executable).with_name("otp-relay")
    return [str(script)] if script.exists() else [sys.executable, "-m", "otp_relay"]


def terminate(process: subprocess.Popen, timeout: float) -> None:
    """SIGTERM (a graceful stop), then SIGKILL if it has not exited within ``timeout``."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def replace_file(path: Path, text: str) -> None:
    """Atomic replace, as Kubernetes updates a mounted Secret."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def metric_samples(exposition: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """``{sorted label items: value}`` of every sample named ``name`` in a Prometheus text
    exposition (the relay's and the operator's /metrics)."""
    from prometheus_client.parser import text_string_to_metric_families  # noqa: PLC0415

    return {tuple(sorted(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(exposition)
            for sample in family.samples if sample.name == name}


def metric_value(exposition: str, name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` that carry ``labels`` (0 when none does)."""
    return sum(value for items, value in metric_samples(exposition, name).items()
               if all(dict(items).get(key) == wanted for key, wanted in labels.items()))


def signed_headers(key: str, raw: bytes, timestamp: int | None = None) -> dict[str, str]:
    ts = int(time.time()) if timestamp is None else timestamp
    return {"Content-Type": "application/json", "X-Otp-Timestamp": str(ts),
            "X-Otp-Signature": sign(key, ts, raw)}


class RelayProcess:
    def __init__(self, process: subprocess.Popen, url: str, log_path: Path, verify: str | bool,
                 admin_url: str = "") -> None:
        self.process = process
        self.url = url
        self.admin_url = admin_url  # /healthz, /readyz, /metrics (the admin listener)
        self.log_path = log_path
        context = ssl.create_default_context(cafile=verify) if isinstance(verify, str) else verify
        self.client = httpx.Client(verify=context, timeout=30)

    @classmethod
    def start(cls, workdir: Path, env: Mapping[str, str], args: Sequence[str] = (), *,
              port: int | None = None, tls: CertPair | None = None, ca_file: Path | None = None,
              wait_ready: bool = True, name: str = "relay") -> "RelayProcess":
        """Start on 127.0.0.1:``port`` (free one by default); HTTPS with ``tls``, verified
        against ``ca_file``. Waits for /readyz (or /healthz with ``wait_ready=False``)."""
        workdir.mkdir(parents=True, exist_ok=True)
        port = port or free_port()
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("OTP_RELAY_")}
        full_env.update(env)
        full_env["OTP_RELAY_LISTEN"] = f"127.0.0.1:{port}"
        admin_port = free_port()
        full_env["OTP_RELAY_ADMIN_LISTEN"] = f"127.0.0.1:{admin_port}"
        if tls is not None:
            full_env["OTP_RELAY_TLS_CERT_FILE"] = str(tls.cert)
            full_env["OTP_RELAY_TLS_KEY_FILE"] = str(tls.key)
        scheme = "https" if full_env.get("OTP_RELAY_TLS_CERT_FILE") else "http"
        prefix = full_env.get("OTP_RELAY_PATH_PREFIX", "").rstrip("/")
        log_path = workdir / f"{name}-{port}.log"
        with open(log_path, "ab") as log:
            process = subprocess.Popen([*relay_command(), *args], env=full_env, stdout=log,
                                       stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       preexec_fn=die_with_this_process())
        relay = cls(process, f"{scheme}://127.0.0.1:{port}{prefix}", log_path,
                    str(ca_file) if ca_file else True, f"http://127.0.0.1:{admin_port}")
        relay._wait("/readyz" if wait_ready else "/healthz")
        return relay

    def _wait(self, path: str) -> None:
        deadline = time.monotonic() + _START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"otp-relay exited with {self.process.returncode}:\n{self.logs()}")
            try:
                if self.client.get(self.admin_url + path, timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"otp-relay not {path} within {_START_TIMEOUT}s:\n{self.logs()}")

    def post(self, body: Any, key: str, *, timestamp: int | None = None,
             headers: Mapping[str, str] | None = None) -> httpx.Response:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        return self.client.post(self.url + "/v1/messages", content=raw,
                                headers={**signed_headers(key, raw, timestamp), **(headers or {})})

    def get(self, path: str) -> httpx.Response:
        """GET on the admin listener (probes and metrics)."""
        return self.client.get(self.admin_url + path)

    def metric(self, name: str, **labels: str) -> float:
        """The sum of the samples of ``name`` on /metrics that carry ``labels`` (0 when absent)."""
        return metric_value(self.get("/metrics").text, name, **labels)

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_records(self) -> list[dict[str, Any]]:
        records = []
        for line in self.logs().splitlines():
            try:
                records.append(json.loads(line))
            except ValueError:
                records.append({"unparsed": line})
        return records

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM, wait; kill if it does not exit in time. Returns the exit code."""
        terminate(self.process, timeout)
        self.client.close()
        return self.process.returncode


def encodings(secret: str) -> list[str]:
    """How a secret value can show up in text: raw, and base64 (standard and URL-safe) with and
    without the trailing newline Secret files often carry, padding stripped."""
    forms = [secret]
    for raw in (secret.encode(), (secret + "\n").encode()):
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            forms.append(encode(raw).decode().rstrip("="))
    return forms


def secret_forms(secret: str) -> list[str]:
    """How ``secret`` can appear in text: raw, base64 (``encodings``; for values of 8 characters
    or more, whose encodings are too long to occur by chance), and an E.164 number also without
    its plus, as 8x8 writes it."""
    variants = encodings(secret) if len(secret) >= 8 else [secret]
    if secret.startswith("+"):
        variants.append(secret[1:])
    return variants


def assert_no_secrets(text: str, secrets: Iterable[str], where: str = "the logs") -> None:
    """Fail naming which secret (by position and length) leaked in any of its forms, never
    printing it: for logs, Events, status and answers alike."""
    for index, secret in enumerate(secrets):
        if secret and any(form in text for form in secret_forms(secret)):
            raise AssertionError(f"secret #{index} (len {len(secret)}) found in {where}")


class OperatorProcess:
    """``otp-operator run`` as a subprocess; logs go to a file scanned for secrets at the end."""

    def __init__(self, kubeconfig: Path, ssl_cert_file: Path, log_path: Path,
                 args: Iterable[str] = ("--all-namespaces", *SANDBOX_ENDPOINT_ARGS)) -> None:
        self.log_path = log_path
        self.args = list(args)
        self.env = {**os.environ, "KUBECONFIG": str(kubeconfig), "SSL_CERT_FILE": str(ssl_cert_file),
                    "PYTHONUNBUFFERED": "1"}
        self.process: subprocess.Popen | None = None

    def start(self) -> "OperatorProcess":
        script = Path(sys.executable).with_name("otp-operator")
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen([str(script), "run", *self.args], env=self.env, stdout=log,
                                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            start_new_session=True, preexec_fn=die_with_this_process())
        return self

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL: no cleanup at all, as a crashed pod."""
        if self.process is None:
            return
        self.process.kill()
        self.process.wait()

    def stop(self, timeout: float = 20.0) -> None:
        if self.process is not None:
            terminate(self.process, timeout)

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def assert_no_secrets_logged(self, secrets: Iterable[str]) -> None:
        assert_no_secrets(self.logs(), secrets, "the operator log")


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
        if command != ["otp-relay"]:
            raise RuntimeError(f"the relay container runs {command!r}, expected ['otp-relay']")
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
