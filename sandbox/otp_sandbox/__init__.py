"""sandbox/otp_sandbox"""
