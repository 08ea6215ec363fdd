"""Prometheus metrics: a custom collector that reads the listener's and the store's counters.

Nothing here runs per message except :meth:`LatencyHistogram.observe` (a
bisect and two additions) when metrics are on: the counters themselves are
the listener's :class:`ServerStats` and the store's :class:`StoreStats`,
which exist anyway, and are turned into metric families only when
Prometheus scrapes. Labels are bounded sets chosen by this code (listener
address, ACK code, cause, reason, kind), never message content or control
ids; ACK codes outside HL7 table 0008 are counted as ``other``.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import attrs

if TYPE_CHECKING:
    # Imported when a scrape collects, not with the package: prometheus_client
    # costs an import of its own that plain listeners need not pay.
    from prometheus_client.core import (
        CounterMetricFamily,
        HistogramMetricFamily,
        Metric,
    )

from mllp_trio._hl7 import Outcome, PeerInfo
from mllp_trio._server import AnswerObserver, MLLPServer
from mllp_trio._service._certs import Expiry
from mllp_trio._version import __version__
from mllp_trio.store._base import (
    BATCH_SIZE_BUCKETS,
    COMMIT_SECONDS_BUCKETS,
    JournalStats,
    OutboundStats,
    StoreStats,
)

__all__ = ["ACK_LATENCY_BUCKETS", "LatencyHistogram", "ListenerWatch", "MetricsCollector"]

#: Upper bounds (seconds) of the ACK latency histogram.
ACK_LATENCY_BUCKETS: tuple[float, ...] = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    float("inf"),
)
_ACK_CODES = frozenset({"AA", "AE", "AR", "CA", "CE", "CR", "none"})


class LatencyHistogram:
    """Fixed-bucket histogram updated on the Trio thread (no lock needed)."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: Sequence[float] = ACK_LATENCY_BUCKETS) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * len(self.bounds)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        """Count one observation."""
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value

    @property
    def count(self) -> int:
        """Observations so far."""
        return sum(self.counts)


@attrs.define(eq=False)
class ListenerWatch:
    """One listener under watch: its name (label), the server, its ACK latency.

    Calling it is the listener's ``on_answered`` observer: it records the
    latency and hands the message to the extra observers (the message log).
    """

    name: str
    server: MLLPServer
    latency: LatencyHistogram = attrs.Factory(LatencyHistogram)
    observers: list[AnswerObserver] = attrs.Factory(list)
    # A name given before binding port 0 ("host:0") becomes the bound address.
    _unbound: bool = attrs.field(init=False, default=False)

    def __attrs_post_init__(self) -> None:
        self._unbound = self.name.endswith(":0")

    def __call__(self, peer: PeerInfo, outcome: Outcome, latency: float) -> None:
        """Record one answered message."""
        if self._unbound:
            self.resolve_name()
        self.latency.observe(latency)
        for observer in self.observers:
            observer(peer, outcome, latency)

    def resolve_name(self) -> None:
        """Replace a ``host:0`` name with the address the listener bound."""
        if not self._unbound or not self.server.listeners:
            return
        host, port = self.server.listeners[0].socket.getsockname()[:2]
        self.name = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self._unbound = False
        for observer in self.observers:
            if hasattr(observer, "listener"):
                observer.listener = self.name

    def attach(self) -> None:
        """Make this the server's observer."""
        self.server.on_answered = self

    def buffered_bytes(self) -> int:
        """Bytes of partial frames held by the listener's connections now."""
        budget = getattr(self.server, "budget", None)  # the listener's MemoryBudget
        used = getattr(budget, "used", None)
        if isinstance(used, int):
            return used
        total = 0
        for conn in getattr(self.server, "_connections", ()):
            stream = getattr(conn, "stream", None)
            if stream is not None:
                total += stream.exchange.buffered
        return total

    def budget_limit(self) -> int | None:
        """The listener's memory budget in bytes, ``None`` when unlimited."""
        limit = getattr(getattr(self.server, "budget", None), "limit", None)
        return limit if isinstance(limit, int) else None


def _histogram(
    family: HistogramMetricFamily,
    labels: list[str],
    bounds: Sequence[float],
    counts: Sequence[int],
    total: float,
) -> None:
    cumulative = 0
    buckets: list[tuple[str, float]] = []
    for bound, count in zip(bounds, counts, strict=True):
        cumulative += count
        buckets.append(("+Inf" if bound == float("inf") else repr(float(bound)), cumulative))
    family.add_metric(labels, buckets, total)


def _by_label(
    family: CounterMetricFamily, listener: str, counts: dict[str, int], known: Iterable[str] = ()
) -> CounterMetricFamily:
    for key in known:
        family.add_metric([listener, key], counts.get(key, 0))
    for key, value in sorted(counts.items()):
        if key not in known:
            family.add_metric([listener, key], value)
    return family


class MetricsCollector:
    """A Prometheus collector over listeners, a store and TLS material.

    Register it in a ``prometheus_client.CollectorRegistry`` (or the default
    one) in an application that embeds the listener; ``mllp-trio listen
    --metrics`` serves it. The asynchronous numbers (journal counts, the
    outbound queue) come from :meth:`update_store`, which the HTTP endpoint
    calls before each scrape.

    Args:
        listeners: The listeners to report, each with its name.
        store_stats: Returns the store's group-commit counters (``lambda:
            store.stats``), or ``None`` without a store.
    """

    def __init__(
        self,
        listeners: Sequence[ListenerWatch] = (),
        *,
        store_stats: Callable[[], StoreStats] | None = None,
    ) -> None:
        self.listeners = list(listeners)
        self.store_stats = store_stats
        self.journal: JournalStats | None = None
        self.outbound: OutboundStats | None = None
        self.expiries: list[Expiry] = []
        self.ready: bool | None = None

    def collect(self) -> Iterator[Metric]:
        """Build every metric family from the counters as they are now."""
        from prometheus_client.core import GaugeMetricFamily

        yield from self._listener_metrics()
        yield from self._store_metrics()
        yield from self._tls_metrics()
        info = GaugeMetricFamily("mllp_build_info", "mllp_trio version", labels=["version"])
        info.add_metric([__version__], 1)
        yield info
        if self.ready is not None:
            yield GaugeMetricFamily(
                "mllp_ready", "1 when /readyz last answered ready", value=int(self.ready)
            )

    def _listener_metrics(self) -> Iterator[Metric]:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        def counter(name: str, doc: str, *extra: str) -> CounterMetricFamily:
            return CounterMetricFamily(name, doc, labels=["listener", *extra])

        accepted = counter("mllp_connections_accepted", "Connections accepted")
        active = GaugeMetricFamily(
            "mllp_connections_active", "Open connections", labels=["listener"]
        )
        refused = counter("mllp_connections_refused", "Connections refused", "cause")
        tls = counter("mllp_tls_handshake_failures", "Failed TLS handshakes", "reason")
        received = counter("mllp_messages_received", "Messages received")
        answered = counter("mllp_messages_answered", "Messages answered, by ACK code", "code")
        invalid = counter("mllp_invalid_frames", "Frames rejected by the framing layer")
        protocol = counter("mllp_protocol_errors", "Connections closed for a framing violation")
        timeouts = counter("mllp_timeouts", "Connections closed by a timeout", "kind")
        buffered = GaugeMetricFamily(
            "mllp_buffered_bytes", "Bytes of partial frames held now", labels=["listener"]
        )
        budget = GaugeMetricFamily(
            "mllp_memory_budget_bytes",
            "The limit mllp_buffered_bytes is held to (absent: unlimited)",
            labels=["listener"],
        )
        shed = counter("mllp_connections_shed", "Connections closed to keep within the budget")
        struck = counter("mllp_connections_struck_out", "Connections closed for bad input")
        latency = HistogramMetricFamily(
            "mllp_ack_latency_seconds",
            "From the complete frame to the acknowledgement written",
            labels=["listener"],
        )
        for watch in self.listeners:
            watch.resolve_name()
            name, stats = watch.name, watch.server.stats
            accepted.add_metric([name], stats.accepted)
            active.add_metric([name], stats.active)
            _by_label(
                refused,
                name,
                stats.refused_by_cause,
                ("connection_limit", "peer_limit", "not_allowed"),
            )
            _by_label(tls, name, stats.handshake_failures_by_reason)
            received.add_metric([name], stats.messages)
            codes: dict[str, int] = {}
            for code, count in stats.answered_by_code.items():
                key = code if code in _ACK_CODES else "other"
                codes[key] = codes.get(key, 0) + count
            _by_label(answered, name, codes, ("AA", "AE", "AR"))
            invalid.add_metric([name], stats.invalid_frames)
            protocol.add_metric([name], stats.protocol_errors)
            _by_label(
                timeouts,
                name,
                stats.timeouts_by_kind,
                ("handshake", "idle", "frame", "write", "ack"),
            )
            buffered.add_metric([name], watch.buffered_bytes())
            limit = watch.budget_limit()
            if limit is not None:
                budget.add_metric([name], limit)
            shed.add_metric([name], getattr(stats, "shed_connections", 0))
            struck.add_metric([name], getattr(stats, "struck_out", 0))
            h = watch.latency
            _histogram(latency, [name], h.bounds, h.counts, h.sum)
        yield from (accepted, active, refused, tls, received, answered, invalid, protocol)
        yield from (timeouts, buffered, budget, shed, struck, latency)

    def _store_metrics(self) -> Iterator[Metric]:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        if self.store_stats is not None:
            s = self.store_stats()
            commit = HistogramMetricFamily(
                "mllp_journal_commit_seconds",
                "Journal write transactions, BEGIN to COMMIT with the fsync",
            )
            _histogram(commit, [], COMMIT_SECONDS_BUCKETS, s.commit_seconds, s.commit_seconds_sum)
            group = HistogramMetricFamily(
                "mllp_journal_group_size", "Writes per journal transaction (group commit)"
            )
            _histogram(group, [], BATCH_SIZE_BUCKETS, s.batch_sizes, s.batch_size_sum)
            yield commit
            yield group
            yield CounterMetricFamily(
                "mllp_journal_records",
                "Messages committed to the journal",
                value=s.records_committed,
            )
            yield CounterMetricFamily(
                "mllp_duplicates", "Messages recognised as duplicates", value=s.duplicates
            )
        if self.journal is not None:
            j = self.journal
            entries = GaugeMetricFamily("mllp_journal_entries", "Journal entries", labels=["state"])
            entries.add_metric(["delivered"], j.inbound_delivered)
            entries.add_metric(["undelivered"], j.inbound_undelivered)
            yield entries
            yield GaugeMetricFamily(
                "mllp_journal_size_bytes", "Journal files on disk", value=j.size_bytes
            )
            if j.oldest_undelivered is not None:
                yield GaugeMetricFamily(
                    "mllp_journal_oldest_undelivered_timestamp_seconds",
                    "Arrival of the oldest message not yet delivered",
                    value=j.oldest_undelivered.timestamp(),
                )
            yield GaugeMetricFamily(
                "mllp_outbound_attempts",
                "Failed attempts recorded on outbound messages not yet sent",
                value=j.outbound_attempts,
            )
        if self.outbound is not None:
            o = self.outbound
            queue = GaugeMetricFamily(
                "mllp_outbound_messages", "Outbound queue by state", labels=["state"]
            )
            for state, value in (
                ("pending", o.pending),
                ("in_flight", o.in_flight),
                ("sent", o.delivered),
                ("dead", o.dead),
            ):
                queue.add_metric([state], value)
            yield queue
            yield GaugeMetricFamily(
                "mllp_dead_letters", "Outbound messages given up on", value=o.dead
            )

    def _tls_metrics(self) -> Iterator[Metric]:
        from prometheus_client.core import GaugeMetricFamily

        if not self.expiries:
            return
        family = GaugeMetricFamily(
            "mllp_certificate_expiry_timestamp_seconds",
            "Earliest expiry of the TLS material, by kind (server, ca, crl)",
            labels=["kind"],
        )
        earliest: dict[str, Any] = {}
        for e in self.expiries:
            if e.kind not in earliest or e.not_after < earliest[e.kind]:
                earliest[e.kind] = e.not_after
        for kind, when in sorted(earliest.items()):
            family.add_metric([kind], when.timestamp())
        yield family
