"""Prometheus metrics for operators, on a listener of their own (config ``metrics``).

Off by default, and then this module is never imported: prometheus-client
costs ~1.7 MB of resident memory and ~170 ms of start-up (measured on this
machine), and the idle figure is a benchmark one (docs/performance.md).

When on, ``GET /metrics`` on ``metrics.listen_host:listen_port`` (loopback by
default; never the client port, where anyone could read it) serves the text
exposition format from this app's own registry (not the process-global one,
so that every app, test apps included, has its own). What it holds:

* per endpoint: a request-latency histogram labelled by method, the route's
  path template (``/_matrix/client/v3/rooms/{roomId}/send/{eventType}/{txnId}``,
  never the raw path: one series per endpoint, not per room) and status class;
  requests in flight;
* event persistence: events persisted and the persist latency, local
  (created here) against federated (received from other servers);
* /sync: long-polls woken by the notifier, long-polls waiting;
* the database: connections in use / open / allowed, and for SQLite the
  writes queued for the single writer and their total wait;
* the federation sender's queues: destinations, PDUs and EDUs waiting,
  destinations backing off;
* the process (CPU, RSS, open files: prometheus-client's standard collector).

Hot paths pay a dict lookup and a histogram observation per request (the
labelled child is cached per method, route and status class) and two counter
updates per persist; the gauges are read only when scraped.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING

from aiohttp import web
from aiohttp.typedefs import Middleware
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ranvier.api.http import HOMESERVER, Handler
from ranvier.config import MetricsConfig

if TYPE_CHECKING:
    from ranvier.homeserver import Homeserver

logger = logging.getLogger(__name__)

#: Request latencies: from a cached /versions (well under a millisecond) to a
#: /sync long-poll that times out (30 s is a common client timeout).
REQUEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)  # fmt: skip
#: Persist latencies: one transaction, from a fraction of a millisecond to a
#: large federated batch.
PERSIST_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)  # fmt: skip

#: What generate_latest writes: the classic text format every Prometheus reads
#: (prometheus-client's own server sends this header; its CONTENT_TYPE_LATEST
#: says 1.0.0 in recent releases, which older scrapers do not know).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: The label of requests no route matched (unknown paths, wrong methods): one
#: series for all of them, so scanners cannot grow the label set.
UNMATCHED_ROUTE = "unmatched"
#: Methods the spec uses; any other (a client may send any token) is "other".
KNOWN_METHODS = frozenset({"GET", "PUT", "POST", "DELETE", "OPTIONS", "HEAD", "PATCH"})
#: ``status // 100`` → label; 499 (client gone, see http_layer_middleware) is 4xx.
STATUS_CLASSES = ("0xx", "1xx", "2xx", "3xx", "4xx", "5xx")
ORIGINS = ("local", "federated")


class ServerMetrics:
    """One app's registry and the metrics its middleware and stores update."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.request_seconds = Histogram(
            "ranvier_http_request_duration_seconds",
            "Time to answer a request, by method, route template and status class.",
            ("method", "route", "status"),
            buckets=REQUEST_BUCKETS,
            registry=self.registry,
        )
        self.requests_in_flight = 0
        self._request_children: dict[tuple[str, str, int], Histogram] = {}
        events = Counter(
            "ranvier_events_persisted",
            "Events written to the database, created here (local) or received (federated).",
            ("origin",),
            registry=self.registry,
        )
        persist = Histogram(
            "ranvier_event_persist_duration_seconds",
            "Time to persist one batch of events (one transaction, lock wait included).",
            ("origin",),
            buckets=PERSIST_BUCKETS,
            registry=self.registry,
        )
        # Children made up front: both series exist (at 0) from the first scrape.
        self._persist_children = {
            origin: (events.labels(origin), persist.labels(origin)) for origin in ORIGINS
        }
        self.homeserver: Homeserver | None = None
        self.registry.register(_ServerCollector(self))
        ProcessCollector(registry=self.registry)

    def watch(self, hs: Homeserver) -> None:
        """Follow ``hs`` (once it is built): its stores report persists here."""
        self.homeserver = hs
        hs.rooms.events.on_persisted = self.events_persisted

    def events_persisted(self, origin: str, count: int, seconds: float) -> None:
        counter, histogram = self._persist_children[origin]
        counter.inc(count)
        histogram.observe(seconds)

    def request_histogram(self, method: str, route: str, status: int) -> Histogram:
        """The labelled child for one (method, route, status class), made once."""
        status_class = min(max(status // 100, 0), 5)
        key = (method, route, status_class)
        child = self._request_children.get(key)
        if child is None:
            label = method if method in KNOWN_METHODS else "other"
            child = self.request_seconds.labels(label, route, STATUS_CLASSES[status_class])
            self._request_children[key] = child
        return child

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class _ServerCollector(Collector):
    """Gauges and counters read from the running server at scrape time."""

    def __init__(self, metrics: ServerMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        yield _gauge(
            "ranvier_http_requests_in_flight",
            "Requests being answered now (long-polls included).",
            self.metrics.requests_in_flight,
        )
        hs = self.metrics.homeserver
        if hs is None:
            return
        yield _counter(
            "ranvier_sync_wakeups",
            "Waiting /sync long-polls woken because something changed for their user.",
            hs.notifier.wakeups,
        )
        yield _gauge(
            "ranvier_sync_long_polls_waiting",
            "/sync long-polls waiting for a change now.",
            hs.notifier.waiting(),
        )
        yield from _database_metrics(hs)
        yield from _federation_sender_metrics(hs)


def _database_metrics(hs: Homeserver) -> Iterator[Metric]:
    usage = hs.database.pool_usage()
    engine = hs.database.engine
    for name, documentation, value in (
        ("in_use", "Database connections in use (SQLite: the single writer).", usage.in_use),
        ("open", "Database connections open.", usage.size),
        ("max", "Database connections allowed.", usage.max_size),
    ):
        yield _gauge(f"ranvier_db_connections_{name}", documentation, value, engine=engine)
    if usage.writers_waiting is not None:
        yield _gauge(
            "ranvier_db_writers_waiting",
            "SQLite: writes and transactions queued for the single writer now.",
            usage.writers_waiting,
        )
    if usage.writer_wait_seconds is not None:
        yield _counter(
            "ranvier_db_writer_wait_seconds",
            "SQLite: total time writes and transactions waited for the single writer.",
            usage.writer_wait_seconds,
        )


def _federation_sender_metrics(hs: Homeserver) -> Iterator[Metric]:
    if hs.federation_sender is None:
        return
    sizes = hs.federation_sender.queue_sizes()
    for name, documentation, value in (
        ("destinations", "Servers the federation sender has a queue for.", sizes.destinations),
        ("pending_pdus", "Events waiting to be sent to other servers.", sizes.pdus),
        ("pending_edus", "EDUs waiting in memory to be sent to other servers.", sizes.edus),
        ("destinations_backing_off", "Servers retried later after failures.", sizes.backing_off),
    ):
        yield _gauge(f"ranvier_federation_sender_{name}", documentation, value)


def _gauge(name: str, documentation: str, value: float, **labels: str) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, documentation, labels=list(labels))
    family.add_metric(list(labels.values()), value)
    return family


def _counter(name: str, documentation: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, documentation, value=value)


# --- the client-facing app: the middleware ---------------------------------------------


METRICS = web.AppKey("metrics", ServerMetrics)


def _route_template(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return UNMATCHED_ROUTE if resource is None else resource.canonical


def request_metrics_middleware(metrics: ServerMetrics) -> Middleware:
    """Latency per (method, route template, status class) and requests in flight.

    Outermost, so that the status is the one the client gets (errors turned
    into Matrix errors below it) and the time covers every middleware.
    """

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        metrics.requests_in_flight += 1
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:  # redirects pass through the error middleware
            status = exc.status
            raise
        except BaseException:
            status = 499  # the client went away (http_layer_middleware's convention)
            raise
        finally:
            metrics.requests_in_flight -= 1
            metrics.request_histogram(request.method, _route_template(request), status).observe(
                time.perf_counter() - started
            )

    return middleware


# --- the metrics listener ------------------------------------------------------------------


#: ``(host, port)`` the metrics listener is bound to, once the app has started.
METRICS_ADDRESS: web.AppKey[tuple[str, int]] = web.AppKey("metrics_address")


def metrics_app(metrics: ServerMetrics) -> web.Application:
    """The listener's app: ``GET /metrics`` and nothing else."""

    async def scrape(request: web.Request) -> web.Response:
        response = web.Response(body=metrics.exposition())
        response.headers["Content-Type"] = CONTENT_TYPE
        return response

    app = web.Application()
    app.router.add_get("/metrics", scrape)
    return app


async def _start_site(runner: web.AppRunner, config: MetricsConfig) -> None:
    """Bind the listener; a failure names it (the caller logs the client address)."""
    try:
        await web.TCPSite(runner, config.listen_host, config.listen_port).start()
    except OSError as exc:
        where = f"{config.listen_host}:{config.listen_port}"
        raise OSError(exc.errno, f"the metrics listener on {where}: {exc.strerror}") from exc


def install_metrics(app: web.Application, config: MetricsConfig) -> ServerMetrics:
    """Instrument ``app`` and serve its metrics on their own listener while it runs.

    Call after the homeserver's start-up hook is added: the listener follows
    the homeserver that hook builds.
    """
    metrics = ServerMetrics()
    app[METRICS] = metrics
    app.middlewares.insert(0, request_metrics_middleware(metrics))

    async def listener(app: web.Application) -> AsyncIterator[None]:
        metrics.watch(app[HOMESERVER])
        runner = web.AppRunner(metrics_app(metrics), access_log=None)
        await runner.setup()
        try:
            await _start_site(runner, config)
            host, port, *_ = runner.addresses[0]
            app[METRICS_ADDRESS] = (host, port)
            logger.info("Metrics on http://%s:%d/metrics", host, port)
            yield
        finally:
            await runner.cleanup()

    app.cleanup_ctx.append(listener)
    return metrics
