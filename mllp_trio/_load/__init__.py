"""The load generator behind ``mllp-trio bench`` and the benchmark harness's client.

Layer 3: Trio, sockets and TLS, on top of the sans-IO framing
(:mod:`mllp_trio.proto`). The modules, lowest first:

* ``_histogram``: :class:`LatencyHistogram`, bounded memory;
* ``_messages``: :class:`Template` (MSH-10 replaced per send), generated messages;
* ``_transport``: connections read with ``recv_into`` into a reused buffer;
* ``_session``: one exchange per message, every reply judged (:func:`judge_ack`);
* ``_runner``: closed and open models (:func:`run_load`);
* ``_report``: the text table and the latency chart.

Import from this package, not from the modules.
"""

from mllp_trio._load._histogram import LatencyHistogram
from mllp_trio._load._messages import (
    ControlIds,
    Template,
    TemplateError,
    generate_messages,
    make_templates,
)
from mllp_trio._load._report import ChartUnavailable, format_table, write_chart
from mllp_trio._load._runner import PERCENTILES, LoadConfig, LoadResult, run_load
from mllp_trio._load._session import (
    ACK_CODES,
    BAD_FRAMING,
    CONNECTION_LOST,
    NAK,
    NOT_AN_ACK,
    OK_CODES,
    WRONG_CONTROL_ID,
    judge_ack,
)
from mllp_trio._load._transport import (
    Connector,
    SocketTransport,
    StreamTransport,
    TLSHandshakeFailed,
    Transport,
    tcp_connector,
)

__all__ = [
    "ACK_CODES",
    "BAD_FRAMING",
    "CONNECTION_LOST",
    "NAK",
    "NOT_AN_ACK",
    "OK_CODES",
    "PERCENTILES",
    "WRONG_CONTROL_ID",
    "ChartUnavailable",
    "Connector",
    "ControlIds",
    "LatencyHistogram",
    "LoadConfig",
    "LoadResult",
    "SocketTransport",
    "StreamTransport",
    "TLSHandshakeFailed",
    "Template",
    "TemplateError",
    "Transport",
    "format_table",
    "generate_messages",
    "judge_ack",
    "make_templates",
    "run_load",
    "tcp_connector",
    "write_chart",
]
