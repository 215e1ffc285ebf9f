"""Start and stop a local control plane: etcd + kube-apiserver ("minimal"), plus
kube-controller-manager, kube-scheduler and kwok with one fake Node ("full")."""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, cast

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ..pki import CertificateAuthority, CertPair
from . import api, kubeconfig
from .builder import locate
from .gomodules import KWOK_STAGES_FILE
from .node import NODE_NAME, NodeImages, RealNode
from .process import Component, free_port, spawn, stop_all

Profile = Literal["minimal", "full"]
PROFILES: tuple[Profile, ...] = ("minimal", "full")
ADMIN_USER = "otp-sandbox-admin"
FAKE_NODE = "kwok-node-0"
# Room for thousands of Services: benchmarks create one relay Service per channel.
SERVICE_CLUSTER_IP_RANGE = "10.0.0.0/16"
# What the operator's workloads rely on: owner-reference GC, Deployments, tokens and
# ServiceAccounts for new namespaces, namespace deletion, the kube-root-ca.crt ConfigMap.
CONTROLLERS = (
    "garbage-collector-controller", "deployment-controller", "replicaset-controller",
    "serviceaccount-token-controller", "serviceaccount-controller", "namespace-controller",
    "root-ca-certificate-publisher-controller",
    # Signs CertificateSigningRequests with the sandbox CA, as kind and managed clusters do.
    "certificatesigningrequest-signing-controller",
)
# Client-side rate limits of the controllers and the scheduler. Their defaults (20 and 50 requests
# per second per controller) made hundreds of kwok-backed relay Deployments roll out over a minute
# with the machine idle: the benchmark measured the throttle, not the operator. Real clusters size
# these for their load; here the API server's own capacity is the limit.
_COMPONENT_API_RATE = ("--kube-api-qps=1000", "--kube-api-burst=2000")
_MINIMAL_BINARIES = ("etcd", "kube-apiserver")
_FULL_BINARIES = (*_MINIMAL_BINARIES, "kube-controller-manager", "kube-scheduler", "kwok")
_POLL = 0.1
# The API server's audit log records who read Secrets and how (tests check that the operator
# lists and watches them only with its label selector); everything else is left out.
AUDIT_POLICY = """\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
  - level: Metadata
    resources: [{group: "", resources: ["secrets"]}]
    verbs: ["get", "list", "watch"]
  - level: None
"""


class ControlPlaneError(RuntimeError):
    """A component failed to start; the message names it and quotes its last log lines."""


@dataclass
class ControlPlane:
    profile: Profile = "minimal"
    startup_timeout: float = 60.0
    stop_grace: float = 10.0
    run_dir: Path | None = None
    # "full" profile only: also run a real kubelet Node (containerd, runc, CNI) with these images.
    real_node: NodeImages | None = None
    components: list[Component] = field(default_factory=list, init=False)
    node: RealNode | None = field(default=None, init=False)
    server: str = field(default="", init=False)

    def __post_init__(self) -> None:
        if self.profile not in PROFILES:
            raise ValueError(f"unknown control plane profile {self.profile!r}; expected one of {PROFILES}")
        self._own_run_dir = self.run_dir is None

    # -- public API --------------------------------------------------------------------------
    @property
    def kubeconfig(self) -> Path:
        return self._dir / "admin.kubeconfig"

    @property
    def audit_log(self) -> Path:
        """JSON lines, one per read of a Secret (AUDIT_POLICY)."""
        return self._dir / "audit.log"

    @property
    def ca_cert(self) -> Path:
        return self._ca.cert_path

    def start(self) -> None:
        binaries = locate(_FULL_BINARIES if self.profile == "full" else _MINIMAL_BINARIES)
        self._dir = Path(tempfile.mkdtemp(prefix="otp-controlplane-")) if self.run_dir is None else self.run_dir
        self._dir.mkdir(parents=True, exist_ok=True)
        try:
            self._ca = CertificateAuthority(self._dir / "pki")
            self._start_minimal(binaries)
            if self.profile == "full":
                self._start_full(binaries)
                if self.real_node is not None:
                    self.add_real_node(self.real_node)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop the components (dependents first) and remove the run directory."""
        if self.node is not None:
            self.node.stop(self.stop_grace)
            self.node = None
        dependents = [c for c in self.components if c.name not in _MINIMAL_BINARIES]
        ordered = [dependents, *([c] for c in self.components if c.name == "kube-apiserver"),
                   *([c] for c in self.components if c.name == "etcd")]
        for group in ordered:
            stop_all(group, self.stop_grace)
        self.components.clear()
        if getattr(self, "_admin", None) is not None:
            self._admin.close()
        if self._own_run_dir and getattr(self, "_dir", None) is not None:
            shutil.rmtree(self._dir, ignore_errors=True)

    def restart_apiserver(self, downtime: float = 0.0) -> None:
        """Stop kube-apiserver, wait ``downtime`` seconds, start it again with the same flags and
        port (clients keep their kubeconfig), and wait until it is ready (tests of clients' recovery)."""
        old = next(c for c in self.components if c.name == "kube-apiserver")
        stop_all([old], self.stop_grace)
        self.components.remove(old)
        time.sleep(downtime)
        self._spawn("kube-apiserver", [str(arg) for arg in cast(list, old.process.args)])
        self._wait({"kube-apiserver": lambda: api.is_ok(self._admin, "/readyz")})

    def user_kubeconfig(self, user: str, groups: Sequence[str] = (), path: Path | None = None) -> Path:
        """A kubeconfig authenticating as ``user`` in ``groups`` (client certificate CN/O)."""
        if not user or any(not g for g in groups):
            raise ValueError("user and group names must be non-empty")
        pair = self._user_ca().issue(user, client=True, organizations=tuple(groups))
        return self._write_kubeconfig(pair, user, path or self._dir / "users" / f"{_file_stem(user)}.kubeconfig")

    def describe(self) -> dict[str, object]:
        return {
            "profile": self.profile, "server": self.server, "kubeconfig": str(self.kubeconfig),
            "run_dir": str(self._dir), "components": {c.name: c.pid for c in self.components},
            **({"real_node": {"name": NODE_NAME, "pod_subnet": str(self.node.subnet), "bridge": self.node.bridge,
                              "directory": str(self.node.directory),
                              "components": {c.name: c.pid for c in self.node.components},
                              "started_seconds": round(self.node.started_seconds, 1)}} if self.node else {}),
        }

    def __enter__(self) -> ControlPlane:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- start-up ----------------------------------------------------------------------------
    def _start_minimal(self, binaries: dict[str, Path]) -> None:
        client_port, peer_port, api_port = free_port(), free_port(), free_port()
        etcd_url = f"http://127.0.0.1:{client_port}"
        peer_url = f"http://127.0.0.1:{peer_port}"
        etcd = self._spawn("etcd", [
            str(binaries["etcd"]), "--name=default", f"--data-dir={self._dir / 'etcd'}",
            f"--listen-client-urls={etcd_url}", f"--advertise-client-urls={etcd_url}",
            f"--listen-peer-urls={peer_url}", f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=default={peer_url}", "--unsafe-no-fsync=true", "--log-level=warn",
        ])
        serving = self._ca.issue("kube-apiserver", hosts=(
            "localhost", "127.0.0.1", "::1", "kubernetes", "kubernetes.default",
            "kubernetes.default.svc", "kubernetes.default.svc.cluster.local", "10.0.0.1",
        ))
        self._sa_private, sa_public = self._service_account_keys()
        kubelet_client = self._ca.issue("kube-apiserver-kubelet-client", client=True)
        self.server = f"https://127.0.0.1:{api_port}"
        audit_policy = self._dir / "audit-policy.yaml"
        audit_policy.write_text(AUDIT_POLICY)
        self._spawn("kube-apiserver", [
            str(binaries["kube-apiserver"]), f"--etcd-servers={etcd_url}",
            "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", f"--secure-port={api_port}",
            f"--tls-cert-file={serving.cert}", f"--tls-private-key-file={serving.key}",
            f"--client-ca-file={self._ca.cert_path}", f"--cert-dir={self._dir / 'apiserver'}",
            "--authorization-mode=RBAC",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={sa_public}", f"--service-account-signing-key-file={self._sa_private}",
            f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}", "--profiling=false",
            # A loopback advertise address cannot back the kubernetes Service endpoints.
            "--endpoint-reconciler-type=none",
            # It taints new Nodes not-ready and only the node-lifecycle controller lifts that taint;
            # kwok reports the fake Node's readiness itself, so the controller is not run.
            "--disable-admission-plugins=TaintNodesByCondition",
            # As on managed clusters (OpenShift, GKE ...): setting blockOwnerDeletion on a child
            # needs update on the owner's finalizers subresource (the chart's
            # otpchannels/finalizers rule exists for it).
            "--enable-admission-plugins=OwnerReferencesPermissionEnforcement",
            # `kubectl logs/exec` on the real node: the kubelet listens on its InternalIP.
            "--kubelet-preferred-address-types=InternalIP",
            f"--kubelet-client-certificate={kubelet_client.cert}", f"--kubelet-client-key={kubelet_client.key}",
            f"--audit-policy-file={audit_policy}", f"--audit-log-path={self.audit_log}",
        ])
        admin = self._ca.issue(ADMIN_USER, client=True, organizations=("system:masters",))
        self._write_kubeconfig(admin, ADMIN_USER, self.kubeconfig)
        self._admin = api.client(self.server, self._ca.cert_path, admin.cert, admin.key)
        with httpx.Client(timeout=2.0) as plain:
            self._wait({"etcd": lambda: _http_ok(plain, f"{etcd_url}/health")}, [etcd])
        self._wait({"kube-apiserver": lambda: api.is_ok(self._admin, "/readyz")})

    def _start_full(self, binaries: dict[str, Path]) -> None:
        kcm_port, kcm_flags = self._secure_component("kube-controller-manager")
        self._spawn("kube-controller-manager", [
            str(binaries["kube-controller-manager"]), *kcm_flags,
            f"--controllers={','.join(CONTROLLERS)}", "--use-service-account-credentials=true",
            f"--service-account-private-key-file={self._sa_private}", f"--root-ca-file={self._ca.cert_path}",
            f"--cluster-signing-cert-file={self._ca.cert_path}", f"--cluster-signing-key-file={self._ca.key_path}",
            *_COMPONENT_API_RATE, "--concurrent-deployment-syncs=25", "--concurrent-replicaset-syncs=25",
        ])
        scheduler_port, scheduler_flags = self._secure_component("kube-scheduler")
        self._spawn("kube-scheduler", [str(binaries["kube-scheduler"]), *scheduler_flags, *_COMPONENT_API_RATE])
        kwok_port = free_port()
        # kwok plays every kubelet of the Nodes it manages, so it gets kubelet-wide powers.
        kwok_config = self._component_kubeconfig("kwok", groups=("system:masters",))
        key, value = api.FAKE_NODE_ANNOTATION
        self._spawn("kwok", [
            str(binaries["kwok"]), f"--kubeconfig={kwok_config}",
            f"--config={binaries['kwok'].parent / KWOK_STAGES_FILE}",
            "--manage-all-nodes=false", f"--manage-nodes-with-annotation-selector={key}={value}",
            "--cidr=10.244.0.0/16", "--node-ip=10.0.1.1", f"--server-address=127.0.0.1:{kwok_port}",
        ])
        api.create(self._admin, "/api/v1/nodes", api.fake_node(FAKE_NODE))
        scheduler = api.client(f"https://127.0.0.1:{scheduler_port}", self._ca.cert_path)
        kcm = api.client(f"https://127.0.0.1:{kcm_port}", self._ca.cert_path)
        try:
            self._wait({
                "kube-scheduler": lambda: api.is_ok(scheduler, "/readyz"),
                "kube-controller-manager": lambda: api.is_ok(kcm, "/healthz")
                and api.is_ok(self._admin, "/api/v1/namespaces/default/serviceaccounts/default"),
                "kwok": lambda: api.node_ready(self._admin, FAKE_NODE),
            })
        finally:
            scheduler.close()
            kcm.close()

    def add_real_node(self, images: NodeImages) -> RealNode:
        """Start the real kubelet Node ("full" profile) unless it runs: at start() when asked
        for, or on a running plane when the first test that needs it comes; stop() stops it."""
        if self.profile != "full":
            raise ControlPlaneError("a real node needs the full profile (kube-scheduler places its pods)")
        if self.node is None:
            self.node = self._start_real_node(images)
        return self.node

    def _start_real_node(self, images: NodeImages) -> RealNode:
        started = time.monotonic()
        # Its own short directory: the kubelet's unix sockets must fit in 108 bytes.
        node = RealNode(Path(tempfile.mkdtemp(prefix="otp-node-")), images.pause)
        try:
            node.start_runtime(images.archives)
            # Like kwok, the kubelet gets node-wide powers (the sandbox runs no Node authorizer).
            config = self._component_kubeconfig(f"system:node:{NODE_NAME}", groups=("system:masters",))
            serving = self._ca.issue(f"{NODE_NAME}-serving", hosts=("localhost", "127.0.0.1", node.gateway))
            node.start_kubelet(locate(("kubelet",))["kubelet"], config, self._ca.cert_path,
                               (serving.cert, serving.key))
            deadline = time.monotonic() + self.startup_timeout
            while not api.node_ready(self._admin, NODE_NAME):
                node.check()
                if time.monotonic() > deadline:
                    raise ControlPlaneError(f"{NODE_NAME} not ready after {self.startup_timeout:.0f}s:\n"
                                            f"{node.log_tail()}")
                time.sleep(_POLL)
        except BaseException:
            node.stop(self.stop_grace)
            raise
        node.started_seconds = time.monotonic() - started
        return node

    def _wait(self, checks: dict[str, Callable[[], bool]], watch: Sequence[Component] | None = None) -> None:
        """Poll until every check passes; fail fast when a component exits, and on timeout name
        the first component still not ready with its last log lines."""
        pending = dict(checks)
        deadline = time.monotonic() + self.startup_timeout
        while pending:
            for component in watch if watch is not None else self.components:
                code = component.exited()
                if code is not None:
                    raise ControlPlaneError(
                        f"{component.name} exited with status {code} during start-up "
                        f"(log {component.log_path}):\n{component.log_tail()}"
                    )
            pending = {name: check for name, check in pending.items() if not check()}
            if not pending:
                return
            if time.monotonic() > deadline:
                name = next(iter(pending))
                component = next(c for c in self.components if c.name == name)
                raise ControlPlaneError(
                    f"{name} not ready after {self.startup_timeout:.0f}s "
                    f"(log {component.log_path}):\n{component.log_tail()}"
                )
            time.sleep(_POLL)

    # -- helpers -----------------------------------------------------------------------------
    def _secure_component(self, name: str) -> tuple[int, list[str]]:
        """A free port and the flags every secured control-plane component shares: its own
        identity (``system:<name>``) for the API, authn/authz delegation, and a serving cert."""
        port = free_port()
        config = self._component_kubeconfig(f"system:{name}")
        serving = self._ca.issue(f"{name}-serving", hosts=("localhost", "127.0.0.1"))
        return port, [
            f"--kubeconfig={config}", f"--authentication-kubeconfig={config}",
            f"--authorization-kubeconfig={config}", "--bind-address=127.0.0.1", f"--secure-port={port}",
            f"--tls-cert-file={serving.cert}", f"--tls-private-key-file={serving.key}",
            "--leader-elect=false",
        ]

    def _spawn(self, name: str, argv: list[str]) -> Component:
        component = spawn(name, argv, self._dir / "logs" / f"{name}.log")
        self.components.append(component)
        return component

    def _user_ca(self) -> CertificateAuthority:
        """The same CA, writing into its own directory so a user's files never overwrite a
        component's (the file names follow the certificate's common name)."""
        directory = self._dir / "pki" / "users"
        if not directory.exists():
            directory.mkdir()
            shutil.copy2(self._ca.cert_path, directory / "ca.crt")
            shutil.copy2(self._ca.key_path, directory / "ca.key")
        return CertificateAuthority(directory)

    def _component_kubeconfig(self, user: str, groups: Sequence[str] = ()) -> Path:
        pair = self._ca.issue(user, client=True, organizations=tuple(groups))
        return self._write_kubeconfig(pair, user, self._dir / "kubeconfigs" / f"{_file_stem(user)}.kubeconfig")

    def _write_kubeconfig(self, pair: CertPair, user: str, path: Path) -> Path:
        text = kubeconfig.render(
            self.server, self._ca.cert_path.read_bytes(), user, pair.cert.read_bytes(), pair.key.read_bytes()
        )
        return kubeconfig.write_private(path, text)

    def _service_account_keys(self) -> tuple[Path, Path]:
        key = ec.generate_private_key(ec.SECP256R1())
        private = kubeconfig.write_private(self._dir / "pki" / "service-account.key", key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption(),
        ).decode())
        public = self._dir / "pki" / "service-account.pub"
        public.write_bytes(key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo,
        ))
        return private, public


def _http_ok(http: httpx.Client, url: str) -> bool:
    try:
        return http.get(url).status_code == 200
    except httpx.HTTPError:
        return False


def _file_stem(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)
