"""A throwaway PKI for TLS tests: a CA, a server certificate for 127.0.0.1/localhost, a client
certificate, and a second CA with its own client (trusted by nobody), as PEM files."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    rogue_ca: Path  # signs rogue_client; trusted by nobody
    rogue_client_cert: Path
    rogue_client_key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _certificate(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    *,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None,
    usage: x509.ObjectIdentifier | None,
    sans: list[x509.GeneralName] | None = None,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    issuer_cert, issuer_key = issuer if issuer else (None, key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer_cert.subject if issuer_cert else _name(subject))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=usage is None, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False)
    )
    if usage is None:
        builder = builder.add_extension(
            x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                          encipher_only=False, decipher_only=False),
            critical=True,
        )  # fmt: skip
    else:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _write(directory: Path, name: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> tuple[Path, Path]:
    cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


def make_pki(directory: Path) -> Pki:
    """Write the PKI's files into ``directory``."""
    paths: dict[str, tuple[Path, Path]] = {}
    for ca_name, client_name in (("ca", "client"), ("rogue-ca", "rogue-client")):
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_cert = _certificate(f"test {ca_name}", ca_key, issuer=None, usage=None)
        paths[ca_name] = _write(directory, ca_name, ca_cert, ca_key)
        client_key = ec.generate_private_key(ec.SECP256R1())
        client = _certificate(client_name, client_key, issuer=(ca_cert, ca_key), usage=ExtendedKeyUsageOID.CLIENT_AUTH)
        paths[client_name] = _write(directory, client_name, client, client_key)
        if ca_name == "ca":
            server_key = ec.generate_private_key(ec.SECP256R1())
            sans: list[x509.GeneralName] = [
                x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))
            ]  # fmt: skip
            server = _certificate("localhost", server_key, issuer=(ca_cert, ca_key),
                                  usage=ExtendedKeyUsageOID.SERVER_AUTH, sans=sans)  # fmt: skip
            paths["server"] = _write(directory, "server", server, server_key)
    return Pki(
        ca=paths["ca"][0],
        server_cert=paths["server"][0],
        server_key=paths["server"][1],
        client_cert=paths["client"][0],
        client_key=paths["client"][1],
        rogue_ca=paths["rogue-ca"][0],
        rogue_client_cert=paths["rogue-client"][0],
        rogue_client_key=paths["rogue-client"][1],
    )
