"""Secrets, codes and numbers must never reach logs, Events, status or answers: one check, in
every form a value can take there (it lives in the sandbox, whose processes use it too)."""

from otp_sandbox.processes import assert_no_secrets, secret_forms

__all__ = ["assert_no_secrets", "secret_forms"]
