"""The ``ranvier`` command's entry point: no garbage collection while the server starts.

Starting imports ~500 modules and builds what lives as long as the process
(classes, functions, dataclass methods, the route table, caches). None of it
is garbage, yet each burst of allocations makes the collector walk all of it
again: measured on ``import ranvier.cli``, 300 ms with the collector off
against 330-350 ms with it on (10 fresh processes each, minimum and median).
So the collector is off from here until the server listens; then what was
allocated so far is frozen (``gc.freeze()``: moved where no later collection
walks it, which also shortens every full collection while serving) and the
collector is turned on again (:func:`startup_done`). Every other command turns
it on before it runs (``ranvier.cli.cli``).

aiohttp, on import, builds its two default client TLS contexts, each loading
the system's CA bundle (``aiohttp/connector.py``, ``_make_ssl_context``):
30-40 ms of a ~230 ms import, at every start. Ranvier never uses them: each
of its client sessions (federation, push gateways, URL previews) passes its
own context, loaded when that session is first made. So aiohttp is imported
here with loading the default CAs skipped (:func:`_import_aiohttp`); its
default contexts trust no CA, and anything that did use them would fail to
verify any server (it fails closed).
"""

from __future__ import annotations

import gc
import ssl


def _skip_default_cas(*args: object) -> None:
    return None


def _import_aiohttp() -> None:
    """Import aiohttp without its default contexts loading the system CAs."""
    methods = ("load_default_certs", "set_default_verify_paths")
    originals = {name: getattr(ssl.SSLContext, name) for name in methods}
    for name in methods:
        setattr(ssl.SSLContext, name, _skip_default_cas)
    try:
        import aiohttp  # noqa: F401
    finally:
        for name, original in originals.items():
            setattr(ssl.SSLContext, name, original)


def main() -> None:
    gc.disable()
    _import_aiohttp()
    from ranvier.cli import main as cli_main

    cli_main()


def startup_done() -> None:
    """The server listens: keep what startup built out of every collection, collect again."""
    if not gc.isenabled():
        gc.freeze()
        gc.enable()
