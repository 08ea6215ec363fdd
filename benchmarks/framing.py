"""Framing-core benchmark: decode and encode rates of each contender on the same bytes."""

from __future__ import annotations

import gc
import importlib
import json
import statistics
import time
from collections.abc import Callable, Collection, Sequence
from typing import IO, Any

import attrs

from . import peers
from .baseline import Baseline, Worker, add_baseline_ratios, alternate_pairs, workers
from .messages import SIZES, frame_mllp, message_pool, split_chunks, stream_of

__all__ = [
    "CHUNK_SIZES",
    "Contender",
    "FramingSettings",
    "contenders",
    "floor_decode",
    "floor_encode",
    "mllp_trio_missing",
    "mllp_trio_name",
    "run_framing",
    "serve_cells",
]

#: Read sizes the decoders are fed with: a large socket read and a small one.
CHUNK_SIZES = (64 * 1024, 4 * 1024)

Decoder = Callable[[Sequence[bytes], int], int]
Encoder = Callable[[Sequence[bytes]], int]
StreamMaker = Callable[[list[bytes], int], bytes]
Progress = Callable[[str], None]

_SB = b"\x0b"
_EB_CR = b"\x1c\r"


@attrs.frozen(kw_only=True)
class FramingSettings:
    """How long and how often to measure.

    Attributes:
        sample_seconds: Aim of one timed sample (the message count is
            calibrated so that a sample lasts about this long).
        rounds: Samples per contender and cell, taken in interleaved order.
        max_stream_bytes: Upper bound on the bytes of one sample's input.
        linearity_messages: N for the byte-at-a-time check (N and 2N 1 KB messages).
    """

    sample_seconds: float = 0.05
    rounds: int = 3
    max_stream_bytes: int = 16 << 20
    linearity_messages: int = 100


@attrs.frozen(kw_only=True)
class Contender:
    """One framing implementation under test.

    Attributes:
        key: Stable identifier used in the JSON output.
        label: Human-readable name.
        decode: Decodes the chunks, returns the number of messages found.
        encode: Frames each message, returns the number of bytes produced,
            or ``None`` when the contender has no encoder for raw bytes.
        make_stream: Builds the encoded input for ``decode``.
        missing: Why the contender cannot run here, or ``None``.
    """

    key: str
    label: str
    decode: Decoder
    encode: Encoder | None
    make_stream: StreamMaker = stream_of
    missing: str | None = None


# ------------------------------------------------------------------ the floor


def floor_decode(chunks: Sequence[bytes], expected: int) -> int:
    """Find frames with ``bytes.find``: the fastest honest plain-Python loop we know.

    Frames wholly inside a read are sliced straight out of it; a frame that
    straddles reads is gathered in one reused ``bytearray`` whose search
    resumes where the last one stopped, so the work stays linear whatever the
    chunk size. It does only what every decoder must: find SB and EB CR and
    copy the message out. It checks nothing else.
    """
    count = 0
    buf = bytearray()
    scan = 0
    for chunk in chunks:
        start = 0
        if buf:
            buf += chunk
            end = buf.find(_EB_CR, scan)
            if end < 0:
                scan = len(buf) - 1
                continue
            begin = buf.find(_SB, 0, end)
            with memoryview(buf) as view:
                _message = bytes(view[begin + 1 : end])
            count += 1
            start = len(chunk) - (len(buf) - end - 2)
            del buf[:]
        while (end := chunk.find(_EB_CR, start)) >= 0:
            begin = chunk.find(_SB, start, end)
            _message = chunk[begin + 1 : end]
            count += 1
            start = end + 2
        if start < len(chunk):
            buf += memoryview(chunk)[start:]
            scan = 0
    return count


def floor_encode(messages: Sequence[bytes]) -> int:
    """Frame each message by concatenation; returns the bytes produced."""
    total = 0
    for data in messages:
        total += len(b"\x0b" + data + b"\x1c\r")
    return total


# ------------------------------------------------------------------ mllp_trio


def mllp_trio_name(name: str) -> Any:
    """Return ``mllp_trio.<name>``, else ``mllp_trio.proto.<name>``, else ``None``.

    The sans-IO names (``MLLPConnection``, ``Message``, ``NEED_DATA``...)
    may live only in the ``proto`` namespace; earlier commits export them
    at the top level.
    """
    for module_name in ("mllp_trio", "mllp_trio.proto"):
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        found = getattr(module, name, None)
        if found is not None:
            return found
    return None


def mllp_trio_missing(*names: str) -> str | None:
    """Return why ``mllp_trio`` lacks any of ``names``, or ``None`` if all exist.

    A name may list alternatives, ``"open_mllp_client|open_mllp_connection"``:
    it is present when any one of them is.
    """
    try:
        import mllp_trio  # noqa: F401
    except ImportError as exc:  # pragma: no cover - the package is this repository
        return f"mllp_trio not importable ({type(exc).__name__})"
    absent = [n for n in names if all(mllp_trio_name(alt) is None for alt in n.split("|"))]
    return f"mllp_trio has no {', '.join(absent)} yet" if absent else None


def _new_connection(kind: str) -> Any:
    cls = mllp_trio_name(kind)
    errors = (TypeError, ValueError, mllp_trio_name("MLLPError") or ValueError)
    try:
        # The 64 KB messages must pass whatever the default limit is.
        return cls(max_message_size=64 << 20)
    except errors:
        # HLLP caps the size at what its five-digit block size can count.
        return cls()


def _decode_with(kind: str) -> Decoder:
    def decode(chunks: Sequence[bytes], expected: int) -> int:
        conn = _new_connection(kind)
        receive = conn.receive_data
        next_event = conn.next_event
        need_data = mllp_trio_name("NEED_DATA")
        message_type = mllp_trio_name("Message")
        count = 0
        for chunk in chunks:
            receive(chunk)
            while (event := next_event()) is not need_data:
                if type(event) is message_type:
                    count += 1
        return count

    return decode


def _encode_with(kind: str) -> Encoder:
    """Frame raw bytes the fastest public way the connection offers.

    ``send_bytes(data)`` where it exists (the same checks as
    ``send(Message(data))`` without building the event); otherwise, as in
    commits before it (the 824b91f baseline), ``send(Message(data))``.
    """

    def encode(messages: Sequence[bytes]) -> int:
        conn = _new_connection(kind)
        send_bytes = getattr(conn, "send_bytes", None)
        total = 0
        if send_bytes is not None:
            for data in messages:
                total += len(send_bytes(data))
            return total
        send = conn.send
        message_type = mllp_trio_name("Message")
        for data in messages:
            total += len(send(message_type(data)))
        return total

    return encode


def _hllp_stream(pool: list[bytes], count: int) -> bytes:
    message_type = mllp_trio_name("Message")
    blocks = [_new_connection("HLLPConnection").send(message_type(m)) for m in pool]
    return b"".join(blocks[i % len(blocks)] for i in range(count))


def contenders() -> list[Contender]:
    """Return every framing contender, the unavailable ones marked as such."""
    mllp_missing = mllp_trio_missing("MLLPConnection", "Message", "NEED_DATA")
    hllp_missing = mllp_trio_missing("HLLPConnection", "Message", "NEED_DATA")
    return [
        Contender(
            key="mllp_trio-mllp",
            label="mllp_trio MLLPConnection",
            decode=_decode_with("MLLPConnection"),
            encode=_encode_with("MLLPConnection"),
            missing=mllp_missing,
        ),
        Contender(
            key="mllp_trio-hllp",
            label="mllp_trio HLLPConnection",
            decode=_decode_with("HLLPConnection"),
            encode=_encode_with("HLLPConnection"),
            make_stream=_hllp_stream,
            missing=hllp_missing,
        ),
        Contender(
            key="python-hl7",
            label="python-hl7 readblock/writeblock",
            decode=peers.hl7_readblock_decode,
            encode=peers.hl7_writeblock_encode,
        ),
        Contender(
            key="hl7apy",
            label="hl7apy MLLPRequestHandler",
            decode=peers.hl7apy_handler_decode,
            encode=None,
        ),
        Contender(
            key="floor", label="floor (bytes.find)", decode=floor_decode, encode=floor_encode
        ),
    ]


# ---------------------------------------------------------------- measurement


class MismatchError(Exception):
    """A contender returned a different message count or size than expected."""


class RemoteError(Exception):
    """The baseline's framing worker reported an error (its text is the status)."""


def _error_name(exc: BaseException) -> str:
    # Never an exception's text (it could quote message bytes), except our
    # own remote statuses, which are type names or "unavailable: ..." already.
    return str(exc) if isinstance(exc, RemoteError) else f"error: {type(exc).__name__}"


def _timed(call: Callable[[], int], expected: int) -> float:
    gc.collect()
    start = time.perf_counter()
    got = call()
    elapsed = time.perf_counter() - start
    if got != expected:
        raise MismatchError(f"expected {expected}, got {got}")
    return elapsed


@attrs.define
class _Cell:
    operation: str
    size: str
    chunk: int | None
    contender: Contender
    count: int = 0
    payload_bytes: int = 0
    run: Callable[[], float] | None = None
    seconds: list[float] = attrs.Factory(list)
    error: str | None = None
    #: For a baseline contender's cell: this checkout's cell of the same scenario.
    twin: _Cell | None = None


def _build(cell: _Cell, pool: list[bytes], count: int) -> tuple[Callable[[], float], int]:
    """Return a timed run of ``count`` messages for ``cell`` and the payload bytes it handles."""
    contender = cell.contender
    messages = [pool[i % len(pool)] for i in range(count)]
    if cell.operation == "decode":
        assert cell.chunk is not None
        chunks = split_chunks(contender.make_stream(pool, count), cell.chunk)
        return (lambda: _timed(lambda: contender.decode(chunks, count), count)), sum(
            map(len, messages)
        )
    encode = contender.encode
    assert encode is not None
    framed = sum(len(frame_mllp(m)) for m in messages)

    def run_encode() -> float:
        gc.collect()
        start = time.perf_counter()
        produced = encode(messages)
        elapsed = time.perf_counter() - start
        # HLLP adds its header and trailer: only a short result is wrong.
        if produced < framed:
            raise MismatchError(f"encoded {produced} bytes, expected at least {framed}")
        return elapsed

    return run_encode, sum(map(len, messages))


def _prepare(cell: _Cell, pool: list[bytes], settings: FramingSettings) -> None:
    """Calibrate the message count so that one sample lasts about ``sample_seconds``."""
    mean_size = sum(len(m) for m in pool) / len(pool)
    cap = max(1, int(settings.max_stream_bytes / (mean_size + 2)))
    count = 1
    while True:
        run, payload = _build(cell, pool, count)
        elapsed = run()
        if elapsed >= settings.sample_seconds / 4 or count >= cap:
            break
        count = min(cap, max(count * 2, int(count * settings.sample_seconds / max(elapsed, 1e-6))))
    final = min(cap, max(1, int(count * settings.sample_seconds / max(elapsed, 1e-9))))
    if final != count:
        run, payload = _build(cell, pool, final)
        count = final
    cell.count, cell.payload_bytes, cell.run = count, payload, run


# ------------------------------------------------------------ the baseline


def serve_cells(stdin: IO[str], stdout: IO[str]) -> None:
    """Time framing cells on request, one JSON line each way, until stdin closes.

    ``{"prepare": ID, "operation": ..., "size": ..., "chunk": ..., "contender":
    KEY, "count": N}`` builds the cell's input for exactly N messages and
    answers with one (warm-up) timing; ``{"run": ID}`` answers
    ``{"seconds": S}``. Errors answer ``{"error": STATUS}``. The harness runs
    this in a subprocess whose ``mllp_trio`` is the baseline commit's, with
    this checkout's measuring code, so that only the library differs.
    """
    by_key = {c.key: c for c in contenders()}
    runs: dict[int, Callable[[], float]] = {}
    for line in stdin:
        if not line.strip():
            continue
        command = json.loads(line)
        try:
            if "prepare" in command:
                contender = by_key[command["contender"]]
                if contender.missing:
                    raise RemoteError("unavailable: " + contender.missing)
                cell = _Cell(command["operation"], command["size"], command["chunk"], contender)
                pool = message_pool(cell.size)
                if command.get("count"):
                    cell.count = int(command["count"])
                    cell.run, cell.payload_bytes = _build(cell, pool, cell.count)
                else:  # this checkout's side did not run: calibrate here
                    _prepare(cell, pool, FramingSettings(**command["settings"]))
                assert cell.run is not None
                runs[int(command["prepare"])] = cell.run
                reply: dict[str, Any] = {
                    "seconds": cell.run(),
                    "count": cell.count,
                    "payload_bytes": cell.payload_bytes,
                }
            else:
                reply = {"seconds": runs[int(command["run"])]()}
        except Exception as exc:
            reply = {"error": _error_name(exc)}
        stdout.write(json.dumps(reply) + "\n")
        stdout.flush()


class _BaselineCells:
    """The baseline side of the framing section: a worker running the old mllp_trio."""

    def __init__(self, worker: Worker, settings: FramingSettings) -> None:
        self.worker = worker
        # Generous: building a 64 MiB input and one sample, on a busy machine.
        self.timeout = 120.0 + 20 * settings.sample_seconds
        self.ids = 0

    def _call(self, command: dict[str, Any]) -> dict[str, Any]:
        self.worker.send(command)
        reply = self.worker.read(self.timeout)
        if "error" in reply:
            raise RemoteError(str(reply["error"]))
        return reply

    def prepare(self, cell: _Cell, settings: FramingSettings) -> None:
        """Prepare a baseline cell on its twin's message count (or calibrate it there)."""
        twin = cell.twin
        assert twin is not None
        ran = twin.error is None and twin.run is not None
        self.ids += 1
        cell_id = self.ids
        reply = self._call(
            {
                "prepare": cell_id,
                "operation": cell.operation,
                "size": cell.size,
                "chunk": cell.chunk,
                "contender": twin.contender.key,
                "count": twin.count if ran else None,
                "settings": attrs.asdict(settings),
            }
        )
        cell.count, cell.payload_bytes = int(reply["count"]), int(reply["payload_bytes"])
        cell.run = lambda: float(self._call({"run": cell_id})["seconds"])


def _summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def _linearity(contender: Contender, settings: FramingSettings) -> dict[str, Any]:
    pool = message_pool("1KB")
    n = settings.linearity_messages
    times = []
    for count in (n, 2 * n):
        chunks = split_chunks(contender.make_stream(pool, count), 1)
        samples = [
            _timed(lambda: contender.decode(chunks, count), count)  # noqa: B023
            for _ in range(2)
        ]
        times.append(min(samples))
    return {
        "contender": contender.key,
        "messages": n,
        "seconds_n": times[0],
        "seconds_2n": times[1],
        "ratio": times[1] / times[0],
    }


def run_framing(
    settings: FramingSettings,
    progress: Progress,
    *,
    baseline: Baseline | None = None,
    only: Collection[str] | None = None,
) -> dict[str, Any]:
    """Measure every contender on every cell; return the ``framing`` JSON section.

    Args:
        settings: Sample length and rounds.
        progress: Receives one line per step.
        baseline: Also measure each mllp_trio contender with this commit's
            mllp_trio (contender key ``KEY@short``), interleaved with this
            checkout's, on the same message count.
        only: Contender keys to run (default: all).
    """
    with workers() as started:
        remote = None
        if baseline is not None:
            worker = Worker("benchmarks.worker", ["framing"], lib_root=baseline.worktree)
            started.append(worker)
            remote = _BaselineCells(worker, settings)
        return _run_framing(settings, progress, baseline, remote, only)


def _run_framing(
    settings: FramingSettings,
    progress: Progress,
    baseline: Baseline | None,
    remote: _BaselineCells | None,
    only: Collection[str] | None,
) -> dict[str, Any]:
    entries = [c for c in contenders() if only is None or c.key in only]
    imported: dict[str, Any] = {}
    if remote is not None:
        try:
            imported = remote.worker.hello(remote.timeout)
        except (TimeoutError, EOFError, KeyError, ValueError) as exc:
            remote = None
            imported = {"error": type(exc).__name__}

    def cells_of(operation: str, size: str, chunk: int | None, contender: Contender) -> list[_Cell]:
        cell = _Cell(operation, size, chunk, contender)
        if baseline is None or not contender.key.startswith("mllp_trio"):
            return [cell]
        twin = attrs.evolve(
            contender,
            key=contender.key + baseline.suffix,
            label=f"{contender.label} at {baseline.short}",
            missing=None,
        )
        return [cell, _Cell(operation, size, chunk, twin, twin=cell)]

    cells: list[_Cell] = []
    for size in SIZES:
        for chunk in CHUNK_SIZES:
            for contender in entries:
                cells += cells_of("decode", size, chunk, contender)
        for contender in entries:
            if contender.encode is not None:
                cells += cells_of("encode", size, None, contender)

    pools = {size: message_pool(size) for size in SIZES}
    for cell in cells:
        if cell.contender.missing:
            cell.error = "unavailable: " + cell.contender.missing
            continue
        progress(
            f"calibrating {cell.operation} {cell.size} {cell.chunk or ''} {cell.contender.key}"
        )
        try:
            if cell.twin is None:
                _prepare(cell, pools[cell.size], settings)
            elif remote is None:
                raise RemoteError(f"error: baseline worker did not start ({imported['error']})")
            else:
                remote.prepare(cell, settings)
        except Exception as exc:
            cell.error = _error_name(exc)

    live = [c for c in cells if c.run is not None and c.error is None]
    total = len(live) * settings.rounds
    done = 0
    for round_no in range(settings.rounds):
        # A B A B: every contender of a cell is measured once per round
        # (a baseline twin before its contender on odd rounds).
        for cell in alternate_pairs(live, lambda a, b: b.twin is a, round_no):
            done += 1
            progress(
                f"[{done}/{total}] framing round {round_no + 1} {cell.operation} "
                f"{cell.size} {cell.chunk or '-'} {cell.contender.key}"
            )
            try:
                assert cell.run is not None
                cell.seconds.append(cell.run())
            except Exception as exc:
                cell.error = _error_name(exc)
        live = [c for c in live if c.error is None]

    results: list[dict[str, Any]] = []
    for cell in cells:
        row: dict[str, Any] = {
            "operation": cell.operation,
            "size": cell.size,
            "chunk": cell.chunk,
            "contender": cell.contender.key,
            "label": cell.contender.label,
            "status": cell.error or "ok",
        }
        if cell.twin is not None:
            row["baseline_of"] = cell.twin.contender.key
            row["imported"] = imported
        if cell.error is None and cell.seconds:
            mean_size = cell.payload_bytes / cell.count
            rates = [cell.count / s for s in cell.seconds]
            row.update(
                messages=cell.count,
                mean_message_bytes=round(mean_size, 1),
                msgs_per_s=_summary(rates),
                mb_per_s=_summary([r * mean_size / 1e6 for r in rates]),
            )
        elif cell.error is None:
            row["status"] = "error: no runs"
        results.append(row)
    _add_ratios(results)
    add_baseline_ratios(results, ("operation", "size", "chunk"))

    linearity = []
    for contender in entries:
        if contender.key in ("mllp_trio-mllp", "floor"):
            if contender.missing:
                linearity.append({"contender": contender.key, "status": "unavailable"})
                continue
            progress(f"byte-at-a-time linearity {contender.key}")
            try:
                linearity.append({**_linearity(contender, settings), "status": "ok"})
            except Exception as exc:
                linearity.append({"contender": contender.key, "status": type(exc).__name__})
    return {
        "settings": attrs.asdict(settings),
        "chunk_sizes": list(CHUNK_SIZES),
        "results": results,
        "linearity": linearity,
    }


def _add_ratios(results: list[dict[str, Any]]) -> None:
    """Add ``vs_floor`` and ``vs_python_hl7`` (ratios of median messages/s) to each row."""
    by_cell: dict[tuple[str, str, int | None], dict[str, float]] = {}
    for row in results:
        if "msgs_per_s" in row:
            key = (row["operation"], row["size"], row["chunk"])
            by_cell.setdefault(key, {})[row["contender"]] = row["msgs_per_s"]["median"]
    for row in results:
        if "msgs_per_s" not in row:
            continue
        medians = by_cell[(row["operation"], row["size"], row["chunk"])]
        mine = row["msgs_per_s"]["median"]
        row["vs_floor"] = mine / medians["floor"] if "floor" in medians else None
        row["vs_python_hl7"] = mine / medians["python-hl7"] if "python-hl7" in medians else None
