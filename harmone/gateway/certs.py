"""The box's TLS certificate: self-signed, made on first start when none is given.

Chargers on the LAN reach the box at `wss://{gateway_host}/…`; its certificate names that
host (an IP address or a DNS name) and localhost. An installer checks it by its SHA-256
fingerprint, which the box prints and reports to the cloud console.
"""

from __future__ import annotations

import ipaddress
import logging
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

__all__ = ["ensure_certificate", "fingerprint"]

log = logging.getLogger(__name__)

CERT_NAME = "box-cert.pem"
KEY_NAME = "box-key.pem"


def fingerprint(cert_file: Path) -> str:
    """SHA-256 of the (first) certificate in `cert_file`, as AB:CD:… hex pairs."""
    cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    return cert.fingerprint(hashes.SHA256()).hex(":").upper()


def _names(hosts: list[str]) -> list[x509.GeneralName]:
    out: list[x509.GeneralName] = []
    for host in [*hosts, "localhost", "127.0.0.1"]:
        try:
            name: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(host))
        except ValueError:
            name = x509.DNSName(host)
        if name not in out:
            out.append(name)
    return out


def ensure_certificate(directory: Path, hosts: list[str]) -> tuple[Path, Path]:
    """The certificate and key files in `directory`, made (self-signed, EC P-256, valid ten
    years, naming `hosts`) if they are not there yet."""
    cert_file, key_file = directory / CERT_NAME, directory / KEY_NAME
    if cert_file.exists() and key_file.exists():
        return cert_file, key_file
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"HARMON-E box {hosts[0]}")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=3650))
        .add_extension(x509.SubjectAlternativeName(_names(hosts)), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key_pem)
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    log.info("made a self-signed certificate for %s in %s", ", ".join(hosts), cert_file)
    return cert_file, key_file
