"""DESIGN.md, "Dependencies point one way": ``api → services → core``,
``services → storage``. ``core`` imports nothing of Ranvier's; ``storage``
knows SQL, not HTTP or domain rules; ``api`` translates HTTP and never touches
storage; services raise :class:`ranvier.errors.MatrixError` and never import
the API, so the client, federation and admin APIs and the CLI share them.

Every ``import`` statement counts, including those under ``TYPE_CHECKING`` and
inside functions: a type-only dependency is still a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import ranvier

PACKAGE_ROOT = Path(ranvier.__file__).parent

#: Package (or module) → the packages its modules must not import. A module may
#: always import from its own package. HTTP (aiohttp) stays out of the pure core,
#: the error type and storage; services may use it as a client (federation),
#: but return data, never responses — which their not importing ranvier.api
#: (json_response, to_response) ensures.
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "ranvier.core": ("ranvier", "aiohttp"),
    "ranvier.errors": ("ranvier", "aiohttp"),
    "ranvier.storage": ("ranvier.api", "ranvier.services", "aiohttp"),
    "ranvier.services": ("ranvier.api",),
    "ranvier.api": ("ranvier.storage",),
}


def is_within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE_ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(source: str, module: str, *, is_package: bool = False) -> list[str]:
    """Every module the import statements of ``source`` (the text of ``module``)
    name, relative imports resolved. ``from a import b`` yields ``a`` and ``a.b``
    (``b`` may be a submodule)."""
    package = module if is_package else module.rpartition(".")[0]
    found: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found += [base, *(f"{base}.{alias.name}" for alias in node.names)]
    return found


def violations(module: str, imports: list[str]) -> list[str]:
    for package, forbidden in FORBIDDEN.items():
        if is_within(module, package):
            return [
                f"{module} imports {imported}"
                for imported in imports
                if not is_within(imported, package)
                and any(is_within(imported, f) for f in forbidden)
            ]
    return []


def module_violations(path: Path) -> list[str]:
    module = module_name(path)
    imports = imported_modules(path.read_text(), module, is_package=path.name == "__init__.py")
    return violations(module, imports)


ALL_MODULES = sorted(PACKAGE_ROOT.rglob("*.py"))


@pytest.mark.parametrize("path", ALL_MODULES, ids=lambda p: str(p.relative_to(PACKAGE_ROOT)))
def test_module_imports_follow_the_layers(path: Path) -> None:
    assert module_violations(path) == []


def test_every_layer_has_modules_to_check() -> None:
    names = [module_name(path) for path in ALL_MODULES]
    for package in FORBIDDEN:
        assert any(is_within(name, package) for name in names), package


# --- the checker itself ------------------------------------------------------------------


def test_relative_imports_resolve_against_the_package() -> None:
    source = "from ..api import http\nfrom . import rooms\nfrom .sync import x\nimport orjson\n"
    assert sorted(imported_modules(source, "ranvier.services.typing")) == [
        "orjson",
        "ranvier.api",
        "ranvier.api.http",
        "ranvier.services",
        "ranvier.services.rooms",
        "ranvier.services.sync",
        "ranvier.services.sync.x",
    ]
    # In a package's __init__, "." is the package itself.
    assert imported_modules("from .engine import Database", "ranvier.storage", is_package=True) == [
        "ranvier.storage.engine",
        "ranvier.storage.engine.Database",
    ]


def test_imports_under_type_checking_and_in_functions_count() -> None:
    source = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from ranvier.api.auth import Requester\n"
        "def f():\n    import ranvier.api.http\n"
    )
    imports = imported_modules(source, "ranvier.services.rooms")
    assert violations("ranvier.services.rooms", imports) == [
        "ranvier.services.rooms imports ranvier.api.auth",
        "ranvier.services.rooms imports ranvier.api.auth.Requester",
        "ranvier.services.rooms imports ranvier.api.http",
    ]


@pytest.mark.parametrize(
    ("module", "imported", "allowed"),
    [
        ("ranvier.services.rooms", "ranvier.api.http", False),
        ("ranvier.services.rooms", "ranvier.storage.events", True),
        ("ranvier.services.rooms", "ranvier.errors", True),
        ("ranvier.storage.events", "ranvier.api", False),
        ("ranvier.storage.events", "ranvier.services.rooms", False),
        ("ranvier.storage.events", "ranvier.core.events", True),
        ("ranvier.core.events", "ranvier.core.ids", True),
        ("ranvier.core.events", "ranvier.errors", False),
        ("ranvier.core.events", "ranvier.config", False),
        ("ranvier.core", "orjson", True),
        ("ranvier.api.client.rooms", "ranvier.storage.events", False),
        ("ranvier.api.client.rooms", "ranvier.services.rooms", True),
        ("ranvier.api.client.rooms", "ranvier.storage_helpers", True),  # not storage
        ("ranvier.errors", "ranvier.api.http", False),
        ("ranvier.errors", "aiohttp.web", False),
        ("ranvier.core.signing", "aiohttp", False),
        ("ranvier.storage.engine", "aiohttp", False),
        ("ranvier.services.rooms", "aiohttp", True),
        ("ranvier.app", "ranvier.storage", True),  # the wiring sees every layer
    ],
)
def test_the_rules(module: str, imported: str, allowed: bool) -> None:
    assert (violations(module, [imported]) == []) is allowed
