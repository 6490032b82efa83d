"""``make bench``: Ranvier and Synapse side by side, one table.

    .venv/bin/python -m bench.run [--engine sqlite|postgresql] [--quick]
                                  [--servers ranvier,synapse] [--scenarios startup,register,...]

Both servers run on loopback, each on a fresh database. Every scenario runs on
one then the other (A, B, A, B ...: drift on a shared machine hits both alike);
repeated scenarios report medians. Scenario 10 (federation, bench/federation.py)
runs on a pair of each kind instead, federating over TLS on loopback;
scenarios 14 and 15 (bench/populated.py) on fresh servers of their own, loaded
at the same time, then measured one after the other. The
table goes to stdout; the raw results
(JSON) and a chart of the latency distributions (PNG) go to bench/results/.
The run is bounded (sizes, per-request and per-scenario timeouts) and always
stops its servers, on errors and on Ctrl-C too.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import os
import platform
import signal
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import aiohttp
import psutil

from bench.client import Client, NotImplementedYet
from bench.durability import durable_commit_floor
from bench.federation import FEDERATION, FederatedContext, FederationCa
from bench.media import MEDIA_SCENARIO
from bench.populated import POPULATED, SBRC
from bench.report import (
    Results,
    ScenarioResult,
    render_facts,
    render_floor,
    render_table,
    write_chart,
    write_json,
)
from bench.scenarios import (
    FULL,
    MIB,
    QUICK,
    SCENARIOS,
    SOAK,
    Outcome,
    Scenario,
    ServerContext,
    Sizes,
)
from bench.servers import (
    DEFAULT_POSTGRES,
    REPO_ROOT,
    SYNAPSE_VENV,
    DatabaseProvider,
    FederationTls,
    RanvierServer,
    Server,
    SynapseServer,
    SynapseTemplate,
    wipe,
)

SERVER_NAMES = {"ranvier": "Ranvier", "synapse": "Synapse"}
STARTUP = "1 startup"
MEMORY = "7 memory"
ALL_SCENARIOS = (
    "startup",
    *(s.key for s in SCENARIOS),
    "memory",
    SOAK.key,
    FEDERATION.key,
    MEDIA_SCENARIO.key,
    POPULATED.key,
    SBRC.key,
)
MEMORY_SAMPLE_INTERVAL_S = 0.25


@dataclass
class Options:
    engine: str = "sqlite"
    sizes: Sizes = FULL
    quick: bool = False
    servers: tuple[str, ...] = ("Ranvier", "Synapse")
    scenarios: tuple[str, ...] = ALL_SCENARIOS
    work_dir: Path = REPO_ROOT / "bench" / "work"
    results_dir: Path | None = REPO_ROOT / "bench" / "results"
    postgres: str = DEFAULT_POSTGRES
    synapse_venv: Path = SYNAPSE_VENV
    log: bool = True
    trace_memory: Path | None = None  # soak's/populated Ranvier under bench/memtrace.py, dumps here


def _say(options: Options, message: str) -> None:
    if options.log:
        print(message, file=sys.stderr, flush=True)


def machine_facts(engine: str) -> dict[str, Any]:
    model = platform.processor() or "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "cpu_model": model,
        "cpu_count": os.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "engine": engine,
    }


class Runner:
    def __init__(self, options: Options, session: aiohttp.ClientSession) -> None:
        self.options = options = replace(options, work_dir=options.work_dir.resolve())
        self.session = session
        self.provider = DatabaseProvider(options.engine, options.postgres)
        self.template: SynapseTemplate | None = None
        self.running: list[Server] = []
        self.memory: dict[str, list[tuple[float, float]]] = {}

    async def make(self, name: str, label: str, federation: FederationTls | None = None) -> Server:
        folder = self.options.work_dir / f"{name.lower()}-{label}"
        database = await self.provider.new(folder, f"{name.lower()}_{label}")
        if name == "Ranvier":
            # Only the soak's and the populated server's are traced: tracemalloc slows
            # a server down. A dump every soak round; twice per populated traffic phase.
            traced = {SOAK.key: self.options.sizes.soak_round_s}
            traced[POPULATED.key] = self.options.sizes.pop_traffic_s / 2
            trace = self.options.trace_memory if label in traced else None
            server = RanvierServer(folder, database, federation, trace)
            server.trace_every_s = traced.get(label, server.trace_every_s)
            return server
        if self.template is None:
            self.template = SynapseTemplate(
                self.options.work_dir / "synapse-template", self.options.synapse_venv
            )
        return SynapseServer(folder, database, self.template, federation)

    async def run(self) -> Results:
        options = self.options
        wipe(options.work_dir)
        options.work_dir.mkdir(parents=True)
        machine = machine_facts(options.engine)
        servers: dict[str, dict[str, Any]] = {}
        for name in options.servers:
            if name == "Ranvier":
                RanvierServer.compile_bytecode()
                servers[name] = asdict(RanvierServer.facts())
            else:
                self.template = SynapseTemplate(
                    options.work_dir / "synapse-template", options.synapse_venv
                )
                servers[name] = asdict(self.template.facts())
        results = Results(machine, servers, asdict(options.sizes) | {"quick": options.quick})
        try:
            machine["postgresql"] = await self.provider.postgres_version()
            floor = await asyncio.to_thread(durable_commit_floor, options.work_dir)
            machine["fsync_floor_p50_ms"] = floor["p50"]
            machine["fsync_floor_p95_ms"] = floor["p95"]
            _say(options, render_facts(results))
            if "startup" in options.scenarios:
                results.scenarios[STARTUP] = await self.startup()
            main = [s for s in SCENARIOS if s.key in options.scenarios]
            if main or "memory" in options.scenarios:
                await self.main_phase(results, main)
            if SOAK.key in options.scenarios:
                results.scenarios[SOAK.title] = await self.soak_phase()
            if FEDERATION.key in options.scenarios:
                results.scenarios[FEDERATION.title] = await self.federation_phase()
            if MEDIA_SCENARIO.key in options.scenarios:
                results.scenarios[MEDIA_SCENARIO.title] = await self.fresh_phase(MEDIA_SCENARIO)
            for scenario in (POPULATED, SBRC):
                if scenario.key in options.scenarios:
                    results.scenarios[scenario.title] = await self.loaded_phase(scenario)
        finally:
            for server in self.running:
                server.stop()
            await self.provider.close()
        return results

    async def startup(self) -> dict[str, ScenarioResult]:
        """Scenario 1: a fresh server each time; seconds to /versions, then idle RSS."""
        sizes = self.options.sizes
        by_server = {name: ScenarioResult() for name in self.options.servers}
        for repeat in range(sizes.startup_repeats):
            for name in self.options.servers:
                _say(self.options, f"[{name}] 1 startup, run {repeat + 1}/{sizes.startup_repeats}")
                result = by_server[name]
                if result.status != "ok":
                    continue
                began = time.perf_counter()
                server = await self.make(name, f"startup{repeat}")
                self.running.append(server)
                try:
                    seconds = await server.start(self.session)
                    await asyncio.sleep(sizes.idle_settle_s)
                    rss = server.rss_bytes()
                    result.outcomes.append(
                        Outcome(
                            {
                                "process start → first /versions (s)": seconds,
                                f"idle RSS {sizes.idle_settle_s:g} s later (MiB)": rss / MIB,
                            }
                        )
                    )
                except Exception as error:
                    result.status, result.detail = "error", str(error).splitlines()[0]
                finally:
                    server.stop()
                    self.running.remove(server)
                    result.seconds += time.perf_counter() - began
        return by_server

    async def soak_phase(self) -> dict[str, ScenarioResult]:
        """Scenario 9 on a fresh server of each kind, one after the other.

        Fresh, so its RSS curve is the soak's alone; one at a time, so the two
        servers do not compete for the CPU during minutes of steady traffic.
        """
        return await self.fresh_phase(SOAK)

    async def fresh_phase(self, scenario: Scenario) -> dict[str, ScenarioResult]:
        """``scenario`` on a fresh server of each kind, one after the other (9 soak, 11 media)."""
        by_server: dict[str, ScenarioResult] = {}
        for name in self.options.servers:
            _say(self.options, f"[{name}] starting a fresh server for {scenario.title}")
            server = await self.make(name, scenario.key)
            self.running.append(server)
            try:
                await server.start(self.session)
                context = ServerContext(
                    server, Client(self.session, server.base_url), self.options.sizes
                )
                by_server |= await self.run_scenario(scenario, {name: context})
            except Exception as error:
                failed = ScenarioResult(status="error", detail=str(error).splitlines()[0])
                by_server[name] = failed
            finally:
                server.stop()
                self.running.remove(server)
        return by_server

    async def loaded_phase(self, scenario: Scenario) -> dict[str, ScenarioResult]:
        """Scenarios 14 and 15 on fresh servers of their own, with cheap password hashing.

        Both servers are loaded at the same time (set-up is not measured, and
        Synapse's load takes minutes), then measured one after the other.
        """
        contexts: dict[str, ServerContext] = {}
        unstarted: dict[str, ScenarioResult] = {}
        started: list[Server] = []
        try:
            for name in self.options.servers:
                _say(self.options, f"[{name}] starting a fresh server for {scenario.title}")
                server = await self.make(name, scenario.key)
                server.cheap_passwords = True  # thousands of users; no login is measured
                self.running.append(server)
                started.append(server)
                try:
                    await server.start(self.session)
                except Exception as error:
                    detail = (str(error) or type(error).__name__).splitlines()[0]
                    unstarted[name] = ScenarioResult(status="error", detail=detail)
                    continue
                client = Client(self.session, server.base_url)
                contexts[name] = ServerContext(server, client, self.options.sizes)
            by_server = (
                await self.run_scenario(scenario, contexts, concurrent_setup=True)
                if contexts
                else {}
            )
        finally:
            for server in started:
                server.stop()
                self.running.remove(server)
        return {name: by_server.get(name) or unstarted[name] for name in self.options.servers}

    async def sample_memory(self, servers: dict[str, Server]) -> None:
        started = time.perf_counter()
        while True:
            now = time.perf_counter() - started
            for name, server in servers.items():
                self.memory.setdefault(name, []).append((now, server.rss_bytes() / MIB))
            await asyncio.sleep(MEMORY_SAMPLE_INTERVAL_S)

    async def main_phase(self, results: Results, scenarios: list[Scenario]) -> None:
        options = self.options
        servers: dict[str, Server] = {}
        for name in options.servers:
            _say(options, f"[{name}] starting the server for scenarios 2-8")
            server = await self.make(name, "main")
            self.running.append(server)
            await server.start(self.session)
            servers[name] = server
        contexts = {
            name: ServerContext(server, Client(self.session, server.base_url), options.sizes)
            for name, server in servers.items()
        }
        sampler = asyncio.create_task(self.sample_memory(servers))
        try:
            for scenario in scenarios:
                results.scenarios[scenario.title] = await self.run_scenario(scenario, contexts)
                if scenario.key == "register":
                    for name, result in results.scenarios[scenario.title].items():
                        if result.status == "ok":
                            hashing = results.servers[name]["password_hashing"]
                            result.outcomes[0].figures["password hashing"] = hashing
        finally:
            sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampler
        if "memory" in options.scenarios:
            memory: dict[str, ScenarioResult] = {}
            for name, server in servers.items():
                sampled = max((mib for _, mib in self.memory.get(name, [])), default=0.0)
                high_water = (server.peak_rss_bytes() or 0) / MIB
                memory[name] = ScenarioResult(
                    outcomes=[
                        Outcome(
                            {
                                "peak RSS over the run (MiB)": max(sampled, high_water),
                                "RSS at the end (MiB)": server.rss_bytes() / MIB,
                            },
                        )
                    ]
                )
            # Scenario 7 sits before 8 in the table, whatever order they ran in.
            disk = next((t for t in results.scenarios if t.startswith("8 ")), None)
            moved = results.scenarios.pop(disk) if disk else None
            results.scenarios[MEMORY] = memory
            if disk and moved is not None:
                results.scenarios[disk] = moved
            # Scenario 12 (search) ran in this phase too; it goes after 8.
            search = next((t for t in results.scenarios if t.startswith("12 ")), None)
            if search is not None:
                results.scenarios[search] = results.scenarios.pop(search)

    async def federation_phase(self) -> dict[str, ScenarioResult]:
        """Scenario 10 on a pair of each server kind (federating over TLS), then stop them."""
        ca = FederationCa(self.options.work_dir / "federation-ca")
        contexts: dict[str, ServerContext] = {}
        unstarted: dict[str, ScenarioResult] = {}
        started: list[Server] = []
        try:
            for name in self.options.servers:
                _say(self.options, f"[{name}] starting two federating servers for scenario 10")
                try:
                    contexts[name] = await self.start_pair(name, ca, started)
                except Exception as error:
                    reason = (str(error) or type(error).__name__).splitlines()[0]
                    detail = f"the pair did not start: {reason}"
                    unstarted[name] = ScenarioResult(status="error", detail=detail)
                    _say(self.options, f"[{name}]   error: {detail}")
            by_server = await self.run_scenario(FEDERATION, contexts) if contexts else {}
        finally:
            for server in started:
                server.stop()
                self.running.remove(server)
        return {name: by_server.get(name) or unstarted[name] for name in self.options.servers}

    async def start_pair(
        self, name: str, ca: FederationCa, started: list[Server]
    ) -> FederatedContext:
        """Servers A and B of one kind, each naming the other as its only peer."""
        pair: list[Server] = []
        for label, tls in zip(("fed-a", "fed-b"), ca.pair(), strict=True):
            server = await self.make(name, label, federation=tls)
            self.running.append(server)
            started.append(server)
            await server.start(self.session)
            pair.append(server)
        resident, joining = pair
        sizes = self.options.sizes
        peer = ServerContext(joining, Client(self.session, joining.base_url), sizes)
        return FederatedContext(resident, Client(self.session, resident.base_url), sizes, peer)

    async def run_scenario(
        self,
        scenario: Scenario,
        contexts: dict[str, ServerContext],
        *,
        concurrent_setup: bool = False,
    ) -> dict[str, ScenarioResult]:
        """Setup on each server (at the same time if ``concurrent_setup``), then the
        repeats alternating between servers (A, B, A, B)."""
        options = self.options
        timeout = options.sizes.scenario_timeout_s
        by_server = {name: ScenarioResult() for name in contexts}
        states: dict[str, Any] = {}

        async def step(name: str, label: str, call: Any) -> Any:
            result = by_server[name]
            server = contexts[name].server
            began = time.perf_counter()
            _say(options, f"[{name}] {scenario.title}: {label}")
            try:
                if server.process is None or server.process.poll() is not None:
                    raise RuntimeError(f"the {name} process has exited; log:\n{server.log_tail()}")
                return await asyncio.wait_for(call, timeout=timeout)
            except NotImplementedYet as missing:
                result.status, result.detail = "n/a", missing.endpoint
                _say(options, f"[{name}]   n/a: {missing.endpoint} is not implemented")
            except TimeoutError:
                result.status, result.detail = "error", f"{label} took over {timeout:g} s"
                _say(options, f"[{name}]   error: {result.detail}")
            except Exception as error:
                result.status, result.detail = "error", f"{type(error).__name__}: {error}"
                _say(options, f"[{name}]   error: {result.detail}")
            finally:
                result.seconds += time.perf_counter() - began
            return None

        if concurrent_setup:
            setups = [step(name, "setup", scenario.setup(ctx)) for name, ctx in contexts.items()]
            states.update(zip(contexts, await asyncio.gather(*setups), strict=True))
        else:
            for name, ctx in contexts.items():
                states[name] = await step(name, "setup", scenario.setup(ctx))
        repeats = scenario.repeats(options.sizes)
        for repeat in range(repeats):
            for name, ctx in contexts.items():
                if by_server[name].status != "ok":
                    continue
                outcome = await step(
                    name,
                    f"run {repeat + 1}/{repeats}",
                    scenario.measure(ctx, states[name], repeat),
                )
                if outcome is not None:
                    by_server[name].outcomes.append(outcome)
        return by_server


def save(options: Options, results: Results, runner_memory: dict[str, Any] | None = None) -> None:
    if options.results_dir is None:
        return
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    suffix = f"{options.engine}{'-quick' if options.quick else ''}-{stamp}"
    json_path = options.results_dir / f"bench-{suffix}.json"
    write_json(results, json_path)
    _say(options, f"raw results: {json_path}")
    chart_path = options.results_dir / f"bench-{suffix}.png"
    if write_chart(results, runner_memory or {}, chart_path):
        _say(options, f"chart: {chart_path}")


def parse_args(argv: list[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    parser.add_argument("--engine", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--quick", action="store_true", help="small sizes: under two minutes")
    parser.add_argument("--servers", default="ranvier,synapse", help="comma-separated")
    parser.add_argument(
        "--scenarios", default=",".join(ALL_SCENARIOS), help=f"any of {','.join(ALL_SCENARIOS)}"
    )
    parser.add_argument("--postgres", default=os.environ.get("BENCH_POSTGRES", DEFAULT_POSTGRES),
                        help="admin DSN; each server gets a new database on that cluster")  # fmt: skip
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SIZE=N",
        help="override one size of bench/scenarios.py's Sizes, e.g. --set large_room_users=200",
    )
    parser.add_argument(
        "--trace-memory",
        type=Path,
        metavar="DIR",
        help="run the Ranvier of the soak (9) and of the populated server (14) under "
        "tracemalloc (bench/memtrace.py), a dump in DIR every soak round and every half "
        "populated traffic phase",
    )
    parser.add_argument("--synapse-venv", type=Path, default=SYNAPSE_VENV)
    parser.add_argument("--work-dir", type=Path, default=Options.work_dir)
    parser.add_argument("--results-dir", type=Path, default=Options.results_dir)
    args = parser.parse_args(argv)
    servers = tuple(SERVER_NAMES[s.strip().lower()] for s in args.servers.split(",") if s.strip())
    scenarios = tuple(s.strip() for s in args.scenarios.split(",") if s.strip())
    unknown = set(scenarios) - set(ALL_SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios {sorted(unknown)}; choose from {ALL_SCENARIOS}")
    sizes = QUICK if args.quick else FULL
    for setting in args.set:
        key, _, value = setting.partition("=")
        current = getattr(sizes, key.strip(), None)
        if current is None or not value:
            parser.error(f"--set {setting}: not a size (see Sizes in bench/scenarios.py)")
        sizes = replace(sizes, **{key.strip(): type(current)(value)})
    return Options(
        engine=args.engine,
        sizes=sizes,
        quick=args.quick,
        servers=servers,
        scenarios=scenarios,
        work_dir=args.work_dir.resolve(),
        results_dir=args.results_dir.resolve(),
        postgres=args.postgres,
        synapse_venv=args.synapse_venv,
        trace_memory=args.trace_memory.resolve() if args.trace_memory else None,
    )


async def _main(options: Options) -> tuple[Results, dict[str, Any]]:
    # SIGTERM stops the run like Ctrl-C does: cancelled, the finally blocks stop the servers.
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        runner = Runner(options, session)
        return await runner.run(), dict(runner.memory)


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    began = time.perf_counter()
    try:
        results, memory = asyncio.run(_main(options))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("bench: interrupted; servers stopped", file=sys.stderr)
        return 130
    print()
    print(render_facts(results))
    print()
    print(render_table(results))
    floor = render_floor(results)
    if floor:
        print()
        print(floor)
    print(f"\n(ratio R/S = Ranvier ÷ Synapse; run took {time.perf_counter() - began:.0f} s)")
    save(options, results, memory)
    return 0


if __name__ == "__main__":
    sys.exit(main())
