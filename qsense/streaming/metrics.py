"""Prometheus metrics for the estimation daemon, served on ``/metrics``.

Counts live where they happen (receivers, the sequence tracker, drivers,
estimator slots) as plain integers; :class:`DaemonCollector` turns the daemon's
``stats()`` into metric families at scrape time, so there is one source of
truth and nothing to keep in sync.  Timings are ``prometheus_client``
histograms.  Names follow the Prometheus conventions: ``qsense_`` prefix, base
units (seconds, bytes), ``_total`` for counters.

=============================================  =======  ==========================
metric                                         type     labels
=============================================  =======  ==========================
qsense_messages_received_total                 counter  input
qsense_received_bytes_total                    counter  input
qsense_malformed_messages_total                counter  input, reason
qsense_batches_total                           counter  source
qsense_records_total                           counter  source
qsense_sequence_gaps_total                     counter  source
qsense_missing_batches_total                   counter  source
qsense_duplicate_batches_total                 counter  source
qsense_source_restarts_total                   counter  source
qsense_refused_seq_batches_total               counter  source
qsense_refused_identity_batches_total          counter  source
qsense_task_restarts_total                     counter  task
qsense_sources                                 gauge
qsense_refused_new_source_batches_total        counter
qsense_connected_peers                         gauge
qsense_connection_events_total                 counter  input, event
qsense_held_bytes                              gauge
qsense_budget_waits_total                      counter
qsense_last_seq                                gauge    source
qsense_estimator_records                       gauge    estimator
qsense_rejected_batches_total                  counter  estimator, reason
qsense_estimator_update_seconds                histo.   estimator
qsense_estimates_published_total               counter  output
qsense_mqtt_messages_total                     counter  input
qsense_mqtt_events_total                       counter  input
qsense_mqtt_invalid_messages_total             counter  input, reason
qsense_mqtt_dropped_records_total              counter  input
qsense_mqtt_reconnects_total                   counter  client
qsense_mqtt_connected                          gauge    client
qsense_checkpoints_total                       counter
qsense_checkpoint_failures_total               counter
qsense_checkpoint_last_success_timestamp_seconds gauge
qsense_checkpoint_duration_seconds             histo.
qsense_archive_stored_batches_total            counter  (with ``[archive]``)
qsense_archive_duplicate_batches_total         counter
qsense_archive_refused_batches_total           counter
qsense_archive_commits_total                   counter
qsense_archive_sync_failures_total             counter
qsense_archive_problems_total                  counter  reason
qsense_archive_bytes                           gauge
qsense_archive_position                        gauge
qsense_archive_commit_seconds                  gauge
qsense_start_time_seconds                      gauge
=============================================  =======  ==========================

The HTTP endpoint is a few lines of asyncio (:class:`MetricsServer`) instead of
``prometheus_client.start_http_server``, which would start a thread; this way
it lives and dies with the daemon's event loop and port 0 reports its port.

Label cardinality is bounded: per-source series exist for the
:data:`METRIC_SOURCES` sources with the most records; the others are summed
under ``source="_other"`` (so a flood of source names cannot make a scrape
grow without limit, and the number of sources itself is bounded by
``[daemon] max_sources``).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable, Iterator

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

__all__ = ["DaemonMetrics", "DaemonCollector", "MetricsServer", "METRIC_SOURCES", "top_sources"]

#: sources with series of their own on /metrics (the rest are summed under source="_other")
METRIC_SOURCES = 100

log = logging.getLogger(__name__)


def top_sources(sources: dict[str, dict], k: int) -> tuple[dict[str, dict], dict[str, int], int]:
    """The ``k`` sources with the most records, the counters of the others summed, and how many others."""
    if len(sources) <= k:
        return sources, {}, 0
    ranked = sorted(sources, key=lambda n: sources[n].get("records", 0), reverse=True)
    rest: dict[str, int] = {}
    for name in ranked[k:]:
        for key, v in sources[name].items():
            if isinstance(v, (int, float)) and not isinstance(v, bool) and key != "last_seq" and key != "epoch":
                rest[key] = rest.get(key, 0) + v
    return {n: sources[n] for n in ranked[:k]}, rest, len(ranked) - k


class DaemonCollector:
    """A custom collector reading ``stats()`` (the daemon's nested dict) per scrape."""

    def __init__(self, stats: Callable[[], dict]) -> None:
        self._stats = stats

    def describe(self) -> list:
        return []  # dynamic label sets; registration must not call collect() early

    def collect(self) -> Iterator[Any]:
        s = self._stats()

        def counter(name: str, doc: str, labels: list[str], rows: list[tuple[list[str], float]]) -> CounterMetricFamily:
            m = CounterMetricFamily(name, doc, labels=labels)
            for lv, v in rows:
                m.add_metric(lv, v)
            return m

        def gauge(name: str, doc: str, labels: list[str], rows: list[tuple[list[str], float]]) -> GaugeMetricFamily:
            m = GaugeMetricFamily(name, doc, labels=labels)
            for lv, v in rows:
                m.add_metric(lv, v)
            return m

        zin = s.get("inputs", {}).get("zmq", {})
        yield counter("qsense_messages_received", "ZeroMQ messages received (valid or not)", ["input"],
                      [([k], v["messages"]) for k, v in zin.items()])
        yield counter("qsense_received_bytes", "Bytes of ZeroMQ messages received", ["input"],
                      [([k], v["bytes"]) for k, v in zin.items()])
        yield counter("qsense_malformed_messages", "Messages rejected by the wire-format decoder", ["input", "reason"],
                      [([k, r], c) for k, v in zin.items() for r, c in v["malformed"].items()])
        src, rest, n_rest = top_sources(s.get("sources", {}), METRIC_SOURCES)
        for key, name, doc in (
            ("batches", "qsense_batches", "Record batches accepted"),
            ("records", "qsense_records", "Records (snapshots or Bell shots) accepted"),
            ("gaps", "qsense_sequence_gaps", "Sequence gaps detected"),
            ("missing", "qsense_missing_batches", "Batches missing according to sequence numbers"),
            ("duplicates", "qsense_duplicate_batches", "Duplicate or replayed batches dropped"),
            ("restarts", "qsense_source_restarts", "Producer restarts seen (new epoch)"),
            ("refused", "qsense_refused_seq_batches", "Batches refused for moving a source's sequence too far (max_seq_jump)"),
        ):
            rows = [([k], v.get(key, 0)) for k, v in src.items()]
            if n_rest:
                rows.append((["_other"], rest.get(key, 0)))
            yield counter(name, doc, ["source"], rows)
        yield counter("qsense_refused_identity_batches", "Batches refused: a source name used by a key not bound to it",
                      ["source"], [([k], v) for k, v in s.get("refused_identity", {}).items()])
        yield counter("qsense_task_restarts", "Input or driver tasks restarted by their supervisor after dying", ["task"],
                      [([k], v) for k, v in s.get("task_restarts", {}).items()])
        yield gauge("qsense_last_seq", "Last accepted sequence number", ["source"], [([k], v["last_seq"]) for k, v in src.items()])
        lim = s.get("limits", {})
        if lim:
            yield gauge("qsense_sources", "Sources the daemon keeps sequence state for (at most max_sources)", [],
                        [([], lim["sources"])])
            yield counter("qsense_refused_new_source_batches", "Batches refused: a new source beyond max_sources", [],
                          [([], lim["refused_sources"])])
            yield gauge("qsense_connected_peers", "Connected record peers, all ZeroMQ inputs (at most max_peers)", [],
                        [([], lim["peers"])])
            yield gauge("qsense_held_bytes", "Bytes of received batches not yet folded (at most about byte_budget)", [],
                        [([], lim["held_bytes"])])
            yield counter("qsense_budget_waits", "Times the inputs paused because byte_budget was reached", [],
                          [([], lim["budget_waits"])])
        yield counter("qsense_connection_events", "Connection events of the ZeroMQ inputs (accepted, disconnected, "
                      "refused_peers, handshake_failed_auth, handshake_failed_protocol)", ["input", "event"],
                      [([k, e], c) for k, v in zin.items() for e, c in v.get("connections", {}).items()])
        est = s.get("estimators", {})
        yield gauge("qsense_estimator_records", "Records behind each estimator (including restored state)", ["estimator"],
                    [([k], v["count"]) for k, v in est.items()])
        yield counter("qsense_rejected_batches", "Batches an estimator refused", ["estimator", "reason"],
                      [([k, r], c) for k, v in est.items() for r, c in v["rejected"].items()])
        yield counter("qsense_estimates_published", "Estimate messages published", ["output"],
                      [([k], v) for k, v in s.get("published", {}).items()])
        mq = s.get("inputs", {}).get("mqtt", {})
        yield counter("qsense_mqtt_messages", "MQTT detector messages received", ["input"], [([k], v["messages"]) for k, v in mq.items()])
        yield counter("qsense_mqtt_events", "Detection events parsed from MQTT", ["input"], [([k], v["events"]) for k, v in mq.items()])
        yield counter("qsense_mqtt_invalid_messages", "MQTT messages rejected", ["input", "reason"],
                      [([k, r], c) for k, v in mq.items() for r, c in v["invalid"].items()])
        yield counter("qsense_mqtt_dropped_records", "Records dropped because the daemon fell behind", ["input"],
                      [([k], v["dropped_records"]) for k, v in mq.items()])
        clients = s.get("mqtt_clients", {})
        yield counter("qsense_mqtt_reconnects", "MQTT connection failures followed by a retry", ["client"],
                      [([k], v["reconnects"]) for k, v in clients.items()])
        yield gauge("qsense_mqtt_connected", "1 while connected to the broker", ["client"],
                    [([k], 1.0 if v["connected"] else 0.0) for k, v in clients.items()])
        ck = s.get("checkpoint", {})
        if ck:
            yield counter("qsense_checkpoints", "Checkpoints written", [], [([], ck["written"])])
            yield counter("qsense_checkpoint_failures", "Checkpoint writes that failed", [], [([], ck["failures"])])
            yield gauge("qsense_checkpoint_last_success_timestamp_seconds", "Unix time of the last checkpoint", [],
                        [([], ck["last_success"] or 0.0)])
        ar = s.get("archive", {})
        if ar:
            yield counter("qsense_archive_stored_batches", "Batches stored durably in the record archive", [], [([], ar["stored"])])
            yield counter("qsense_archive_duplicate_batches", "Batches the archive already held (acknowledged, not stored)", [],
                          [([], ar["duplicates"])])
            yield counter("qsense_archive_refused_batches", "Batches the archive could not store (not acknowledged)", [],
                          [([], ar["refused"])])
            yield counter("qsense_archive_commits", "Archive commits (fsync, then fold and acknowledge)", [], [([], ar["commits"])])
            yield counter("qsense_archive_sync_failures", "Archive fsyncs that failed", [], [([], ar["sync_failures"])])
            yield counter("qsense_archive_problems", "Damage found in the archive (torn tails, checksums, ...)", ["reason"],
                          [([r], c) for r, c in ar["problems"].items()])
            yield gauge("qsense_archive_bytes", "Bytes the record archive holds", [], [([], ar["stored_bytes"])])
            yield gauge("qsense_archive_position", "Last archive position folded into the estimators", [], [([], ar["folded_pos"])])
            yield gauge("qsense_archive_commit_seconds", "Duration of the last archive commit", [], [([], ar["commit_seconds"])])
        yield gauge("qsense_start_time_seconds", "Unix time the daemon started", [], [([], s.get("start_time", 0.0))])


class DaemonMetrics:
    """The daemon's registry (its own, so several daemons can share a process)."""

    def __init__(self, stats: Callable[[], dict], registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=False)
        self.registry.register(DaemonCollector(stats))
        self.update_seconds = Histogram(
            "qsense_estimator_update_seconds", "Time to fold one batch into an estimator", ["estimator"],
            registry=self.registry, buckets=(1e-4, 3e-4, 1e-3, 3e-3, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0),
        )
        self.checkpoint_seconds = Histogram(
            "qsense_checkpoint_duration_seconds", "Time to write one checkpoint", registry=self.registry,
            buckets=(1e-3, 3e-3, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0),
        )

    def exposition(self) -> bytes:
        """The text format a scrape returns."""
        return generate_latest(self.registry)


class MetricsServer:
    """A minimal asyncio HTTP server answering ``GET /metrics`` (and ``/healthz``)."""

    def __init__(self, metrics: DaemonMetrics, host: str = "127.0.0.1", port: int = 0) -> None:
        self.metrics = metrics
        self.host = host
        self.port = port
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> int:
        """Listen; returns the port (useful with port 0)."""
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("Prometheus metrics on http://%s:%d/metrics", self.host, self.port)
        return self.port

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5.0)
            parts = head.split(b"\r\n", 1)[0].split()
            method, target = (parts[0], parts[1]) if len(parts) >= 2 else (b"", b"")
            path = target.split(b"?", 1)[0]
            if method not in (b"GET", b"HEAD"):
                status, ctype, body = b"405 Method Not Allowed", b"text/plain", b"method not allowed\n"
            elif path == b"/metrics":
                status, ctype, body = b"200 OK", CONTENT_TYPE_LATEST.encode(), self.metrics.exposition()
            elif path in (b"/healthz", b"/"):
                status, ctype, body = b"200 OK", b"text/plain", b"ok\n"
            else:
                status, ctype, body = b"404 Not Found", b"text/plain", b"not found\n"
            writer.write(
                b"HTTP/1.1 " + status + b"\r\nContent-Type: " + ctype + b"\r\nContent-Length: "
                + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + (body if method != b"HEAD" else b"")
            )
            await writer.drain()
        except (asyncio.TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass  # a scraper that went away or sent nonsense: nothing to answer
        finally:
            writer.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
