"""A real Node for the sandbox: the kubelet built with the control plane, Debian's containerd and
runc, and a CNI bridge, next to kwok's fake Node.

Everything lives under one run directory (containerd's root, state and socket, the kubelet's root
dir and pod logs, the CNI config and IP allocations). The Node is tainted so that only pods which
ask for it (a toleration plus a nodeSelector, e.g. through an OtpChannel's ``spec.relay.podTemplate``)
run there; everything else keeps landing on kwok's Node.

Host quirks handled here (this machine has hybrid cgroups and no CAP_SYS_RESOURCE):
- the kubelet runs with cgroupfs, without QoS cgroups or node-allocatable enforcement;
- containerd restricts the OOM score adjustment it asks runc for to its own (0): the kubelet's
  negative scores would fail with "failed to update /proc/self/oom_score_adj: Permission denied".

Stopping kills every container task, then containerd and its shims, unmounts whatever the node
mounted (container roots, Secret volumes, network namespaces) and deletes the bridge: nothing of
it stays on the host.
"""

from __future__ import annotations

import ctypes
import ipaddress
import json
import os
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import tomli_w
import yaml

from .process import Component, free_port, spawn, stop_all

NODE_NAME = "kubelet-node-0"
# Pods that should run on the real node tolerate this taint and select the node by hostname.
TAINT_KEY = "otp-sandbox.dev/real-node"
HOSTNAME_LABEL = "kubernetes.io/hostname"
PAUSE_COMMAND = ("sleep", "infinity")
# A relay pod on this node was Ready 5 and 8 s after creation with its image already present
# (tests/node/test_relay_pods.py): what kwok-backed relay pods wait before Ready in the operator's
# tests and benchmark (kwok's own stages would make them Ready at once).
RELAY_POD_READY_SECONDS = 5.0
CNI_BIN_DIR = Path("/usr/lib/cni")
# Pod subnets are /24s from here; each node takes the first one no route on the host uses yet.
POD_NETWORKS = ipaddress.ip_network("10.89.0.0/16")
# The same /16 as an allow-list glob for the operator: the 8x8 emulator listens on a node's
# bridge address when relay pods must reach it.
POD_NETWORKS_GLOB = ".".join(str(POD_NETWORKS.network_address).split(".")[:2]) + ".*"
TOOLS_HINT = ("containerd, runc and the CNI plugins are needed for the real node "
              "(`make node-tools` installs containerd, runc and containernetworking-plugins from Debian)")
_MNT_DETACH = 2


class NodeError(RuntimeError):
    """The real node could not start; the message says which part and why."""


def toleration() -> dict[str, str]:
    return {"key": TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"}


def node_selector() -> dict[str, str]:
    return {HOSTNAME_LABEL: NODE_NAME}


@dataclass(frozen=True)
class NodeImages:
    """What the node's containerd loads: docker-archive tarballs, and the image whose command
    sleeps that it uses as every pod's sandbox ("pause") container."""

    pause: str
    archives: tuple[Path, ...]


@dataclass
class RealNode:
    """``start_runtime(archives)``, ``start_kubelet(...)``, then ``stop()``, which also removes
    ``directory`` (keep its path short: the kubelet's unix sockets live in it)."""

    directory: Path
    pause_image: str
    components: list[Component] = field(default_factory=list, init=False)
    started_seconds: float = field(default=0.0, init=False)

    def __post_init__(self) -> None:
        self.bridge = f"otp{uuid.uuid4().hex[:8]}"
        self.socket = self.directory / "containerd" / "containerd.sock"

    @property
    def subnet(self) -> ipaddress.IPv4Network:
        return self._subnet

    @property
    def gateway(self) -> str:
        """The host's address on the pod bridge: what pods reach the host's services on."""
        return str(next(self._subnet.hosts()))

    # -- start -------------------------------------------------------------------------------
    def start_runtime(self, image_archives: Sequence[Path]) -> None:
        """containerd with the CNI config, the images imported."""
        for tool in ("containerd", "ctr", "runc"):
            if shutil.which(tool) is None:
                raise NodeError(f"{tool} not found: {TOOLS_HINT}")
        if not (CNI_BIN_DIR / "bridge").exists():
            raise NodeError(f"{CNI_BIN_DIR}/bridge not found: {TOOLS_HINT}")
        self._subnet = _free_subnet()
        self._create_bridge()
        config = self._write_containerd_config()
        containerd = spawn("containerd", ["containerd", f"--config={config}"], self._log("containerd"))
        self.components.append(containerd)
        self._wait("containerd", lambda: self._ctr("version", check=False).returncode == 0, 30.0)
        for archive in image_archives:
            self._ctr("images", "import", "--no-unpack=false", str(archive), timeout=600)

    def start_kubelet(self, kubelet: Path, kubeconfig: Path, ca_cert: Path, serving: tuple[Path, Path]) -> None:
        config = self._write_kubelet_config(ca_cert, serving)
        self.components.append(spawn("kubelet", [
            str(kubelet), f"--config={config}", f"--kubeconfig={kubeconfig}",
            f"--root-dir={self.directory / 'kubelet'}", f"--hostname-override={NODE_NAME}",
            # The kubelet refuses a loopback node IP: the bridge address is the host's on the pod network.
            f"--node-ip={self.gateway}", "--v=1",
        ], self._log("kubelet")))

    def check(self) -> None:
        for component in self.components:
            code = component.exited()
            if code is not None:
                raise NodeError(f"{component.name} exited with status {code} (log {component.log_path}):\n"
                                f"{component.log_tail()}")

    def log_tail(self) -> str:
        return "\n".join(f"--- {c.name} ({c.log_path}):\n{c.log_tail()}" for c in self.components)

    # -- stop --------------------------------------------------------------------------------
    def stop(self, grace: float = 10.0) -> None:
        kubelet = [c for c in self.components if c.name == "kubelet"]
        stop_all(kubelet, grace)
        namespaces = self._network_namespaces()
        if any(c.name == "containerd" and c.exited() is None for c in self.components):
            for task in self._ctr("tasks", "ls", "-q", check=False).stdout.split():
                self._ctr("tasks", "delete", "--force", task, check=False, timeout=60)
        stop_all([c for c in self.components if c.name != "kubelet"], grace)
        self.components.clear()
        _kill_shims(self.socket)
        _unmount_under(self.directory, namespaces)
        if (Path("/sys/class/net") / self.bridge).exists():
            subprocess.run(["ip", "link", "delete", self.bridge], capture_output=True, check=False)
        _remove_log_links(self.directory / "pod-logs")
        _remove_empty_cgroups()
        if not mounts_under(self.directory):
            shutil.rmtree(self.directory, ignore_errors=True)

    # -- config ------------------------------------------------------------------------------
    def _create_bridge(self) -> None:
        """The CNI bridge plugin would create it with the first pod; made now, the gateway address
        exists from the start (sandbox services can listen on it before any pod runs)."""
        for command in (["ip", "link", "add", "name", self.bridge, "type", "bridge"],
                        ["ip", "addr", "add", f"{self.gateway}/{self._subnet.prefixlen}", "dev", self.bridge],
                        ["ip", "link", "set", self.bridge, "up"]):
            result = subprocess.run(command, capture_output=True, text=True, check=False)
            if result.returncode != 0:
                raise NodeError(f"{' '.join(command)} failed: {result.stderr.strip()}")

    def _write_containerd_config(self) -> Path:
        root = self.directory / "containerd"
        cni_conf = self.directory / "cni" / "net.d"
        cni_conf.mkdir(parents=True, exist_ok=True)
        (cni_conf / "10-sandbox.conflist").write_text(json.dumps(self._cni_config(), indent=2))
        cri = {
            "sandbox_image": self.pause_image,
            "restrict_oom_score_adj": True,
            "netns_mounts_under_state_dir": True,
            "disable_apparmor": True,
            "enable_selinux": False,
            "stream_server_address": "127.0.0.1",
            "stream_server_port": "0",
            "containerd": {
                "snapshotter": "overlayfs",
                "default_runtime_name": "runc",
                "runtimes": {"runc": {"runtime_type": "io.containerd.runc.v2",
                                      "options": {"BinaryName": shutil.which("runc"), "SystemdCgroup": False}}},
            },
            "cni": {"bin_dir": str(CNI_BIN_DIR), "conf_dir": str(cni_conf), "max_conf_num": 1},
        }
        config = {
            "version": 2,
            "root": str(root / "root"),
            "state": str(root / "state"),
            "grpc": {"address": str(self.socket)},
            "ttrpc": {"address": str(root / "ttrpc.sock")},
            "metrics": {"address": ""},
            "plugins": {
                "io.containerd.grpc.v1.cri": cri,
                "io.containerd.internal.v1.opt": {"path": str(root / "opt")},
            },
            "disabled_plugins": ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
                                 "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.devmapper"],
        }
        path = root / "config.toml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(tomli_w.dumps(config))
        return path

    def _cni_config(self) -> dict[str, object]:
        return {
            "cniVersion": "0.4.0",
            "name": "otp-sandbox",
            "plugins": [{
                "type": "bridge", "bridge": self.bridge, "isGateway": True, "ipMasq": False, "hairpinMode": True,
                "ipam": {
                    "type": "host-local", "dataDir": str(self.directory / "cni" / "ipam"),
                    "ranges": [[{"subnet": str(self._subnet)}]], "routes": [{"dst": "0.0.0.0/0"}],
                },
            }],
        }

    def _write_kubelet_config(self, ca_cert: Path, serving: tuple[Path, Path]) -> Path:
        config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "address": self.gateway,
            "port": free_port(),
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": free_port(),
            "tlsCertFile": str(serving[0]),
            "tlsPrivateKeyFile": str(serving[1]),
            # Only the API server (client certificate from the sandbox CA) may use its API.
            "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": False},
                               "x509": {"clientCAFile": str(ca_cert)}},
            "authorization": {"mode": "AlwaysAllow"},
            "containerRuntimeEndpoint": f"unix://{self.socket}",
            "cgroupDriver": "cgroupfs",
            "cgroupsPerQOS": False,
            "enforceNodeAllocatable": [],
            "failSwapOn": False,
            "failCgroupV1": False,
            "localStorageCapacityIsolation": False,
            "oomScoreAdj": 0,
            "podLogsDir": str(self.directory / "pod-logs"),
            "volumePluginDir": str(self.directory / "kubelet-plugins"),
            "registerWithTaints": [{"key": TAINT_KEY, "value": "true", "effect": "NoSchedule"}],
            "serializeImagePulls": False,
            # The host's disk and memory use are not this node's business: never evict.
            "evictionHard": {"memory.available": "0%", "nodefs.available": "0%", "imagefs.available": "0%"},
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "resolvConf": "/etc/resolv.conf",
        }
        path = self.directory / "kubelet-config.yaml"
        path.write_text(yaml.safe_dump(config))
        return path

    # -- helpers -----------------------------------------------------------------------------
    def _ctr(self, *args: str, check: bool = True, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(["ctr", f"--address={self.socket}", "--namespace=k8s.io", *args],
                                capture_output=True, text=True, check=False, timeout=timeout)
        if check and result.returncode != 0:
            raise NodeError(f"ctr {' '.join(args[:2])} failed: {(result.stdout + result.stderr).strip()[-1500:]}")
        return result

    def _log(self, name: str) -> Path:
        return self.directory / "logs" / f"{name}.log"

    def _wait(self, name: str, ready: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            self.check()
            if time.monotonic() > deadline:
                raise NodeError(f"{name} not ready after {timeout:.0f}s:\n{self.log_tail()}")
            time.sleep(0.1)

    def _network_namespaces(self) -> list[Path]:
        """The network namespaces of this node's pods (from the sandboxes' runtime specs)."""
        found: list[Path] = []
        for spec in (self.directory / "containerd" / "state").glob("io.containerd.runtime.v2.task/*/*/config.json"):
            try:
                namespaces = json.loads(spec.read_text()).get("linux", {}).get("namespaces", [])
            except (OSError, ValueError):
                continue
            found += [Path(n["path"]) for n in namespaces if n.get("type") == "network" and n.get("path")]
        return found


def _free_subnet() -> ipaddress.IPv4Network:
    routes = subprocess.run(["ip", "-4", "route", "show"], capture_output=True, text=True, check=True).stdout
    used = [ipaddress.ip_network(m, strict=False) for m in re.findall(r"^(\d+\.\d+\.\d+\.\d+/\d+)", routes, re.M)]
    for candidate in POD_NETWORKS.subnets(new_prefix=24):
        assert isinstance(candidate, ipaddress.IPv4Network)
        if not any(candidate.overlaps(u) for u in used):
            return candidate
    raise NodeError(f"no free /24 left in {POD_NETWORKS} for the node's pods")


def _kill_shims(socket: Path) -> None:
    """containerd's shims daemonize; the ones serving this containerd name its socket."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"containerd-shim-runc-v2") and str(socket).encode() in argv:
            try:
                os.kill(int(proc.name), 9)
            except ProcessLookupError:
                pass


def mounts_under(directory: Path) -> list[str]:
    prefix = str(directory.resolve()) + "/"
    with open("/proc/self/mountinfo") as info:
        points = [line.split()[4].encode().decode("unicode_escape") for line in info]
    return [p for p in points if p.startswith(prefix) or p == prefix[:-1]]


def _unmount_under(directory: Path, extra: Sequence[Path]) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    for _ in range(5):  # stacked mounts (the kubelet bind-mounts its root dir onto itself)
        points = sorted(set(mounts_under(directory)) | {str(p) for p in extra if os.path.ismount(p)},
                        key=len, reverse=True)
        if not points:
            break
        for point in points:
            libc.umount2(point.encode(), _MNT_DETACH)
    for path in extra:
        if path.exists() and not os.path.ismount(path):
            path.unlink(missing_ok=True)


def _remove_empty_cgroups() -> None:
    """containerd's parent cgroups (per controller); still in use (another node) is left alone."""
    for group in Path("/sys/fs/cgroup").glob("*/k8s.io"):
        try:
            group.rmdir()
        except OSError:
            pass


def _remove_log_links(pod_logs: Path) -> None:
    """The kubelet also links every container log into /var/log/containers."""
    links = Path("/var/log/containers")
    if not links.is_dir():
        return
    for link in links.iterdir():
        if link.is_symlink() and os.readlink(link).startswith(str(pod_logs)):
            link.unlink(missing_ok=True)

