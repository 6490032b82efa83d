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
"""

from __future__ import annotations

import gc


def main() -> None:
    gc.disable()
    from ranvier.cli import main as cli_main

    cli_main()


def startup_done() -> None:
    """The server listens: keep what startup built out of every collection, collect again."""
    if not gc.isenabled():
        gc.freeze()
        gc.enable()
