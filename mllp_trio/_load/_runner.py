"""Closed and open load models over N connections, with a warm-up and per-kind error counts.

Closed model: each connection sends its next message as soon as the reply
to the previous one has been judged; latency is measured from the send.

Open model: messages are due at a constant rate, message ``i`` at
``start + i / rate``, whatever the peer does. A free connection takes the
next due message, waits for its due time if it is early, and sends it; its
latency is measured from the due time, not from the send, so a peer that
stalls shows every message that waited behind the stall (no coordinated
omission). Messages still waiting when the run ends (the peer, or too few
connections, could not keep up) are counted as ``not_sent``.

Every reply is judged (:func:`~mllp_trio._load._session.judge_ack`); every
message has exactly one outcome, and every connection failure is counted.
Nothing is dropped silently.
"""

from __future__ import annotations

import contextlib
import math
import resource
import ssl
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any, Final

import attrs
import trio

from mllp_trio._load._histogram import LatencyHistogram
from mllp_trio._load._messages import ControlIds, Template
from mllp_trio._load._session import OK_CODES, RECONNECT, Session, new_session
from mllp_trio._load._transport import Connector, TLSHandshakeFailed
from mllp_trio.proto import FramingConfig

__all__ = ["LoadConfig", "LoadResult", "run_load"]

#: Outcome and error kinds the runner adds to those of the session.
TIMEOUT: Final = "timeout"
CONNECT: Final = "connect"
CONNECT_TIMEOUT: Final = "connect_timeout"
TLS: Final = "tls_handshake"
NOT_SENT: Final = "not_sent"
#: The percentiles every result reports.
PERCENTILES: Final = (0.5, 0.9, 0.99, 0.999)


def _positive(_inst: object, attr: attrs.Attribute[Any], value: float | None) -> None:
    if value is not None and not value > 0:
        raise ValueError(f"{attr.name} must be more than 0, got {value!r}")


def _not_negative(_inst: object, attr: attrs.Attribute[Any], value: float) -> None:
    if not value >= 0:
        raise ValueError(f"{attr.name} must be 0 or more, got {value!r}")


@attrs.frozen(kw_only=True)
class LoadConfig:
    """How a load run sends.

    Attributes:
        connections: Connections kept open, each with at most one message in
            flight (default 8).
        rate: Open model: messages per second over all connections. ``None``
            (default): closed model.
        duration: Seconds measured after the warm-up (default 10). ``None``:
            until ``count`` messages.
        count: Messages measured after the warm-up; the run stops at
            whichever of ``duration`` and ``count`` comes first (default
            ``None``: no limit).
        warmup: Seconds sent before the measurement starts, and at least
            until every connection has had its first reply (or failed): their
            messages are not in the results (default 1; 0 measures from the
            first message).
        timeout: Seconds for the reply to one message (default 10); then the
            message is a ``timeout`` and the connection is replaced.
        connect_timeout: Seconds to connect, TLS handshake included (default 10).
        reconnect_delay: Seconds between attempts after a failed connect
            (default 0.1).
        give_up: Seconds a connection keeps failing to connect before it
            stops (default 30); when every connection has stopped, so does
            the run.
        framing: Release 1 (default), release 2 or HLLP.
        retries: Release 2 and HLLP: resends after a NAK (default 2).
        check_control_id: Require MSA-2 to equal the MSH-10 sent (default
            True); False accepts any acknowledgement, for a peer that answers
            with a canned ACK.
    """

    connections: int = attrs.field(default=8, validator=_positive)
    rate: float | None = attrs.field(default=None, validator=_positive)
    duration: float | None = attrs.field(default=10.0, validator=_positive)
    count: int | None = attrs.field(default=None, validator=_positive)
    warmup: float = attrs.field(default=1.0, validator=_not_negative)
    timeout: float = attrs.field(default=10.0, validator=_positive)
    connect_timeout: float = attrs.field(default=10.0, validator=_positive)
    reconnect_delay: float = attrs.field(default=0.1, validator=_not_negative)
    give_up: float = attrs.field(default=30.0, validator=_positive)
    framing: FramingConfig = attrs.field(factory=FramingConfig)
    retries: int = attrs.field(default=2, validator=_not_negative)
    check_control_id: bool = True

    def __attrs_post_init__(self) -> None:
        if self.duration is None and self.count is None:
            raise ValueError("give a duration or a count (or both)")


@attrs.frozen(kw_only=True)
class LoadResult:
    """What a load run measured (warm-up excluded).

    Attributes:
        model: ``"closed"`` or ``"open"``.
        connections: Connections configured.
        target_rate: The open model's rate, else ``None``.
        elapsed: Seconds from the end of the warm-up to the last reply.
        sent: Messages sent in the measurement.
        answered: Messages whose reply was an acknowledgement of them (any code).
        ok: Messages acknowledged with AA or CA.
        latency: The answered messages' latencies.
        outcomes: Count per outcome: ACK codes and error kinds.
        connection_errors: Failed connection attempts per kind (``connect``,
            ``connect_timeout``, ``tls_handshake``).
        resends: Release 2 / HLLP resends after a NAK.
        not_sent: Open model: messages due in the measurement that were never sent.
        cpu_seconds: Client CPU (user + system) during the measurement.
        cpu_user: User CPU seconds.
        cpu_system: System CPU seconds.
        warmup_sent: Messages sent during the warm-up.
        warmup_errors: Of those, how many did not get AA or CA.
        series: Per second of the measurement: ``[second, answered, errors, max
            latency in ms]``.
    """

    model: str
    connections: int
    target_rate: float | None
    elapsed: float
    sent: int
    answered: int
    ok: int
    latency: LatencyHistogram
    outcomes: dict[str, int]
    connection_errors: dict[str, int]
    resends: int
    not_sent: int
    cpu_seconds: float
    cpu_user: float
    cpu_system: float
    warmup_sent: int
    warmup_errors: int
    series: list[list[float]]

    @property
    def rate(self) -> float:
        """Answered messages per second."""
        return self.answered / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def errors(self) -> dict[str, int]:
        """Every error kind with its count: outcomes other than AA/CA, connections, not sent."""
        out = {k: v for k, v in self.outcomes.items() if k not in OK_CODES}
        out.update(self.connection_errors)
        if self.not_sent:
            out[NOT_SENT] = self.not_sent
        return {k: v for k, v in sorted(out.items()) if v}

    @property
    def cpu_per_message(self) -> float:
        """Client CPU seconds per message sent (``nan`` when none was)."""
        return self.cpu_seconds / self.sent if self.sent else math.nan

    def to_dict(self) -> dict[str, Any]:
        """The result as JSON-ready data (latencies in milliseconds, CPU in microseconds)."""
        hist = self.latency

        def ms(seconds: float) -> float | None:
            return None if math.isnan(seconds) else round(seconds * 1000, 4)

        latency = {
            f"p{_label(f)}": ms(v)
            for f, v in zip(PERCENTILES, hist.percentiles(PERCENTILES), strict=True)
        }
        latency.update(
            min=ms(hist.min) if hist.count else None,
            mean=ms(hist.mean),
            max=ms(hist.max) if hist.count else None,
        )
        per_message = self.cpu_per_message
        return {
            "model": self.model,
            "connections": self.connections,
            "target_rate": self.target_rate,
            "elapsed_s": round(self.elapsed, 6),
            "sent": self.sent,
            "answered": self.answered,
            "ok": self.ok,
            "rate_per_s": round(self.rate, 3),
            "latency_ms": latency,
            "outcomes": dict(sorted(self.outcomes.items())),
            "errors": self.errors,
            "error_count": sum(self.errors.values()),
            "resends": self.resends,
            "client_cpu": {
                "seconds": round(self.cpu_seconds, 6),
                "user_s": round(self.cpu_user, 6),
                "system_s": round(self.cpu_system, 6),
                "per_message_us": None if math.isnan(per_message) else round(per_message * 1e6, 3),
            },
            "warmup": {"sent": self.warmup_sent, "errors": self.warmup_errors},
            "series": self.series,
        }


def _label(fraction: float) -> str:
    text = f"{fraction * 100:g}"
    return text.replace(".", "")  # 99.9 -> p999


def _cpu() -> tuple[float, float]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime, usage.ru_stime


class _Run:
    """The shared state of one run (one Trio task at a time touches it)."""

    def __init__(
        self,
        config: LoadConfig,
        templates: Sequence[Template],
        ids: ControlIds,
        on_window: Callable[[str], object] | None,
    ) -> None:
        self.config = config
        self.on_window = on_window
        self.cpu_begin: tuple[float, float] | None = None
        self.warm_end = math.inf
        self.window_open = trio.Event()
        self.warmed = 0
        self.warmed_at = 0.0
        self.templates = templates
        self.ids = ids
        self.issued = 0
        self.measured_issued = 0
        self.start = math.inf
        self.window_start = math.inf
        self.window_end = math.inf
        self.drain_end = math.inf
        self.stopped = False
        self.ready = 0
        self.go = trio.Event()
        self.latency = LatencyHistogram()
        self.outcomes: Counter[str] = Counter()
        self.connection_errors: Counter[str] = Counter()
        self.resends = 0
        self.sent = 0
        self.answered = 0
        self.ok = 0
        self.warmup_sent = 0
        self.warmup_errors = 0
        self.last_done = 0.0
        self.series: dict[int, list[float]] = {}
        self.cpu_start = (0.0, 0.0)

    def begin(self, now: float) -> None:
        self.start = now
        self.warm_end = now + self.config.warmup
        self.go.set()
        if not self.config.warmup:
            self.warmed = self.config.connections  # no warm-up asked: measure from now
            self._try_open(now)

    def warm(self, now: float) -> None:
        """A connection has had its first exchange (or its first connect failed)."""
        self.warmed += 1
        self.warmed_at = max(self.warmed_at, now)
        self._try_open(now)

    def _try_open(self, now: float) -> None:
        # The measurement starts once the warm-up time has passed and every
        # connection has had its first round trip (or failed it): slow
        # handshakes and first replies never eat into the measurement.
        if self.cpu_begin is not None or self.warmed < self.config.connections:
            return
        if now < self.warm_end:
            return
        config = self.config
        # Never before ``now``: what was sent until now was classed as warm-up.
        self.window_start = max(self.warm_end, self.warmed_at, now)
        if config.duration is not None:
            self.window_end = self.window_start + config.duration
            self.drain_end = self.window_end + config.timeout
        self.cpu_begin = _cpu()
        self.window_open.set()
        if self.on_window is not None:
            self.on_window("start")

    def must_wait(self, now: float, warmed: bool) -> bool:
        """Closed model: whether a warmed-up connection waits for the measurement to start.

        Once the warm-up time is over, connections that have had their first
        reply wait for the slower ones instead of sending more warm-up
        messages, so that all start the measurement together (else, with
        replies slower than the measurement is long, few messages would be
        sent inside it).
        """
        if self.cpu_begin is None:
            self._try_open(now)
        return (
            self.cpu_begin is None
            and self.config.rate is None
            and warmed
            and now >= self.warm_end
            and not self.stopped
        )

    def take(self, now: float) -> tuple[float, bool] | None:
        """The next message's due time and whether it is measured, or ``None``: stop."""
        if self.stopped:
            return None
        config = self.config
        rate = config.rate
        due = now if rate is None else self.start + self.issued / rate
        if self.cpu_begin is None:
            self._try_open(max(now, due))  # a message due after the warm-up is measured
        if due >= self.window_end or (rate is not None and now >= self.drain_end):
            self.stopped = True
            return None
        measured = due >= self.window_start
        if measured:
            if config.count is not None and self.measured_issued >= config.count:
                self.stopped = True
                return None
            self.measured_issued += 1
        self.issued += 1
        return due, measured

    def finished(self, now: float) -> bool:
        """Whether no message will be taken any more (so no new connection is needed)."""
        count = self.config.count
        return (
            self.stopped
            or now >= self.window_end
            or (count is not None and self.measured_issued >= count)
        )

    def not_sent(self) -> int:
        """Open model: measured messages that fell due but were never taken."""
        config = self.config
        if config.rate is None or self.window_end == math.inf:
            return 0
        due_total = math.ceil((self.window_end - self.start) * config.rate)
        due_warmup = math.ceil((self.window_start - self.start) * config.rate)
        expected = due_total - due_warmup
        if config.count is not None:
            expected = min(expected, config.count)
        return max(0, expected - self.measured_issued)

    def record(self, due: float, measured: bool, outcome: str, done: float) -> None:
        answered = outcome in _ANSWERED
        if not measured:
            self.warmup_sent += 1
            if outcome not in OK_CODES:
                self.warmup_errors += 1
            return
        self.sent += 1
        self.outcomes[outcome] += 1
        latency = done - due
        second = int(done - self.window_start)
        slot = self.series.get(second)
        if slot is None:
            slot = self.series[second] = [0, 0, 0.0]
        if answered:
            self.answered += 1
            self.latency.record(latency)
            slot[0] += 1
            if latency > slot[2]:
                slot[2] = latency
        if outcome not in OK_CODES:
            slot[1] += 1
        else:
            self.ok += 1
        if done > self.last_done:
            self.last_done = done


_ANSWERED: Final = frozenset({"AA", "AE", "AR", "CA", "CE", "CR"})


def _connect_error_kind(exc: BaseException) -> str:
    if isinstance(exc, trio.TooSlowError):
        return CONNECT_TIMEOUT
    if isinstance(exc, TLSHandshakeFailed | ssl.SSLError):
        return TLS
    return CONNECT


class _Slot:
    """One connection's reply deadline and the scope the watchdog cancels when it passes."""

    __slots__ = ("deadline", "scope", "warmed")

    def __init__(self) -> None:
        self.warmed = False
        self.deadline = math.inf
        self.scope = trio.CancelScope()


async def _watchdog(slots: list[_Slot], timeout: float) -> None:
    """Cancel the exchange of every connection whose reply deadline has passed.

    A plain float per connection, checked here, costs less per message than
    moving a cancel scope's deadline twice per message. Deadlines only move
    later, so the task sleeps until the earliest one (or one timeout when
    none is set: a deadline set meanwhile cannot be earlier than that).
    """
    while True:
        now = trio.current_time()
        earliest = now + timeout
        for slot in slots:
            deadline = slot.deadline
            if deadline <= now:
                slot.deadline = math.inf
                slot.scope.cancel()
            elif deadline < earliest:
                earliest = deadline
        await trio.sleep_until(earliest)


async def _connection(run: _Run, connect: Connector, slot: _Slot) -> None:
    try:
        await _connection_loop(run, connect, slot)
    finally:
        if not slot.warmed:  # ended before its first exchange: never hold the window back
            slot.warmed = True
            run.warm(trio.current_time())


async def _connection_loop(run: _Run, connect: Connector, slot: _Slot) -> None:
    config = run.config
    templates = run.templates
    count = len(templates)
    check = config.check_control_id
    timeout = config.timeout
    waiting = True
    current: tuple[float, bool] | None = None
    failing_since: float | None = None
    while not run.finished(trio.current_time()):
        session: Session | None = None
        try:
            with trio.fail_after(config.connect_timeout):
                transport = await connect()
            session = new_session(transport, config.framing, retries=config.retries)
            failing_since = None
        except (OSError, trio.TooSlowError, trio.BrokenResourceError) as exc:
            run.connection_errors[_connect_error_kind(exc)] += 1
            now = trio.current_time()
            if not slot.warmed and not waiting:
                slot.warmed = True
                run.warm(now)
            if failing_since is None:
                failing_since = now
            elif now - failing_since >= config.give_up:
                return
        if waiting:
            waiting = False
            run.ready += 1
            if run.ready == config.connections:
                run.begin(trio.current_time())
            await run.go.wait()
            if session is None:
                slot.warmed = True
                run.warm(trio.current_time())
        if session is None:
            await trio.sleep(config.reconnect_delay)
            continue
        try:
            slot.scope = trio.CancelScope()
            with slot.scope:
                while True:
                    now = trio.current_time()
                    if run.must_wait(now, slot.warmed):
                        with trio.move_on_after(config.timeout):
                            await run.window_open.wait()
                        now = trio.current_time()
                    current = run.take(now)
                    if current is None:
                        return
                    due = current[0]
                    if due > now:
                        await trio.sleep_until(due)
                    slot.deadline = max(due, now) + timeout
                    control_id = run.ids.next()
                    outcome = await session.exchange(
                        templates[run.issued % count], control_id, control_id if check else None
                    )
                    slot.deadline = math.inf
                    done = trio.current_time()
                    run.record(due, current[1], outcome, done)
                    current = None
                    if not slot.warmed:
                        slot.warmed = True
                        run.warm(done)
                    if outcome in RECONNECT:
                        break
            if current is not None:
                run.record(current[0], current[1], TIMEOUT, trio.current_time())
                current = None
                if not slot.warmed:
                    slot.warmed = True
                    run.warm(trio.current_time())
        except OSError:
            if current is not None:
                run.record(current[0], current[1], _CONNECTION_LOST, trio.current_time())
                current = None
                if not slot.warmed:
                    slot.warmed = True
                    run.warm(trio.current_time())
        finally:
            run.resends += session.resends
            with trio.CancelScope(shield=True), contextlib.suppress(OSError):
                await session.aclose()


_CONNECTION_LOST: Final = "connection_lost"


async def run_load(
    connect: Connector,
    templates: Sequence[Template],
    config: LoadConfig,
    *,
    control_ids: ControlIds | None = None,
    on_window: Callable[[str], object] | None = None,
    stop: trio.Event | None = None,
) -> LoadResult:
    """Run one load test and return what it measured.

    Args:
        connect: Opens one connection (:func:`~mllp_trio._load.tcp_connector`).
        templates: The messages, sent in turn, each with a new MSH-10.
        config: The model, concurrency, duration, framing.
        control_ids: The control id source (default: a new random run tag).
        on_window: Called with ``"start"`` when the measurement starts (the
            warm-up is over) and ``"end"`` when the run is over, beside the
            client CPU readings (the benchmark harness reads the server's CPU there).
        stop: When set, no new message is sent; the replies in flight are
            awaited (up to ``config.timeout``) and the result covers what was
            measured so far (``mllp-trio bench`` sets it on Ctrl-C).
    """
    if not templates:
        raise ValueError("no messages to send")
    run = _Run(config, templates, control_ids or ControlIds(), on_window)
    slots = [_Slot() for _ in range(config.connections)]
    async with trio.open_nursery() as outer:
        outer.start_soon(_watchdog, slots, config.timeout)
        if stop is not None:

            async def stop_when_asked() -> None:
                await stop.wait()
                run.stopped = True

            outer.start_soon(stop_when_asked)
        async with trio.open_nursery() as nursery:
            for slot in slots:
                nursery.start_soon(_connection, run, connect, slot)
        outer.cancel_scope.cancel()  # all connections ended, perhaps before the window
    cpu_end = _cpu()
    if on_window is not None and run.cpu_begin is not None:
        on_window("end")
    user0, system0 = run.cpu_begin or cpu_end
    user, system = cpu_end[0] - user0, cpu_end[1] - system0
    elapsed = max(run.last_done - run.window_start, 0.0)
    return LoadResult(
        model="closed" if config.rate is None else "open",
        connections=config.connections,
        target_rate=config.rate,
        elapsed=elapsed,
        sent=run.sent,
        answered=run.answered,
        ok=run.ok,
        latency=run.latency,
        outcomes=dict(run.outcomes),
        connection_errors=dict(run.connection_errors),
        resends=run.resends,
        not_sent=run.not_sent(),
        cpu_seconds=user + system,
        cpu_user=user,
        cpu_system=system,
        warmup_sent=run.warmup_sent,
        warmup_errors=run.warmup_errors,
        series=[
            [second, slot[0], slot[1], round(slot[2] * 1000, 4)]
            for second, slot in sorted(run.series.items())
        ],
    )
