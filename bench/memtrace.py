"""What holds a running Ranvier's memory: ``ranvier`` under tracemalloc, dumped every N s.

    python -m bench.memtrace run --out DIR [--every 60] -- serve --config ranvier.yaml
    python -m bench.memtrace compare DIR/dump-1 DIR/dump-5

``run`` starts the ``ranvier`` command in this process with tracemalloc on
(one frame per allocation: cheap enough for a soak) and, from a background
thread, writes ``DIR/dump-<n>.tracemalloc`` (the snapshot) and
``DIR/dump-<n>.json`` (the length of every container held by an attribute of
a Ranvier object: each cache and queue by name) every ``--every`` seconds.
``compare`` prints what grew between two dumps, by source line and by
container. Bounded caches show as lengths that stop at their limit; a leak as
a length, or a source line's bytes, that grows dump after dump.

Used with scenario 9 (soak) to tell the one from the other (docs/performance.md,
"Soak"). Not part of ``make bench``: tracemalloc slows the server down.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import threading
import time
import traceback
import tracemalloc
from collections.abc import Sized
from pathlib import Path
from typing import Any

TOP = 25


def container_lengths() -> dict[str, int]:
    """``Module.Class.attribute -> length`` of every sized attribute of a Ranvier object
    (the largest one where several instances of a class have it)."""
    lengths: dict[str, int] = {}
    for obj in gc.get_objects():
        cls = type(obj)
        module = getattr(cls, "__module__", None)  # a descriptor on some metaclasses
        if not isinstance(module, str) or not module.startswith("ranvier."):
            continue
        for name, value in _attributes(obj):
            if isinstance(value, Sized) and not isinstance(value, str | bytes):
                key = f"{module}.{cls.__qualname__}.{name}"
                try:
                    lengths[key] = max(lengths.get(key, 0), len(value))
                except TypeError:  # a class whose __len__ needs more than it has
                    continue
    return lengths


def _attributes(obj: Any) -> list[tuple[str, Any]]:
    found = list(getattr(obj, "__dict__", {}).items())
    for cls in type(obj).__mro__:
        for name in getattr(cls, "__slots__", ()):
            if hasattr(obj, name):
                found.append((name, getattr(obj, name)))
    return found


def dump(out: Path, number: int) -> None:
    snapshot = tracemalloc.take_snapshot()
    snapshot.dump(str(out / f"dump-{number}.tracemalloc"))
    traced, peak = tracemalloc.get_traced_memory()
    facts = {
        "time": time.time(),
        "traced_bytes": traced,
        "traced_peak_bytes": peak,
        "containers": container_lengths(),
    }
    (out / f"dump-{number}.json").write_text(json.dumps(facts, indent=1, sort_keys=True))


def run(out: Path, every_s: float, ranvier_args: list[str]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    tracemalloc.start(1)

    def dump_forever() -> None:
        for number in range(1, sys.maxsize):
            time.sleep(every_s)
            try:
                dump(out, number)
            except Exception:  # a failed dump must not end the ones after it
                traceback.print_exc()

    threading.Thread(target=dump_forever, name="memtrace", daemon=True).start()
    from ranvier.cli import main

    sys.argv = ["ranvier", *ranvier_args]
    main()


def compare(before: Path, after: Path) -> str:
    old = tracemalloc.Snapshot.load(f"{before}.tracemalloc")
    new = tracemalloc.Snapshot.load(f"{after}.tracemalloc")
    old_facts = json.loads(Path(f"{before}.json").read_text())
    new_facts = json.loads(Path(f"{after}.json").read_text())
    lines = [
        f"traced: {old_facts['traced_bytes'] / 2**20:.1f} → "
        f"{new_facts['traced_bytes'] / 2**20:.1f} MiB over "
        f"{new_facts['time'] - old_facts['time']:.0f} s",
        "",
        "grew most, by source line:",
    ]
    for stat in new.compare_to(old, "lineno")[:TOP]:
        lines.append(f"  {stat.size_diff / 1024:+10.1f} KiB {stat.count_diff:+8d} blocks  "
                     f"{stat.traceback[0]}")  # fmt: skip
    lines += ["", "containers (length before → after), largest first:"]
    old_lengths: dict[str, int] = old_facts["containers"]
    new_lengths: dict[str, int] = new_facts["containers"]
    largest = sorted(new_lengths, key=lambda key: -new_lengths[key])[:TOP]
    for key in largest:
        lines.append(f"  {old_lengths.get(key, 0):>8} → {new_lengths[key]:>8}  {key}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.memtrace", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run_parser = commands.add_parser("run", help="run ranvier with tracemalloc dumps")
    run_parser.add_argument("--out", type=Path, required=True)
    run_parser.add_argument("--every", type=float, default=60.0, help="seconds between dumps")
    run_parser.add_argument("ranvier_args", nargs=argparse.REMAINDER)
    compare_parser = commands.add_parser("compare", help="what grew between two dumps")
    compare_parser.add_argument("before", type=Path, help="DIR/dump-N (without suffix)")
    compare_parser.add_argument("after", type=Path)
    args = parser.parse_args(argv)
    if args.command == "run":
        ranvier_args = [a for a in args.ranvier_args if a != "--"] or ["serve"]
        run(args.out, args.every, ranvier_args)
    else:
        print(compare(args.before, args.after))


if __name__ == "__main__":
    main()
