"""SMS-pumping defences that need no state: which numbers may get an SMS, how many SMS segments
a text costs, and what the windows are keyed by. Pure: the windows themselves are counted by
the state (``state.py`` in process, ``redis_state.py`` across replicas).

Rules (each in ``RULES``, each can run in monitor mode: counted and logged, never refused):
- ``number_type``: only numbers libphonenumber types ``MOBILE`` or ``FIXED_LINE_OR_MOBILE`` get a
  text (premium-rate, shared-cost, toll-free, VoIP, pager, UAN, voicemail, personal numbers and
  numbers of unknown type never need an OTP by SMS and are classic pumping targets), and no
  non-geographic number (+800, +808, +870, +881/+882 satellite, +883, +979 international premium)
  unless its calling code is allowed;
- ``segments``: a text costs one budget unit per SMS segment (8x8 bills each), and a text of
  more than the cap is refused;
- ``prefix``: a window per number prefix (the number without its last digits), against runs
  through sequential numbers that each stay under the per-recipient window;
- ``country_hour`` / ``country_day``: budgets of segments per destination country;
- ``client_ip``: an optional window per end-user IP (the ``client_ip`` the Auth0 code sends;
  IPv6 grouped by /64).
"""

from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass
from typing import NamedTuple

RULES = ("number_type", "segments", "prefix", "country_hour", "country_day", "client_ip")
WINDOW_RULES = ("prefix", "country_hour", "country_day", "client_ip")
TEXT_TYPES = frozenset({"MOBILE", "FIXED_LINE_OR_MOBILE"})
VOICE_TYPES = TEXT_TYPES | {"FIXED_LINE"}  # a landline takes a call, not a text
NON_GEOGRAPHIC = "001"  # libphonenumber's region of non-geographic calling codes
DEFAULT_MAX_SEGMENTS = 3  # an OTP text in any script fits in one or two
DEFAULT_PER_PREFIX = "20/1h"
DEFAULT_PREFIX_DIGITS = 3  # a prefix covers 1,000 numbers
DEFAULT_COUNTRY_HOUR = "2000/1h"  # segments per destination country
DEFAULT_COUNTRY_DAY = "20000/24h"
DEFAULT_CODE_VALIDITY = "5m"

# GSM 03.38: the basic table (one septet each) and the extension table (escape + one: two)
_GSM_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    "ÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà")
_GSM_EXTENDED = frozenset("\f^{}\\[~]|€")
_GSM = _GSM_BASIC | _GSM_EXTENDED


def encoding_of(text: str, requested: str = "AUTO") -> str:
    """What 8x8 sends ``text`` as: GSM7 when every character is in GSM 03.38 (or GSM7 was asked)."""
    if requested != "AUTO":
        return requested
    return "GSM7" if _GSM.issuperset(text) else "UCS2"


def segments(text: str, requested: str = "AUTO") -> int:
    """SMS segments of ``text``: GSM7 160 septets in one (153 per part of a longer text, an
    escaped character never split), UCS2 70 UTF-16 units (67 per part, a surrogate pair never
    split)."""
    if encoding_of(text, requested) == "GSM7":
        if len(text) + sum(map(_GSM_EXTENDED.__contains__, text)) <= 160:  # an OTP: one segment
            return 1
        sizes = [2 if c in _GSM_EXTENDED else 1 for c in text]
        single, part = 160, 153
    else:
        if len(text.encode("utf-16-le", "surrogatepass")) <= 140:  # 70 UTF-16 units
            return 1
        sizes = [2 if ord(c) > 0xFFFF else 1 for c in text]
        single, part = 70, 67
    if sum(sizes) <= single:
        return 1
    count, used = 1, 0
    for size in sizes:
        if used + size > part:
            count, used = count + 1, 0
        used += size
    return count


@dataclass(frozen=True, slots=True)
class NumberPolicy:
    allowed_types: frozenset[str] = frozenset()  # beyond TEXT_TYPES
    allowed_non_geographic: frozenset[int] = frozenset()  # calling codes, e.g. 882

    def refusal(self, number_type: str, country: str, calling_code: int,
                delivery: str = "text") -> str | None:
        """Why a number may not get a text (or, ``delivery`` "voice", a call): the type to
        name, or None. Calls also reach ``FIXED_LINE`` numbers; every other rule is the same."""
        if country == NON_GEOGRAPHIC and calling_code not in self.allowed_non_geographic:
            return f"NON_GEOGRAPHIC (+{calling_code})"
        allowed = VOICE_TYPES if delivery == "voice" else TEXT_TYPES
        if number_type not in allowed and number_type not in self.allowed_types:
            return number_type
        return None


def prefix_of(recipient: str, digits: int = DEFAULT_PREFIX_DIGITS) -> str:
    """The number without its last ``digits`` digits."""
    return recipient[:-digits] if len(recipient) > digits + 2 else recipient


def ip_group(client_ip: str) -> str:
    """The IPv4 address, or the /64 of an IPv6 one (one end user's network)."""
    address = ipaddress.ip_address(client_ip)
    if address.version == 6:
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


class Window(NamedTuple):  # a named tuple: built three times per send (a frozen dataclass costs 3x)
    """One fixed-window count a send is charged to: ``rule`` (one of WINDOW_RULES), the key it is
    counted under (``tag``, a digest), ``limit`` units per ``seconds``, ``cost`` units for this
    send; ``monitor``: never refuse, report instead."""

    rule: str
    tag: str
    limit: int
    seconds: float
    cost: int
    monitor: bool = False


def window_end(now: float, seconds: float) -> float:
    """When the fixed window holding ``now`` ends (windows start at multiples of their length)."""
    return (math.floor(now / seconds) + 1) * seconds
