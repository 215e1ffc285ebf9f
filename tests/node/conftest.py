"""The real-node tests' 8x8 emulator is the one their pods can reach (tests/fixtures/node.py)."""

from __future__ import annotations

import pytest
from otp_sandbox.eightbyeight import EightByEightEmulator


@pytest.fixture(scope="session")
def sms_emulator(node_sms_emulator: EightByEightEmulator) -> EightByEightEmulator:
    return node_sms_emulator
