"""``otp-sandbox demo``: the whole system on the local sandbox, an OTP delivered end to end.

Builds the project's image (podman, cached), starts the control plane (full profile) with a real
kubelet Node loaded with that image, the 8x8 and Auth0 emulators and the operator, applies
``examples/`` with sandbox credentials plus a pod template that puts the relay on the real node,
waits for the channel to turn Ready (its relay pods pass their real probes), fires a phone message
the way Auth0 would (the registered action runs in Node.js and calls the relay pods through the
sandbox's ingress; the relay sends through the 8x8 emulator) and prints a summary.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import secrets
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .crd import install_crd
from .pki import CertificateAuthority

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
NAMESPACE, CHANNEL = "shop", "prod"
RECIPIENT = "+6591234567"
CODE = "482913"
VOICE_CODE = "739154"
CALLER_ID = "+6562345678"  # the number 8x8 whitelisted for the demo subaccount's calls
CONDITIONS = ("RelayAvailable", "Auth0Synced", "Ready")


class DemoError(RuntimeError):
    """One step failed; ``hint`` says what to do next."""

    def __init__(self, message: str, hint: str) -> None:
        super().__init__(message)
        self.hint = hint


@dataclass(frozen=True)
class Summary:
    channel: str
    integration: str
    relay_url: str
    action_id: str
    action_version: str
    sms_destination: str
    sms_source: str
    sms_text: str
    latency_ms: float
    kubeconfig: Path
    node_seconds: float
    relay_pods: str
    receipt: str = "-"
    delivery: str = "-"
    call: str = "-"
    call_outcome: str = "-"

    def lines(self) -> list[str]:
        return [
            f"channel:        {self.channel} ({self.integration})",
            f"relay URL:      {self.relay_url}",
            f"Auth0 action:   {self.action_id} (deployed version {self.action_version})",
            f"SMS at 8x8:     to {self.sms_destination} from {self.sms_source}: \"{self.sms_text}\"",
            f"end to end:     {self.latency_ms:.0f} ms (Auth0 action -> relay -> 8x8)",
            f"8x8 receipt:    {self.receipt}",
            f"call at 8x8:    {self.call}",
            f"call outcome:   {self.call_outcome}",
            f"delivery:       {self.delivery}",
            f"relay pods:     {self.relay_pods}",
            f"real node:      started (containerd, images, kubelet, Ready) in {self.node_seconds:.1f}s",
        ]


def mask_number(number: str) -> str:
    return "*" * max(len(number) - 4, 0) + number[-4:]


class Steps:
    """Numbered progress lines: every long step says what it is doing and how long it took."""

    def __init__(self, total: int, out: Callable[[str], None] = print) -> None:
        self.total, self.number, self.out = total, 0, out

    @contextlib.contextmanager
    def step(self, what: str, hint: str) -> Iterator[Callable[[str], None]]:
        self.number += 1
        self.out(f"[{self.number}/{self.total}] {what}...")
        started = time.monotonic()
        try:
            yield lambda detail: self.out(f"      {detail}")
        except DemoError:
            raise
        except KeyboardInterrupt:
            raise
        except Exception as error:  # one clear line per failure, with the next step to take
            raise DemoError(f"{what} failed: {error}", hint) from error
        self.out(f"      done in {time.monotonic() - started:.1f}s")


def _example_documents(name: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all((EXAMPLES / name).read_text()) if doc]


def sandbox_manifests(*, auth0_domain: str, client_id: str, client_secret: str, api_key: str,
                      sms_base_url: str, public_url: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """``examples/`` with sandbox values: the two Secrets and the OtpChannel (phone-provider)."""
    secrets_docs = _example_documents("secrets.yaml")
    values = {"auth0-mgmt": {"client_id": client_id, "client_secret": client_secret},
              "eightbyeight": {"apikey": api_key}}
    for doc in secrets_docs:
        doc["stringData"] = values[doc["metadata"]["name"]]
    (channel,) = _example_documents("otpchannel.yaml")
    channel = copy.deepcopy(channel)
    spec = channel["spec"]
    spec["auth0"]["domain"] = auth0_domain
    spec["auth0"]["integration"] = "phone-provider"
    spec["sms"]["baseUrl"] = sms_base_url
    spec["relay"]["publicUrl"] = public_url
    spec["relay"].pop("ingress", None)  # the sandbox stands in for the ingress (TLS on loopback)
    return secrets_docs, channel


def _print(line: str) -> None:
    print(line, flush=True)


def run(keep: bool, out: Callable[[str], None] = _print) -> Summary:
    # Imported here so `otp-sandbox --help` stays fast and a missing piece fails inside a step.
    from kubernetes import client, config

    from otp_operator import names

    from . import image
    from .auth0_emulator import Auth0Emulator, Client
    from .controlplane import ControlPlane, build
    from .controlplane.node import NODE_NAME, node_selector, toleration
    from .eightbyeight import EightByEightEmulator
    from .ingress import ServiceIngress, trust_sandbox_ca
    from .processes import OperatorProcess, free_port

    steps = Steps(10, out)
    workdir = Path(tempfile.mkdtemp(prefix="otp-demo-"))
    stack = contextlib.ExitStack()
    try:
        with steps.step("control plane binaries (built from source once, then cached)",
                        "install Go (https://go.dev/dl) or set KUBEBUILDER_ASSETS, then rerun"):
            build()
        with steps.step("building the project's image with podman (layers cached)",
                        "`make image` installs podman, runc and mmdebstrap; its error is quoted above") as detail:
            def report(text: str, finished: bool = True) -> None:
                if finished:
                    detail(text)

            images = image.node_images(report=report)
            detail(f"image {image.reference()}")
        with steps.step("starting the local control plane (etcd, kube-apiserver, controller-manager, "
                        "scheduler, kwok) and a real kubelet node (containerd, runc, CNI)",
                        "see the component log quoted above; `otp-sandbox cluster down` stops "
                        "a cluster left over from an earlier run") as detail:
            plane = ControlPlane(profile="full", run_dir=workdir / "cluster", real_node=images)
            plane.start()
            stack.callback(plane.stop)
            assert plane.node is not None
            detail(f"KUBECONFIG={plane.kubeconfig}")
            detail(f"node {NODE_NAME} Ready in {plane.node.started_seconds:.1f}s (pods on {plane.node.subnet})")
        ca = CertificateAuthority(workdir / "ca")
        trust = ca.trust_bundle(workdir / "trust-bundle.pem")
        with steps.step("starting the 8x8 SMS emulator (HTTPS on the node's bridge, where pods reach it)",
                        "check the emulator log in the demo's work directory") as detail:
            sms = EightByEightEmulator.start(ca, workdir / "sms", listen=f"{plane.node.gateway}:0")
            stack.callback(sms.stop)
            api_key = secrets.token_urlsafe(24)
            sms.add_subaccount("shop_otp", api_key, caller_ids=[CALLER_ID])
            sms.set_outcome(RECIPIENT, "delivered", after_ms=800)  # the receipt the summary shows
            sms.set_call_outcome(RECIPIENT, "answered", after_ms=1200)  # and the call's session summary
            detail(f"8x8 API at {sms.base_url}, subaccount shop_otp (SMS, and calls from {CALLER_ID})")
        with steps.step("starting the Auth0 emulator (runs registered code in Node.js)",
                        "install Node.js >= 20 (`apt-get install nodejs`), then rerun") as detail:
            if shutil.which("node") is None:
                raise RuntimeError("node was not found on PATH")
            auth0 = Auth0Emulator.start(ca, workdir / "auth0")
            stack.callback(auth0.stop)
            credentials = Client(client_id="otpDemoOperator", client_secret=secrets.token_urlsafe(32))
            tenant = auth0.add_tenant(clients=[credentials])
            # Set up as a person would in the Dashboard, so MFA SMS reach the phone provider.
            tenant.route_phone_messages_to("phone-provider")
            tenant.set_phone(message_types=["sms", "voice"])  # users may also choose "call me"
            detail(f"tenant {tenant.domain} (Unified Phone Experience, MFA by SMS and by call)")
        api = config.new_client_from_config(str(plane.kubeconfig))
        with steps.step("installing the OtpChannel CRD and starting the operator",
                        "read the operator log in the demo's work directory") as detail:
            install_crd(api)
            operator = OperatorProcess(plane.kubeconfig, trust, workdir / "operator.log")
            operator.start()
            stack.callback(operator.stop)
            detail(f"otp-operator run (log: {operator.log_path})")
        public_url = f"https://127.0.0.1:{free_port()}/prod"
        secrets_docs, channel = sandbox_manifests(
            auth0_domain=tenant.domain, client_id=credentials.client_id,
            client_secret=credentials.client_secret, api_key=api_key,
            sms_base_url=sms.base_url, public_url=public_url)
        channel["spec"]["voice"] = {"callerId": CALLER_ID}
        channel["spec"]["relay"]["podTemplate"] = {"spec": {
            "nodeSelector": node_selector(), "tolerations": [toleration()], "container": {"image": image.reference()}}}
        with steps.step(f"applying examples/ (namespace {NAMESPACE}, Secrets, OtpChannel "
                        f"{NAMESPACE}/{CHANNEL}) and waiting for Ready",
                        "`kubectl describe otpch prod -n shop` with the KUBECONFIG above shows "
                        "the failing condition") as detail:
            core = client.CoreV1Api(api)
            core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=NAMESPACE)))
            for doc in secrets_docs:
                core.create_namespaced_secret(NAMESPACE, doc)
            objects = client.CustomObjectsApi(api)
            objects.create_namespaced_custom_object("otprelay.io", "v1alpha1", NAMESPACE,
                                                    "otpchannels", channel)
            _trust_sandbox_ca_when_deployed(api, trust, lambda d, c: trust_sandbox_ca(api, NAMESPACE, d, c, trust))
            status = _wait_ready(objects, detail, timeout=300.0)
        with steps.step("routing the public URL to the relay pods (the sandbox's ingress: HTTPS on loopback)",
                        "`kubectl get pods -n shop -o wide` with the KUBECONFIG above shows the relay pods") as detail:
            port = int(public_url.split(":")[2].split("/")[0])
            ingress = stack.enter_context(ServiceIngress(api, NAMESPACE, status["deployment"], port, ca.issue("ingress")))
            pods = client.CoreV1Api(api).list_namespaced_pod(
                NAMESPACE, label_selector=",".join(f"{k}={v}" for k, v in names.selector_labels(CHANNEL).items())).items
            live = [p for p in pods if p.metadata.deletion_timestamp is None]
            pod_ips = [p.status.pod_ip for p in live]
            relay_pods = ", ".join(f"{p.metadata.name} on {p.spec.node_name} ({p.status.pod_ip})" for p in live)
            detail(f"{public_url} -> {', '.join(ingress.endpoints())}")
        with steps.step("firing a phone message through Auth0 (action in Node.js -> relay -> 8x8)",
                        "the action's outcome and reason are printed above") as detail:
            started = time.monotonic()
            result = tenant.fire_phone_message(recipient=RECIPIENT,
                                               text=f"Your ShopOTP code is {CODE}", code=CODE)
            latency_ms = (time.monotonic() - started) * 1000
            if result.outcome != "success":
                raise RuntimeError(f"the action reported {result.outcome}: {result.reason}")
            (message,) = [m for m in sms.messages() if m.destination.lstrip("+") == RECIPIENT[1:]]
            detail(f"action outcome: {result.outcome}")
        with steps.step("firing a voice OTP through Auth0 (\"call me\": action -> relay -> 8x8 Voice Messaging)",
                        "the action's outcome and reason are printed above") as detail:
            spoken = tenant.fire_phone_message(recipient=RECIPIENT, text=f"Your ShopOTP code is {' '.join(VOICE_CODE)}",
                                               code=VOICE_CODE, delivery_method="voice")
            if spoken.outcome != "success":
                raise RuntimeError(f"the action reported {spoken.outcome}: {spoken.reason}")
            (placed,) = [c for c in sms.calls() if c.destination == RECIPIENT[1:]]
            detail(f"action outcome: {spoken.outcome}, 8x8 session {placed.session_id}")
        call = (f"to {mask_number(placed.destination)} from +{placed.source}, voice {placed.voice_profile} "
                f"read {placed.repetition}x: \"{_mask_code(placed.text or '', VOICE_CODE)}\"")
        summary = Summary(
            channel=f"{NAMESPACE}/{CHANNEL}", integration="phone-provider", relay_url=public_url,
            action_id=status["auth0"].get("actionId", "?"),
            action_version=str(status["auth0"].get("deployedVersion", "?")),
            sms_destination=mask_number(message.destination), sms_source=message.source or "-",
            sms_text=message.text.replace(CODE, "*" * len(CODE)), latency_ms=latency_ms,
            kubeconfig=plane.kubeconfig, node_seconds=plane.node.started_seconds, relay_pods=relay_pods,
            call=call, **_delivery(sms, pod_ips, message, placed))
        out("")
        out("Summary (the OTP code is masked)")
        for line in summary.lines():
            out(f"  {line}")
        if keep:
            _keep_running(plane.kubeconfig, out)
        return summary
    finally:
        stack.close()
        shutil.rmtree(workdir, ignore_errors=True)


def _mask_code(text: str, code: str) -> str:
    """The text with the code masked, also when it is read out digit by digit."""
    return text.replace(" ".join(code), " ".join("*" * len(code))).replace(code, "*" * len(code))


def _delivery(sms: Any, pod_ips: list[str], message: Any, call: Any, timeout: float = 30.0) -> dict[str, str]:
    """8x8's delivery receipt and the call's session summary as the relay took them, and the relay
    pods' delivery summary per channel added up (what the operator copies into status.delivery),
    read from the pods' admin listener."""
    import httpx

    from otp_operator import names

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        attempts = [a for a in sms.receipts()["attempts"] if a["result"] == 200]
        receipt = [a for a in attempts if a.get("umid") == message.umid]
        summary = [a for a in attempts if a.get("sessionId") == call.session_id]
        pods = [httpx.get(f"http://{ip}:{names.RELAY_ADMIN_PORT}{names.RELAY_DELIVERY_SUMMARY_PATH}",
                          timeout=5).json() for ip in pod_ips]
        text, voice = ({key: sum(p["channels"][channel][key] for p in pods) for key in ("sent", "delivered", "undelivered")}
                       for channel in ("text", "voice"))
        if receipt and summary and text["delivered"] + text["undelivered"] and voice["delivered"] + voice["undelivered"]:
            state = receipt[0]["body"]["payload"]["status"]["state"]
            status = summary[0]["body"]["payload"]["sessionStatus"]
            return {"receipt": f"{state} to {mask_number(message.destination)} after {receipt[0]['elapsed']:.1f} s",
                    "call_outcome": f"{status} (answered) to {mask_number(call.destination)}, 8x8's session summary "
                                    f"after {summary[0]['elapsed']:.1f} s",
                    "delivery": f"last {pods[0]['windowSeconds'] // 60} min: text {text['sent']} sent, "
                                f"{text['delivered']} delivered; voice {voice['sent']} placed, "
                                f"{voice['delivered']} answered, {voice['undelivered']} not"}
        time.sleep(0.2)
    return {"receipt": f"no receipt or session summary from 8x8 reached the relay within {timeout:.0f} s"}


def _trust_sandbox_ca_when_deployed(api: Any, trust: Path, apply: Callable[[str, str], None],
                                    timeout: float = 60.0) -> None:
    """Once the operator created the relay Deployment, let its pods trust the 8x8 emulator's CA."""
    from kubernetes import client

    from otp_operator import names

    deadline = time.monotonic() + timeout
    while not client.AppsV1Api(api).list_namespaced_deployment(NAMESPACE).items:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the operator created no relay Deployment within {timeout:.0f}s")
        time.sleep(0.2)
    apply(names.relay_name(CHANNEL), names.RELAY_CONTAINER)


def _wait_ready(objects: Any, detail: Callable[[str], None], timeout: float = 120.0) -> dict[str, Any]:
    """Print each condition as it turns True; return status plus the relay Deployment name."""
    from otp_operator import names

    seen: dict[str, str] = {}
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        channel = objects.get_namespaced_custom_object("otprelay.io", "v1alpha1", NAMESPACE,
                                                       "otpchannels", CHANNEL)
        status = channel.get("status") or {}
        generation = channel["metadata"]["generation"]
        by_type = {c["type"]: c for c in status.get("conditions") or []}
        for kind in CONDITIONS:
            condition = by_type.get(kind)
            if condition is None:
                continue
            state = condition["status"]
            if seen.get(kind) != state:
                seen[kind] = state
                detail(f"{kind}={state} ({condition.get('reason')}: {condition.get('message')}) "
                       f"+{time.monotonic() - started:.1f}s")
        ready = by_type.get("Ready", {})
        if ready.get("status") == "True" and ready.get("observedGeneration") == generation:
            return {"auth0": status.get("auth0") or {}, "deployment": names.relay_name(CHANNEL)}
        time.sleep(0.2)
    raise TimeoutError(f"the channel was not Ready after {timeout:.0f}s; last conditions: {seen}")


def _keep_running(kubeconfig: Path, out: Callable[[str], None]) -> None:
    out("")
    out("Try it from another terminal:")
    out(f"  export KUBECONFIG={kubeconfig}")
    out(f"  kubectl get otpch -n {NAMESPACE} -o wide")
    out(f"  kubectl describe otpch {CHANNEL} -n {NAMESPACE}")
    out(f"  kubectl create secret generic eightbyeight -n {NAMESPACE} --from-literal=apikey=rotated "
        "--dry-run=client -o yaml | kubectl apply -f -   # rotate the 8x8 key: the relay rolls")
    out(f"  kubectl delete otpch {CHANNEL} -n {NAMESPACE}   # the Auth0 action is removed first")
    out("Everything stays up until you press Ctrl-C here (or send SIGTERM).")
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    out("stopping everything...")


def command(args: argparse.Namespace) -> int:
    try:
        run(keep=args.keep)
    except DemoError as error:
        print(f"error: {error}", file=sys.stderr)
        print(f"next:  {error.hint}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; everything was stopped", file=sys.stderr)
        return 130
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("demo", help="run the whole system on the local sandbox",
                                   description=__doc__)
    parser.add_argument("--keep", action="store_true",
                        help="keep everything running after the summary (Ctrl-C stops it)")
    parser.set_defaults(func=command)
