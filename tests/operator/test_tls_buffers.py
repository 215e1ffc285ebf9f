"""asyncio's TLS connections use the operator's smaller read buffer and still carry bodies many
times its size."""

import asyncio
import ssl
from asyncio import sslproto

from otp_operator import tls_buffers
from otp_sandbox.pki import CertificateAuthority


def test_tls_connections_read_through_the_smaller_buffer(tmp_path):
    saved = sslproto.SSLProtocol.max_size
    try:
        assert tls_buffers.install(), "asyncio's SSLProtocol.max_size is gone: the setting is stale"
        assert sslproto.SSLProtocol.max_size == tls_buffers.READ_BUFFER
        ca = CertificateAuthority(tmp_path / "ca")
        pair = ca.issue("localhost")
        body = bytes(range(256)) * 4096  # 1 MiB: 16 times the buffer

        async def exchange() -> bytes:
            server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            server_ctx.load_cert_chain(pair.cert, pair.key)

            async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                writer.write(body)
                await writer.drain()
                writer.close()

            server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=server_ctx)
            port = server.sockets[0].getsockname()[1]
            client_ctx = ssl.create_default_context(cafile=str(ca.trust_bundle(tmp_path / "trust.pem")))
            reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client_ctx,
                                                           server_hostname="localhost")
            received = await reader.read(-1)
            transport_buffer = len(writer.transport._ssl_protocol._ssl_buffer)  # type: ignore[attr-defined]
            writer.close()
            server.close()
            await server.wait_closed()
            assert transport_buffer == tls_buffers.READ_BUFFER
            return received

        assert asyncio.run(exchange()) == body
    finally:
        sslproto.SSLProtocol.max_size = saved
