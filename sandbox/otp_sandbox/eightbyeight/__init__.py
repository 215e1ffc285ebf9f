"""8x8 SMS API emulator (server, CLI and the launcher tests use)."""

from .launcher import EightByEightEmulator, EmulatorError, SentMessage

__all__ = ["EightByEightEmulator", "EmulatorError", "SentMessage"]
