"""The listener's service options: --metrics, readiness thresholds, retention, log format.

``listen`` takes them as one ``service: ServiceOptions`` (``@service_options``)
and hands the running listener to :meth:`ServiceOptions.monitor`.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any, Final

import attrs
import click
import trio

import mllp_trio
from mllp_trio._cli._options import ParamTypeBase, _option_set, choice
from mllp_trio._cli._store_admin import DURATION, human_duration
from mllp_trio._service import ServiceMonitor, configure_logging, sd_notify

__all__ = ["ServiceOptions", "sd_notify", "service_options"]

_SIZE: Final = re.compile(r"\s*(\d+)\s*(|b|kb|mb|gb|kib|mib|gib)\s*", re.IGNORECASE)
_FACTORS: Final = {
    "": 1,
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
}


class MetricsAddress(ParamTypeBase):
    """``PORT`` (on 127.0.0.1) or ``ADDRESS:PORT`` (``[v6]:PORT`` too)."""

    name = "[ADDRESS:]PORT"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        """Parse into (host, port); a bare port stays on loopback."""
        if isinstance(value, tuple):
            return value
        text = str(value).strip()
        host, sep, port = text.rpartition(":")
        if not sep:
            host = "127.0.0.1"
        if not port.isdigit() or int(port) > 65535 or (sep and not host):
            self.fail(
                f"expected PORT or ADDRESS:PORT (e.g. 9464 or 0.0.0.0:9464), got {text!r}",
                param,
                ctx,
            )
        return host.strip("[]"), int(port)


class Size(ParamTypeBase):
    """A size in bytes: ``500MB``, ``1GiB``, ``1048576``."""

    name = "SIZE"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        """Parse into a number of bytes."""
        if isinstance(value, int):
            return value
        match = _SIZE.fullmatch(str(value))
        if match is None:
            self.fail(f"expected a size such as 100MiB or 1GB, got {value!r}", param, ctx)
        return int(match.group(1)) * _FACTORS[match.group(2).lower()]


@attrs.frozen(kw_only=True)
class ServiceOptions:
    """The listener's service flags."""

    metrics: tuple[str, int] | None
    ready_min_free: int
    cert_warning_days: int
    retention: timedelta | None
    log_format: str
    log_no_control_ids: bool

    def config(self) -> mllp_trio.ServiceConfig:
        """The library's service settings."""
        return mllp_trio.ServiceConfig(
            metrics_host=self.metrics[0] if self.metrics else "127.0.0.1",
            metrics_port=self.metrics[1] if self.metrics else None,
            min_free_bytes=self.ready_min_free,
            cert_warning=timedelta(days=self.cert_warning_days),
            retention=self.retention,
            log_control_ids=not self.log_no_control_ids,
        )

    def setup_logging(self, level: str) -> None:
        """Log to stderr at ``level`` in the chosen format."""
        hide = self.log_no_control_ids
        configure_logging(level, self.log_format.lower(), control_ids=not hide)

    async def monitor(
        self,
        nursery: trio.Nursery,
        server: mllp_trio.MLLPServer,
        name: str,
        store: mllp_trio.store.SQLiteStore | None,
        tls: mllp_trio.ServerTLS | None,
    ) -> ServiceMonitor:
        """Watch ``server`` and start the endpoint and background tasks in ``nursery``."""
        monitor = ServiceMonitor(
            self.config(), store=store, tls=None if tls is None else tls.config
        )
        monitor.watch(server, name)
        listeners = await nursery.start(monitor.run)
        for listener in listeners:
            host, port = listener.socket.getsockname()[:2]
            where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            click.echo(f"metrics and health on http://{where}/metrics, /healthz, /readyz")
        if self.retention is not None and store is not None:
            kept = human_duration(self.retention)
            click.echo(f"retention: delivered messages older than {kept} are pruned hourly")
        return monitor


service_options = _option_set(
    "service",
    lambda **v: ServiceOptions(**v),
    click.option(
        "--metrics",
        type=MetricsAddress(),
        default=None,
        help="serve /metrics, /healthz and /readyz on [ADDRESS:]PORT (default address "
        "127.0.0.1; give 0.0.0.0:PORT to expose it)  [default: off]",
    ),
    click.option(
        "--ready-min-free",
        type=Size(),
        default="100MiB",
        show_default=True,
        help="/readyz fails when the journal's disk has less free space",
    ),
    click.option(
        "--cert-warning-days",
        type=click.IntRange(min=1),
        default=14,
        show_default=True,
        help="warn (log, /readyz) when the certificate, a CA or the CRL expires within this",
    ),
    click.option(
        "--retention",
        type=DURATION,
        default=None,
        help="prune delivered messages older than this, e.g. 30d (never undelivered ones, "
        "never inside the duplicate window)  [default: keep]",
    ),
    click.option(
        "--log-format",
        type=choice("text", "json"),
        default="text",
        show_default=True,
        help="json: one object per line (time, level, logger, message, event fields)",
    ),
    click.option(
        "--log-no-control-ids",
        is_flag=True,
        help="leave MSH-10 out of the per-message line and hide it in every other log line",
    ),
)
