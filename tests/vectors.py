"""Locating and loading the oracle vectors in ``../shared/test-vectors/``.

``RANVIER_TEST_VECTORS`` points elsewhere when the repository is not checked
out beside ``shared/``.
"""

from __future__ import annotations

import json
import os
from functools import cache
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]


def vectors_dir() -> Path:
    override = os.environ.get("RANVIER_TEST_VECTORS")
    if override:
        return Path(override)
    return REPO_ROOT.parent / "shared" / "test-vectors"


@cache
def load_vectors(name: str) -> list[dict[str, Any]]:
    """Every case of ``<name>.jsonl``; a missing folder is an error, never a skip."""
    path = vectors_dir() / f"{name}.jsonl"
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def load_keys() -> dict[str, Any]:
    with (vectors_dir() / "keys.json").open(encoding="utf-8") as handle:
        keys: dict[str, Any] = json.load(handle)
    return keys
