"""Running a listener as a service: metrics and health endpoint, message log, retention, expiry.

:class:`ServiceMonitor` ties the pieces to one or more listeners and an
optional journal; ``mllp-trio listen`` uses it, and an embedding
application can too (``await nursery.start(monitor.run)`` next to the
listener).
"""

from __future__ import annotations

import logging
import os
import socket
from datetime import UTC, datetime, timedelta
from typing import Any

import attrs
import trio

from mllp_trio._server import MLLPServer
from mllp_trio._service._certs import Expiry, expiring, tls_expiries
from mllp_trio._service._health import (
    Readiness,
    check_certificates,
    check_disk,
    check_listening,
    check_writable,
)
from mllp_trio._service._http import HTTPResponse, serve_http
from mllp_trio._service._logging import MessageLog
from mllp_trio._service._metrics import ListenerWatch, MetricsCollector
from mllp_trio._tls import ServerTLSConfig
from mllp_trio.store._sqlite import SQLiteStore

__all__ = ["ServiceConfig", "ServiceMonitor", "sd_notify"]

log = logging.getLogger("mllp_trio.service")


def _positive(_inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if isinstance(value, timedelta) and value <= timedelta(0):
        raise ValueError(f"{attribute.name} must be positive")


@attrs.frozen(kw_only=True)
class ServiceConfig:
    """Settings of the service side of a listener.

    Attributes:
        metrics_host: Address of the HTTP endpoint. Default ``127.0.0.1``:
            metrics and health stay on the machine unless told otherwise.
        metrics_port: Port of the endpoint (``/metrics``, ``/healthz``,
            ``/readyz``); ``None`` serves none. Default ``None``.
        min_free_bytes: ``/readyz`` fails below this much free space in the
            journal's file system. Default 100 MiB.
        cert_warning: Warn (log and ``/readyz``) when the server
            certificate, a CA or the CRL expires within this. Default 14 days.
        retention: Prune delivered journal entries older than this (never
            inside the duplicate window, never undelivered ones); ``None``
            keeps them. Default ``None``.
        retention_interval: Seconds between two prunes. Default 3600.
        cert_check_interval: Seconds between two expiry checks. Default 3600.
        message_log: One INFO line per answered message. Default True.
        log_control_ids: Put MSH-10 in that line. Default True.
    """

    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.in_(range(65536)))
    )
    min_free_bytes: int = attrs.field(default=100 * 2**20, validator=attrs.validators.ge(0))
    cert_warning: timedelta = attrs.field(default=timedelta(days=14), validator=_positive)
    retention: timedelta | None = attrs.field(default=None, validator=_positive)
    retention_interval: float = attrs.field(default=3600.0, validator=attrs.validators.gt(0))
    cert_check_interval: float = attrs.field(default=3600.0, validator=attrs.validators.gt(0))
    message_log: bool = True
    log_control_ids: bool = True


def sd_notify(state: str) -> bool:
    """Tell systemd (``Type=notify``) about the service state, e.g. ``READY=1``.

    Does nothing outside systemd (no ``NOTIFY_SOCKET``).

    Returns:
        Whether a notification was sent.
    """
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]  # abstract namespace
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendto(state.encode(), address)
    except OSError as exc:
        log.warning("cannot notify systemd (%s)", exc)
        return False
    return True


class ServiceMonitor:
    """Metrics, health, message log, retention and expiry warnings for listeners.

    Args:
        config: The settings.
        store: The journal, for its counters, ``/readyz`` and retention.
        tls: The listener's TLS settings, for expiry warnings.
    """

    def __init__(
        self,
        config: ServiceConfig | None = None,
        *,
        store: SQLiteStore | None = None,
        tls: ServerTLSConfig | None = None,
    ) -> None:
        self.config = config if config is not None else ServiceConfig()
        self.store = store
        self.tls = tls
        self.collector = MetricsCollector(
            store_stats=None if store is None else (lambda: store.stats)
        )
        from prometheus_client import CollectorRegistry  # not paid by plain listeners

        #: The registry ``/metrics`` serves; register more collectors in it at will.
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self.collector)
        self.http_listeners: list[trio.SocketListener] = []
        self.expiries: list[Expiry] = []
        self._refresh_lock = trio.Lock()

    @property
    def servers(self) -> list[MLLPServer]:
        """The watched listeners."""
        return [watch.server for watch in self.collector.listeners]

    def watch(self, server: MLLPServer, name: str) -> ListenerWatch:
        """Observe a listener: its counters, ACK latency and (if on) the message log.

        Args:
            server: The listener.
            name: Its label in metrics and logs, e.g. its address.
        """
        entry = ListenerWatch(name, server)
        if self.config.message_log:
            entry.observers.append(MessageLog(name, control_ids=self.config.log_control_ids))
        entry.attach()
        self.collector.listeners.append(entry)
        return entry

    # -- checks ---------------------------------------------------------------------

    def read_expiries(self) -> list[Expiry]:
        """Re-read the TLS files' expiry times; log a warning for those expiring soon."""
        if self.tls is None:
            return []
        try:
            self.expiries = tls_expiries(self.tls)
        except (OSError, ValueError) as exc:
            log.error("cannot read the TLS files' expiry times: %s", exc)
            return self.expiries
        self.collector.expiries = self.expiries
        now = datetime.now(UTC)
        window = self.config.cert_warning.total_seconds()
        for e in expiring(self.expiries, now, window):
            level = logging.ERROR if e.not_after <= now else logging.WARNING
            log.log(
                level, "%s: %s", "expired" if e.not_after <= now else "expiring soon", e.describe()
            )
        return self.expiries

    async def readiness(self) -> Readiness:
        """Check everything ``/readyz`` checks, with a reason for each failure."""
        reasons: list[str] = []
        listening = check_listening(self.servers)
        if listening is not None:
            reasons.append(listening)
        if self.store is not None:
            directory = self.store.path.parent
            for problem in (
                await trio.to_thread.run_sync(check_writable, directory),
                check_disk(directory, self.config.min_free_bytes),
            ):
                if problem is not None:
                    reasons.append(problem)
        reasons.extend(
            check_certificates(
                self.expiries, datetime.now(UTC), self.config.cert_warning.total_seconds()
            )
        )
        result = Readiness(tuple(reasons))
        self.collector.ready = result.ready
        return result

    async def refresh(self) -> None:
        """Read the journal counts and the outbound queue for the next scrape."""
        if self.store is None:
            return
        async with self._refresh_lock:
            try:
                self.collector.journal = await self.store.journal_stats()
                self.collector.outbound = await self.store.outbound_stats()
            except Exception as exc:  # a failing store must not fail the scrape
                log.warning("journal counts unavailable for the metrics: %s", exc)

    # -- the endpoint ---------------------------------------------------------------

    async def handle(self, method: str, path: str) -> HTTPResponse:
        """Answer ``/metrics``, ``/healthz`` and ``/readyz``."""
        if path == "/healthz":
            return HTTPResponse(200, b"ok\n")
        if path == "/readyz":
            readiness = await self.readiness()
            if readiness.ready:
                return HTTPResponse(200, b"ready\n")
            body = "not ready:\n" + "".join(f"- {r}\n" for r in readiness.reasons)
            return HTTPResponse(503, body.encode())
        if path == "/metrics":
            from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

            await self.refresh()
            return HTTPResponse(200, generate_latest(self.registry), CONTENT_TYPE_LATEST)
        return HTTPResponse(404, b"not found: try /metrics, /healthz or /readyz\n")

    # -- background work ------------------------------------------------------------

    async def run(
        self, *, task_status: trio.TaskStatus[list[trio.SocketListener]] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Serve the endpoint and run retention and expiry checks until cancelled.

        Reports the endpoint's listeners (an empty list without
        ``metrics_port``) once it listens.
        """
        async with trio.open_nursery() as nursery:
            self.read_expiries()
            if self.config.metrics_port is not None:
                self.http_listeners = await nursery.start(
                    lambda task_status: serve_http(
                        self.handle,
                        self.config.metrics_port or 0,
                        host=self.config.metrics_host,
                        task_status=task_status,
                    )
                )
            if self.tls is not None:
                nursery.start_soon(self._expiry_loop)
            if self.store is not None and self.config.retention is not None:
                nursery.start_soon(self._retention_loop, self.store, self.config.retention)
            task_status.started(self.http_listeners)

    async def _expiry_loop(self) -> None:
        while True:
            await trio.sleep(self.config.cert_check_interval)
            self.read_expiries()

    async def _retention_loop(self, store: SQLiteStore, retention: timedelta) -> None:
        while True:
            await self.prune(store, retention)
            await trio.sleep(self.config.retention_interval)

    @staticmethod
    async def prune(store: SQLiteStore, retention: timedelta) -> int:
        """One retention pass; failures are logged, not raised (the next pass retries)."""
        try:
            removed = await store.prune(older_than=retention)
        except Exception as exc:
            log.error("retention: prune failed, retrying next time: %s", exc)
            return 0
        if removed:
            log.info("retention: pruned %d delivered message(s) older than %s", removed, retention)
        return removed
