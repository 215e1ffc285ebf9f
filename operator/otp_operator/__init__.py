"""operator/otp_operator"""
