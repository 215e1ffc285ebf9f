"""How a NetworkPolicy implementation decides egress, for the rendered policies' tests."""

from __future__ import annotations

import ipaddress

DNS_POD = {"namespace": {"kubernetes.io/metadata.name": "kube-system"}, "pod": {"k8s-app": "kube-dns"}}
OTHER_POD = {"namespace": {"kubernetes.io/metadata.name": "shop"}, "pod": {"app": "db"}}


def egress_allows(policy: dict, port: int, protocol: str = "TCP", ip: str = "", pod: dict | None = None) -> bool:
    """What a NetworkPolicy implementation decides for one connection (matchLabels and ipBlock
    only, the parts these policies use): to an address outside the cluster (``ip``) or a pod
    (``pod``: its namespace's and its own labels)."""

    def peer_matches(peer: dict) -> bool:
        if "ipBlock" in peer:
            block = peer["ipBlock"]
            if not ip or ipaddress.ip_address(ip).version != ipaddress.ip_network(block["cidr"]).version:
                return False
            address = ipaddress.ip_address(ip)
            return address in ipaddress.ip_network(block["cidr"]) and not any(
                address in ipaddress.ip_network(c) for c in block.get("except", ()))
        if pod is None:
            return False
        namespaces = (peer.get("namespaceSelector") or {}).get("matchLabels")
        pods = (peer.get("podSelector") or {}).get("matchLabels")
        own_namespace = pod["namespace"].get("kubernetes.io/metadata.name") == policy["metadata"]["namespace"]
        if "namespaceSelector" not in peer and not own_namespace:
            return False  # a bare podSelector selects in the policy's own namespace
        return (all(pod["namespace"].get(k) == v for k, v in (namespaces or {}).items())
                and all(pod["pod"].get(k) == v for k, v in (pods or {}).items()))

    for rule in policy["spec"]["egress"]:
        ports = rule.get("ports")
        if ports and not any(p["port"] == port and p.get("protocol", "TCP") == protocol for p in ports):
            continue
        if "to" not in rule or any(peer_matches(peer) for peer in rule["to"]):
            return True
    return False
