"""TLS for the API (stdlib ``ssl``): the daemon's server side, the client's trust."""

from __future__ import annotations

import ssl

from ..errors import PullerError


def server_context(cert: str, key: str | None = None) -> ssl.SSLContext:
    """A TLS 1.2+ server context from a PEM certificate (chain) and its key
    (``key`` None: the key is in the certificate's file)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise PullerError(f"cannot load the API's certificate {cert}"
                          f"{' and key ' + key if key else ''}: {exc}; -api-cert and "
                          "-api-cert-key name PEM files") from None
    return context


def client_context(cafile: str | None = None) -> ssl.SSLContext:
    """The system's trusted CAs, or ``cafile`` (e.g. the daemon's self-signed
    certificate, from PULLER_API_CA)."""
    try:
        return ssl.create_default_context(cafile=cafile)
    except (OSError, ssl.SSLError) as exc:
        raise PullerError(f"cannot load the CA file {cafile} (-api-ca, PULLER_API_CA): "
                          f"{exc}") from None
