"""Re-create a relay Deployment whose selector changed (selectors are immutable) without downtime.

Earlier versions selected the relay pods by ``app.kubernetes.io/instance``, the label Argo CD
tracks its applications by. The new selector (``names.selector_labels``) is a subset of the labels
those pods already carry, so: delete the old Deployment orphaning its ReplicaSet (the pods keep
serving), wait until it is gone, create the new one. The new Deployment adopts the orphaned
ReplicaSet (its labels match) and rolls it over like any update (maxUnavailable 0).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any

from .kube import Applied, KubeApi, KubeError

GONE_TIMEOUT = 60.0  # the garbage collector removes the orphan finalizer within seconds


def is_selector_change(error: KubeError) -> bool:
    return error.status == 422 and "selector" in error.message and "immutable" in error.message


async def apply_deployment(kube: KubeApi, manifest: Mapping[str, Any]) -> Applied:
    """Server-side apply; when the live Deployment has another selector, re-create it as above."""
    try:
        return await kube.apply(manifest)
    except KubeError as error:
        if not is_selector_change(error):
            raise
    meta = manifest["metadata"]
    api_version, kind, namespace, name = manifest["apiVersion"], manifest["kind"], meta["namespace"], meta["name"]
    await kube.delete(api_version, kind, namespace, name, propagation="Orphan")
    deadline = time.monotonic() + GONE_TIMEOUT
    while await kube.get(api_version, kind, namespace, name) is not None:
        if time.monotonic() > deadline:
            raise KubeError(409, f"{kind} {namespace}/{name} with the old selector is still being deleted")
        await asyncio.sleep(0.5)
    return await kube.apply(manifest)
