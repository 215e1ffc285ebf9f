"""Operator benchmark (prints figures; not a test).

    .venv/bin/python bench/operator/run.py [--counts 1,100,500] [--tenants-per-channel 3]

Starts the full local control plane (kwok makes relay Deployments Available, each relay pod Ready
``--pod-ready-seconds`` after it starts, as on a real node), the Auth0 emulator
(100 ms latency, a per-tenant token-bucket rate limit) and ``otp-operator run`` as a process,
then for each count applies that many channels (one tenant per channel, as one environment per
tenant; the integration modes take turns, each tenant's MFA SMS routed to its channel's mode the
way a person sets it up, since a tenant routes its SMS to one place) and measures:
  * apply -> Ready per channel (p50/p95/max; targets: all Ready <= 10 s at 100, <= 40 s at 500)
    and Ready minus relay-Available (target <= 1 s);
  * Auth0 requests and operator Kubernetes API requests per channel at create;
  * steady state: Auth0 requests/writes and Kubernetes requests per channel per hour
    (measured with a short drift interval and scaled to the default 10 min one; target 0 writes);
  * operator resident memory after the largest round (target <= 150 MB at 500).

With ``--floor`` it measures what no operator can beat on this machine: no operator and no Auth0;
the benchmark itself creates each channel and the children the operator would create for it
(rendered by the operator's own ``render.render_children``, created from 8 threads), and reports
when every relay Deployment is Available. A channel cannot be Ready before that, so if this floor
misses a target, the target is out of reach here whatever the operator does.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from kubernetes import client, config, watch  # noqa: E402

from otp_sandbox.auth0_emulator import Auth0Emulator, Client, RateLimit  # noqa: E402
from otp_sandbox.controlplane import ControlPlane  # noqa: E402
from otp_sandbox.controlplane.gomodules import KWOK_POD_READY_DELAY_ANNOTATION  # noqa: E402
from otp_sandbox.controlplane.node import RELAY_POD_READY_SECONDS  # noqa: E402
from otp_sandbox.pki import CertificateAuthority  # noqa: E402
from otp_sandbox.processes import SANDBOX_ENDPOINT_ARGS  # noqa: E402
from otp_sandbox.crd import install_crd  # noqa: E402

GROUP, VERSION, PLURAL = "otprelay.io", "v1alpha1", "otpchannels"
INTEGRATIONS = ("phone-provider", "send-phone-message", "legacy-hook")
LATENCY_MS = 100
RATE_LIMIT = RateLimit(capacity=20, refill_per_second=10.0)
MEASURED_DRIFT = 20.0
DEFAULT_DRIFT = 600.0
POD_READY_SECONDS = RELAY_POD_READY_SECONDS


class Watcher:
    """Records when each channel first reports Ready=True and each relay Deployment Available."""

    def __init__(self, api: client.ApiClient) -> None:
        self.api = api
        self.ready: dict[tuple[str, str], float] = {}
        self.available: dict[tuple[str, str], float] = {}
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._channels, daemon=True),
                         threading.Thread(target=self._deployments, daemon=True)]
        for thread in self._threads:
            thread.start()

    def _channels(self) -> None:
        self._keep_watching(self._watch_channels)

    def _deployments(self) -> None:
        self._keep_watching(self._watch_deployments)

    def _keep_watching(self, watch_loop) -> None:
        """An overloaded API server ends watches with 504s/410s: list and watch again (the
        timestamps are first-seen, so a re-list loses nothing already recorded)."""
        while not self._stop.is_set():
            try:
                watch_loop()
            except Exception:  # also: the control plane goes away at the end of the run
                time.sleep(0.5)

    def _watch_channels(self) -> None:
        custom = client.CustomObjectsApi(self.api)
        while not self._stop.is_set():
            for event in watch.Watch().stream(custom.list_cluster_custom_object, GROUP, VERSION, PLURAL,
                                              timeout_seconds=30):
                obj = event["object"]
                key = (obj["metadata"]["namespace"], obj["metadata"]["name"])
                for cond in (obj.get("status") or {}).get("conditions") or []:
                    if cond.get("type") == "Ready" and cond.get("status") == "True":
                        self.ready.setdefault(key, time.time())

    def _watch_deployments(self) -> None:
        apps = client.AppsV1Api(self.api)
        while not self._stop.is_set():
            for event in watch.Watch().stream(apps.list_deployment_for_all_namespaces, timeout_seconds=30,
                                              label_selector="app.kubernetes.io/managed-by=otp-relay-operator"):
                dep = event["object"]
                wanted = dep.spec.replicas or 0
                if wanted and (dep.status.available_replicas or 0) >= wanted and \
                        (dep.status.updated_replicas or 0) >= wanted:
                    channel = dep.metadata.labels.get("otprelay.io/channel")
                    self.available.setdefault((dep.metadata.namespace, channel), time.time())

    def stop(self) -> None:
        self._stop.set()


def operator_metric(port: int, name: str) -> float:
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    total = 0.0
    for family in text_string_to_metric_families(httpx.get(f"http://127.0.0.1:{port}/metrics").text):
        for sample in family.samples:
            if sample.name == name:
                total += sample.value
    return total


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


CPU_GROUPS = ("kube-apiserver", "etcd", "kube-controller-manager", "kube-scheduler", "kwok", "otp-operator",
              "auth0-emulator")


def cpu_by_process() -> dict[str, float]:
    """CPU seconds used so far by this benchmark's process tree, by component (from /proc)."""
    ticks = os.sysconf("SC_CLK_TCK")
    stats: dict[int, tuple[int, float]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, ValueError, IndexError):
            continue
        stats[int(entry.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / ticks)
    ours = {os.getpid()}
    while grown := {pid for pid, (parent, _) in stats.items() if parent in ours} - ours:
        ours |= grown
    totals: dict[str, float] = {}
    for pid in ours:
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        group = next((g for g in CPU_GROUPS if g in command), "bench and other")
        totals[group] = totals.get(group, 0.0) + stats[pid][1]
    return totals


def apiserver_requests(api: client.ApiClient) -> dict[str, float]:
    """Requests the API server has served so far (every client), by verb and resource."""
    from prometheus_client.parser import text_string_to_metric_families  # noqa: PLC0415

    method, url, headers, _, _ = api.param_serialize("GET", "/metrics", auth_settings=["BearerToken"])
    response = api.call_api(method, url, headers)
    response.read()
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(response.data.decode()):
        for sample in family.samples:
            if sample.name == "apiserver_request_total" and sample.labels.get("verb") != "WATCH":
                labels = sample.labels
                key = f"{labels['verb']} {labels.get('resource', '')}" + (
                    f"/{labels['subresource']}" if labels.get("subresource") else "")
                totals[key] = totals.get(key, 0.0) + sample.value
    return totals


def request_breakdown(before: dict[str, float], after: dict[str, float], count: int) -> str:
    per_channel = {k: (v - before.get(k, 0.0)) / count for k, v in after.items()}
    shown = sorted(((k, v) for k, v in per_channel.items() if v >= 0.05), key=lambda i: -i[1])
    return (f"  API server requests/channel (all clients, no watches) {sum(v for _, v in shown):.1f}: "
            + ", ".join(f"{k} {v:.1f}" for k, v in shown))


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # run the cleanup in main()'s finally on SIGTERM too


def channel_body(namespace: str, name: str, domain: str, integration: str, credentials: str,
                 pod_ready_seconds: float) -> dict:
    """A benchmark channel; its relay pods become Ready ``pod_ready_seconds`` after they start."""
    pod_template = {"metadata": {"annotations": {KWOK_POD_READY_DELAY_ANNOTATION: f"{pod_ready_seconds}s"}}}
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "OtpChannel",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"auth0": {"domain": domain, "integration": integration,
                               "credentialsSecretRef": {"name": credentials}},
                     "sms": {"subaccountId": "bench_otp", "apiKeySecretRef": {"name": "eightbyeight"}},
                     "relay": {"replicas": 1, "publicUrl": f"https://otp.bench.example/{namespace}/{name}",
                               "podTemplate": pod_template}}}


def cpu_line(label: str, cpu_used: dict[str, float], count: int) -> str:
    return f"  CPU ms per channel, {label}: " + ", ".join(
        f"{group} {1000 * seconds / count:.0f}" for group, seconds in sorted(cpu_used.items(), key=lambda i: -i[1])
        if seconds > 0)


def floor_round(api: client.ApiClient, namespace: str, count: int,
                pod_ready_seconds: float) -> dict[tuple[str, str], float]:
    """Create ``count`` channels and their children directly; when were they all Available."""
    from concurrent.futures import ThreadPoolExecutor  # noqa: PLC0415

    from kubernetes.dynamic import DynamicClient  # noqa: PLC0415
    from otp_operator import render  # noqa: PLC0415
    from otp_operator.spec import parse_channel  # noqa: PLC0415

    custom, dynamic = client.CustomObjectsApi(api), DynamicClient(api)
    kinds = {}
    applied: dict[tuple[str, str], float] = {}

    def create(index: int) -> None:
        name = f"ch{index}"
        body = channel_body(namespace, name, f"floor{index}.auth0.test", "phone-provider", "auth0",
                            pod_ready_seconds)
        applied[(namespace, name)] = time.time()
        created = custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
        children = render.render_children(
            parse_channel(namespace, name, created["spec"]), image="example.test/otp-relay:bench",
            signing_keys=(secrets.token_urlsafe(32),), secrets_checksum="floor",
            owner=render.owner_reference(created["metadata"]["uid"], name))
        for manifest in children.apply:
            key = (manifest["apiVersion"], manifest["kind"])
            if key not in kinds:
                kinds[key] = dynamic.resources.get(api_version=key[0], kind=key[1])
            kinds[key].create(body=manifest, namespace=namespace)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(create, range(count)))
    return applied


def run_floor(api: client.ApiClient, counts: list[int], args: argparse.Namespace) -> None:
    watcher = Watcher(api)
    core = client.CoreV1Api(api)
    print("\nfloor: no operator, no Auth0; channels and their children created by the benchmark")
    try:
        for round_no, count in enumerate(counts):
            namespace = f"floor-{round_no}-{count}"
            core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
            cpu_before, served_before = cpu_by_process(), apiserver_requests(api)
            applied = floor_round(api, namespace, count, args.pod_ready_seconds)
            deadline = time.monotonic() + args.ready_timeout
            while time.monotonic() < deadline and not all(k in watcher.available for k in applied):
                time.sleep(0.2)
            cpu_used = {group: seconds - cpu_before.get(group, 0.0) for group, seconds in cpu_by_process().items()}
            done = [k for k in applied if k in watcher.available]
            to_available = [watcher.available[k] - applied[k] for k in done]
            last_apply = max(applied.values()) - min(applied.values())
            every = max((watcher.available[k] for k in done), default=float("nan")) - min(applied.values())
            print(f"== {count} channel(s): {len(done)}/{count} relays Available; all Available {every:.2f}s "
                  f"after the first create (last create at {last_apply:.2f}s); create -> Available "
                  f"p50 {pct(to_available, 0.5):.2f}s max {max(to_available, default=float('nan')):.2f}s")
            print(cpu_line("create to all Available", cpu_used, count))
            print(request_breakdown(served_before, apiserver_requests(api), count))
    finally:
        watcher.stop()


def main() -> None:
    signal.signal(signal.SIGTERM, _interrupt)
    parser = argparse.ArgumentParser()
    parser.add_argument("--counts", default="1,100,500")
    parser.add_argument("--ready-timeout", type=float, default=900)
    parser.add_argument("--steady-seconds", type=float, default=60)
    parser.add_argument("--pod-ready-seconds", type=float, default=POD_READY_SECONDS,
                        help="how long after it starts a relay pod becomes Ready (0: at once)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (operator log)")
    parser.add_argument("--floor", action="store_true",
                        help="no operator, no Auth0: create channels and their children directly and "
                             "report when all relays are Available (the floor for any operator here)")
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # progress shows while it runs, also into a file
    counts = [int(c) for c in args.counts.split(",")]

    work = Path(tempfile.mkdtemp(prefix="bench-operator-"))
    ca = CertificateAuthority(work / "ca")
    bundle = ca.trust_bundle(work / "trust.pem") or work / "trust.pem"
    os.environ["SSL_CERT_FILE"] = str(bundle)
    print(f"workdir {work}")
    plane = ControlPlane(profile="full")
    started = time.monotonic()
    plane.start()
    print(f"control plane (full) up in {time.monotonic() - started:.1f}s")
    api = config.new_client_from_config(config_file=str(plane.kubeconfig))
    install_crd(api)
    if args.floor:
        try:
            run_floor(api, counts, args)
        finally:
            api.close()
            plane.stop()
            shutil.rmtree(work, ignore_errors=True)
        return
    emulator = Auth0Emulator.start(ca, work / "auth0")
    metrics_port = free_port()
    log = open(work / "operator.log", "ab")
    operator = subprocess.Popen(
        [str(Path(sys.executable).with_name("otp-operator")), "run", "--all-namespaces",
         "--metrics-port", str(metrics_port), "--drift-interval", str(MEASURED_DRIFT),
         "--relay-image", "example.test/otp-relay:bench", "--log-level", "WARNING", *SANDBOX_ENDPOINT_ARGS],
        env={**os.environ, "KUBECONFIG": str(plane.kubeconfig)}, stdout=log, stderr=subprocess.STDOUT)
    watcher = Watcher(api)
    core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
    all_tenants = []
    rows = []
    try:
        time.sleep(3)
        for round_no, count in enumerate(counts):
            namespace = f"bench-{round_no}-{count}"
            core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
            tenants = []
            for index in range(count):
                creds = Client(f"bench{round_no}x{index}", secrets.token_urlsafe(24))
                tenant = emulator.add_tenant([creds], latency_ms=LATENCY_MS, rate_limit=RATE_LIMIT,
                                             build_seconds=0.3)
                tenant.route_phone_messages_to(INTEGRATIONS[index % len(INTEGRATIONS)])
                secret_name = f"auth0-{index}"
                core.create_namespaced_secret(namespace, client.V1Secret(
                    metadata=client.V1ObjectMeta(name=secret_name),
                    string_data={"client_id": creds.client_id, "client_secret": creds.client_secret}))
                tenants.append((tenant, secret_name))
            all_tenants.extend(t for t, _ in tenants)
            core.create_namespaced_secret(namespace, client.V1Secret(
                metadata=client.V1ObjectMeta(name="eightbyeight"), string_data={"apikey": secrets.token_urlsafe(24)}))
            kube_before = operator_metric(metrics_port, "otp_operator_kube_requests_total")
            cpu_before, served_before = cpu_by_process(), apiserver_requests(api)
            applied: dict[tuple[str, str], float] = {}
            for i in range(count):
                tenant, secret_name = tenants[i]
                name = f"ch{i}"
                body = channel_body(namespace, name, tenant.domain, INTEGRATIONS[i % len(INTEGRATIONS)], secret_name,
                                    args.pod_ready_seconds)
                custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
                applied[(namespace, name)] = time.time()
            deadline = time.monotonic() + args.ready_timeout
            while time.monotonic() < deadline and not all(k in watcher.ready for k in applied):
                time.sleep(0.5)
            cpu_used = {group: seconds - cpu_before.get(group, 0.0) for group, seconds in cpu_by_process().items()}
            breakdown = request_breakdown(served_before, apiserver_requests(api), count)
            done = [k for k in applied if k in watcher.ready]
            to_ready = [watcher.ready[k] - applied[k] for k in done]
            after_available = [watcher.ready[k] - watcher.available[k] for k in done if k in watcher.available]
            time.sleep(2)
            auth0_create = sum(len(t.requests()) for t, _ in tenants)
            kube_create = operator_metric(metrics_port, "otp_operator_kube_requests_total") - kube_before
            # Steady state.
            for tenant, _ in tenants:
                tenant.clear_requests()
            kube_before = operator_metric(metrics_port, "otp_operator_kube_requests_total")
            time.sleep(args.steady_seconds)
            requests = [r for t, _ in tenants for r in t.requests()]
            writes = [r for r in requests if r.method in ("POST", "PATCH", "PUT", "DELETE") and r.path != "/oauth/token"]
            kube_steady = operator_metric(metrics_port, "otp_operator_kube_requests_total") - kube_before
            scale = (3600 / args.steady_seconds) * (MEASURED_DRIFT / DEFAULT_DRIFT)
            rows.append({
                "channels": count, "ready": len(done),
                "to_ready_p50": pct(to_ready, 0.5), "to_ready_p95": pct(to_ready, 0.95),
                "to_ready_max": max(to_ready, default=float("nan")),
                "all_ready": (max(watcher.ready[k] for k in done) - min(applied.values())) if done else float("nan"),
                "after_available_p50": pct(after_available, 0.5),
                "after_available_max": max(after_available, default=float("nan")),
                "auth0_per_channel_create": auth0_create / count,
                "kube_per_channel_create": kube_create / count,
                "auth0_per_channel_hour": len(requests) / count * scale,
                "auth0_writes_steady": len(writes),
                "kube_per_channel_hour": kube_steady / count * scale,
                "rss_mb": rss_mb(operator.pid),
            })
            row = rows[-1]
            print(f"\n== {count} channel(s): {row['ready']}/{count} Ready")
            print(f"  apply -> Ready        p50 {row['to_ready_p50']:.2f}s  p95 {row['to_ready_p95']:.2f}s  "
                  f"max {row['to_ready_max']:.2f}s   all Ready {row['all_ready']:.2f}s after the first apply")
            print(f"  relay Available -> Ready  p50 {row['after_available_p50']:.2f}s  "
                  f"max {row['after_available_max']:.2f}s   (target <= 1 s)")
            print(f"  at create: Auth0 requests/channel {row['auth0_per_channel_create']:.1f}, "
                  f"operator Kubernetes requests/channel {row['kube_per_channel_create']:.1f}")
            print(f"  steady state (scaled to a {DEFAULT_DRIFT:.0f}s drift interval): Auth0 requests/channel/h "
                  f"{row['auth0_per_channel_hour']:.1f}, Auth0 writes {row['auth0_writes_steady']} (target 0), "
                  f"Kubernetes requests/channel/h {row['kube_per_channel_hour']:.1f}")
            print(f"  operator RSS {row['rss_mb']:.0f} MB (target <= 150 MB at 500)")
            print(cpu_line("apply to all Ready", cpu_used, count))
            print(breakdown)
    finally:
        watcher.stop()
        if args.keep:
            print(f"operator log: {work / 'operator.log'}")
        operator.send_signal(signal.SIGTERM)
        try:
            operator.wait(timeout=30)
        except subprocess.TimeoutExpired:
            operator.kill()
            operator.wait()
        emulator.stop()
        api.close()
        plane.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print("\nchannels  ready  all-Ready(s)  to-Ready p50/p95/max(s)  Avail->Ready max(s)  Auth0/ch create  K8s/ch create  "
          "Auth0/ch/h  Auth0 writes steady  K8s/ch/h  RSS MB")
    for r in rows:
        print(f"{r['channels']:>8}  {r['ready']:>5}  {r['all_ready']:>12.2f}  {r['to_ready_p50']:.2f}/{r['to_ready_p95']:.2f}/{r['to_ready_max']:.2f}"
              f"  {r['after_available_max']:>19.2f}  {r['auth0_per_channel_create']:>15.1f}  "
              f"{r['kube_per_channel_create']:>13.1f}  {r['auth0_per_channel_hour']:>10.1f}  "
              f"{r['auth0_writes_steady']:>19}  {r['kube_per_channel_hour']:>8.1f}  {r['rss_mb']:>6.0f}")


if __name__ == "__main__":
    main()
