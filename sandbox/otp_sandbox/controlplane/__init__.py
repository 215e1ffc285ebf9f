"""A local Kubernetes control plane built from source: etcd, kube-apiserver and, in the "full"
profile, kube-controller-manager, kube-scheduler and kwok (fake kubelets for one fake Node)."""

from .builder import BuildError, binary_dir, build, build_go_binary, locate
from .cluster import ADMIN_USER, FAKE_NODE, PROFILES, ControlPlane, ControlPlaneError, Profile

__all__ = [
    "ADMIN_USER", "FAKE_NODE", "PROFILES", "BuildError", "ControlPlane", "ControlPlaneError",
    "Profile", "binary_dir", "build", "build_go_binary", "locate",
]
