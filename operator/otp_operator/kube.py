"""A thin async adapter to the Kubernetes API: GET, server-side apply, DELETE, status patch.

kopf owns watching; this adapter only writes children and reads the few objects a reconcile
needs. Credentials come from the same kubeconfig / in-cluster config kopf uses.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp
from kubernetes import client as k8s_client, config as k8s_config

from . import metrics, names

_PLURALS = {child.kind: child.plural for child in (names.SECRET, *names.WATCHED_CHILDREN)} | {names.KIND: names.PLURAL}


PARTIAL_METADATA = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"


class KubeError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"Kubernetes API {status}: {message}")
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Applied:
    obj: dict[str, Any]
    created: bool


def path_for(api_version: str, kind: str, namespace: str, name: str | None = None) -> str:
    plural = _PLURALS[kind]
    base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    path = f"{base}/namespaces/{quote(namespace)}/{plural}"
    return f"{path}/{quote(name)}" if name else path


class KubeApi:
    def __init__(self, configuration: k8s_client.Configuration, max_connections: int = 64) -> None:
        self._config = configuration
        self._host = configuration.host.rstrip("/")
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None
        self._slots = asyncio.Semaphore(max_connections)  # requests in flight (see _session_)
        self._token_checked = 0.0

    @classmethod
    def from_environment(cls) -> "KubeApi":
        configuration = k8s_client.Configuration()
        try:
            k8s_config.load_incluster_config(client_configuration=configuration)
        except k8s_config.ConfigException:
            k8s_config.load_kube_config(client_configuration=configuration)
        return cls(configuration)

    def _ssl_context(self) -> ssl.SSLContext | bool:
        if not self._config.verify_ssl:
            return False
        context = ssl.create_default_context(cafile=self._config.ssl_ca_cert or None)
        if self._config.cert_file:
            context.load_cert_chain(self._config.cert_file, self._config.key_file)
        return context

    async def _session_(self) -> aiohttp.ClientSession:
        if self._session is None:
            # No connection limit in the connector: a connect that timed out while others
            # waited for its slot could leave every later request waiting for ever (seen at
            # 500 channels; aio-libs/aiohttp#9670). The semaphore in _request bounds them.
            connector = aiohttp.TCPConnector(ssl=self._ssl_context(), limit=0, keepalive_timeout=30)
            # No total timeout: waiting for a pooled connection under load is not a failure;
            # nor is a connect that an API server busy with a burst takes long to accept.
            timeout = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=60)
            self._session = aiohttp.ClientSession(connector=connector, timeout=timeout)
        return self._session

    def _headers(self) -> dict[str, str]:
        # Bound service-account tokens rotate: let the kubernetes client refresh them now and then.
        hook = getattr(self._config, "refresh_api_key_hook", None)
        if hook is not None and time.monotonic() - self._token_checked > 60:
            hook(self._config)
            self._token_checked = time.monotonic()
        token = self._config.get_api_key_with_prefix("authorization") or self._config.get_api_key_with_prefix("BearerToken")
        return {"Authorization": token} if token else {}

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _request(
        self, verb: str, path: str, *, params: Mapping[str, str] | None = None,
        body: Any = None, content_type: str = "application/json", accept: str = "application/json",
    ) -> tuple[int, dict[str, Any] | None]:
        session = await self._session_()
        headers = {**self._headers(), "Accept": accept}
        data = None
        if body is not None:
            headers["Content-Type"] = content_type
            data = json.dumps(body)
        metrics.KUBE_REQUESTS.labels(verb).inc()
        async with self._slots, session.request(verb, self._host + path, params=params, data=data, headers=headers) as response:
            text = await response.text()
            payload = json.loads(text) if text else None
            if response.status >= 400 and response.status != 404:
                message = (payload or {}).get("message", text[:300]) if isinstance(payload, dict) else text[:300]
                raise KubeError(response.status, message)
            return response.status, payload

    async def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        status, payload = await self._request("GET", path_for(api_version, kind, namespace, name))
        return None if status == 404 else payload

    async def get_metadata(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """Only the object's metadata (a PartialObjectMetadata: a Secret's data never leaves the
        API server); None when it does not exist."""
        status, payload = await self._request("GET", path_for(api_version, kind, namespace, name),
                                              accept=PARTIAL_METADATA)
        return None if status == 404 or payload is None else payload.get("metadata") or {}

    async def apply(self, manifest: Mapping[str, Any]) -> Applied:
        """Server-side apply with our field manager, taking back fields someone edited by hand."""
        meta = manifest["metadata"]
        path = path_for(manifest["apiVersion"], manifest["kind"], meta["namespace"], meta["name"])
        status, payload = await self._request(
            "PATCH", path, params={"fieldManager": names.FIELD_MANAGER, "force": "true"},
            body=manifest, content_type="application/apply-patch+yaml",
        )
        if status == 404 or payload is None:
            raise KubeError(404, f"namespace {meta['namespace']} not found")
        return Applied(payload, created=status == 201)

    async def patch(self, api_version: str, kind: str, namespace: str, name: str, body: Any,
                    content_type: str = "application/merge-patch+json") -> dict[str, Any] | None:
        """A merge (or JSON) patch; the patched object, or None when it does not exist."""
        status, payload = await self._request("PATCH", path_for(api_version, kind, namespace, name), body=body,
                                              content_type=content_type)
        return None if status == 404 else payload

    async def find(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """The object if it exists, by a list with a name selector (RBAC grants list, not get,
        on some child kinds). Secrets by GET: the operator lists them only through its watch."""
        if kind == "Secret":
            return await self.get(api_version, kind, namespace, name)
        _, payload = await self._request("GET", path_for(api_version, kind, namespace),
                                         params={"fieldSelector": f"metadata.name={name}"})
        items = (payload or {}).get("items") or []
        if not items:
            return None
        item = dict(items[0])
        item.setdefault("apiVersion", api_version)
        item.setdefault("kind", kind)
        return item

    async def set_finalizer(self, api_version: str, kind: str, obj: Mapping[str, Any], finalizer: str,
                            present: bool) -> None:
        """Add or remove one finalizer with a JSON patch that fails if the object changed
        meanwhile (422/409: the caller re-reads on the next event). No-op when already so."""
        meta = obj["metadata"]
        finalizers = list(meta.get("finalizers") or [])
        if (finalizer in finalizers) == present:
            return
        test = {"op": "test", "path": "/metadata/resourceVersion", "value": meta["resourceVersion"]}
        if present:
            ops = [test, {"op": "add", "path": "/metadata/finalizers/-", "value": finalizer} if finalizers
                   else {"op": "add", "path": "/metadata/finalizers", "value": [finalizer]}]
        else:
            ops = [test, {"op": "remove", "path": f"/metadata/finalizers/{finalizers.index(finalizer)}"}]
        await self._request("PATCH", path_for(api_version, kind, meta["namespace"], meta["name"]),
                            body=ops, content_type="application/json-patch+json")

    async def delete(self, api_version: str, kind: str, namespace: str, name: str,
                     propagation: str | None = None) -> bool:
        params = {"propagationPolicy": propagation} if propagation else None
        status, _ = await self._request("DELETE", path_for(api_version, kind, namespace, name), params=params)
        return status != 404

    async def patch_channel_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        path = path_for(names.API_VERSION, names.KIND, namespace, name) + "/status"
        await self._request("PATCH", path, body={"status": status}, content_type="application/merge-patch+json")

