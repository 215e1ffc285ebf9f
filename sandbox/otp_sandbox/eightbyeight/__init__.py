"""8x8 SMS and Voice API emulator (server, CLI and the launcher tests use); see README.md here."""

from .launcher import ConversionFeedback, EightByEightEmulator, EmulatorError, PlacedCall, SentMessage

__all__ = ["ConversionFeedback", "EightByEightEmulator", "EmulatorError", "PlacedCall", "SentMessage"]
