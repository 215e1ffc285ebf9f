"""The code registered in Auth0: templates rendered with the owner marker.

The first line of every rendered script is the marker naming the owning channel and the
template version; ownership checks read it back from what Auth0 stores.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from importlib import resources

from .model import Integration

TEMPLATE_VERSION = 1

_ENTRY_POINTS: dict[Integration, str] = {
    "phone-provider": "custom_phone_provider.js",
    "send-phone-message": "send_phone_message.js",
    "legacy-hook": "legacy_hook.js",
}
_SHARED = "relay_client.js"
_MARKER = re.compile(
    r"^// otp-relay-operator owner=(?P<owner>[^\s]+) template=(?P<version>\d+) kind=(?P<kind>[a-z-]+)$",
    re.MULTILINE,
)


@dataclass(frozen=True)
class Marker:
    owner: str
    template_version: int
    integration: str


@cache
def _template(filename: str) -> str:
    return resources.files(__package__).joinpath("templates", filename).read_text("utf-8")


def render(integration: Integration, owner: str) -> str:
    """The script for `integration`, marked as owned by `owner` ("namespace/name")."""
    if "\n" in owner or " " in owner:
        raise ValueError(f"owner must be 'namespace/name' without whitespace, got {owner!r}")
    header = (
        f"// otp-relay-operator owner={owner} template={TEMPLATE_VERSION} kind={integration}\n"
        "// Managed by otp-relay-operator from the OtpChannel above: edits here are overwritten.\n"
    )
    return f"{header}'use strict';\n\n{_template(_SHARED)}\n{_template(_ENTRY_POINTS[integration])}"


def parse_marker(code: str | None) -> Marker | None:
    """The marker in a script stored in Auth0, or None for code we did not write."""
    if not code:
        return None
    found = _MARKER.search(code[:1024])
    if found is None:
        return None
    return Marker(found["owner"], int(found["version"]), found["kind"])
