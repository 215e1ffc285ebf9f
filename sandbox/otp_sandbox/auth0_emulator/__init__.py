"""Auth0 Management API emulator: real HTTPS, real error bodies, registered code run in Node.js.

Start it with :meth:`Auth0Emulator.start` (a subprocess) or ``otp-sandbox auth0-emulator``.
"""

from .config import ALL_SCOPES, ENTERPRISE, FREE, Client, RateLimit
from .launcher import Auth0Emulator, Auth0Tenant, PhoneMessageResult
from .tenant import LoggedRequest

__all__ = [
    "ALL_SCOPES", "ENTERPRISE", "FREE", "Auth0Emulator", "Auth0Tenant", "Client", "LoggedRequest",
    "PhoneMessageResult", "RateLimit",
]
