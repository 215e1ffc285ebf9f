"""Operator benchmark (prints figures; not a test).

    .venv/bin/python bench/operator/run.py [--counts 1,100,500] [--free-tier-count 100] [--memory-profile]

Starts the full local control plane (kwok makes relay Deployments Available, each relay pod Ready
``--pod-ready-seconds`` after it starts, as on a real node), then in one invocation:

1. the floor (skip with ``--no-floor``; only this with ``--floor``): no operator and no Auth0, the
   benchmark itself creates each channel and the children the operator would create for it
   (rendered by the operator's own ``render.render_children``, created from 8 threads) and reports
   when every relay Deployment is Available. A channel cannot be Ready before that, so this is the
   best any operator could do on this machine. Its namespaces are then deleted (its children carry
   the operator's labels) before the operator starts;
2. ``otp-operator run`` as a process with its default drift interval and the Auth0 emulator (100 ms
   latency, a per-tenant token bucket), one round per count (one tenant per channel, as one
   environment per tenant; the integration modes take turns, each tenant's MFA SMS routed to its
   channel's mode), then one round on free-tier tenants (``--free-tier-count``): apply -> Ready,
   relay Available -> Ready, CPU per component, the API server's requests per channel against the
   floor's and against what the objects need, Auth0 requests (and 429s) per channel;
3. idle CPU with every channel Ready, then the operator restarted with a 20 s drift interval: the
   restart's own cost and the steady state, scaled to the default 10 min interval;
4. with ``--memory-profile``: one more round at the largest count under an operator with
   tracemalloc on (``otp_operator.memory_report``), which reports where its memory goes.

A final table puts the floor, the operator and their ratio side by side, and each target is
printed with PASS/FAIL.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from kubernetes import client, config, watch  # noqa: E402

from otp_sandbox.auth0_emulator import FREE, Auth0Emulator, Auth0Tenant, Client, RateLimit  # noqa: E402
from otp_sandbox.controlplane import ControlPlane  # noqa: E402
from otp_sandbox.controlplane.gomodules import KWOK_POD_READY_DELAY_ANNOTATION  # noqa: E402
from otp_sandbox.controlplane.node import RELAY_POD_READY_SECONDS  # noqa: E402
from otp_sandbox.crd import install_crd  # noqa: E402
from otp_sandbox.pki import CertificateAuthority  # noqa: E402
from otp_sandbox.processes import SANDBOX_ENDPOINT_ARGS  # noqa: E402

GROUP, VERSION, PLURAL = "otprelay.io", "v1alpha1", "otpchannels"
INTEGRATIONS = ("phone-provider", "send-phone-message", "legacy-hook")
CREATE_THREADS = 8  # the floor and the operator rounds create their channels alike
LATENCY_MS = 100
RATE_LIMIT = RateLimit(capacity=20, refill_per_second=10.0)
MEASURED_DRIFT = 20.0
DEFAULT_DRIFT = 600.0  # the operator's default --drift-interval (names.DEFAULT_DRIFT_INTERVAL_SECONDS)
POD_READY_SECONDS = RELAY_POD_READY_SECONDS
RELAY_IMAGE = "example.test/otp-relay:bench"
OBJECT_WRITE_VERBS = ("APPLY", "POST", "PUT")
STATUS_WRITE = "PATCH otpchannels/status"


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


def bench_children(namespace: str, name: str, spec: dict, uid: str) -> Any:
    """The children the operator renders for a benchmark channel (with its own render module and
    the receipt-token plan a new channel gets)."""
    from otp_operator import receipt_tokens, render  # noqa: PLC0415
    from otp_operator.spec import parse_channel  # noqa: PLC0415

    return render.render_children(
        parse_channel(namespace, name, spec), image=RELAY_IMAGE, signing_keys=(secrets.token_urlsafe(32),),
        secrets_checksum="bench", owner=render.owner_reference(uid, name),
        receipt_tokens=receipt_tokens.plan(None, None))


def child_resources(api: client.ApiClient, pod_ready_seconds: float) -> Counter[str]:
    """Objects per channel by API resource (``deployments``, ``secrets``, ...): what one channel needs."""
    from kubernetes.dynamic import DynamicClient  # noqa: PLC0415

    dynamic = DynamicClient(api)
    spec = channel_body("needed", "ch0", "needed.auth0.test", INTEGRATIONS[0], "auth0", pod_ready_seconds)["spec"]
    return Counter(dynamic.resources.get(api_version=m["apiVersion"], kind=m["kind"]).name
                   for m in bench_children("needed", "ch0", spec, "00000000-0000-0000-0000-000000000000").apply)


@dataclass
class Round:
    label: str  # the count, "N free" for the free-tier round
    count: int
    namespace: str
    done: int = 0
    all_time: float = float("nan")  # floor: all Available; operator: all Ready (from the first apply)
    to_done: list[float] = field(default_factory=list)  # per channel: create -> Available / apply -> Ready
    after_available: list[float] = field(default_factory=list)  # relay Available -> channel Ready
    cpu: dict[str, float] = field(default_factory=dict)  # CPU seconds by component
    served: dict[str, float] = field(default_factory=dict)  # API server requests per channel
    auth0_per_channel: float = float("nan")
    rate_limited: int = 0  # 429s the emulator answered
    rss: float = float("nan")
    tenants: list[Auth0Tenant] = field(default_factory=list)

    def cpu_ms(self, group: str) -> float:
        return 1000 * self.cpu.get(group, 0.0) / self.count


def per_channel(before: dict[str, float], after: dict[str, float], count: int) -> dict[str, float]:
    return {k: (v - before.get(k, 0.0)) / count for k, v in after.items() if v != before.get(k, 0.0)}


def cpu_since(before: dict[str, float]) -> dict[str, float]:
    return {group: seconds - before.get(group, 0.0) for group, seconds in cpu_by_process().items()}


def listed(items: Iterable[tuple[str, float]], signed: bool = False) -> str:
    shown = sorted(((k, v) for k, v in items if abs(v) >= 0.05), key=lambda i: -abs(i[1]))
    return ", ".join(f"{k} {v:+.1f}" if signed else f"{k} {v:.1f}" for k, v in shown) or "none"


def floor_round(api: client.ApiClient, namespace: str, count: int,
                pod_ready_seconds: float) -> dict[tuple[str, str], float]:
    """Create ``count`` channels and their children directly; returns when each was created."""

    from kubernetes.dynamic import DynamicClient  # noqa: PLC0415

    custom, dynamic = client.CustomObjectsApi(api), DynamicClient(api)
    kinds = {}
    applied: dict[tuple[str, str], float] = {}

    def create(index: int) -> None:
        name = f"ch{index}"
        body = channel_body(namespace, name, f"floor{index}.auth0.test", "phone-provider", "auth0",
                            pod_ready_seconds)
        applied[(namespace, name)] = time.time()
        created = custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
        for manifest in bench_children(namespace, name, created["spec"], created["metadata"]["uid"]).apply:
            key = (manifest["apiVersion"], manifest["kind"])
            if key not in kinds:
                kinds[key] = dynamic.resources.get(api_version=key[0], kind=key[1])
            kinds[key].create(body=manifest, namespace=namespace)

    with ThreadPoolExecutor(CREATE_THREADS) as pool:
        list(pool.map(create, range(count)))
    return applied


def wait_for(keys: Iterable[tuple[str, str]], seen: dict[tuple[str, str], float], timeout: float,
             poll: float = 0.2) -> None:
    keys = list(keys)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not all(k in seen for k in keys):
        time.sleep(poll)


def run_floor(api: client.ApiClient, watcher: Watcher, counts: list[int], args: argparse.Namespace) -> dict[int, Round]:
    core = client.CoreV1Api(api)
    print("\nfloor: no operator, no Auth0; channels and their children created by the benchmark")
    rounds: dict[int, Round] = {}
    for round_no, count in enumerate(counts):
        r = Round(str(count), count, f"floor-{round_no}-{count}")
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=r.namespace)))
        cpu_before, served_before = cpu_by_process(), apiserver_requests(api)
        applied = floor_round(api, r.namespace, count, args.pod_ready_seconds)
        wait_for(applied, watcher.available, args.ready_timeout)
        r.cpu = cpu_since(cpu_before)
        r.served = per_channel(served_before, apiserver_requests(api), count)
        done = [k for k in applied if k in watcher.available]
        r.done, r.to_done = len(done), [watcher.available[k] - applied[k] for k in done]
        r.all_time = max((watcher.available[k] for k in done), default=float("nan")) - min(applied.values())
        print(f"== floor {count} channel(s): {r.done}/{count} relays Available; all Available {r.all_time:.2f}s "
              f"after the first create (last create at {max(applied.values()) - min(applied.values()):.2f}s); "
              f"create -> Available p50 {pct(r.to_done, 0.5):.2f}s max {max(r.to_done, default=float('nan')):.2f}s")
        print(cpu_line("create to all Available", r.cpu, count))
        print(f"  API server requests/channel (all clients, no watches) {sum(r.served.values()):.1f}: "
              + listed(r.served.items()))
        rounds[count] = r
    return rounds


def delete_namespaces(api: client.ApiClient, namespaces: list[str], timeout: float) -> float:
    """Delete the namespaces and wait until they are gone (with every channel and child in them)."""
    core = client.CoreV1Api(api)
    started = time.monotonic()
    for namespace in namespaces:
        core.delete_namespace(namespace)
    while time.monotonic() - started < timeout:
        left = {ns.metadata.name for ns in core.list_namespace().items} & set(namespaces)
        if not left:
            return time.monotonic() - started
        time.sleep(1)
    raise RuntimeError(f"namespaces still there after {timeout:.0f}s: {sorted(left)}")


class Operator:
    """``otp-operator run`` as a process, its log in the work directory."""

    def __init__(self, plane: ControlPlane, work: Path, label: str, drift: float | None = None,
                 namespace: str | None = None, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.label = label
        self._log = open(work / f"operator-{label}.log", "ab")
        scope = ["--namespace", namespace] if namespace else ["--all-namespaces"]
        drift_args = ["--drift-interval", str(drift)] if drift is not None else []  # None: the default
        self.process = subprocess.Popen(
            [str(Path(sys.executable).with_name("otp-operator")), "run", *scope, "--metrics-port", str(self.port),
             *drift_args, "--relay-image", RELAY_IMAGE, "--log-level", "WARNING", *SANDBOX_ENDPOINT_ARGS],
            env={**os.environ, "KUBECONFIG": str(plane.kubeconfig), **(env or {})},
            stdout=self._log, stderr=subprocess.STDOUT)

    def metric(self, name: str) -> float:
        try:
            return operator_metric(self.port, name)
        except Exception:  # not serving yet
            return 0.0

    def rss(self) -> float:
        return rss_mb(self.process.pid)

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._log.close()


class Bench:
    def __init__(self, api: client.ApiClient, watcher: Watcher, emulator: Auth0Emulator,
                 args: argparse.Namespace) -> None:
        self.api, self.watcher, self.emulator, self.args = api, watcher, emulator, args
        self.core, self.custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
        self.round_no = 0

    def channels(self, namespace: str, count: int, rate_limit: RateLimit) -> list[tuple[Auth0Tenant, str]]:
        """The namespace, one tenant and credentials Secret per channel, the 8x8 Secret."""
        self.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
        tenants = []
        for index in range(count):
            creds = Client(f"bench{self.round_no}x{index}", secrets.token_urlsafe(24))
            tenant = self.emulator.add_tenant([creds], latency_ms=LATENCY_MS, rate_limit=rate_limit, build_seconds=0.3)
            tenant.route_phone_messages_to(INTEGRATIONS[index % len(INTEGRATIONS)])
            self.core.create_namespaced_secret(namespace, client.V1Secret(
                metadata=client.V1ObjectMeta(name=f"auth0-{index}"),
                string_data={"client_id": creds.client_id, "client_secret": creds.client_secret}))
            tenants.append((tenant, f"auth0-{index}"))
        self.core.create_namespaced_secret(namespace, client.V1Secret(
            metadata=client.V1ObjectMeta(name="eightbyeight"), string_data={"apikey": secrets.token_urlsafe(24)}))
        return tenants

    def operator_round(self, operator: Operator, count: int, label: str, rate_limit: RateLimit = RATE_LIMIT,
                       namespace: str | None = None) -> Round:
        r = Round(label, count, namespace or f"bench-{self.round_no}-{count}")
        tenants = self.channels(r.namespace, count, rate_limit)
        self.round_no += 1
        cpu_before, served_before = cpu_by_process(), apiserver_requests(self.api)
        applied: dict[tuple[str, str], float] = {}

        def create(i: int) -> None:
            tenant, secret_name = tenants[i]
            body = channel_body(r.namespace, f"ch{i}", tenant.domain, INTEGRATIONS[i % len(INTEGRATIONS)], secret_name,
                                self.args.pod_ready_seconds)
            applied[(r.namespace, f"ch{i}")] = time.time()
            self.custom.create_namespaced_custom_object(GROUP, VERSION, r.namespace, PLURAL, body)

        # From CREATE_THREADS threads, as the floor creates its channels: the same apply rate.
        with ThreadPoolExecutor(CREATE_THREADS) as pool:
            list(pool.map(create, range(count)))
        ready, available = self.watcher.ready, self.watcher.available
        wait_for(applied, ready, self.args.ready_timeout, poll=0.5)
        r.cpu = cpu_since(cpu_before)
        r.served = per_channel(served_before, apiserver_requests(self.api), count)
        done = [k for k in applied if k in ready]
        r.done, r.to_done = len(done), [ready[k] - applied[k] for k in done]
        r.after_available = [ready[k] - available[k] for k in done if k in available]
        r.all_time = (max(ready[k] for k in done) - min(applied.values())) if done else float("nan")
        time.sleep(2)
        requests = [q for t, _ in tenants for q in t.requests()]
        r.tenants = [t for t, _ in tenants]
        r.auth0_per_channel = len(requests) / count
        r.rate_limited = sum(q.status == 429 for q in requests)
        r.rss = operator.rss()
        print(f"\n== {label} channel(s): {r.done}/{count} Ready")
        print(f"  apply -> Ready        p50 {pct(r.to_done, 0.5):.2f}s  p95 {pct(r.to_done, 0.95):.2f}s  "
              f"max {max(r.to_done, default=float('nan')):.2f}s   all Ready {r.all_time:.2f}s after the first apply")
        print(f"  relay Available -> Ready  p50 {pct(r.after_available, 0.5):.2f}s  p95 {pct(r.after_available, 0.95):.2f}s"
              f"  max {max(r.after_available, default=float('nan')):.2f}s")
        print(f"  Auth0 requests/channel {r.auth0_per_channel:.1f}, 429s answered {r.rate_limited}; "
              f"operator RSS {r.rss:.0f} MB")
        print(cpu_line("apply to all Ready", r.cpu, count))
        return r


def split_requests(served: dict[str, float], children: Counter[str]) -> dict[str, dict[str, float]]:
    """Requests by what they are for: writes of child objects, status writes, everything else."""
    parts: dict[str, dict[str, float]] = {"object writes": {}, "status writes": {}, "other": {}}
    for key, value in served.items():
        verb, _, resource = key.partition(" ")
        part = ("object writes" if verb in OBJECT_WRITE_VERBS and resource in children
                else "status writes" if key == STATUS_WRITE else "other")
        parts[part][key] = value
    return parts


def print_kube_requests(r: Round, floor: Round | None, children: Counter[str]) -> None:
    needed = sum(children.values())
    actual = split_requests(r.served, children)
    total = sum(r.served.values())
    print(f"\n-- Kubernetes requests per channel, {r.label} channel(s) (API server, all clients, no watches): "
          f"operator round {total:.1f}" + (f", floor {sum(floor.served.values()):.1f}, added by the operator "
                                           f"{total - sum(floor.served.values()):+.1f}" if floor else ""))
    writes, status = sum(actual["object writes"].values()), sum(actual["status writes"].values())
    print(f"  what the objects need: {needed} object writes ({listed(children.items())}) + 1 status write = {needed + 1}; "
          f"actual: {writes:.1f} object writes + {status:.1f} status writes = {writes + status:.1f}")
    if floor is not None:
        added = split_requests({k: r.served.get(k, 0.0) - floor.served.get(k, 0.0)
                                for k in set(r.served) | set(floor.served)}, children)
        for part, items in added.items():
            print(f"  added, {part} {sum(items.values()):+.1f}: {listed(items.items(), signed=True)}")
    else:
        print(f"  other requests {sum(actual['other'].values()):.1f}: {listed(actual['other'].items())}")
    applies = {resource: r.served.get(f"APPLY {resource}", 0.0) for resource in children}
    extra = sum(max(0.0, applies[res] - n) for res, n in children.items())
    print("  APPLY per child kind per channel (1.0 per object): "
          + ", ".join(f"{res} {applies[res]:.2f} per {n} object(s)" for res, n in children.items())
          + f"; re-applied before converged: {extra:.2f} per channel")


def tenant_requests(tenants: Iterable[Auth0Tenant]) -> dict[Auth0Tenant, list[Any]]:
    return {t: t.requests() for t in tenants}


def restart_and_steady(bench: Bench, plane: ControlPlane, work: Path, old: Operator,
                       groups: list[Round]) -> tuple[Operator, dict[str, Any]]:
    """Restart the operator with the measured drift interval; time until every channel has passed
    once; then the steady state. Returns the new operator and the figures."""
    args, api = bench.args, bench.api
    tenants = [t for g in groups for t in g.tenants]
    total = len(tenants)
    old.stop()
    for tenant in tenants:
        tenant.clear_requests()
    cpu_before, served_before = cpu_by_process(), apiserver_requests(api)
    started = time.monotonic()
    operator = Operator(plane, work, "steady", drift=MEASURED_DRIFT)
    # Every channel has passed once when the new process counted a reconcile per channel AND every
    # channel's tenant got a Management API request since the restart (the new process knows nothing
    # of Auth0, so each channel's first pass reads its tenant; the counter alone would also count a
    # channel twice that a child's watch event woke again).
    passed, missing = False, total
    while time.monotonic() - started < args.ready_timeout:
        if operator.metric("otp_operator_reconciles_total") >= total:
            missing = sum(not any(q.path != "/oauth/token" for q in t.requests()) for t in tenants)
            if not missing:
                passed = True
                break
        time.sleep(0.5)
    restart_s = time.monotonic() - started
    restart_cpu = cpu_since(cpu_before)
    served = per_channel(served_before, apiserver_requests(api), total)
    seen = tenant_requests(tenants)
    figures: dict[str, Any] = {"channels": total, "restart_s": restart_s, "passed": passed, "missing": missing}
    print(f"\n== restart with --drift-interval {MEASURED_DRIFT:.0f}: {total} channels "
          + (f"all passed once {restart_s:.2f}s after the start" if passed
             else f"NOT all passed after {restart_s:.0f}s ({missing} tenants without a request)")
          + " (a reconcile counted per channel and every tenant read; process start included)")
    restart_429 = {g.label: sum(q.status == 429 for t in g.tenants for q in seen[t]) for g in groups}
    print(f"  Auth0 requests/channel {sum(map(len, seen.values())) / total:.1f}, 429s "
          + (", ".join(f"{n} ({label})" for label, n in restart_429.items() if n) or "0")
          + f"; Kubernetes requests/channel (API server, all clients) {sum(served.values()):.1f}: {listed(served.items())}")
    print(cpu_line("restart", restart_cpu, total))
    for tenant in tenants:
        tenant.clear_requests()
    kube_before, served_before = operator.metric("otp_operator_kube_requests_total"), apiserver_requests(api)
    time.sleep(args.steady_seconds)
    seen = tenant_requests(tenants)
    served = per_channel(served_before, apiserver_requests(api), total)
    kube = operator.metric("otp_operator_kube_requests_total") - kube_before
    scale = (3600 / args.steady_seconds) * (MEASURED_DRIFT / DEFAULT_DRIFT)
    print(f"  steady state over {args.steady_seconds:.0f}s, scaled to the default {DEFAULT_DRIFT:.0f}s drift interval:")
    for g in groups:
        requests = [q for t in g.tenants for q in seen[t]]
        writes = [q for q in requests if q.method in ("POST", "PATCH", "PUT", "DELETE") and q.path != "/oauth/token"]
        figures[g.label] = {"auth0_per_hour": len(requests) / g.count * scale, "writes": len(writes),
                            "rate_limited": sum(q.status == 429 for q in requests), "restart_429": restart_429[g.label]}
        print(f"    {g.label:>9} channel(s): Auth0 requests/channel/h {figures[g.label]['auth0_per_hour']:.1f}, "
              f"Auth0 writes {len(writes)} (target 0), 429s {figures[g.label]['rate_limited']}")
    figures["kube_per_hour"] = kube / total * scale
    print(f"    Kubernetes requests/channel/h: operator {kube / total * scale:.1f}; API server, all clients "
          f"{sum(served.values()) * scale:.1f}: {listed((k, v * scale) for k, v in served.items())}")
    return operator, figures


def memory_profile(bench: Bench, plane: ControlPlane, work: Path, count: int) -> None:
    """One round under an operator with tracemalloc on that watches only its own namespace (the
    other rounds' channels would add to its memory); the report is taken after all Ready."""
    from otp_operator import memory_report  # noqa: PLC0415

    namespace, report = f"bench-memory-{count}", work / "memory-report.json"
    operator = Operator(plane, work, "memory", namespace=namespace, env={
        memory_report.FRAMES_ENV: str(bench.args.memory_frames), memory_report.PATH_ENV: str(report)})
    try:
        time.sleep(3)
        r = bench.operator_round(operator, count, f"{count} traced", namespace=namespace)
        operator.process.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + 300
        while not report.exists() and time.monotonic() < deadline and operator.process.poll() is None:
            time.sleep(0.5)
        data = json.loads(report.read_text())
    finally:
        operator.stop()
    mb = 1024 * 1024
    traced = data["traced_bytes"]
    print(f"\n== memory of an operator with {count} channels (tracemalloc, {bench.args.memory_frames} frame(s); "
          f"only its namespace): RSS {r.rss:.0f} MB, traced {traced / mb:.1f} MB (peak {data['traced_peak_bytes'] / mb:.1f})")
    print("  by package / operator module (allocating line's file):")
    ours = sum(g["size_bytes"] for g in data["groups"] if g["group"].startswith("otp_operator"))
    for g in [*data["groups"], {"group": "otp_operator, all modules", "size_bytes": ours}]:
        if g["size_bytes"] >= 0.001 * traced:
            print(f"    {g['size_bytes'] / mb:8.2f} MB {100 * g['size_bytes'] / traced:5.1f} %  {g['group']}")
    print("  by line (top 15):")
    for line in data["lines"][:15]:
        print(f"    {line['size_bytes'] / mb:8.2f} MB {line['count']:>8}  {line['file']}:{line['line']}")
    print("  objects the garbage collector tracks, by type (shallow sizes, top 15):")
    for entry in data["gc_objects_by_type"][:15]:
        print(f"    {entry['size_bytes'] / mb:8.2f} MB {entry['count']:>8}  {entry['type']}")
    print(f"  report: {report}" if bench.args.keep else "")


def judged(rows: dict[str, Round], counts: tuple[int, ...]) -> list[tuple[Round, str]]:
    """The rounds a target set for ``counts`` is judged at; without such a round, the largest one."""
    hits = [rows[str(c)] for c in counts if str(c) in rows]
    if hits or not rows:
        return [(r, "") for r in hits]
    largest = max(rows.values(), key=lambda r: r.count)
    return [(largest, f" (no {'/'.join(map(str, counts))}-channel round; judged at {largest.count})")]


def print_summary(floor: dict[int, Round], rows: dict[str, Round], steady: dict[str, Any] | None,
                  idle: dict[str, float] | None) -> None:
    nan = float("nan")
    if not rows:
        print("\nchannels  floor all-Avail(s)  create->Avail p50/max(s)  API-server CPU ms/ch  API-server req/ch")
        for f in floor.values():
            print(f"{f.count:>8}  {f.all_time:>18.2f}  {pct(f.to_done, 0.5):>12.2f}/{max(f.to_done, default=nan):<11.2f}  "
                  f"{f.cpu_ms('kube-apiserver'):>20.0f}  {sum(f.served.values()):>17.1f}")
        return
    print("\nchannels  floor all-Avail(s)  operator all-Ready(s)  ratio  apply->Ready p50/p95(s)  "
          "Avail->Ready p50/p95/max(s)  op CPU ms/ch  API-server CPU ms/ch floor/op  RSS MB  Auth0 req/ch  "
          "Auth0 writes steady  429s")
    for r in rows.values():
        f = floor.get(r.count)
        ratio = r.all_time / f.all_time if f else nan
        writes = (steady or {}).get(r.label, {}).get("writes", "—")
        print(f"{r.label:>8}  {f.all_time if f else nan:>18.2f}  {r.all_time:>21.2f}  {ratio:>5.2f}  "
              f"{pct(r.to_done, 0.5):>11.2f}/{pct(r.to_done, 0.95):<11.2f}  "
              f"{pct(r.after_available, 0.5):>9.2f}/{pct(r.after_available, 0.95):.2f}/"
              f"{max(r.after_available, default=nan):<7.2f}  {r.cpu_ms('otp-operator'):>12.0f}  "
              f"{f.cpu_ms('kube-apiserver') if f else nan:>20.0f}/{r.cpu_ms('kube-apiserver'):<9.0f}  "
              f"{r.rss:>6.0f}  {r.auth0_per_channel:>12.1f}  {writes!s:>19}  {r.rate_limited:>4}")
    if not floor and not rows:
        return
    counted = {k: r for k, r in rows.items() if k.isdigit()}
    results: list[tuple[bool | None, str]] = []
    for r, note in judged(counted, (100, 500)):
        f = floor.get(r.count)
        ratio = r.all_time / f.all_time if f else nan
        results.append((ratio <= 1.3 if f else None,
                        f"all Ready / floor all Available <= 1.3 at {r.count}: {ratio:.2f}{note}"))
    for r, note in judged(counted, (100,)):
        p95 = pct(r.after_available, 0.95)
        results.append((p95 <= 1.0, f"relay Available -> Ready p95 <= 1 s at {r.count}: {p95:.2f}s{note}"))
    for r, note in judged(counted, (100, 500)):
        results.append((r.cpu_ms("otp-operator") <= 50,
                        f"operator CPU <= 50 ms per channel at {r.count}: {r.cpu_ms('otp-operator'):.0f} ms{note}"))
    for r, note in judged(counted, (500,)):
        results.append((r.rss <= 150, f"operator RSS <= 150 MB at {r.count}: {r.rss:.0f} MB{note}"))
    if steady is not None:
        for r in rows.values():
            writes = steady.get(r.label, {}).get("writes")
            if writes is not None:
                results.append((writes == 0, f"no Auth0 write at steady state, {r.label} channel(s): {writes}"))
    for r in rows.values():
        if r.label.endswith("free"):
            later = (steady or {}).get(r.label, {})
            at_restart, at_steady = later.get("restart_429", 0), later.get("rate_limited", 0)
            results.append((r.rate_limited + at_restart + at_steady == 0, f"no 429 from free-tier tenants, {r.label}: "
                            f"{r.rate_limited} at create, {at_restart} at the restart, {at_steady} at steady state"))
    print("\ntargets:")
    for ok, text in results:
        print(f"  {'n/a ' if ok is None else 'PASS' if ok else 'FAIL'}  {text}")
    if idle:
        print(f"  (idle operator with every channel Ready: {idle['ms_per_s']:.1f} ms CPU/s, "
              f"{idle['ms_per_s'] / 10:.2f} % of one core, RSS {idle['rss']:.0f} MB)")


def main() -> None:
    signal.signal(signal.SIGTERM, _interrupt)
    parser = argparse.ArgumentParser()
    parser.add_argument("--counts", default="1,100,500")
    parser.add_argument("--ready-timeout", type=float, default=900)
    parser.add_argument("--idle-seconds", type=float, default=30, help="idle CPU measured with every channel Ready")
    parser.add_argument("--steady-seconds", type=float, default=60)
    parser.add_argument("--free-tier-count", type=int, default=100,
                        help="channels of the round on free-tier tenants (2 requests/s, burst 2); 0: none")
    parser.add_argument("--memory-profile", action="store_true",
                        help="one more round at the largest count under a tracemalloc'ed operator: where its memory goes")
    parser.add_argument("--memory-frames", type=int, default=1, help="tracemalloc frames per allocation")
    parser.add_argument("--pod-ready-seconds", type=float, default=POD_READY_SECONDS,
                        help="how long after it starts a relay pod becomes Ready (0: at once)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (operator logs)")
    only = parser.add_mutually_exclusive_group()
    only.add_argument("--floor", action="store_true",
                      help="only the floor: no operator, no Auth0; create channels and their children directly and "
                           "report when all relays are Available (the best any operator could do here)")
    only.add_argument("--no-floor", action="store_true", help="only the operator rounds (no ratio to the floor)")
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # progress shows while it runs, also into a file
    counts = [int(c) for c in args.counts.split(",")]
    free_count = args.free_tier_count
    if any(c < 1 for c in counts) or free_count < 0 or args.idle_seconds < 0 or args.steady_seconds <= 0:
        parser.error("counts must be positive, --free-tier-count not negative, --steady-seconds positive")

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
    watcher = Watcher(api)
    floor: dict[int, Round] = {}
    rows: dict[str, Round] = {}
    steady: dict[str, Any] | None = None
    idle: dict[str, float] | None = None
    emulator = operator = None
    try:
        children = child_resources(api, args.pod_ready_seconds)
        if not args.no_floor:
            floor_counts = counts + ([free_count] if free_count and free_count not in counts else [])
            floor = run_floor(api, watcher, floor_counts, args)
            if args.floor:
                return
            gone = delete_namespaces(api, [r.namespace for r in floor.values()], args.ready_timeout)
            print(f"floor namespaces deleted and gone in {gone:.1f}s")
        emulator = Auth0Emulator.start(ca, work / "auth0")
        bench = Bench(api, watcher, emulator, args)
        operator = Operator(plane, work, "converge")  # the default drift interval
        time.sleep(3)
        print(f"\noperator: default drift interval ({DEFAULT_DRIFT:.0f}s)")
        for count in counts:
            rows[str(count)] = bench.operator_round(operator, count, str(count))
        if free_count:
            rows[f"{free_count} free"] = bench.operator_round(operator, free_count, f"{free_count} free", FREE)
        for r in rows.values():
            print_kube_requests(r, floor.get(r.count), children)
        cpu_before = cpu_by_process()
        time.sleep(args.idle_seconds)
        if args.idle_seconds:
            idle = {"ms_per_s": 1000 * cpu_since(cpu_before).get("otp-operator", 0.0) / args.idle_seconds,
                    "rss": operator.rss()}
            print(f"\n== idle, {sum(r.count for r in rows.values())} channels Ready: operator "
                  f"{idle['ms_per_s']:.1f} ms CPU/s ({idle['ms_per_s'] / 10:.2f} % of one core), RSS {idle['rss']:.0f} MB")
        operator, steady = restart_and_steady(bench, plane, work, operator, list(rows.values()))
        if args.memory_profile:
            operator.stop()
            operator = None
            try:
                memory_profile(bench, plane, work, max(counts))
            except Exception as error:  # the figures above still count
                print(f"\nmemory profile failed: {type(error).__name__}: {error}")
    finally:
        watcher.stop()
        if args.keep:
            print(f"operator logs: {work}/operator-*.log")
        if operator is not None:
            operator.stop()
        if emulator is not None:
            emulator.stop()
        api.close()
        plane.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        print_summary(floor, rows, steady, idle)


if __name__ == "__main__":
    main()
