"""Scenario 10 (federation) of the benchmark harness.

The harness runs it against a pair of Ranvier servers federating over TLS,
tiny sizes (no timing assertions: this checks the harness, not the speed);
the Synapse pair's configuration is checked as written, without Synapse.
"""

from __future__ import annotations

import contextlib
import ssl
from dataclasses import replace
from pathlib import Path

import aiohttp
import pytest
import yaml

from bench.federation import FEDERATION, FederationCa
from bench.report import render_table
from bench.run import Options, Runner
from bench.scenarios import QUICK
from bench.servers import DatabaseHandle, FederationTls, SynapseServer, SynapseTemplate

pytestmark = pytest.mark.bench

FIGURES = {
    "join (2 rooms) p50 (ms)",
    "join (2 rooms) p95 (ms)",
    "ping: send → other's /sync p50 (ms)",
    "ping: send → other's /sync p95 (ms)",
    "CPU per federated message (ms, both servers)",
    "  of which the sender's server A (ms)",
    "  of which the receiver's server B (ms)",
    "4 sends → all on other's /sync (msgs/s)",
}


async def test_federation_scenario_runs_against_two_ranvier_servers(tmp_path: Path) -> None:
    sizes = replace(QUICK, repeats=1, fed_joins=2, fed_ping_messages=3, fed_cpu_messages=4)
    options = Options(
        sizes=sizes,
        quick=True,
        servers=("Ranvier",),
        scenarios=(FEDERATION.key,),
        work_dir=tmp_path / "work",
        results_dir=None,
        log=False,
    )
    async with aiohttp.ClientSession() as session:
        runner = Runner(options, session)
        results = await runner.run()
        assert runner.running == []  # both servers were stopped

    result = results.scenarios[FEDERATION.title]["Ranvier"]
    assert (result.status, result.detail) == ("ok", "")
    figures = result.figures()
    assert set(figures) == FIGURES
    assert all(isinstance(value, float) for value in figures.values())
    # CPU time is counted in clock ticks (10 ms): the 4 messages here may cost
    # a server less than one (seen once in a clean-clone run). Latencies and
    # the rate are always positive.
    cpu = {name for name in figures if "CPU" in name or "of which" in name}
    assert len(cpu) == 3
    assert all(figures[name] >= 0 for name in cpu)  # type: ignore[operator]
    assert all(value > 0 for name, value in figures.items() if name not in cpu)  # type: ignore[operator]
    both = figures["CPU per federated message (ms, both servers)"]
    parts = (
        figures["  of which the sender's server A (ms)"],
        figures["  of which the receiver's server B (ms)"],
    )
    assert both == pytest.approx(sum(parts))  # type: ignore[arg-type]
    samples = result.samples()
    assert len(samples["federated join (ms)"]) == 2
    assert len(samples["federated ping, send → /sync (ms)"]) == 3
    assert "| 10 federation" in render_table(results)
    # Two servers, A (the rooms) and B (the joiners), each with its folder and database.
    folders = sorted((tmp_path / "work").glob("ranvier-fed-*"))
    assert [folder.name for folder in folders] == ["ranvier-fed-a", "ranvier-fed-b"]


def test_ca_issues_loopback_certificates_naming_both_peers(tmp_path: Path) -> None:
    ca = FederationCa(tmp_path)
    first, second = ca.pair()
    assert first.port != second.port
    assert first.peers == second.peers == (first.server_name, second.server_name)
    assert first.server_name == f"127.0.0.1:{first.port}"
    # The certificate chain verifies against the CA file for the IP address 127.0.0.1.
    context = ssl.create_default_context(cafile=str(first.ca_file))
    server_side = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_side.load_cert_chain(first.certificate_chain, first.private_key)
    client_in, client_out, server_in, server_out = (ssl.MemoryBIO() for _ in range(4))
    client = context.wrap_bio(client_in, client_out, server_hostname="127.0.0.1")
    server = server_side.wrap_bio(server_in, server_out, server_side=True)
    for _ in range(10):  # a handshake in memory: each side's output is the other's input
        for side in (client, server):
            with contextlib.suppress(ssl.SSLWantReadError):
                side.do_handshake()
        server_in.write(client_out.read())
        client_in.write(server_out.read())
    client.do_handshake()  # raises SSLCertVerificationError if the name or chain were wrong
    certificate = client.getpeercert()
    assert certificate is not None
    assert certificate["subjectAltName"] == (("IP Address", "127.0.0.1"),)


def _template(folder: Path) -> SynapseTemplate:
    """A SynapseTemplate as --generate-config would leave it, without running Synapse."""
    template = SynapseTemplate.__new__(SynapseTemplate)
    template.folder = folder
    template.python = folder / "python"
    template.config = {"macaroon_secret_key": "m", "caches": {}}
    template.log_config = "handlers: {}\n"
    template.signing_key = folder / "shared.signing.key"
    return template


def test_synapse_pair_config_federates_on_loopback_over_tls(tmp_path: Path) -> None:
    tls = FederationTls(
        port=8448,
        certificate_chain=tmp_path / "chain.pem",
        private_key=tmp_path / "key.pem",
        ca_file=tmp_path / "ca.crt",
        peers=("127.0.0.1:8448", "127.0.0.1:8449"),
    )
    folder = tmp_path / "a"
    folder.mkdir()
    database = DatabaseHandle("sqlite", sqlite_path=folder / "homeserver.db")
    server = SynapseServer(folder, database, _template(tmp_path), federation=tls)
    server.prepare()
    config = yaml.safe_load((folder / "homeserver.yaml").read_text())

    assert config["server_name"] == "127.0.0.1:8448"
    plain, secure = config["listeners"]
    assert (plain["port"], plain["tls"], plain["resources"][0]["names"]) == (
        server.port,
        False,
        ["client"],
    )
    assert (secure["port"], secure["tls"], secure["resources"][0]["names"]) == (
        8448,
        True,
        ["client", "federation"],
    )
    assert secure["bind_addresses"] == ["127.0.0.1"]
    assert config["tls_certificate_path"] == str(tmp_path / "chain.pem")
    assert config["tls_private_key_path"] == str(tmp_path / "key.pem")
    assert config["federation_custom_ca_list"] == [str(tmp_path / "ca.crt")]
    assert config["federation_domain_whitelist"] == ["127.0.0.1:8448", "127.0.0.1:8449"]
    assert config["trusted_key_servers"] == []
    blocked = config["ip_range_blacklist"]
    assert "127.0.0.0/8" not in blocked and "::1/128" not in blocked
    assert {"10.0.0.0/8", "192.168.0.0/16", "fc00::/7", "fec0::/10"} <= set(blocked)
    assert config["rc_joins"]["remote"]["per_second"] >= 1_000_000
    # A signing key of its own, in Synapse's format: "ed25519 <version> <unpadded base64 seed>".
    assert config["signing_key_path"] == str(folder / "signing.key")
    algorithm, version, seed = (folder / "signing.key").read_text().split()
    assert algorithm == "ed25519" and version.startswith("a_")
    assert len(seed) == 43 and not seed.endswith("=")


def test_synapse_without_federation_keeps_the_client_listener_only(tmp_path: Path) -> None:
    folder = tmp_path / "plain"
    folder.mkdir()
    database = DatabaseHandle("sqlite", sqlite_path=folder / "homeserver.db")
    template = _template(tmp_path)
    server = SynapseServer(folder, database, template)
    server.prepare()
    config = yaml.safe_load((folder / "homeserver.yaml").read_text())
    assert config["server_name"] == "localhost"
    assert [listener["tls"] for listener in config["listeners"]] == [False]
    assert config["signing_key_path"] == str(template.signing_key)
    assert "federation_domain_whitelist" not in config
