"""Framing-core benchmark: decode and encode rates of each contender on the same bytes."""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import attrs

from . import peers
from .messages import SIZES, frame_mllp, message_pool, split_chunks, stream_of

__all__ = [
    "CHUNK_SIZES",
    "Contender",
    "FramingSettings",
    "contenders",
    "floor_decode",
    "floor_encode",
    "mllp_trio_missing",
    "run_framing",
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


def mllp_trio_missing(*names: str) -> str | None:
    """Return why ``mllp_trio`` lacks any of ``names``, or ``None`` if all exist."""
    try:
        import mllp_trio
    except ImportError as exc:  # pragma: no cover - the package is this repository
        return f"mllp_trio not importable ({type(exc).__name__})"
    absent = [n for n in names if not hasattr(mllp_trio, n)]
    return f"mllp_trio has no {', '.join(absent)} yet" if absent else None


def _new_connection(kind: str) -> Any:
    import mllp_trio

    cls = getattr(mllp_trio, kind)
    try:
        # The 64 KB messages must pass whatever the default limit is.
        return cls(max_message_size=64 << 20)
    except (TypeError, ValueError, mllp_trio.MLLPError):
        # HLLP caps the size at what its five-digit block size can count.
        return cls()


def _decode_with(kind: str) -> Decoder:
    def decode(chunks: Sequence[bytes], expected: int) -> int:
        import mllp_trio

        conn = _new_connection(kind)
        receive = conn.receive_data
        next_event = conn.next_event
        need_data = mllp_trio.NEED_DATA
        message_type = mllp_trio.Message
        count = 0
        for chunk in chunks:
            receive(chunk)
            while (event := next_event()) is not need_data:
                if type(event) is message_type:
                    count += 1
        return count

    return decode


def _encode_with(kind: str) -> Encoder:
    def encode(messages: Sequence[bytes]) -> int:
        import mllp_trio

        send = _new_connection(kind).send
        message_type = mllp_trio.Message
        total = 0
        for data in messages:
            total += len(send(message_type(data)))
        return total

    return encode


def _hllp_stream(pool: list[bytes], count: int) -> bytes:
    import mllp_trio

    blocks = [_new_connection("HLLPConnection").send(mllp_trio.Message(m)) for m in pool]
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


def _prepare(cell: _Cell, pool: list[bytes], settings: FramingSettings) -> None:
    """Calibrate the message count so that one sample lasts about ``sample_seconds``."""
    contender = cell.contender
    mean_size = sum(len(m) for m in pool) / len(pool)
    cap = max(1, int(settings.max_stream_bytes / (mean_size + 2)))

    def build(count: int) -> tuple[Callable[[], float], int]:
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

    count = 1
    while True:
        run, payload = build(count)
        elapsed = run()
        if elapsed >= settings.sample_seconds / 4 or count >= cap:
            break
        count = min(cap, max(count * 2, int(count * settings.sample_seconds / max(elapsed, 1e-6))))
    final = min(cap, max(1, int(count * settings.sample_seconds / max(elapsed, 1e-9))))
    if final != count:
        run, payload = build(final)
        count = final
    cell.count, cell.payload_bytes, cell.run = count, payload, run


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


def run_framing(settings: FramingSettings, progress: Progress) -> dict[str, Any]:
    """Measure every contender on every cell; return the ``framing`` JSON section."""
    entries = contenders()
    cells: list[_Cell] = []
    for size in SIZES:
        for chunk in CHUNK_SIZES:
            cells += [_Cell("decode", size, chunk, c) for c in entries]
        cells += [_Cell("encode", size, None, c) for c in entries if c.encode is not None]

    pools = {size: message_pool(size) for size in SIZES}
    for cell in cells:
        if cell.contender.missing:
            cell.error = "unavailable: " + cell.contender.missing
            continue
        progress(
            f"calibrating {cell.operation} {cell.size} {cell.chunk or ''} {cell.contender.key}"
        )
        try:
            _prepare(cell, pools[cell.size], settings)
        except Exception as exc:
            # Never the exception text: it could quote message bytes.
            cell.error = f"error: {type(exc).__name__}"

    live = [c for c in cells if c.run is not None and c.error is None]
    total = len(live) * settings.rounds
    done = 0
    for round_no in range(settings.rounds):
        # A B A B: every contender of a cell is measured once per round.
        for cell in live:
            done += 1
            progress(
                f"[{done}/{total}] framing round {round_no + 1} {cell.operation} "
                f"{cell.size} {cell.chunk or '-'} {cell.contender.key}"
            )
            try:
                assert cell.run is not None
                cell.seconds.append(cell.run())
            except Exception as exc:
                cell.error = f"error: {type(exc).__name__}"
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
        if cell.error is None and cell.seconds:
            mean_size = cell.payload_bytes / cell.count
            rates = [cell.count / s for s in cell.seconds]
            row.update(
                messages=cell.count,
                mean_message_bytes=round(mean_size, 1),
                msgs_per_s=_summary(rates),
                mb_per_s=_summary([r * mean_size / 1e6 for r in rates]),
            )
        results.append(row)
    _add_ratios(results)

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
