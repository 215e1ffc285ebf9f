"""How the host reaches relay pods on the sandbox's real node, and they the host's emulators.

The sandbox's ingress: HTTPS on a loopback port, each request forwarded to one ready endpoint of
a Service (pod IP and target port), round robin. There is no kube-proxy or ingress controller in
the sandbox; this plays both, for
traffic from the host (the Auth0 emulator's Node.js action) to the pods.

    with ServiceIngress(api, namespace, service, port, tls) as ingress:
        ingress.url   # https://127.0.0.1:<port>
"""

from __future__ import annotations

import asyncio
import itertools
import ssl
import threading
from pathlib import Path

from aiohttp import ClientConnectorError, ClientError, ClientSession, ClientTimeout, web
from kubernetes import client

from .pki import CertPair

_REFRESH_SECONDS = 0.5
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "host", "content-length"}


class ServiceIngress:
    def __init__(self, api: client.ApiClient, namespace: str, service: str, port: int, tls: CertPair,
                 timeout: float = 10.0) -> None:
        self.api, self.namespace, self.service, self.port = api, namespace, service, port
        self.url = f"https://127.0.0.1:{port}"
        self._tls, self._timeout = tls, timeout
        self._endpoints: list[str] = []
        self._turn = itertools.count()
        self._loop = asyncio.new_event_loop()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._started = threading.Event()
        self._error: BaseException | None = None

    def endpoints(self) -> list[str]:
        """Ready ``ip:port`` targets of the Service, resolved from its selector and target port
        the way the endpoints controller does (the sandbox does not run that controller)."""
        core = client.CoreV1Api(self.api)
        service = core.read_namespaced_service(self.service, self.namespace)
        target = service.spec.ports[0].target_port
        selector = ",".join(f"{k}={v}" for k, v in (service.spec.selector or {}).items())
        ready = []
        for pod in core.list_namespaced_pod(self.namespace, label_selector=selector).items:
            if not pod.status.pod_ip or pod.metadata.deletion_timestamp is not None:
                continue
            if not any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or []):
                continue
            ports = {p.name: p.container_port for c in pod.spec.containers for p in c.ports or []}
            port = ports.get(target) if isinstance(target, str) else target
            if port:
                ready.append(f"{pod.status.pod_ip}:{port}")
        return sorted(ready)

    def __enter__(self) -> ServiceIngress:
        self._thread.start()
        self._started.wait(timeout=30)
        if self._error is not None:
            raise RuntimeError(f"the sandbox ingress could not start: {self._error}") from self._error
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._loop.call_soon_threadsafe(self._stopped.set)
        self._thread.join(timeout=15)

    # -- the event loop thread ---------------------------------------------------------------
    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._serve())
        except BaseException as error:  # reported to __enter__
            self._error = error
            self._started.set()
        finally:
            self._loop.close()

    async def _serve(self) -> None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(str(self._tls.cert), str(self._tls.key))
        app = web.Application(client_max_size=1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._forward)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", self.port, ssl_context=context)
        self._session = ClientSession(timeout=ClientTimeout(total=self._timeout))
        try:
            await site.start()
            self._started.set()
            while not self._stopped.is_set():
                try:
                    self._endpoints = await asyncio.to_thread(self.endpoints)
                except Exception:  # keep the last known endpoints while the API is unreachable
                    pass
                await asyncio.sleep(_REFRESH_SECONDS)
        finally:
            await self._session.close()
            await runner.cleanup()

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        endpoints = self._endpoints
        if not endpoints:
            return web.Response(status=503, text="no ready endpoints\n")
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
        body = await request.read()
        first = next(self._turn)
        # Like nginx's proxy_next_upstream: a pod that refuses the connection (it is shutting down
        # and the endpoints have not caught up) gets the request not sent; the next pod gets it.
        # A failure after the request was sent is the client's 502.
        for attempt in range(len(endpoints)):
            target = endpoints[(first + attempt) % len(endpoints)]
            try:
                async with self._session.request(request.method, f"http://{target}{request.rel_url}",
                                                 headers=headers, data=body, allow_redirects=False) as upstream:
                    payload = await upstream.read()
                    reply = {k: v for k, v in upstream.headers.items() if k.lower() not in _HOP_BY_HOP}
                    return web.Response(status=upstream.status, body=payload, headers=reply)
            except ClientConnectorError:
                continue
            except (OSError, asyncio.TimeoutError, ClientError) as error:
                return web.Response(status=502, text=f"upstream {target} failed: {type(error).__name__}\n")
        return web.Response(status=502, text="every endpoint refused the connection\n")


SANDBOX_CA_NAME = "otp-sandbox-ca"
SANDBOX_CA_DIR = "/etc/otp-sandbox-ca"
FIELD_MANAGER = "otp-sandbox"


def apply_sandbox_ca(api: client.ApiClient, namespace: str, bundle: Path) -> str:
    """The ConfigMap holding the sandbox CA bundle (key ca.pem); returns the file's path in pods."""
    body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": SANDBOX_CA_NAME},
            "data": {"ca.pem": bundle.read_text()}}
    client.CoreV1Api(api).patch_namespaced_config_map(SANDBOX_CA_NAME, namespace, body, field_manager=FIELD_MANAGER,
                                                      _content_type="application/apply-patch+yaml")
    return f"{SANDBOX_CA_DIR}/ca.pem"


def trust_sandbox_ca(api: client.ApiClient, namespace: str, deployment: str, container: str, bundle: Path) -> None:
    """Make a Deployment's pods trust the sandbox CA (the 8x8 emulator's issuer), as the real 8x8
    API is trusted through public CAs: a ConfigMap with the bundle, mounted, and SSL_CERT_FILE.
    Applied server-side under the sandbox's own field manager, so the operator's applies keep it."""
    ca_file = apply_sandbox_ca(api, namespace, bundle)
    patch = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": deployment}, "spec": {
        "template": {"spec": {
            "containers": [{"name": container,
                            "env": [{"name": "SSL_CERT_FILE", "value": ca_file}],
                            "volumeMounts": [{"name": SANDBOX_CA_NAME, "mountPath": SANDBOX_CA_DIR, "readOnly": True}]}],
            "volumes": [{"name": SANDBOX_CA_NAME, "configMap": {"name": SANDBOX_CA_NAME}}],
        }}}}
    client.AppsV1Api(api).patch_namespaced_deployment(deployment, namespace, patch, field_manager=FIELD_MANAGER,
                                                      _content_type="application/apply-patch+yaml")
