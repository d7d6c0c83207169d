"""TLS between solray processes: the settings, and the contexts built from them.

Off by default (the cluster token already authenticates every connection).
With SOLRAY_USE_TLS=1 (or Ray's RAY_USE_TLS=1) every TCP connection between
solray processes is mutual TLS: each side presents the certificate in
RAY_TLS_SERVER_CERT (key: RAY_TLS_SERVER_KEY) and accepts only a peer whose
certificate the cluster CA (RAY_TLS_CA_CERT) signed, and a client also checks
that the server's certificate names the address it dialled. The names and
their meaning are Ray's (one certificate per process, used both as server
and as client). transport.py's token handshake then runs inside the TLS
session, so a peer needs both the cluster's certificate and its token.

The settings are read from the environment (every process solray starts
inherits it), each time a context is asked for; contexts are cached per
setting, since loading certificates costs about a millisecond.

certs.py makes a CA and certificates; this module only reads them.
"""

from __future__ import annotations

import functools
import os
import ssl
from dataclasses import dataclass

USE_TLS_ENVS = ("SOLRAY_USE_TLS", "RAY_USE_TLS")
CERT_ENV = "RAY_TLS_SERVER_CERT"
KEY_ENV = "RAY_TLS_SERVER_KEY"
CA_ENV = "RAY_TLS_CA_CERT"

_TRUE = ("1", "true")
_FALSE = ("", "0", "false")


class TLSConfigError(ValueError):
    """TLS is asked for but its settings are missing or unusable."""


@dataclass(frozen=True)
class Settings:
    cert: str
    key: str
    ca: str


def enabled() -> bool:
    """Whether TLS is on in this process's environment (either variable)."""
    on = False
    for name in USE_TLS_ENVS:
        value = os.environ.get(name, "").strip().lower()
        if value in _TRUE:
            on = True
        elif value not in _FALSE:
            raise TLSConfigError(f"{name}={os.environ[name]!r}: give 1 (TLS on) or 0 (off)")
    return on


def settings() -> Settings | None:
    """The certificate files, or None when TLS is off."""
    if not enabled():
        return None
    missing = [name for name in (CERT_ENV, KEY_ENV, CA_ENV) if not os.environ.get(name)]
    if missing:
        raise TLSConfigError(
            f"TLS is on ({'/'.join(USE_TLS_ENVS)}=1) but {', '.join(missing)} "
            f"{'is' if len(missing) == 1 else 'are'} not set: set {CERT_ENV}, {KEY_ENV} and "
            f"{CA_ENV} to this host's certificate, its key and the cluster CA certificate "
            "(`solray start --head --tls-generate DIR` makes them)"
        )
    return Settings(os.environ[CERT_ENV], os.environ[KEY_ENV], os.environ[CA_ENV])


def server_context() -> ssl.SSLContext | None:
    """For a listening solray port: clients must present a CA-signed certificate."""
    s = settings()
    return None if s is None else _context(s, ssl.Purpose.CLIENT_AUTH)


def client_context() -> ssl.SSLContext | None:
    """For dialling a solray port: the server's certificate must come from
    the CA and name the address dialled; ours goes to the server."""
    s = settings()
    return None if s is None else _context(s, ssl.Purpose.SERVER_AUTH)


def web_context() -> ssl.SSLContext | None:
    """For the dashboard's HTTPS: a browser has no client certificate, so
    none is asked for (the dashboard's login with the token still is)."""
    s = settings()
    return None if s is None else _context(s, None)


@functools.lru_cache(maxsize=8)
def _context(s: Settings, purpose: ssl.Purpose | None) -> ssl.SSLContext:
    client = purpose is ssl.Purpose.SERVER_AUTH
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT if client else ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(s.cert, s.key)
    except (OSError, ssl.SSLError) as e:
        raise TLSConfigError(
            f"cannot load the TLS certificate {s.cert} ({CERT_ENV}) with its key {s.key} "
            f"({KEY_ENV}): {e}"
        ) from None
    if purpose is not None:
        try:
            context.load_verify_locations(cafile=s.ca)
        except (OSError, ssl.SSLError) as e:
            raise TLSConfigError(f"cannot load the CA certificate {s.ca} ({CA_ENV}): {e}") from None
        context.verify_mode = ssl.CERT_REQUIRED
    if client:
        context.check_hostname = True
    return context
