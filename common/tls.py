"""TLS for a network (`security.tls: true`): a CA derived from the secret, node certificates.

Why derive the CA from the secret: every host of a multi-host network must trust the others'
certificates while copying only the secret file (docs/security.md, "TLS"). The CA's private key is a pure
function of the secret (an ECDSA P-256 scalar from an HMAC of it), and so are its name, serial
and validity, so each host makes "the same" CA on its own: the certificate bytes differ only in
the (randomised) signature, and any of them verifies any node certificate signed by that key.
Node keys are random and never leave their host; node certificates name the node's host (plus
localhost, so curl on the node's own machine works) and are signed by the derived CA key.

Files live in the run folder's `tls/`: `ca.pem` (for clients: `curl --cacert`), `<node>.pem`
and `<node>.key` (0600). `cryptography` is imported only here, when TLS is on.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

CA_FILE = "ca.pem"
_P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
_CA_NOT_BEFORE = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)
_CA_NOT_AFTER = datetime.datetime(2124, 1, 1, tzinfo=datetime.UTC)
NODE_VALIDITY = datetime.timedelta(days=3650)
LOCAL_NAMES = ("localhost", "127.0.0.1", "::1")


@dataclass(frozen=True)
class NodeFiles:
    """Where one node's TLS material lives."""

    ca: Path
    cert: Path
    key: Path


def node_files(tls_dir: str | os.PathLike, node: str) -> NodeFiles:
    folder = Path(tls_dir)
    return NodeFiles(ca=folder / CA_FILE, cert=folder / f"{node}.pem", key=folder / f"{node}.key")


def _ca_key(secret: bytes):
    from cryptography.hazmat.primitives.asymmetric import ec

    seed = hmac.new(secret, b"p2pnet tls ca v1", hashlib.sha256).digest()
    scalar = int.from_bytes(seed, "big") % (_P256_ORDER - 1) + 1
    return ec.derive_private_key(scalar, ec.SECP256R1())


def _ca_name(public_key):
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.x509.oid import NameOID

    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    tag = hashlib.sha256(der).hexdigest()[:16]
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "p2pnet"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"p2pnet network CA {tag}"),
        ]
    ), der


def ca_certificate(secret: bytes) -> bytes:
    """The network's CA certificate (PEM), the same on every host that holds the secret."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization

    key = _ca_key(secret)
    name, der = _ca_name(key.public_key())
    serial = int.from_bytes(hashlib.sha256(b"serial" + der).digest()[:16], "big") >> 1
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(_CA_NOT_BEFORE)
        .not_valid_after(_CA_NOT_AFTER)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def _san_entries(host: str):
    from cryptography import x509

    entries: list[x509.GeneralName] = []
    for value in dict.fromkeys([host, *LOCAL_NAMES]):
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(value)))
        except ValueError:
            entries.append(x509.DNSName(value))
    return entries


def node_certificate(secret: bytes, node: str, host: str) -> tuple[bytes, bytes]:
    """A fresh key and a certificate for node at host, signed by the network's CA: (cert, key) PEM."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    ca_key = _ca_key(secret)
    ca_name, _ = _ca_name(ca_key.public_key())
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "p2pnet"), x509.NameAttribute(NameOID.COMMON_NAME, node)]
            )
        )
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + NODE_VALIDITY)
        .add_extension(x509.SubjectAlternativeName(_san_entries(host)), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def _current(files: NodeFiles, secret: bytes, host: str) -> bool:
    """Whether the node's certificate on disk is signed by this secret's CA and names host."""
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature

    try:
        cert = x509.load_pem_x509_certificate(files.cert.read_bytes())
        files.key.stat()
    except (OSError, ValueError):
        return False
    try:
        cert.verify_directly_issued_by(x509.load_pem_x509_certificate(ca_certificate(secret)))
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, TypeError, InvalidSignature, x509.ExtensionNotFound):
        return False
    wanted = {str(e.value) for e in _san_entries(host)}
    have = {str(v) for v in names.get_values_for_type(x509.DNSName)}
    have |= {str(v) for v in names.get_values_for_type(x509.IPAddress)}
    expires = cert.not_valid_after_utc
    return wanted <= have and expires > datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=30)


def _write(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def ensure_tls(tls_dir: str | os.PathLike, secret: bytes, nodes: dict[str, str]) -> list[str]:
    """Write ca.pem and a certificate for each node (name -> host) that lacks a current one.

    Returns the names of the nodes whose certificate was (re)made.
    """
    folder = Path(tls_dir)
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    ca = ca_certificate(secret)
    ca_path = folder / CA_FILE
    if not _same_ca(ca_path, ca):
        _write(ca_path, ca, 0o644)
    made = []
    for node, host in nodes.items():
        files = node_files(folder, node)
        if _current(files, secret, host):
            continue
        cert, key = node_certificate(secret, node, host)
        _write(files.key, key, 0o600)
        _write(files.cert, cert, 0o644)
        made.append(node)
    return made


def _same_ca(path: Path, ca: bytes) -> bool:
    """Whether the CA on disk has the same key and name as ca (its signature may differ)."""
    from cryptography import x509

    try:
        old = x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError):
        return False
    new = x509.load_pem_x509_certificate(ca)
    return old.subject == new.subject and old.public_key() == new.public_key()
