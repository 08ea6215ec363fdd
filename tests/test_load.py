"""The load generator (``mllp_trio._load``, ``mllp-trio bench``).

Real peers: the project's own listener on loopback (release 1, release 2,
HLLP, mutual TLS with trustme certificates), and scripted peers over trio
memory streams that answer AE, a wrong control id, garbage or nothing, so
that each error kind is shown to be counted. The open model's latency
accounting runs under ``autojump_clock`` against a peer with a known
service time: every figure is computed exactly.
"""

from __future__ import annotations

import json
import math
import signal
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest
import trio
import trio.testing
import trustme

import mllp_trio
from mllp_trio import _load
from mllp_trio._cli import run as run_cli
from mllp_trio._load import (
    LatencyHistogram,
    LoadConfig,
    StreamTransport,
    Transport,
    generate_messages,
    judge_ack,
    make_templates,
    run_load,
    tcp_connector,
)

TEMPLATES = make_templates(generate_messages("ADT^A01", 400, variants=3))
SB, EB_CR = b"\x0b", b"\x1c\r"

# ------------------------------------------------------------------ pieces


def test_template_replaces_msh_10_and_frames() -> None:
    template = TEMPLATES[0]
    message = template.message(b"ID42")
    fields = message.split(b"\r", 1)[0].split(b"|")
    assert fields[9] == b"ID42"
    assert template.frame(b"ID42") == SB + message + EB_CR
    assert mllp_trio.read_msh(message).control_id == "ID42"


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"PID|1\r", "MSH"),
        (b"MSH|^~\\&|A|B|C|D\r", "MSH-10"),
        (b"MSH|^~\\&|A|B|C|D|1||ADT^A01|X|P|2.5\rOBX|1|\x1c\r", "framing"),
    ],
)
def test_templates_refuse_what_cannot_be_sent(data: bytes, why: str) -> None:
    with pytest.raises(_load.TemplateError, match=why):
        make_templates([data])


def test_control_ids_are_unique_and_short() -> None:
    ids = _load.ControlIds()
    seen = {ids.next() for _ in range(1000)}
    assert len(seen) == 1000
    assert all(len(i) <= 20 for i in seen)
    assert all(i.startswith(ids.tag.encode()) for i in seen)


@pytest.mark.parametrize(
    ("reply", "outcome"),
    [
        (b"MSH|^~\\&|R|F|S|F|1||ACK|9|P|2.5\rMSA|AA|ID1\r", "AA"),
        (b"MSH|^~\\&|R|F|S|F|1||ACK|9|P|2.5\rMSA|AE|ID1|bad\rERR|||207\r", "AE"),
        (b"MSH|^~\\&|R|F|S|F|1||ACK|9|P|2.5\nMSA|CR|ID1\n", "CR"),
        (b"MSH#^~\\&#R#F#S#F#1##ACK#9#P#2.5\rMSA#AA#ID1\r", "AA"),
        (b"MSH|^~\\&|R|F|S|F|1||ACK|9|P|2.5\rMSA|AA|ID2\r", "wrong_control_id"),
        (b"MSH|^~\\&|R|F|S|F|1||ACK|9|P|2.5\rMSA|AA\r", "wrong_control_id"),
        (b"MSH|^~\\&|R|F|S|F|1||ACK|9|P|2.5\rMSA|ZZ|ID1\r", "not_an_ack"),
        (b"MSH|^~\\&|R|F|S|F|1||ADT^A01|9|P|2.5\rPID|1\r", "not_an_ack"),
        (b"hello there", "not_an_ack"),
    ],
)
def test_judge_ack(reply: bytes, outcome: str) -> None:
    assert judge_ack(reply, 0, len(reply), b"ID1") == outcome


def test_histogram_percentiles_within_a_bucket() -> None:
    hist = LatencyHistogram()
    for i in range(1, 10001):
        hist.record(i / 1e6)  # 1 us .. 10 ms
    assert hist.count == 10000
    assert hist.max == pytest.approx(0.01)
    for fraction in (0.5, 0.9, 0.99, 0.999):
        exact = math.ceil(fraction * 10000) / 1e6
        assert exact <= hist.percentile(fraction) <= exact * 1.008
    assert math.isnan(LatencyHistogram().percentile(0.5))


def test_config_needs_a_duration_or_a_count() -> None:
    with pytest.raises(ValueError, match="duration or a count"):
        LoadConfig(duration=None)
    with pytest.raises(ValueError, match="connections"):
        LoadConfig(connections=0)


# ------------------------------------------------------------------ scripted peers

Behaviour = Callable[[bytes], Awaitable[bytes | None]]


def ack(message: bytes, code: bytes = b"AA", control_id: bytes | None = None) -> bytes:
    fields = message.split(b"\r", 1)[0].split(b"|")
    cid = fields[9] if control_id is None else control_id
    return (
        SB
        + b"MSH|^~\\&|R|F|S|F|1||ACK|A"
        + cid
        + b"|P|2.5\rMSA|"
        + code
        + b"|"
        + cid
        + b"\r"
        + EB_CR
    )


def memory_connector(nursery: trio.Nursery, behaviour: Behaviour) -> _load.Connector:
    """Each connection: a memory stream pair, the peer runs ``behaviour`` per frame."""

    async def peer(stream: trio.abc.Stream) -> None:
        buffer = b""
        try:
            while True:
                data = await stream.receive_some(65536)
                if not data:
                    return
                buffer += data
                while EB_CR in buffer:
                    frame, buffer = buffer.split(EB_CR, 1)
                    answer = await behaviour(frame[1:])
                    if answer is None:
                        continue
                    await stream.send_all(answer)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return

    async def connect() -> Transport:
        client, server = trio.testing.memory_stream_pair()
        nursery.start_soon(peer, server)
        return StreamTransport(client)

    return connect


async def run_scripted(behaviour: Behaviour, config: LoadConfig) -> _load.LoadResult:
    async with trio.open_nursery() as nursery:
        result = await run_load(memory_connector(nursery, behaviour), TEMPLATES, config)
        nursery.cancel_scope.cancel()
    return result


def fixed(delay: float, code: bytes = b"AA") -> Behaviour:
    async def answer(message: bytes) -> bytes:
        await trio.sleep(delay)
        return ack(message, code)

    return answer


async def test_ae_answers_are_counted_as_errors(autojump_clock: trio.testing.MockClock) -> None:
    result = await run_scripted(fixed(0.001, b"AE"), LoadConfig(connections=2, count=10, warmup=0))
    assert result.sent == result.answered == 10
    assert result.ok == 0
    assert result.errors == {"AE": 10}
    assert result.latency.count == 10  # answered, so timed


async def test_wrong_control_id_is_counted(autojump_clock: trio.testing.MockClock) -> None:
    async def behaviour(message: bytes) -> bytes:
        return ack(message, control_id=b"SOMEONE-ELSE")

    result = await run_scripted(behaviour, LoadConfig(connections=1, count=5, warmup=0))
    assert result.errors == {"wrong_control_id": 5}
    assert result.answered == 0 and result.latency.count == 0


async def test_canned_acks_pass_when_the_check_is_off(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def behaviour(message: bytes) -> bytes:
        return ack(message, control_id=b"CANNED")

    config = LoadConfig(connections=1, count=5, warmup=0, check_control_id=False)
    result = await run_scripted(behaviour, config)
    assert result.errors == {} and result.ok == 5


async def test_garbage_is_bad_framing_and_the_connection_is_replaced(
    autojump_clock: trio.testing.MockClock,
) -> None:
    connections = 0

    async def behaviour(message: bytes) -> bytes:
        return b"HTTP/1.1 400 Bad Request\r\n\r\n"

    async with trio.open_nursery() as nursery:
        inner = memory_connector(nursery, behaviour)

        async def counting() -> Transport:
            nonlocal connections
            connections += 1
            return await inner()

        result = await run_load(counting, TEMPLATES, LoadConfig(connections=1, count=4, warmup=0))
        nursery.cancel_scope.cancel()
    assert result.errors == {"bad_framing": 4}
    assert connections == 4  # a connection is never reused after garbage


async def test_not_an_ack_is_counted(autojump_clock: trio.testing.MockClock) -> None:
    async def behaviour(message: bytes) -> bytes:
        return SB + message + EB_CR  # an echo: a framed HL7 message, but no MSA

    result = await run_scripted(behaviour, LoadConfig(connections=1, count=3, warmup=0))
    assert result.errors == {"not_an_ack": 3}


async def test_silence_is_a_timeout(autojump_clock: trio.testing.MockClock) -> None:
    async def behaviour(message: bytes) -> None:
        return None

    result = await run_scripted(
        behaviour, LoadConfig(connections=2, duration=10, warmup=0, timeout=2.0)
    )
    # Each connection: a message every 2 s (then a new connection), 10 s long.
    assert result.errors == {"timeout": 10}
    assert result.sent == 10 and result.answered == 0


async def test_a_closed_connection_is_counted(autojump_clock: trio.testing.MockClock) -> None:
    async def connect() -> Transport:
        client, server = trio.testing.memory_stream_pair()
        await server.aclose()  # the peer hangs up at once
        return StreamTransport(client)

    result = await run_load(connect, TEMPLATES, LoadConfig(connections=1, count=3, warmup=0))
    assert result.errors == {"connection_lost": 3}


async def test_refused_connections_are_counted(autojump_clock: trio.testing.MockClock) -> None:
    async def connect() -> Transport:
        raise ConnectionRefusedError(111, "refused")

    config = LoadConfig(connections=2, duration=1, warmup=0, reconnect_delay=0.1, give_up=5)
    result = await run_load(connect, TEMPLATES, config)
    assert result.sent == 0
    assert result.connection_errors["connect"] >= 2 * 10  # 0.1 s apart for 1 s, each


# ------------------------------------------------------------------ open vs closed model


async def test_open_model_counts_latency_from_the_due_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # One connection, a message due every 10 ms, the peer takes 20 ms each:
    # message k is sent at 20k ms and answered at 20(k+1) ms, but was due at
    # 10k ms, so its latency is 20 + 10k ms.
    config = LoadConfig(connections=1, rate=100.0, count=50, warmup=0)
    result = await run_scripted(fixed(0.020), config)
    assert result.sent == result.ok == 50
    assert result.latency.min == pytest.approx(0.020)
    assert result.latency.max == pytest.approx(0.020 + 0.010 * 49)
    assert result.latency.percentile(0.5) == pytest.approx(0.020 + 0.010 * 24, rel=0.01)


async def test_closed_model_measures_from_the_send(autojump_clock: trio.testing.MockClock) -> None:
    result = await run_scripted(fixed(0.020), LoadConfig(connections=1, count=50, warmup=0))
    assert result.latency.min == pytest.approx(0.020)
    assert result.latency.max == pytest.approx(0.020)
    assert result.rate == pytest.approx(50.0)


async def test_a_stall_shows_in_the_open_model_only(autojump_clock: trio.testing.MockClock) -> None:
    # The peer answers in 1 ms, except one answer that takes 1 s.
    answered = 0

    async def behaviour(message: bytes) -> bytes:
        nonlocal answered
        answered += 1
        await trio.sleep(1.0 if answered == 100 else 0.001)
        return ack(message)

    closed = await run_scripted(behaviour, LoadConfig(connections=1, duration=2, warmup=0))
    assert closed.latency.max == pytest.approx(1.0, rel=0.01)
    # Closed: one slow message among thousands; p99 stays at 1 ms.
    assert closed.latency.percentile(0.99) < 0.002
    assert closed.latency.count > 500

    answered = 0
    opened = await run_scripted(
        behaviour, LoadConfig(connections=1, rate=200, duration=2, warmup=0)
    )
    # Open: the 200 messages due during the stall all waited behind it.
    assert opened.latency.max == pytest.approx(1.0, rel=0.01)
    assert opened.latency.percentile(0.9) > 0.1
    assert opened.not_sent == 0 and opened.sent == 400


async def test_warmup_is_left_out(autojump_clock: trio.testing.MockClock) -> None:
    config = LoadConfig(connections=1, rate=100.0, duration=1.0, warmup=0.5)
    result = await run_scripted(fixed(0.001), config)
    assert result.warmup_sent == 50
    assert result.sent == 100


async def test_measurement_waits_for_every_connections_first_reply(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # The first reply on the first connection takes 1 s (a slow handshake or
    # cold start); the rest take 10 ms. The warm-up (0.1 s) lasts until that
    # reply has come, so the measured second holds 2 x 100 fast messages and
    # not the slow one. (Measuring from 0.1 s would have caught it.)
    first: list[bool] = []

    async def behaviour(message: bytes) -> bytes:
        await trio.sleep(1.0 if not first else 0.010)
        first.append(True)
        return ack(message)

    config = LoadConfig(connections=2, duration=1.0, warmup=0.1)
    result = await run_scripted(behaviour, config)
    assert result.latency.max == pytest.approx(0.010)
    assert 199 <= result.sent <= 201
    assert result.warmup_sent >= 2  # the two slow first messages


async def test_a_short_measurement_of_slow_replies_starts_all_connections_together(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Replies take 0.5 s, the measurement 0.1 s (the harness's quick mode
    # against a slow server): connections that are warm wait for the others,
    # so each sends one measured message; else only the last one would.
    async def behaviour(message: bytes) -> bytes:
        await trio.sleep(0.5)
        return ack(message)

    config = LoadConfig(connections=4, duration=0.1, warmup=0.05)
    result = await run_scripted(behaviour, config)
    assert result.sent == result.ok == 4
    assert result.warmup_sent == 4


async def test_closed_model_warm_up_then_measure(autojump_clock: trio.testing.MockClock) -> None:
    # The harness's case: one fast connection, a short warm-up, a short measurement.
    config = LoadConfig(connections=1, duration=0.1, warmup=0.05)
    began = trio.current_time()
    result = await run_scripted(fixed(0.001), config)
    assert trio.current_time() - began < 0.2  # (virtual) no wait between warm-up and measurement
    assert 99 <= result.sent <= 101 and result.ok == result.sent
    assert 49 <= result.warmup_sent <= 51


async def test_open_model_reports_messages_it_could_not_send(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # 100 msg/s due, one connection at 10 msg/s: most never leave.
    config = LoadConfig(connections=1, rate=100.0, duration=1.0, warmup=0, timeout=0.5)
    result = await run_scripted(fixed(0.1), config)
    assert result.sent + result.not_sent == 100
    assert result.not_sent > 80
    assert result.errors["not_sent"] == result.not_sent


# ------------------------------------------------------------------ the real listener


@pytest.mark.parametrize("framing", ["mllp", "mllp2", "hllp"])
async def test_against_the_listener(framing: str) -> None:
    config = mllp_trio.ServerConfig(framing=mllp_trio.FramingConfig(framing=framing))
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            lambda task_status: mllp_trio.serve_mllp(
                None, 0, host="127.0.0.1", config=config, task_status=task_status
            )
        )
        port = listeners[0].socket.getsockname()[1]
        load = LoadConfig(
            connections=3,
            count=30,
            warmup=0,
            timeout=5,
            framing=mllp_trio.FramingConfig(framing=framing),
        )
        result = await run_load(tcp_connector("127.0.0.1", port), TEMPLATES, load)
        nursery.cancel_scope.cancel()
    assert result.errors == {}
    assert result.sent == result.ok == result.outcomes["AA"] == 30


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("load-tls")
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(directory / "ca.pem"))
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(
        str(directory / "server.pem")
    )
    ca.issue_cert("load@example.org").private_key_and_cert_chain_pem.write_to_path(
        str(directory / "client.pem")
    )
    return {
        "ca": directory / "ca.pem",
        "server": directory / "server.pem",
        "client": directory / "client.pem",
    }


@pytest.mark.parametrize("tls_stream", ["ssl_socket", "trio"])
@pytest.mark.parametrize("with_cert", [True, False])
async def test_mutual_tls(tls_files: dict[str, Path], tls_stream: str, with_cert: bool) -> None:
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(tls_files["server"])
    server.load_verify_locations(tls_files["ca"])
    server.verify_mode = ssl.CERT_REQUIRED
    client = ssl.create_default_context(cafile=str(tls_files["ca"]))
    if with_cert:
        client.load_cert_chain(tls_files["client"])
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            lambda task_status: mllp_trio.serve_mllp(
                None, 0, host="127.0.0.1", ssl_context=server, task_status=task_status
            )
        )
        port = listeners[0].socket.getsockname()[1]
        connect = tcp_connector("127.0.0.1", port, ssl_context=client, tls_stream=tls_stream)  # type: ignore[arg-type]
        load = LoadConfig(connections=2, count=20, warmup=0, timeout=5, give_up=0.5)
        result = await run_load(connect, TEMPLATES, load)
        nursery.cancel_scope.cancel()
    if with_cert:
        assert result.errors == {} and result.ok == 20
    else:
        # TLS 1.3: the refusal of a missing certificate comes after the
        # handshake, with the first read; either way it is counted, never AA.
        assert result.ok == 0
        assert set(result.errors) <= {"tls_handshake", "connection_lost", "bad_framing"}
        assert result.errors


# ------------------------------------------------------------------ the command


@pytest.fixture(scope="module")
def plain_listener() -> Iterator[int]:
    ready: list[int] = []
    started = threading.Event()
    stop: list[trio.CancelScope] = []
    token: list[trio.lowlevel.TrioToken] = []

    async def main() -> None:
        with trio.CancelScope() as scope:
            stop.append(scope)
            token.append(trio.lowlevel.current_trio_token())
            async with trio.open_nursery() as nursery:
                listeners = await nursery.start(
                    lambda task_status: mllp_trio.serve_mllp(
                        None, 0, host="127.0.0.1", task_status=task_status
                    )
                )
                ready.append(listeners[0].socket.getsockname()[1])
                started.set()

    thread = threading.Thread(target=trio.run, args=(main,), daemon=True)
    thread.start()
    assert started.wait(10)
    yield ready[0]
    trio.from_thread.run_sync(stop[0].cancel, trio_token=token[0])
    thread.join(10)


def test_bench_json_output(
    plain_listener: int, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "result.json"
    code = run_cli(
        [
            "bench",
            f"127.0.0.1:{plain_listener}",
            "--plaintext",
            "-n",
            "40",
            "-c",
            "2",
            "--warmup",
            "0",
            "--format",
            "json",
            "--json",
            str(out),
        ]
    )
    printed = json.loads(capsys.readouterr().out)
    written = json.loads(out.read_text())
    assert code == 0
    for data in (printed, written):
        assert data["sent"] == data["ok"] == 40
        assert data["errors"] == {} and data["error_count"] == 0
        assert data["latency_ms"]["p50"] <= data["latency_ms"]["p99"] <= data["latency_ms"]["max"]
        assert data["client_cpu"]["per_message_us"] > 0
        assert data["model"] == "closed" and data["framing"] == "mllp"


def test_bench_table_and_files(
    plain_listener: int, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "messages.hl7"
    source.write_bytes(
        b"\n".join(generate_messages("ORU^R01", 300, variants=2)).replace(b"\r", b"\n")
    )
    code = run_cli(
        [
            "bench",
            f"127.0.0.1:{plain_listener}",
            "--plaintext",
            "-n",
            "10",
            "--warmup",
            "0",
            "-q",
            str(source),
        ]
    )
    table = capsys.readouterr().out
    assert code == 0
    for label in ("rate", "latency ms", "p99.9", "errors", "client CPU", "µs per message"):
        assert label in table


def test_bench_against_nothing_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as sock:  # bound, not listening: connections are refused
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        code = run_cli(
            ["bench", f"127.0.0.1:{port}", "--plaintext", "-d", "0.2", "--warmup", "0", "-c", "1"]
        )
    err = capsys.readouterr().err
    assert code == 3
    assert "could not connect" in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (["--rate", "0"], "--rate"),
        (["-c", "0"], "--connections"),
        (["--message-type", "nonsense"], "--message-type"),
        (["--chart", "x.svg"], "--chart"),
    ],
)
def test_bench_option_errors_name_the_flag(
    args: list[str], flag: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = run_cli(["bench", "127.0.0.1:2575", "--plaintext", *args])
    assert code == 2
    assert flag in capsys.readouterr().err


def test_chart_without_matplotlib_is_a_clear_message(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    result = trio.run(_quick_result)
    with pytest.raises(_load.ChartUnavailable, match="pip install"):
        _load.write_chart(result, tmp_path / "x.png")


@pytest.mark.slow  # importing matplotlib takes seconds
def test_chart_is_a_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    result = trio.run(_quick_result)
    _load.write_chart(result, tmp_path / "x.png")
    assert (tmp_path / "x.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


async def _quick_result() -> _load.LoadResult:
    return await run_scripted(fixed(0.0005), LoadConfig(connections=1, count=20, warmup=0))


async def test_tls_to_a_silent_peer_is_a_handshake_error(tls_files: dict[str, Path]) -> None:
    async def silent(stream: trio.SocketStream) -> None:
        await trio.sleep_forever()

    client = ssl.create_default_context(cafile=str(tls_files["ca"]))
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(trio.serve_tcp, silent, 0)
        port = listeners[0].socket.getsockname()[1]
        connect = tcp_connector("127.0.0.1", port, ssl_context=client, handshake_timeout=0.2)
        load = LoadConfig(connections=1, duration=0.1, warmup=0, give_up=0.1)
        result = await run_load(connect, TEMPLATES, load)
        nursery.cancel_scope.cancel()
    assert result.sent == 0
    assert set(result.connection_errors) == {"tls_handshake"}


async def test_stop_ends_the_run_with_what_was_measured(
    autojump_clock: trio.testing.MockClock,
) -> None:
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: _set_later(stop, 0.5))
        config = LoadConfig(connections=1, duration=100, warmup=0)
        connect = memory_connector(nursery, fixed(0.010))
        result = await run_load(connect, TEMPLATES, config, stop=stop)
        nursery.cancel_scope.cancel()
    assert 49 <= result.sent <= 51 and result.errors == {}


async def _set_later(event: trio.Event, seconds: float) -> None:
    await trio.sleep(seconds)
    event.set()


def test_ctrl_c_still_prints_the_results(plain_listener: int) -> None:
    target = f"127.0.0.1:{plain_listener}"
    process = subprocess.Popen(
        [sys.executable, "-m", "mllp_trio", "bench", target, "--plaintext", "-d", "60", "-c", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    for line in process.stderr:
        if line.startswith("loading"):
            break
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert "interrupted" in err and "Traceback" not in err
    assert "latency ms" in out


def test_chart_without_matplotlib_is_refused_before_the_run(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    code = run_cli(["bench", "127.0.0.1:2575", "--plaintext", "--chart", "x.png"])
    err = capsys.readouterr().err
    assert code == 2
    assert "matplotlib" in err and "--chart" in err and "loading" not in err
