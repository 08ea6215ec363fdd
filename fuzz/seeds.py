"""The seed corpus, as code: ``python -m fuzz --write-seeds`` writes it to ``tests/corpus/``.

Each seed starts with the parameter bytes its target reads (see ``Draw`` in
``fuzz/targets.py``), then the payload. Inputs that once found a bug are
added here too, so that every run replays them.
"""

from __future__ import annotations

from fuzz.targets import SAMPLE, valid_frame

__all__ = ["seeds"]

_MSH1_CARET = b"MSH^^~\\&^^^^^20240101120000^^ADT^A01^CID1\r"
_HTTP = b"GET / HTTP/1.1\r\nHost: listener\r\n\r\n"


def _framing(wire: bytes, *, strict: bool = False, max_size: int = 1024, cuts: int = 3) -> bytes:
    value = max_size - 1  # Draw.int(1, 4096): 1 + value % 4096
    prefix = bytes([int(strict), 0, value >> 8, value & 0xFF, 0x5A, 0xA5, cuts])
    return prefix + bytes(range(7, 7 + 2 * cuts)) + wire


def _framing_seeds(kind: str) -> list[bytes]:
    frame = valid_frame(kind, SAMPLE)  # type: ignore[arg-type]
    wires = [
        frame,
        frame + frame,
        b"\r\n" + frame + b"junk" + frame,
        b"\x0b" + SAMPLE + b"\x0b" + frame,
        b"\x0b" + SAMPLE[:20] + b"\x1c\n" + frame,
        b"\x0b\x1c\r" + frame,
        b"\x0b\x06\x1c\r\x0b\x15\x1c\r" + frame,
        _HTTP + frame,
        b"\x0bD23\rA\r00007999\x1c\r",
        b"\x0bN23\rX00006999\x1c\r",
        b"\x0b" + b"x" * 300 + b"\x1c\r" + frame,
        b"\x0b" + SAMPLE,
    ]
    out = [_framing(w) for w in wires]
    out += [_framing(w, strict=True) for w in wires[:4]]
    out.append(_framing(wires[10], max_size=64))
    return out


def _ack(
    fs: int, n_enc: int, picks: list[int], code: int, version: int, err: int, text: bytes
) -> bytes:
    return bytes([fs, n_enc - 2, *picks, code, version, err, 3, *b"CID1"]) + text


def seeds() -> dict[str, list[bytes]]:
    """Every target's seed inputs."""
    latin = "MSH|^~\\&|LAB|HOSP|EHR|CLINIC|2024||ADT^A01|X1|P|2.3|||||8859/1\rPID|1||Müller\r"
    return {
        "mllp": _framing_seeds("mllp"),
        "mllp2": _framing_seeds("mllp2"),
        "hllp": _framing_seeds("hllp"),
        "msh": [
            b"\x05a^b|c" + SAMPLE,
            b"\x00" + _MSH1_CARET,
            b"\x03\\E\\" + b"MSH|^~|A|B|C|D|2024||ADT^A01|X|P|2.5\r",
            b"\x00MSH|^~\\&#|A|B|C|D|2024||ADT^A01|X|P|2.7\n",
            b"\x00MSH|||\r",
            b"\x00PID|1\r",
        ],
        "charset": [
            b"\x00" + SAMPLE,
            b"\x068859/1" + latin.encode("latin-1"),
            b"\x0dUNICODE UTF-8" + "é".encode(),
            b"\x11ASCII~ISO IR87\x00" + b"\x1b$B0!\x1b(B",
            b"\x06UTF-16" + b"\xff\xfeA\x00",
            b"\x05BIG-5" + b"\xa4\xa4",
        ],
        "ack": [
            _ack(0, 4, [0, 0, 0, 0], 1, 2, 13, b"text with | and ^ and \\ inside"),
            _ack(5, 2, [3, 3], 2, 0, 6, b"no escape character\x0b\x1c"),
            _ack(9, 5, [1, 2, 3, 4, 5], 0, 3, 0, "ünïcode".encode()),
        ],
        "pipeline": [
            b"\x00\x00" + SAMPLE,
            b"\x01\x04boom" + SAMPLE.replace(b"2.5", b"2.3"),
            b"\x02\x02\x0b\x1c" + SAMPLE,
            b"\x00\x00" + _MSH1_CARET,
            b"\x00\x00MSH|^~\\&|A|B|C|D|2024||ACK^A01|X|P|2.5\rMSA|AA|Y\r",
            b"\x00\x00MSH|^~\\&|A|B|C|D|2024||ADT^A01|X|P|2.5|||AL|AL\r",
            b"\x00\x00MSH|^~\\&|A|B|C|D|2024||ADT^A01|X|P|2.5|||||UTF-16\r",
            b"\x00\x00" + _HTTP,
            b"\x01\x00" + latin.encode("latin-1"),
        ],
        "batch": [_batch(f, lenient=bool(i % 2)) for i, f in enumerate(_BATCH_FILES * 2)],
    }


_BATCH_FILES = [
    b"FHS|^~\\&|A\rBHS|^~\\&|B\r" + SAMPLE + SAMPLE + b"BTS|2\rFTS|1\r",
    SAMPLE.replace(b"\r", b"\n") * 3,
    b"\xef\xbb\xbf" + SAMPLE + b"\r\n\r\n" + SAMPLE + b"BTS|3\r",
    b"BHS|^~\\&\r" + SAMPLE + b"BTS|1\rMSH|^~\\&|late\rFTS|2\r",
    b"PID|1||orphan\r" + SAMPLE,
]


def _batch(data: bytes, *, lenient: bool, max_size: int = 4096) -> bytes:
    value = max_size - 1
    return bytes([int(lenient), value >> 8, value & 0xFF, 2, 0, 40, 0, 90]) + data
