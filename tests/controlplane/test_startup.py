"""A control plane that cannot get ready fails loudly and leaves nothing behind."""

from __future__ import annotations

from pathlib import Path

import pytest

from otp_sandbox.controlplane import ControlPlane, ControlPlaneError

pytestmark = pytest.mark.cluster


def test_startup_timeout_names_the_component_and_cleans_up():
    plane = ControlPlane(profile="minimal", startup_timeout=0.01)
    expected = r"^(etcd|kube-apiserver) not ready after 0s \(log .*/\1\.log\):\n."
    with pytest.raises(ControlPlaneError, match=expected) as failure:
        plane.start()
    run_dir = Path(str(failure.value).split("(log ", 1)[1].split("/logs/", 1)[0])
    assert not run_dir.exists()
    assert plane.components == []


def test_unknown_profile_is_rejected():
    with pytest.raises(ValueError, match="unknown control plane profile 'huge'"):
        ControlPlane(profile="huge")  # type: ignore[arg-type]
