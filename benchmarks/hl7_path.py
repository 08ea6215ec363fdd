"""Micro-benchmark of the HL7 acknowledgement hot path (no sockets, no framing).

Prints microseconds per call for ``read_msh``, ``build_ack``,
``prepare_message``, ``acknowledge`` and the whole ``respond`` on a 1 KB
ADT^A01, in original and enhanced mode. Standalone::

    python benchmarks/hl7_path.py            # about 10 seconds
    python benchmarks/hl7_path.py --quick    # fewer calls, noisier

Each figure is the best of several repeats (the least disturbed by other
work on the machine). To compare two versions of the code, run the script
once per checkout (or with ``PYTHONPATH`` pointing at another copy of the
package) on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
import timeit
from collections.abc import Callable

import trio

import mllp_trio
from mllp_trio._hl7 import (
    Disposition,
    HL7Config,
    InboundMessage,
    PeerInfo,
    Verdict,
    acknowledge,
    build_ack,
    prepare_message,
    read_msh,
    respond,
)

MESSAGE = (
    b"MSH|^~\\&|SENDAPP|SENDFAC|RECVAPP|RECVFAC|20240101120000||ADT^A01^ADT_A01|MSG00001|P|2.5\r"
    b"EVN|A01|20240101120000\r"
    b"PID|1||12345^^^HOSP^MR||DOE^JOHN||19700101|M\r"
    b"OBX|1|TX|||" + b"x" * 800 + b"\r"
)
ENHANCED = MESSAGE.replace(b"|P|2.5\r", b"|P|2.5.1|||AL|NE||8859/1\r", 1)


async def _accept(message: InboundMessage) -> None:
    return None


def _best(func: Callable[[], object], number: int, repeat: int) -> float:
    return min(timeit.repeat(func, number=number, repeat=repeat)) / number * 1e6


def _respond_time(raw: bytes, number: int, repeat: int) -> float:
    peer, config = PeerInfo(address="127.0.0.1:1"), HL7Config()

    async def loop() -> float:
        best = float("inf")
        for _ in range(repeat):
            start = time.perf_counter()
            for _ in range(number):
                await respond(raw, peer=peer, handler=_accept, config=config)
            best = min(best, time.perf_counter() - start)
        return best

    return trio.run(loop) / number * 1e6


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer calls per sample")
    args = parser.parse_args(argv)
    # Many short samples: the best of them is the least disturbed.
    number, repeat = (200, 50) if args.quick else (200, 300)

    peer, config = PeerInfo(address="127.0.0.1:1"), HL7Config()
    accept = Verdict(disposition=Disposition.ACCEPT)
    print(f"mllp_trio from {mllp_trio.__file__}", file=sys.stderr)
    print(f"{'stage':<28}{'original':>10}{'enhanced':>10}   (us per call, best of {repeat})")
    rows: dict[str, list[float]] = {}
    for raw in (MESSAGE, ENHANCED):
        header = read_msh(raw)
        message = prepare_message(raw, header, peer=peer, config=config)
        timings: dict[str, Callable[[], object]] = {
            "read_msh": functools.partial(read_msh, raw),
            "read_msh + fields used": functools.partial(_read_and_touch, raw),
            "build_ack": functools.partial(build_ack, header, "AA"),
            "prepare_message": functools.partial(
                prepare_message, raw, header, peer=peer, config=config
            ),
            "acknowledge": functools.partial(acknowledge, message, accept),
        }
        for name, func in timings.items():
            rows.setdefault(name, []).append(_best(func, number, repeat))
        rows.setdefault("respond", []).append(_respond_time(raw, number, repeat))
    for name, (orig, enh) in rows.items():
        print(f"{name:<28}{orig:>10.2f}{enh:>10.2f}")


def _read_and_touch(raw: bytes) -> None:
    # read_msh plus what respond reads from a header on the success path,
    # so that a reader that defers work is charged for it.
    header = read_msh(raw)
    for name in (
        "is_ack",
        "message_code",
        "trigger_event",
        "control_id",
        "processing_id",
        "version_id",
        "charset",
        "repetition_separator",
        "enhanced_mode",
        "accept_ack_type",
        "application_ack_type",
    ):
        getattr(header, name)


if __name__ == "__main__":
    main()
