"""The operator's Prometheus /metrics (config ``metrics``, ranvier/api/metrics.py).

Off by default: no listener, no route on the client port. On: a listener of
its own whose scrape shows per-endpoint latency by route template, events
persisted (local and federated), /sync wake-ups and long-polls, database pool
use and the federation sender's queues, on both engines.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import pytest
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

from ranvier.api.http import HOMESERVER
from ranvier.api.metrics import METRICS, METRICS_ADDRESS
from ranvier.app import build_app
from ranvier.config import parse_config
from ranvier.core.signing import SigningKey
from tests.api.conftest import Clock, MakeClient, with_server_name
from tests.api.federation_api_support import FED, client_in_remote_room, signed_request, transaction
from tests.api.rooms_support import (
    ROOMS_CONFIG,
    V3,
    Client,
    create_room,
    hs_of,
    make_user,
    send,
)
from tests.api.sync_support import sync
from tests.conftest import prepare_sqlite
from tests.federation_dag import CREATOR

SEND_ROUTE = "/_matrix/client/v3/rooms/{roomId}/send/{eventType}/{txnId}"
ON = {"metrics": {"enabled": True, "listen_port": 0}}

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
MakeMetricsClient = Callable[..., Awaitable[Client]]


@pytest.fixture
def make_metrics_client(
    aiohttp_client: Any, tmp_path: Path, signing_key: SigningKey, clock: Clock, server_name: str
) -> MakeMetricsClient:
    """``await make_metrics_client(database=None, metrics=ON["metrics"])``."""

    async def make(
        database: str | None = None, metrics: dict[str, Any] | None = ON["metrics"]
    ) -> Client:
        raw: dict[str, Any] = dict(ROOMS_CONFIG)
        if database is not None:
            raw["database"] = database
        if metrics is not None:
            raw["metrics"] = metrics
        config = prepare_sqlite(parse_config(with_server_name(raw, server_name), tmp_path, env={}))
        app = build_app(config, signing_key=signing_key, clock_ms=clock)
        client: TestClient[Any, Any] = await aiohttp_client(app)
        return client

    return make


async def scrape_text(client: Client, path: str = "/metrics") -> tuple[int, str, str]:
    host, port = client.app[METRICS_ADDRESS]
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://{host}:{port}{path}") as response,
    ):
        return response.status, response.headers.get("Content-Type", ""), await response.text()


async def scrape(client: Client) -> Samples:
    """Every sample of a scrape: ``(name, sorted labels) → value``."""
    status, _, text = await scrape_text(client)
    assert status == 200, text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def labels(**pairs: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(pairs.items()))


def listening_ports() -> set[int]:
    return {
        conn.laddr.port
        for conn in psutil.Process().net_connections(kind="tcp")
        if conn.status == psutil.CONN_LISTEN
    }


# --- off by default ------------------------------------------------------------------------


async def test_off_by_default_nothing_listens_and_the_client_port_has_no_metrics_route(
    make_metrics_client: MakeMetricsClient,
) -> None:
    already = listening_ports()  # other tests' servers in this process, if any
    client = await make_metrics_client(metrics=None)
    assert METRICS not in client.app
    assert METRICS_ADDRESS not in client.app
    assert listening_ports() - already == {client.port}
    response = await client.get("/metrics")
    assert response.status == 404
    assert (await response.json())["errcode"] == "M_UNRECOGNIZED"


async def test_on_it_listens_on_its_own_port_never_on_the_client_port(
    make_metrics_client: MakeMetricsClient,
) -> None:
    already = listening_ports()
    client = await make_metrics_client()
    host, port = client.app[METRICS_ADDRESS]
    assert host == "127.0.0.1"
    assert port != client.port
    assert listening_ports() - already == {client.port, port}
    response = await client.get("/metrics")
    assert response.status == 404
    assert (await response.json())["errcode"] == "M_UNRECOGNIZED"
    status, content_type, text = await scrape_text(client)
    assert status == 200
    assert content_type.startswith("text/plain; version=0.0.4")
    assert "# TYPE ranvier_http_request_duration_seconds histogram" in text
    assert (await scrape_text(client, "/other"))[0] == 404


async def test_the_listener_stops_with_the_app(make_metrics_client: MakeMetricsClient) -> None:
    client = await make_metrics_client()
    _, port = client.app[METRICS_ADDRESS]
    await client.close()
    assert port not in listening_ports()


# --- requests -------------------------------------------------------------------------------


async def test_request_latency_is_labelled_by_route_template_not_raw_path(
    make_metrics_client: MakeMetricsClient,
) -> None:
    client = await make_metrics_client()
    alice = await make_user(client, "alice")
    rooms = [await create_room(client, alice), await create_room(client, alice)]
    for index, room_id in enumerate(rooms):
        status, _ = await send(
            client, alice, room_id, {"msgtype": "m.text", "body": "hi"}, f"t{index}"
        )
        assert status == 200
    assert (await client.get("/_matrix/client/versions")).status == 200
    assert (await client.get("/no/such/path/abc")).status == 404
    assert (await client.request("PROPFIND", "/no/such/dav")).status == 404

    samples = await scrape(client)
    count = "ranvier_http_request_duration_seconds_count"
    # One series for the two rooms: the template, never a room ID.
    assert samples[(count, labels(method="PUT", route=SEND_ROUTE, status="2xx"))] == 2
    assert (
        samples[(count, labels(method="GET", route="/_matrix/client/versions", status="2xx"))] == 1
    )
    assert samples[(count, labels(method="GET", route="unmatched", status="4xx"))] == 1
    assert samples[(count, labels(method="other", route="unmatched", status="4xx"))] == 1
    assert not [key for key in samples if any("!" in value for _, value in key[1])]
    # The PUT's buckets are cumulative and end at +Inf with the count.
    bucket = "ranvier_http_request_duration_seconds_bucket"
    put_inf = labels(method="PUT", route=SEND_ROUTE, status="2xx", le="+Inf")
    assert samples[(bucket, put_inf)] == 2
    assert samples[("ranvier_http_requests_in_flight", ())] == 0


async def test_errors_are_counted_by_status_class(make_metrics_client: MakeMetricsClient) -> None:
    client = await make_metrics_client()
    response = await client.put(f"{V3}/rooms/!nope:localhost/send/m.room.message/t1", json={})
    assert response.status == 401  # no access token
    samples = await scrape(client)
    key = labels(method="PUT", route=SEND_ROUTE, status="4xx")
    assert samples[("ranvier_http_request_duration_seconds_count", key)] == 1


async def test_requests_in_flight_counts_a_waiting_long_poll(
    make_metrics_client: MakeMetricsClient,
) -> None:
    client = await make_metrics_client()
    alice = await make_user(client, "alice")
    since = (await sync(client, alice))["next_batch"]
    poll = asyncio.create_task(sync(client, alice, since=since, timeout=30_000))
    try:
        await _until(lambda: hs_of(client).notifier.waiting() == 1)
        samples = await scrape(client)
        assert samples[("ranvier_http_requests_in_flight", ())] == 1
        assert samples[("ranvier_sync_long_polls_waiting", ())] == 1
    finally:
        poll.cancel()


# --- events and /sync, on both engines --------------------------------------------------------


async def test_events_persisted_counter_and_latency_follow_a_send(
    make_metrics_client: MakeMetricsClient, migrated_dsn: str
) -> None:
    client = await make_metrics_client(migrated_dsn)
    alice = await make_user(client, "alice")
    room_id = await create_room(client, alice)
    local = labels(origin="local")
    before = await scrape(client)
    created = before[("ranvier_events_persisted_total", local)]
    assert created >= 5  # create, member, power levels, join rules, history visibility
    assert before[("ranvier_events_persisted_total", labels(origin="federated"))] == 0

    status, _ = await send(client, alice, room_id, {"msgtype": "m.text", "body": "hi"}, "t1")
    assert status == 200
    after = await scrape(client)
    assert after[("ranvier_events_persisted_total", local)] == created + 1
    persists = "ranvier_event_persist_duration_seconds_count"
    assert after[(persists, local)] == before[(persists, local)] + 1
    assert after[("ranvier_event_persist_duration_seconds_sum", local)] > 0


async def test_events_received_over_federation_count_as_federated(
    make_client: MakeClient, migrated_dsn: str
) -> None:
    client, room = await client_in_remote_room(
        lambda raw: make_client({**raw, **ON, "database": migrated_dsn})
    )
    federated = labels(origin="federated")
    before = await scrape(client)
    assert before[("ranvier_events_persisted_total", federated)] >= 1  # the room's join
    hello = room.dag.event(
        "m.room.message",
        CREATOR,
        {"msgtype": "m.text", "body": "hello"},
        [room.alice_join],
        [room.create, room.creator_join, room.power],
    )
    status, body = await signed_request(
        client, "PUT", f"{FED}/v1/send/t1", transaction(dict(hello.pdu))
    )
    assert (status, body) == (200, {"pdus": {hello.event_id: {}}})

    after = await scrape(client)
    assert after[("ranvier_events_persisted_total", federated)] == (
        before[("ranvier_events_persisted_total", federated)] + 1
    )
    persists = "ranvier_event_persist_duration_seconds_count"
    assert after[(persists, federated)] == before[(persists, federated)] + 1
    local = labels(origin="local")
    assert (
        after[("ranvier_events_persisted_total", local)]
        == (before[("ranvier_events_persisted_total", local)])
    )


async def test_a_message_waking_a_long_poll_counts_one_wakeup(
    make_metrics_client: MakeMetricsClient, migrated_dsn: str
) -> None:
    client = await make_metrics_client(migrated_dsn)
    alice = await make_user(client, "alice")
    room_id = await create_room(client, alice)
    since = (await sync(client, alice))["next_batch"]
    before = await scrape(client)
    assert before[("ranvier_sync_long_polls_waiting", ())] == 0

    poll = asyncio.create_task(sync(client, alice, since=since, timeout=30_000))
    await _until(lambda: hs_of(client).notifier.waiting() == 1)
    status, _ = await send(client, alice, room_id, {"msgtype": "m.text", "body": "wake"}, "t1")
    assert status == 200
    body = await asyncio.wait_for(poll, 10)
    timeline = body["rooms"]["join"][room_id]["timeline"]["events"]
    assert [event["content"].get("body") for event in timeline] == ["wake"]

    after = await scrape(client)
    assert (
        after[("ranvier_sync_wakeups_total", ())] == before[("ranvier_sync_wakeups_total", ())] + 1
    )
    assert after[("ranvier_sync_long_polls_waiting", ())] == 0


async def test_database_pool_use_is_reported_for_the_engine(
    make_metrics_client: MakeMetricsClient, migrated_dsn: str
) -> None:
    client = await make_metrics_client(migrated_dsn)
    samples = await scrape(client)
    engine = hs_of(client).database.engine
    on_engine = labels(engine=engine)
    in_use = samples[("ranvier_db_connections_in_use", on_engine)]
    size = samples[("ranvier_db_connections_open", on_engine)]
    if engine == "sqlite":
        assert (in_use, size, samples[("ranvier_db_connections_max", on_engine)]) == (0, 1, 1)
        assert samples[("ranvier_db_writers_waiting", ())] == 0
        assert samples[("ranvier_db_writer_wait_seconds_total", ())] >= 0
    else:
        assert samples[("ranvier_db_connections_max", on_engine)] == 10  # the DSN's default
        assert 0 <= in_use <= size <= 10
        assert ("ranvier_db_writers_waiting", ()) not in samples
    assert samples[("ranvier_federation_sender_destinations", ())] == 0
    assert samples[("ranvier_federation_sender_pending_pdus", ())] == 0


async def test_connections_in_use_while_a_transaction_is_open(
    make_metrics_client: MakeMetricsClient, migrated_dsn: str
) -> None:
    client = await make_metrics_client(migrated_dsn)
    database = hs_of(client).database
    on_engine = labels(engine=database.engine)
    idle = (await scrape(client))[("ranvier_db_connections_in_use", on_engine)]
    async with database.transaction():
        busy = (await scrape(client))[("ranvier_db_connections_in_use", on_engine)]
    assert busy == idle + 1


async def test_sqlite_writes_queued_behind_a_transaction_are_counted_with_their_wait(
    make_metrics_client: MakeMetricsClient,
) -> None:
    client = await make_metrics_client()
    database = client.app[HOMESERVER].database
    assert database.engine == "sqlite"
    release = asyncio.Event()

    async def hold_the_writer() -> None:
        async with database.transaction() as txn:
            await txn.execute("UPDATE stream_positions SET position = position")
            await release.wait()

    holder = asyncio.create_task(hold_the_writer())
    await _until(lambda: database.pool_usage().in_use == 1)
    queued = asyncio.create_task(
        database.execute("UPDATE stream_positions SET position = position")
    )
    await _until(lambda: database.pool_usage().writers_waiting == 1)
    samples = await scrape(client)
    assert samples[("ranvier_db_writers_waiting", ())] == 1
    assert samples[("ranvier_db_connections_in_use", labels(engine="sqlite"))] == 1
    await asyncio.sleep(0.05)
    release.set()
    await holder
    await queued
    samples = await scrape(client)
    assert samples[("ranvier_db_writers_waiting", ())] == 0
    assert samples[("ranvier_db_writer_wait_seconds_total", ())] >= 0.05


async def _until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)
