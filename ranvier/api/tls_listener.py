"""The federation TLS listener: its SSL context and what it serves.

Server-Server API, "TLS": federation takes place over HTTPS with a certificate
for the server name (or its delegated name). Ranvier can terminate TLS itself
on a second listener (``federation.tls_listen``, usually port 8448) while the
plain-HTTP listener stays for clients behind a reverse proxy. Unless
``serve_client_api`` is set, that listener answers only the federation and key
APIs (and .well-known/matrix/server), so the client API is not exposed on a
port meant for other servers.
"""

from __future__ import annotations

import ssl

from aiohttp import web

from ranvier.api.http import Handler
from ranvier.config import TlsListenConfig
from ranvier.errors import MatrixError

# What a server-to-server listener serves (Server-Server API, "Server discovery"
# and every /_matrix/federation and /_matrix/key endpoint).
FEDERATION_PATH_PREFIXES = ("/_matrix/federation/", "/_matrix/key/", "/.well-known/matrix/server")


def server_ssl_context(tls: TlsListenConfig) -> ssl.SSLContext:
    """The listener's context from its PEM files; raises OSError or ssl.SSLError if unusable."""
    if tls.certificate_path is None or tls.private_key_path is None:
        raise ValueError("federation.tls_listen needs certificate_path and private_key_path")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(tls.certificate_path), str(tls.private_key_path))
    return context


@web.middleware
async def federation_only_over_tls(request: web.Request, handler: Handler) -> web.StreamResponse:
    """On the TLS listener, everything but the federation APIs is an unknown endpoint.

    The plain listener is never TLS, so a request over TLS came through the
    federation listener.
    """
    if request.secure and not request.path.startswith(FEDERATION_PATH_PREFIXES):
        raise MatrixError(404, "M_UNRECOGNIZED", "Unrecognized request")
    return await handler(request)
