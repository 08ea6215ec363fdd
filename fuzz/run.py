"""Run one fuzz target: coverage-guided under atheris, or a plain mutation loop.

Usage (from the repository root)::

    python -m fuzz TARGET [--seconds N]     # atheris (pip install -e '.[fuzz]')
    python -m fuzz TARGET --plain --seconds N   # no atheris: random mutations
    python -m fuzz TARGET --replay          # run the seed corpus once
    python -m fuzz --list                   # the targets
    python -m fuzz --write-seeds            # (re)write tests/corpus/

``python fuzz/run.py ...`` works the same. The seed corpus of a target is
``tests/corpus/TARGET/``; atheris writes what it finds to ``--work DIR``
(default ``$TMPDIR/mllp-trio-fuzz/TARGET``) and crashing inputs to its
``crashes/`` folder, never
into the seeds. Add an input to the seeds by hand when it found a bug.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import logging
import random
import re
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Final

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

ROOT: Final = Path(__file__).resolve().parent.parent
CORPUS: Final = ROOT / "tests" / "corpus"
WORK: Final = Path(tempfile.gettempdir()) / "mllp-trio-fuzz"

Target = Callable[[bytes], None]

#: The names of ``fuzz.targets.TARGETS``, known without importing mllp_trio
#: (atheris must instrument it as it is imported); a test keeps them in step.
TARGET_NAMES: Final = ("mllp", "mllp2", "hllp", "msh", "charset", "ack", "pipeline", "batch")

#: Byte strings the plain mutator splices in: framing bytes and HL7 landmarks.
_TOKENS: Final = [
    b"\x0b",
    b"\x1c",
    b"\x1c\r",
    b"\r",
    b"\n",
    b"\x06",
    b"\x15",
    b"MSH",
    b"|^~\\&|",
    b"^",
    b"~",
    b"\\",
    b"&",
    b"\\X0B\\",
    b"D23\r",
    b"00007",
    b"999",
    b"2.5",
    b"UNICODE UTF-8",
    b"8859/1",
    b"ACK",
    b"MSA|AA|",
    b"FHS|^~\\&|",
    b"BHS|^~\\&|",
    b"BTS|1",
    b"FTS|1",
    b"\r\n",
    b"\xef\xbb\xbf",
]


def load_corpus(target: str) -> list[bytes]:
    """The seed inputs of ``target`` (files under ``tests/corpus/TARGET/``), sorted by name."""
    directory = CORPUS / target
    if not directory.is_dir():
        return []
    return [p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()]


def signature(exc: BaseException) -> str:
    """A short crash signature: exception type, message without numbers, innermost line."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f"{Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else "?"
    text = re.sub(r"\d+", "N", str(exc).splitlines()[0] if str(exc) else "")[:80]
    return f"{type(exc).__name__} at {where}: {text}"


def mutate(data: bytes, rng: random.Random, corpus: list[bytes]) -> bytes:
    """One to four random edits of ``data``."""
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(7)
        pos = rng.randrange(len(buf) + 1)
        if op == 0 and buf:
            buf[min(pos, len(buf) - 1)] = rng.randrange(256)
        elif op == 1:
            buf[pos:pos] = rng.choice(_TOKENS)
        elif op == 2 and buf:
            del buf[pos : pos + rng.randint(1, 16)]
        elif op == 3 and buf:
            start = rng.randrange(len(buf))
            buf[pos:pos] = buf[start : start + rng.randint(1, 64)]
        elif op == 4 and corpus:
            other = rng.choice(corpus)
            start = rng.randrange(len(other) + 1)
            buf[pos:] = other[start:]
        elif op == 5:
            buf[pos:pos] = rng.randbytes(rng.randint(1, 8))
        elif buf:
            buf[min(pos, len(buf) - 1)] ^= 1 << rng.randrange(8)
    return bytes(buf[:8192])


class PlainResult:
    """What a plain mutation run did: inputs run, and each crash signature with one input."""

    def __init__(self) -> None:
        self.inputs = 0
        self.crashes: dict[str, bytes] = {}
        self.crash_count = 0


def run_plain(
    target: Target,
    corpus: Iterable[bytes],
    *,
    seconds: float,
    seed: int = 0,
    max_inputs: int | None = None,
) -> PlainResult:
    """Mutate the corpus at random for ``seconds``; keep going after crashes.

    Inputs that reach a new crash signature are kept; inputs are never
    printed (they are synthetic, but the habit stays).
    """
    rng = random.Random(seed)
    pool = list(corpus) or [b""]
    result = PlainResult()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and (max_inputs is None or result.inputs < max_inputs):
        for _ in range(64):
            data = mutate(rng.choice(pool), rng, pool)
            result.inputs += 1
            try:
                target(data)
            except Exception as exc:
                result.crash_count += 1
                result.crashes.setdefault(signature(exc), data)
            else:
                if len(pool) < 4096 and rng.random() < 0.01:
                    pool.append(data)  # a crude way to drift from the seeds
    return result


def replay(target: Target, corpus: list[bytes]) -> list[str]:
    """Run every seed once; return the crash signatures (empty when all pass)."""
    failures = []
    for data in corpus:
        try:
            target(data)
        except Exception as exc:
            failures.append(signature(exc))
    return failures


def run_atheris(name: str, *, seconds: int, work: Path, extra: list[str]) -> None:
    """Hand the target to atheris (libFuzzer) for ``seconds``; does not return."""
    try:
        # The optional "fuzz" extra; imported by name, as it has no type hints.
        atheris: Any = importlib.import_module("atheris")
    except ImportError:
        sys.exit(
            "atheris is not installed: pip install -e '.[fuzz]' (a wheel for Linux x86-64), "
            "or run without it: python -m fuzz TARGET --plain --seconds N"
        )
    if "mllp_trio" in sys.modules:
        sys.exit("run_atheris must import mllp_trio itself, to instrument it")
    # Coverage of mllp_trio and the targets only: instrumenting every module
    # (the standard library, attrs, hl7) takes minutes and guides nothing.
    with atheris.instrument_imports(include=["mllp_trio", "fuzz.targets"]):
        from fuzz.targets import TARGETS
    target = TARGETS[name]
    corpus_dir = work / name
    corpus_dir.mkdir(parents=True, exist_ok=True)
    crashes = work / "crashes"
    crashes.mkdir(parents=True, exist_ok=True)
    argv = [
        sys.argv[0],
        str(corpus_dir),
        str(CORPUS / name),
        f"-max_total_time={seconds}",
        f"-artifact_prefix={crashes}/{name}-",
        "-max_len=8192",
        *extra,
    ]
    atheris.Setup(argv, target)
    atheris.Fuzz()


def write_seeds() -> int:
    """Write the seed corpus (deterministic); returns the number of files written."""
    from fuzz.seeds import seeds

    count = 0
    for target, inputs in seeds().items():
        directory = CORPUS / target
        directory.mkdir(parents=True, exist_ok=True)
        for data in inputs:
            digest = hashlib.sha1(data).hexdigest()[:16]
            (directory / f"seed-{digest}").write_bytes(data)
            count += 1
    return count


def main(argv: list[str] | None = None) -> int:
    """The command line of the fuzz runner."""
    parser = argparse.ArgumentParser(prog="python -m fuzz", description=__doc__.splitlines()[0])
    parser.add_argument("target", nargs="?", help="the target to run (see --list)")
    parser.add_argument("--seconds", type=int, default=60, help="how long to run (default 60)")
    parser.add_argument("--plain", action="store_true", help="random mutations, no atheris")
    parser.add_argument("--replay", action="store_true", help="run the seed corpus once")
    parser.add_argument("--seed", type=int, default=0, help="random seed of --plain")
    parser.add_argument("--work", type=Path, default=WORK, help="atheris corpus/crash folder")
    parser.add_argument("--list", action="store_true", help="list the targets")
    parser.add_argument("--write-seeds", action="store_true", help="(re)write tests/corpus/")
    args, extra = parser.parse_known_args(argv)
    if args.seconds <= 0:
        parser.error(f"--seconds must be positive, got {args.seconds}")
    if args.target in TARGET_NAMES and not (args.plain or args.replay or args.list):
        run_atheris(args.target, seconds=args.seconds, work=args.work, extra=extra)
        return 0

    from fuzz.targets import TARGETS

    if args.list:
        for name, function in TARGETS.items():
            print(f"{name:10} {(function.__doc__ or '').splitlines()[0]}")
        return 0
    if args.write_seeds:
        print(f"wrote {write_seeds()} seed files under {CORPUS}")
        return 0
    if args.target not in TARGETS:
        parser.error(f"TARGET must be one of {', '.join(TARGETS)} (got {args.target!r})")
    target = TARGETS[args.target]
    # Unreadable messages log a warning each: millions of lines are noise.
    logging.disable(logging.CRITICAL)
    corpus = load_corpus(args.target)
    if args.replay:
        failures = replay(target, corpus)
        for failure in failures:
            print(f"FAIL {failure}")
        print(f"{args.target}: {len(corpus)} seeds, {len(failures)} failing")
        return 1 if failures else 0
    if args.plain:
        result = run_plain(target, corpus, seconds=args.seconds, seed=args.seed)
        print(f"{args.target}: {result.inputs} inputs, {result.crash_count} crashes")
        crashes = args.work / "crashes"
        for sig, data in result.crashes.items():
            crashes.mkdir(parents=True, exist_ok=True)
            path = crashes / f"{args.target}-{hashlib.sha1(data).hexdigest()[:16]}"
            path.write_bytes(data)
            print(f"  {sig}\n    input saved to {path}")
        return 1 if result.crashes else 0
    raise AssertionError("unreachable: atheris runs above")


if __name__ == "__main__":
    sys.exit(main())
