"""Building and locating the control plane binaries."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
import yaml

from otp_sandbox.controlplane import builder as build_module
from otp_sandbox.controlplane import gomodules, kubeconfig


def test_missing_go_toolchain_gives_one_clear_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("OTP_SANDBOX_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("KUBEBUILDER_ASSETS", raising=False)
    monkeypatch.setattr(build_module, "GO_FALLBACKS", ())
    assert build_module.main() == 1
    errors = capsys.readouterr().err.strip().splitlines()
    assert errors == [f"error: {build_module.GO_INSTALL_HINT}"]
    assert not (tmp_path / "cache" / "bin").exists()


def test_missing_binaries_are_named(tmp_path, monkeypatch):
    monkeypatch.setenv("OTP_SANDBOX_CACHE", str(tmp_path))
    monkeypatch.delenv("KUBEBUILDER_ASSETS", raising=False)
    with pytest.raises(build_module.BuildError, match="missing: etcd, kube-apiserver"):
        build_module.locate(["etcd", "kube-apiserver"])


def test_kubebuilder_assets_are_preferred(tmp_path, monkeypatch):
    for name in build_module.ASSET_BINARIES:
        (tmp_path / name).write_text("#!/bin/sh\n")
        (tmp_path / name).chmod(0o755)
    monkeypatch.setenv("KUBEBUILDER_ASSETS", str(tmp_path))
    assert build_module.locate(["etcd"]) == {"etcd": tmp_path / "etcd"}


def test_version_ldflags_follow_the_pinned_release():
    version = gomodules.kubernetes_version()
    flags = gomodules.kubernetes_version_ldflags(version)
    assert f"-X k8s.io/component-base/version.gitVersion={version}" in flags
    assert f"-X k8s.io/component-base/version.gitMinor={version.split('.')[1]}" in flags
    with pytest.raises(ValueError, match="not a Kubernetes release"):
        gomodules.kubernetes_version_ldflags("latest")


def test_user_kubeconfig_keeps_the_cluster_and_replaces_the_credentials():
    admin = kubeconfig.render("https://127.0.0.1:1", b"CA", "admin", b"CERT", b"KEY")
    document = yaml.safe_load(kubeconfig.with_client_certificate(admin, "alice", b"ALICE", b"ALICEKEY"))
    assert document["clusters"] == yaml.safe_load(admin)["clusters"]
    assert document["users"] == [{"name": "alice", "user": {
        "client-certificate-data": "QUxJQ0U=", "client-key-data": "QUxJQ0VLRVk=",
    }}]
    assert document["contexts"][0]["context"] == {"cluster": "otp-sandbox", "user": "alice"}


@pytest.mark.cluster
def test_second_build_uses_the_cache_quickly():
    command = [sys.executable, "-m", "otp_sandbox.cli", "build"]
    subprocess.run(command, check=True, capture_output=True, timeout=3600)
    started = time.monotonic()
    again = subprocess.run(command, check=True, capture_output=True, text=True, timeout=60)
    elapsed = time.monotonic() - started
    assert again.stdout.startswith("using cached control plane binaries in ")
    assert str(build_module.binary_dir()) in again.stdout
    print(f"cached build call: {elapsed:.2f}s")
