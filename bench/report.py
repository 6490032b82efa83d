"""The report of a run: the side-by-side table, the raw JSON and the latency chart."""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.scenarios import SOAK_RSS, SOAK_TIMES, Outcome

NOT_IMPLEMENTED = "n/a (Ranvier: not implemented yet)"


@dataclass
class ScenarioResult:
    """One scenario on one server: its repeats' outcomes, or why there are none."""

    status: str = "ok"  # "ok", "n/a" (an endpoint is not implemented) or "error"
    detail: str = ""  # the missing endpoint, or the error
    outcomes: list[Outcome] = field(default_factory=list)
    seconds: float = 0.0  # wall time of the scenario on this server, setup included

    def figures(self) -> dict[str, float | str]:
        """Each figure's median over the repeats (descriptive figures: the first)."""
        names: dict[str, None] = {}
        for outcome in self.outcomes:
            names.update(dict.fromkeys(outcome.figures))
        merged: dict[str, float | str] = {}
        for name in names:
            values = [o.figures[name] for o in self.outcomes if name in o.figures]
            numbers = [v for v in values if isinstance(v, int | float)]
            merged[name] = statistics.median(numbers) if len(numbers) == len(values) else values[0]
        return merged

    def samples(self) -> dict[str, list[float]]:
        merged: dict[str, list[float]] = {}
        for outcome in self.outcomes:
            for name, values in outcome.samples.items():
                merged.setdefault(name, []).extend(values)
        return merged


@dataclass
class Results:
    machine: dict[str, Any]
    servers: dict[str, dict[str, Any]]  # name -> facts (version, password hashing, ...)
    sizes: dict[str, Any]
    # scenario title -> server name -> result, in table order
    scenarios: dict[str, dict[str, ScenarioResult]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "machine": self.machine,
            "servers": self.servers,
            "sizes": self.sizes,
            "scenarios": {
                title: {
                    name: {
                        "status": result.status,
                        "detail": result.detail,
                        "seconds": result.seconds,
                        "figures": result.figures(),
                        "repeats": [asdict(outcome) for outcome in result.outcomes],
                    }
                    for name, result in by_server.items()
                }
                for title, by_server in self.scenarios.items()
            },
        }


def format_value(value: float | str) -> str:
    if isinstance(value, str):
        return value
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:,.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def _cell(result: ScenarioResult | None, name: str, figure: str) -> str:
    if result is None:
        return "—"
    if result.status == "n/a":
        return NOT_IMPLEMENTED if name == "Ranvier" else f"n/a ({name}: not implemented)"
    if result.status == "error":
        return "error"
    value = result.figures().get(figure)
    return "—" if value is None else format_value(value)


def _ratio(results: dict[str, ScenarioResult], figure: str) -> str:
    values = []
    for name in ("Ranvier", "Synapse"):
        result = results.get(name)
        value = result.figures().get(figure) if result and result.status == "ok" else None
        if not isinstance(value, int | float):
            return "—"
        values.append(value)
    ranvier, synapse = values
    return "—" if synapse == 0 else f"{ranvier / synapse:.2f}"


def render_table(results: Results) -> str:
    """A Markdown table: scenario, figure, Ranvier, Synapse, ratio (Ranvier ÷ Synapse)."""
    names = list(results.servers)
    header = ["scenario", "figure", *names]
    if names == ["Ranvier", "Synapse"]:
        header.append("ratio R/S")
    rows: list[list[str]] = []
    notes: list[str] = []
    for title, by_server in results.scenarios.items():
        figures: dict[str, None] = {}
        for name in names:
            result = by_server.get(name)
            if result is not None and result.status == "ok":
                figures.update(dict.fromkeys(result.figures()))
            elif result is not None:
                kind = "not implemented" if result.status == "n/a" else "error"
                notes.append(f"{title}, {name}: {kind}: {result.detail}")
        for index, figure in enumerate(figures or {"—": None}):
            row = [title if index == 0 else "", figure]
            row.extend(_cell(by_server.get(name), name, figure) for name in names)
            if len(header) > len(row):
                row.append(_ratio(by_server, figure))
            rows.append(row)
    widths = [max(len(line[i]) for line in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    text = [line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    text.extend(line(row) for row in rows)
    if notes:
        text.append("")
        text.extend(f"- {note}" for note in notes)
    return "\n".join(text)


def render_floor(results: Results) -> str:
    """Single-sender send p50 as a multiple of the disk's durable-commit floor
    (bench/durability.py), for each server; empty without both figures."""
    from bench.durability import SEND_FIGURE, SEND_TITLE, send_over_floor

    floor = results.machine.get("fsync_floor_p50_ms")
    by_server = results.scenarios.get(SEND_TITLE, {})
    if not isinstance(floor, int | float):
        return ""
    parts = []
    for name in results.servers:
        result = by_server.get(name)
        value = result.figures().get(SEND_FIGURE) if result and result.status == "ok" else None
        if isinstance(value, int | float):
            parts.append(f"{name} {send_over_floor(value, floor):.1f}×")
    if not parts:
        return ""
    return (
        f"durable-commit floor (write + fsync, p50): {floor:.2f} ms; "
        f"send p50 (1 sender) as a multiple of it: {', '.join(parts)}"
    )


def render_facts(results: Results) -> str:
    machine = results.machine
    lines = [
        f"machine: {machine.get('cpu_model', '?')}, {machine.get('cpu_count')} CPUs "
        f"({machine.get('physical_cores')} physical), {machine.get('memory_gib')} GiB RAM, "
        f"{machine.get('platform')}",
        f"harness: Python {machine.get('python')}; database engine: {machine.get('engine')}"
        + (f" (PostgreSQL {machine['postgresql']})" if machine.get("postgresql") else ""),
    ]
    if isinstance(machine.get("fsync_floor_p50_ms"), int | float):
        lines.append(
            f"disk: write + fsync p50 {machine['fsync_floor_p50_ms']:.2f} ms, "
            f"p95 {machine['fsync_floor_p95_ms']:.2f} ms (the durable-commit floor)"
        )
    lines.append("sizes: " + ", ".join(f"{key}={value}" for key, value in results.sizes.items()))
    for name, facts in results.servers.items():
        lines.append(
            f"{name} {facts.get('version')} on Python {facts.get('python')}; "
            f"passwords: {facts.get('password_hashing')}"
        )
    return "\n".join(lines)


def write_json(results: Results, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results.to_json(), indent=1, ensure_ascii=False))


def write_chart(results: Results, memory: dict[str, list[tuple[float, float]]], path: Path) -> bool:
    """Box plots of every latency distribution, joins as the room grows, RSS over time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results.servers)
    colours = {"Ranvier": "tab:blue", "Synapse": "tab:orange"}
    distributions: dict[str, dict[str, list[float]]] = {}
    for by_server in results.scenarios.values():
        for name, result in by_server.items():
            if result.status != "ok":
                continue
            for label, values in result.samples().items():
                if values:
                    distributions.setdefault(label, {})[name] = values
    growth = distributions.pop("join as the room grows (ms)", None)
    soak_rss = distributions.pop(SOAK_RSS, None)
    soak_times = distributions.pop(SOAK_TIMES, {})
    panels = len(distributions) + sum(1 for panel in (growth, memory, soak_rss) if panel)
    if panels == 0:
        return False
    columns = 3
    rows = -(-panels // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(5 * columns, 3.6 * rows), squeeze=False)
    flat = list(axes.flat)
    for axis, (label, by_name) in zip(flat, distributions.items(), strict=False):
        present = [name for name in names if name in by_name]
        boxes = axis.boxplot(
            [by_name[name] for name in present],
            tick_labels=present,
            whis=(1, 99),
            showfliers=False,
            patch_artist=True,
        )
        for patch, name in zip(boxes["boxes"], present, strict=True):
            patch.set_facecolor(colours.get(name, "grey"))
            patch.set_alpha(0.6)
        axis.set_title(label, fontsize=10)
        axis.set_yscale("log")
        axis.set_ylabel("ms (whiskers p1–p99)")
    used = len(distributions)
    if growth:
        axis = flat[used]
        used += 1
        for name, values in growth.items():
            axis.plot(range(1, len(values) + 1), values, ".", markersize=2, label=name,
                      color=colours.get(name))  # fmt: skip
        axis.set_title("join latency as the room grows", fontsize=10)
        axis.set_xlabel("members before the join")
        axis.set_ylabel("ms")
        axis.set_yscale("log")
        axis.legend()
    if memory:
        axis = flat[used]
        used += 1
        for name, points in memory.items():
            axis.plot([t for t, _ in points], [m for _, m in points], label=name,
                      color=colours.get(name))  # fmt: skip
        axis.set_title("server RSS during the run", fontsize=10)
        axis.set_xlabel("s")
        axis.set_ylabel("MiB")
        axis.legend()
    if soak_rss:
        axis = flat[used]
        used += 1
        for name, values in soak_rss.items():
            axis.plot(soak_times.get(name, []), values, label=name, color=colours.get(name))
        axis.set_title("server RSS during the soak (scenario 9)", fontsize=10)
        axis.set_xlabel("s")
        axis.set_ylabel("MiB")
        axis.legend()
    for axis in flat[used:]:
        axis.set_visible(False)
    figure.suptitle(
        "Ranvier vs Synapse — " + ", ".join(
            f"{n} {results.servers[n].get('version')}" for n in names
        ) + f" — {results.machine.get('engine')}"
    )  # fmt: skip
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True
