"""What the server's outbound HTTPS requests share: federation
(``services/federation/client.py``), push gateways (``push_delivery.py``) and
URL previews (``media/preview.py``). Each of them also resolves through the SSRF
guard (``services/federation/address_guard.py``)."""

from __future__ import annotations

import ssl
from pathlib import Path

import ranvier

USER_AGENT = f"Ranvier/{ranvier.__version__}"


def outbound_ssl_context(trusted_ca_file: Path | None) -> ssl.SSLContext:
    """System CAs (plus ``trusted_ca_file``), hostname checks on, TLS 1.2 at least."""
    context = ssl.create_default_context()
    if trusted_ca_file is not None:
        context.load_verify_locations(cafile=str(trusted_ca_file))
    return context
