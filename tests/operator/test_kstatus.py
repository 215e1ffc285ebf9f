"""Live channels on the cluster, judged by the GitOps tools themselves the way the README's GitOps
section says: kstatus (sigs.k8s.io/cli-utils, how Flux and kpt judge health) and Argo CD's health
script run as Argo CD runs it (both from tests/gitops)."""

from __future__ import annotations

import copy

from tests.gitops.tools import argocd_health, kstatus
from tests.support.channels import condition, create_channel, wait_condition

SECRET_GRACE = 20  # seconds; long enough to see the channel InProgress on a loaded machine


def test_kstatus_and_argocd_on_live_channels(k8s_api, namespace, run_operator, setup_channel,
                                                 sms_emulator):
    run_operator("--secret-grace", str(SECRET_GRACE))
    ch = setup_channel(namespace)
    ready = ch.manifest(sms_emulator.base_url)
    later = copy.deepcopy(ready)
    later["metadata"]["name"] = "later"
    later["spec"]["sms"]["apiKeySecretRef"]["name"] = "eightbyeight-later"  # GitOps lands it later (or never)
    zero = copy.deepcopy(ready)
    zero["metadata"]["name"] = "zero"
    zero["spec"]["relay"]["replicas"] = 0
    zero["spec"]["relay"]["publicUrl"] = ready["spec"]["relay"]["publicUrl"].replace("/prod", "/zero")
    for manifest in (later, ready, zero):
        create_channel(k8s_api, manifest)

    channel = wait_condition(k8s_api, namespace, "later", "Ready", "False", reason="WaitingForSecret", timeout=SECRET_GRACE)
    state, message = kstatus(channel)
    assert state == "InProgress" and "eightbyeight-later" in message
    assert argocd_health(channel)[0] == "Progressing"

    channel = wait_condition(k8s_api, namespace, "prod", "Ready", "True", reason="Ready", timeout=90)
    assert kstatus(channel)[0] == "Current"
    assert argocd_health(channel)[0] == "Healthy"

    channel = wait_condition(k8s_api, namespace, "zero", "Ready", "True", reason="ScaledToZero", timeout=60)
    assert kstatus(channel)[0] == "Current"
    assert argocd_health(channel)[0] == "Healthy"
    assert condition(channel, "RelayAvailable")["reason"] == "ScaledToZero"

    channel = wait_condition(k8s_api, namespace, "later", "Ready", "False", reason="SecretNotFound", timeout=90)
    state, message = kstatus(channel)
    assert state == "Failed" and "eightbyeight-later" in message
    state, message = argocd_health(channel)
    assert state == "Degraded" and "eightbyeight-later" in message
