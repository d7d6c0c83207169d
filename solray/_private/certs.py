"""Making a cluster CA and host certificates for TLS (tls.py reads them).

For a quick start (`solray start --head --tls-generate DIR`, `solray tls
make-ca` / `make-cert`); a site with its own PKI gives its own files instead.
Keys are ECDSA P-256 (a TLS handshake with them costs a fraction of RSA's).
A host certificate is good for both ends of a connection (serverAuth and
clientAuth: every process is a server to some peers and a client to others)
and names the host's addresses, plus loopback, where its own processes
reach each other. Private keys are written 0600 (created so: never readable
by others, not even for a moment) and never printed.

A directory made here holds: ca.crt (copy it to every host), ca.key (only
where certificates are made), server.crt and server.key (this host's).
"""

from __future__ import annotations

import datetime
import ipaddress
import os

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_CERT, CA_KEY = "ca.crt", "ca.key"
HOST_CERT, HOST_KEY = "server.crt", "server.key"
LOOPBACK_IPS = ("127.0.0.1", "::1")
LOOPBACK_NAMES = ("localhost",)
CA_DAYS = 3650
HOST_DAYS = 825


def _write_key(path: str, key: ec.EllipticCurvePrivateKey) -> None:
    data = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # an existing file keeps its mode through O_CREAT
        os.write(fd, data)
    finally:
        os.close(fd)


def _write_cert(path: str, cert: x509.Certificate) -> None:
    with open(path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def has_ca(ca_dir: str) -> bool:
    return all(os.path.exists(os.path.join(ca_dir, n)) for n in (CA_CERT, CA_KEY))


def make_ca(ca_dir: str, name: str = "solray cluster CA") -> None:
    """A new CA in ca_dir (made 0700 if new). Refuses to replace one: the
    certificates it signed would stop being trusted."""
    if has_ca(ca_dir):
        raise FileExistsError(f"{ca_dir} already holds a CA ({CA_CERT}, {CA_KEY})")
    os.makedirs(ca_dir, mode=0o700, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - datetime.timedelta(minutes=5))
        .not_valid_after(_now() + datetime.timedelta(days=CA_DAYS))
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
        )  # fmt: skip
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_key(os.path.join(ca_dir, CA_KEY), key)
    _write_cert(os.path.join(ca_dir, CA_CERT), cert)


def make_host_cert(ca_dir: str, out_dir: str, ips=(), names=()) -> dict[str, str]:
    """A certificate and key for one host, signed by the CA in ca_dir,
    naming `ips` and `names` (and loopback); written to out_dir with a copy
    of the CA certificate. Returns the environment that makes a process use
    them."""
    if not has_ca(ca_dir):
        raise FileNotFoundError(f"no CA in {ca_dir}: expected {CA_CERT} and {CA_KEY} there")
    addresses = []
    for ip in [*ips, *LOOPBACK_IPS]:
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            raise ValueError(f"{ip!r} is not an IP address (give host names with --dns)") from None
        if address not in addresses:
            addresses.append(address)
    dns = list(dict.fromkeys([*names, *LOOPBACK_NAMES]))
    with open(os.path.join(ca_dir, CA_KEY), "rb") as f:
        ca_key = serialization.load_pem_private_key(f.read(), password=None)
    with open(os.path.join(ca_dir, CA_CERT), "rb") as f:
        ca_pem = f.read()
    ca_cert = x509.load_pem_x509_certificate(ca_pem)
    key = ec.generate_private_key(ec.SECP256R1())
    common = str(ips[0]) if ips else (names[0] if names else "localhost")
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - datetime.timedelta(minutes=5))
        .not_valid_after(_now() + datetime.timedelta(days=HOST_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(a) for a in addresses] + [x509.DNSName(n) for n in dns]
            ),
            critical=False,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    os.makedirs(out_dir, mode=0o700, exist_ok=True)
    _write_key(os.path.join(out_dir, HOST_KEY), key)
    _write_cert(os.path.join(out_dir, HOST_CERT), cert)
    if os.path.realpath(out_dir) != os.path.realpath(ca_dir):
        with open(os.path.join(out_dir, CA_CERT), "wb") as f:
            f.write(ca_pem)
    return tls_env(out_dir)


def tls_env(cert_dir: str) -> dict[str, str]:
    """The variables that turn TLS on with the files of a directory made here."""
    cert_dir = os.path.abspath(cert_dir)
    return {
        "SOLRAY_USE_TLS": "1",
        "RAY_TLS_SERVER_CERT": os.path.join(cert_dir, HOST_CERT),
        "RAY_TLS_SERVER_KEY": os.path.join(cert_dir, HOST_KEY),
        "RAY_TLS_CA_CERT": os.path.join(cert_dir, CA_CERT),
    }
