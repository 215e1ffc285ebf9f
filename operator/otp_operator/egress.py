"""Where the relay pods may connect: the egress half of each channel's NetworkPolicy.

A NetworkPolicy cannot name hosts, so the relay's HTTPS to 8x8 is allowed to every address
*outside* the cluster's own ranges (``cluster_cidrs``: pod, service, node/VPC ranges and the cloud
metadata addresses), and DNS only to the cluster's DNS pods. The administrator sets both with the
operator's ``--cluster-cidr`` / ``--dns-*`` flags (chart ``clusterNetwork``); the defaults cover
the private, shared (CGNAT), link-local and unique-local ranges most clusters use.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

CLUSTER_CIDR_FLAG = "--cluster-cidr"
DNS_NAMESPACE_FLAG = "--dns-namespace"
DNS_POD_LABEL_FLAG = "--dns-pod-label"
DNS_PORT_FLAG = "--dns-port"
HTTPS_EGRESS_FLAG = "--relay-https-egress"
HTTPS_EGRESS_MODES = ("outside-cluster", "none")  # none: an FQDN policy of the network plugin allows 8x8

# The addresses HTTPS egress never reaches unless listed as an allowed endpoint's own port:
DEFAULT_CLUSTER_CIDRS = (
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16",  # RFC 1918: pods, services, nodes, VPCs
    "100.64.0.0/10",  # shared address space (RFC 6598): EKS custom networking, Alibaba's metadata
    "169.254.0.0/16",  # link-local: the cloud metadata services (169.254.169.254), NodeLocal DNS
    "fc00::/7",  # IPv6 unique-local: pod and service ranges, AWS's IPv6 metadata (fd00:ec2::254)
    "fe80::/10",  # IPv6 link-local
)
DEFAULT_DNS_NAMESPACE = "kube-system"
DEFAULT_DNS_POD_LABELS = (("k8s-app", "kube-dns"),)  # CoreDNS and kube-dns both carry it
DEFAULT_DNS_PORTS = (53,)
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"  # set by the API server on every namespace


@dataclass(frozen=True)
class RelayEgress:
    cluster_cidrs: tuple[str, ...] = DEFAULT_CLUSTER_CIDRS
    dns_namespace: str = DEFAULT_DNS_NAMESPACE
    dns_pod_labels: tuple[tuple[str, str], ...] = DEFAULT_DNS_POD_LABELS
    dns_ports: tuple[int, ...] = DEFAULT_DNS_PORTS
    https: str = HTTPS_EGRESS_MODES[0]  # "none": the NetworkPolicy leaves 8x8 to an FQDN policy

    def dns_peer(self) -> dict[str, object]:
        peer: dict[str, object] = {"namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: self.dns_namespace}}}
        if self.dns_pod_labels:
            peer["podSelector"] = {"matchLabels": dict(self.dns_pod_labels)}
        return peer

    def outside_cluster(self) -> list[dict[str, object]]:
        """ipBlock peers for every address but ``cluster_cidrs``: one per IP family (an
        ``except`` must lie inside its ``cidr``)."""
        peers: list[dict[str, object]] = []
        for everything in ("0.0.0.0/0", "::/0"):
            version = ipaddress.ip_network(everything).version
            excepted = [c for c in self.cluster_cidrs if ipaddress.ip_network(c).version == version]
            block: dict[str, object] = {"cidr": everything}
            if excepted:
                block["except"] = excepted
            peers.append({"ipBlock": block})
        return peers


def parse_cidr(value: str) -> str:
    """A network in canonical form; ValueError naming the value (a host address with a prefix,
    e.g. 10.0.0.1/8, is refused: it is usually a typo)."""
    try:
        network = ipaddress.ip_network(value.strip(), strict=True)
    except ValueError as error:
        raise ValueError(f"{CLUSTER_CIDR_FLAG} {value!r} is not a network such as 10.0.0.0/8 ({error})") from None
    if network.prefixlen == 0:
        raise ValueError(f"{CLUSTER_CIDR_FLAG} {value!r} would exclude every address from the relay's HTTPS egress")
    return str(network)


def parse_label(value: str) -> tuple[str, str]:
    key, sep, label_value = value.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"{DNS_POD_LABEL_FLAG} {value!r} must be key=value, e.g. k8s-app=kube-dns")
    return key.strip(), label_value.strip()
