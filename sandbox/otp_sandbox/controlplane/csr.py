"""Client certificates for test users from any cluster, through the CertificateSigningRequest API
(signer ``kubernetes.io/kube-apiserver-client``), so RBAC can be checked on clusters whose CA key
we do not hold. The admin creates and approves the request; the user's key never leaves here."""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from . import kubeconfig

SIGNER = "kubernetes.io/kube-apiserver-client"


def certificate_request(user: str, groups: Sequence[str]) -> tuple[bytes, bytes]:
    """(CSR PEM, private key PEM) with CN=user and one O per group."""
    key = ec.generate_private_key(ec.SECP256R1())
    names = [x509.NameAttribute(NameOID.COMMON_NAME, user)]
    names += [x509.NameAttribute(NameOID.ORGANIZATION_NAME, g) for g in groups]
    request = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(names)).sign(key, hashes.SHA256())
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return request.public_bytes(serialization.Encoding.PEM), key_pem


def user_kubeconfig(
    admin_kubeconfig: Path, user: str, groups: Sequence[str], output: Path, timeout: float = 30.0
) -> Path:
    csr_pem, key_pem = certificate_request(user, groups)
    api = config.new_client_from_config(config_file=str(admin_kubeconfig))
    certificates = client.CertificatesV1Api(api)
    name = f"otp-sandbox-{user}-{uuid.uuid4().hex[:8]}"
    try:
        certificates.create_certificate_signing_request({
            "metadata": {"name": name},
            "spec": {
                "request": base64.b64encode(csr_pem).decode(), "signerName": SIGNER,
                "usages": ["client auth"], "expirationSeconds": 24 * 3600,
            },
        })
        approval = certificates.read_certificate_signing_request(name)
        approval.status.conditions = [client.V1CertificateSigningRequestCondition(
            type="Approved", status="True", reason="OtpSandboxTest", message="test user",
        )]
        certificates.replace_certificate_signing_request_approval(name, approval)
        deadline = time.monotonic() + timeout
        while not (issued := certificates.read_certificate_signing_request(name).status.certificate):
            if time.monotonic() > deadline:
                raise TimeoutError(f"CertificateSigningRequest {name} was not signed within {timeout:.0f}s "
                                   f"(does the cluster run a signer for {SIGNER}?)")
            time.sleep(0.2)
        text = kubeconfig.with_client_certificate(
            admin_kubeconfig.read_text(), user, base64.b64decode(issued), key_pem
        )
        return kubeconfig.write_private(output, text)
    finally:
        try:
            certificates.delete_certificate_signing_request(name)
        except ApiException:
            pass  # never created, or already cleaned up by the cluster
        api.close()
