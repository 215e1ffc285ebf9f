"""A smaller read buffer for asyncio's TLS connections.

asyncio's TLS transport gives every connection a 256 KiB read buffer (``SSLProtocol.max_size``)
and reads decrypted data in chunks of that size. The operator holds one connection per Auth0
tenant it is talking to, besides its Kubernetes ones: at 500 channels that buffer was most of its
memory. A TLS record carries at most 16 KiB, so 64 KiB still takes several records per read.
``install`` checks that the attribute is still there with asyncio's value; if not, it leaves
asyncio as it is (tests/operator/test_tls_buffers.py fails then).
"""

from __future__ import annotations

import logging
from asyncio import sslproto

log = logging.getLogger(__name__)

ASYNCIO_DEFAULT = 256 * 1024
READ_BUFFER = 64 * 1024


def install() -> bool:
    """Set asyncio's TLS read buffer to READ_BUFFER; whether it could."""
    if getattr(sslproto.SSLProtocol, "max_size", None) not in (ASYNCIO_DEFAULT, READ_BUFFER):
        log.warning("asyncio's TLS transport changed shape; keeping its read buffer as it is")
        return False
    sslproto.SSLProtocol.max_size = READ_BUFFER
    return True
