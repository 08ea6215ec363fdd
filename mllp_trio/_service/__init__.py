"""Running a listener as a service: metrics, health endpoint, logs, retention, expiry.

Modules: ``_http`` (the HTTP endpoint on Trio and h11), ``_certs`` (expiry
of the TLS material), ``_health`` (readiness checks), ``_logging`` (the
per-message line and JSON lines), ``_metrics`` (the Prometheus collector),
``_monitor`` (:class:`ServiceMonitor`, which ties them to listeners).
"""

from mllp_trio._service._certs import Expiry, tls_expiries
from mllp_trio._service._health import Readiness
from mllp_trio._service._http import EndpointBindError
from mllp_trio._service._logging import JSONFormatter, MessageLog, configure_logging
from mllp_trio._service._metrics import LatencyHistogram, ListenerWatch, MetricsCollector
from mllp_trio._service._monitor import ServiceConfig, ServiceMonitor, sd_notify

__all__ = [
    "EndpointBindError",
    "Expiry",
    "JSONFormatter",
    "LatencyHistogram",
    "ListenerWatch",
    "MessageLog",
    "MetricsCollector",
    "Readiness",
    "ServiceConfig",
    "ServiceMonitor",
    "configure_logging",
    "sd_notify",
    "tls_expiries",
]
