"""relay/otp_relay"""
