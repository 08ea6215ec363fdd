"""``mllp-trio send`` against real listeners (issue 12): what it reads, what it says.

The listeners run in a thread of this process (``serving``); ``send`` runs in
this process too (``invoke``) except where a signal, a pipe or a terminal
is the point.
"""

from __future__ import annotations

import os
import pty
import select
import signal
import subprocess
import threading
from pathlib import Path

import pytest
import trio

import mllp_trio
from mllp_trio.store import open_sqlite_store

from .hl7_samples import make_message
from .test_cli_support import STEP_TIMEOUT, cli_process, free_port, invoke, serving

PLAIN = "--plaintext"


def ids(received: list[bytes]) -> list[str]:
    return [mllp_trio.read_msh(raw).control_id for raw in received]


# --- inputs -----------------------------------------------------------------------------


def test_forgiving_inputs_bom_indentation_mllp_bytes_stdin_and_folders(tmp_path: Path) -> None:
    (tmp_path / "bom.hl7").write_bytes(b"\xef\xbb\xbf" + make_message(control_id="BOM1"))
    (tmp_path / "indented.hl7").write_bytes(
        b"\n   " + make_message(control_id="IND1", terminator="\n").replace(b"\n", b"\n  ")
    )
    (tmp_path / "wrapped.hl7").write_bytes(
        b"\x0b"
        + make_message(control_id="VT1")
        + b"\x1c\r\x0b"
        + make_message(control_id="VT2")
        + b"\x1c\r"
    )
    folder = tmp_path / "inbox"
    (folder / "sub").mkdir(parents=True)
    (folder / "b.hl7").write_bytes(make_message(control_id="DIR2"))
    (folder / "a.hl7").write_bytes(make_message(control_id="DIR1", terminator="\r\n"))
    (folder / "sub" / "c.hl7").write_bytes(make_message(control_id="DIR3"))
    (folder / ".hidden").write_bytes(b"not sent")
    with serving() as server:
        result = invoke(
            "send",
            server.target,
            PLAIN,
            "bom.hl7",
            "indented.hl7",
            "wrapped.hl7",
            "-",
            "inbox",
            cwd=tmp_path,
            stdin=make_message(control_id="STDIN1", terminator="\n"),
        )
    assert result.code == 0, result.output
    expected = ["BOM1", "IND1", "VT1", "VT2", "STDIN1", "DIR1", "DIR2", "DIR3"]
    assert ids(server.received) == expected
    assert result.stdout.splitlines() == [f"{i} AA" for i in expected]


def test_batch_file_sends_only_the_messages(tmp_path: Path) -> None:
    batch = (
        b"FHS|^~\\&|LAB|HOSP\rBHS|^~\\&|LAB|HOSP\r"
        + make_message(control_id="BAT1")
        + make_message(control_id="BAT2")
        + b"BTS|2\rFTS|1\r"
    )
    (tmp_path / "batch.hl7").write_bytes(batch)
    with serving() as server:
        result = invoke("send", server.target, PLAIN, "batch.hl7", cwd=tmp_path)
    assert result.code == 0, result.output
    assert ids(server.received) == ["BAT1", "BAT2"]
    assert all(raw.startswith(b"MSH|") for raw in server.received)


def test_skipped_input_names_the_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_bytes(b"hello\n")
    (tmp_path / "good.hl7").write_bytes(make_message(control_id="GOOD1"))
    with serving() as server:
        result = invoke("send", server.target, PLAIN, "notes.txt", "good.hl7", cwd=tmp_path)
    assert result.code == 1
    assert "notes.txt:1: skipped: not an HL7 message" in result.stdout
    assert "GOOD1 AA" in result.stdout
    assert ids(server.received) == ["GOOD1"]


def test_missing_input_is_named(tmp_path: Path) -> None:
    result = invoke("send", "127.0.0.1:2575", PLAIN, "nowhere.hl7", cwd=tmp_path)
    assert result.code == 2
    assert "nowhere.hl7" in result.stderr


# --- why a message was refused ------------------------------------------------------------


def test_refusal_prints_err_code_and_reason_and_where(tmp_path: Path) -> None:
    async def refuse(message: mllp_trio.InboundMessage) -> None:
        raise mllp_trio.HL7Error("unknown patient identifier", code=204)

    (tmp_path / "adt.hl7").write_bytes(make_message(control_id="REF1", version="2.5.1"))
    with serving(refuse) as server:
        result = invoke("send", server.target, PLAIN, "adt.hl7", cwd=tmp_path)
    assert result.code == 1
    line = result.stdout.strip()
    assert line.startswith("REF1 AE 204")
    assert "unknown patient identifier" in line
    assert line.endswith("(adt.hl7:1)")
    assert "AE 1" in result.stderr  # the summary counts by ACK code


def _ack(*segments: str) -> mllp_trio.AckReply:
    return mllp_trio.parse_reply(
        "\r".join(segments).encode() + b"\r", "M1", raise_on_negative=False
    )


def test_reason_from_err3_err8_err1_or_msa3() -> None:
    from mllp_trio._cli._send import _reason

    msh = "MSH|^~\\&|R|F|S|F|20240101||ACK|A1|P|{}"
    v25 = _ack(
        msh.format("2.5"), "MSA|AE|M1", "ERR||PID^1^3|204^Unknown key^HL70357|E||||no such MRN"
    )
    v23 = _ack(msh.format("2.3"), "MSA|AE|M1|bad", "ERR|PID^1^3^101&Required field missing")
    msa3 = _ack(msh.format("2.3"), "MSA|AR|M1|queue full, try later")
    nothing = _ack(msh.format("2.5"), "MSA|AE|M1")
    assert _reason(v25) == " 204 Unknown key; no such MRN"
    assert _reason(v23).startswith(" 101")
    assert _reason(msa3) == " queue full, try later"
    assert "no reason given" in _reason(nothing)


def test_peer_text_with_escape_sequences_is_escaped() -> None:
    from mllp_trio._cli._send import _reason

    msh = "MSH|^~\\&|R|F|S|F|20240101||ACK|A1|P|2.3"
    reply = _ack(msh, "MSA|AR|M1|\x1b]0;owned\x07\x1b[2J")
    reason = _reason(reply)
    assert "\x1b" not in reason and "\x07" not in reason
    assert "\\e]0;owned" in reason


# --- connections: what failed, where, what to do ---------------------------------------------


def test_closed_port_says_refused_and_what_to_do(tmp_path: Path) -> None:
    port = free_port()
    result = invoke("send", f"127.0.0.1:{port}", PLAIN, cwd=tmp_path, stdin=make_message())
    assert result.code == 3
    assert f"127.0.0.1:{port}" in result.stderr
    assert "refused" in result.stderr.lower()
    assert "check HOST:PORT" in result.stderr
    assert "Traceback" not in result.output


def test_framing_mismatch_says_so(tmp_path: Path) -> None:
    with serving(framing="mllp2") as server:
        result = invoke(
            "send", server.target, PLAIN, "--ack-timeout", "5", cwd=tmp_path, stdin=make_message()
        )
    assert result.code == 1
    assert "framing mismatch" in result.stdout
    assert "--framing" in result.stdout


def test_tls_client_to_plaintext_listener_suggests_plaintext(tmp_path: Path) -> None:
    with serving() as server:
        result = invoke(
            "send", server.target, "--handshake-timeout", "2", cwd=tmp_path, stdin=make_message()
        )
    assert result.code == 3
    assert "--plaintext" in result.stderr
    assert server.received == []


def test_send_says_which_certificates_or_that_it_found_none(tmp_path: Path) -> None:
    port = free_port()
    none = invoke("send", f"127.0.0.1:{port}", cwd=tmp_path, stdin=make_message())
    assert "no client certificate" in none.stderr
    assert "system CAs" in none.stderr
    assert invoke("certs", cwd=tmp_path).code == 0
    found = invoke("send", f"127.0.0.1:{port}", cwd=tmp_path, stdin=make_message())
    assert f"client certificate {Path('certs') / 'client.pem'}" in found.stderr
    assert f"checked against {Path('certs') / 'ca.pem'}" in found.stderr


# --- long sends: progress, summary, -q, exit codes --------------------------------------------


def test_plain_progress_lines_and_summary_when_not_a_terminal(tmp_path: Path) -> None:
    data = b"".join(make_message(control_id=f"P{n:04d}") for n in range(120))
    with serving() as server:
        result = invoke("send", server.target, PLAIN, cwd=tmp_path, stdin=data)
        quiet = invoke("send", server.target, PLAIN, "-q", cwd=tmp_path, stdin=data)
    assert result.code == 0
    progress = [line for line in result.stderr.splitlines() if line.startswith("progress:")]
    assert progress and "/120" in progress[-1] and "msg/s" in progress[-1]
    assert "120 message(s) in" in result.stderr and "AA 120" in result.stderr
    assert len(result.stdout.splitlines()) == 120  # every reply on stdout for scripts
    assert quiet.stderr.strip().startswith("mllp-trio: warning: --plaintext")
    assert "progress:" not in quiet.stderr and "AA 120" not in quiet.stderr


def test_help_documents_exit_codes(tmp_path: Path) -> None:
    text = invoke("send", "--help", cwd=tmp_path).stdout
    assert "Exit codes:" in text
    documented = [line.split()[0] for line in text.split("Exit codes:")[1].splitlines()[1:]]
    assert {"0", "1", "2", "3", "130"} <= set(documented)


def _on_terminal(tmp_path: Path, *args: str) -> tuple[int, str]:
    """Run ``mllp-trio ARGS`` with stdout and stderr on a pseudo-terminal."""
    master, slave = pty.openpty()
    try:
        process = cli_process(
            *args, cwd=tmp_path, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave
        )
        os.close(slave)
        screen = _read_all(master, process)
    finally:
        os.close(master)
    return process.returncode, screen


def test_progress_bar_on_a_terminal(tmp_path: Path) -> None:
    data = b"".join(make_message(control_id=f"T{n:04d}") for n in range(60))
    (tmp_path / "many.hl7").write_bytes(data)
    (tmp_path / "one.hl7").write_bytes(make_message(control_id="SHORT1"))
    with serving() as server:
        code, screen = _on_terminal(tmp_path, "send", server.target, PLAIN, "many.hl7")
        short_code, short = _on_terminal(tmp_path, "send", server.target, PLAIN, "one.hl7")
    assert code == 0, screen
    assert "msg/s]" in screen and "/60 [" in screen  # tqdm's bar: count, time, rate
    assert "60 message(s) in" in screen and "AA 60" in screen
    assert "T0001 AA" not in screen  # a long send lists only what was not accepted
    assert short_code == 0, short
    assert "SHORT1 AA" in short  # a short one lists every reply (the README's example)


def _read_all(master: int, process: subprocess.Popen[bytes]) -> str:
    chunks: list[bytes] = []
    while True:
        ready, _, _ = select.select([master], [], [], STEP_TIMEOUT)
        if not ready:
            process.kill()
            break
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    process.wait(STEP_TIMEOUT)
    return b"".join(chunks).decode("utf-8", "replace")


def test_ctrl_c_reports_acknowledged_uncertain_and_not_sent(tmp_path: Path) -> None:
    stuck = threading.Event()

    async def hang_on_second(message: mllp_trio.InboundMessage) -> None:
        if b"|CC2|" in message.raw:
            stuck.set()
            await trio.sleep_forever()

    data = b"".join(make_message(control_id=f"CC{n}") for n in range(1, 5))
    (tmp_path / "four.hl7").write_bytes(b"a stray line\r" + data)
    with serving(hang_on_second) as server, (tmp_path / "four.hl7").open("rb") as stdin:
        process = cli_process(
            "send",
            server.target,
            PLAIN,
            cwd=tmp_path,
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert stuck.wait(STEP_TIMEOUT)
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=STEP_TIMEOUT)
    text = stderr.decode()
    assert process.returncode == 130, text
    assert stdout.decode().splitlines() == [
        "stdin:1: skipped: not an HL7 message (no MSH segment before this line)",
        "CC1 AA",
    ]
    assert "interrupted: 1 of 4 message(s) acknowledged" in text
    assert "uncertain" in text and "stdin:" in text
    assert "2 not sent" in text
    assert "Traceback" not in text


# --- the queue ------------------------------------------------------------------------------


def test_queue_refuses_a_file_that_is_not_hl7(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_bytes(b"just text\n")
    result = invoke("send", "127.0.0.1:9", PLAIN, "--queue", "notes.txt", cwd=tmp_path)
    assert result.code == 2
    assert "notes.txt:1" in result.stdout
    assert "queued 1" not in result.output


def test_queue_without_input_delivers_a_requeued_dead_letter(tmp_path: Path) -> None:
    with serving() as server:

        async def dead_letter() -> None:
            async with open_sqlite_store(tmp_path / "mllp-outbox") as store:
                qid = await store.enqueue(server.target, make_message(control_id="DL1"))
                await store.mark_dead(qid, "AR earlier")
                assert await store.requeue_dead([qid]) == 1

        trio.run(dead_letter)
        result = invoke("send", "--queue", server.target, PLAIN, cwd=tmp_path, stdin=b"")
    assert result.code == 0, result.output
    assert ids(server.received) == ["DL1"]
    assert "DL1 AA" in result.stdout


def test_queue_waits_through_an_outage(tmp_path: Path) -> None:
    port = free_port()
    (tmp_path / "adt.hl7").write_bytes(make_message(control_id="OUT1"))
    process = cli_process(
        "send",
        "--queue",
        f"127.0.0.1:{port}",
        PLAIN,
        "--max-backoff",
        "0.2",
        "adt.hl7",
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert process.stderr is not None
        seen = []
        # Wait until the queue has failed a few times (the listener is down), then start it.
        while len([s for s in seen if "not delivered yet" in s]) < 3:
            line = process.stderr.readline().decode()
            assert line, "".join(seen)
            seen.append(line)
        with serving(port=port) as server:
            stdout, stderr = process.communicate(timeout=STEP_TIMEOUT)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, "".join(seen) + stderr.decode()
    assert stdout.decode().splitlines() == ["OUT1 AA"]
    assert ids(server.received) == ["OUT1"]


@pytest.mark.parametrize("flag", ["--give-up-after", "--max-backoff"])
def test_queue_options_without_queue_are_refused(tmp_path: Path, flag: str) -> None:
    result = invoke("send", "127.0.0.1:9", PLAIN, flag, "5", cwd=tmp_path, stdin=b"")
    assert result.code == 2
    assert flag in result.stderr and "--queue" in result.stderr


# --- the options of hl7snd and Camel ---------------------------------------------------------


def test_client_socket_and_charset_options(tmp_path: Path) -> None:
    message = make_message(control_id="MSG\u00e91", charset="8859/1", codec="latin-1")
    with serving() as server:
        result = invoke(
            "send",
            server.target,
            PLAIN,
            "--connect-timeout",
            "5",
            "--response-timeout",
            "5",
            "--bind",
            "127.0.0.1",
            "--keepalive",
            "30",
            "--charset",
            "8859/1",
            cwd=tmp_path,
            stdin=message,
        )
    assert result.code == 0, result.output
    assert result.stdout.splitlines() == ["MSG\u00e91 AA"]


def test_hllp_checksum_variant_end_to_end(tmp_path: Path) -> None:
    framing = mllp_trio.FramingConfig(framing="hllp", hllp_checksum="oracle", hllp_protocol_id="21")
    with serving(framing=framing) as server:
        ok = invoke(
            "send",
            server.target,
            PLAIN,
            "--framing",
            "hllp",
            "--hllp-checksum",
            "oracle",
            "--hllp-protocol-id",
            "21",
            cwd=tmp_path,
            stdin=make_message(control_id="HL1"),
        )
    assert ok.code == 0, ok.output
    assert ok.stdout.splitlines() == ["HL1 AA"]


def _tls_server_context(certs: Path) -> mllp_trio.ServerTLS:
    return mllp_trio.ServerTLS(
        mllp_trio.ServerTLSConfig(
            cert_file=certs / "server.pem", key_file=certs / "server.key", ca_file=certs / "ca.pem"
        )
    )


def test_pkcs12_keystore_tls_floor_and_bad_password(tmp_path: Path) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.serialization import pkcs12

    assert invoke("certs", cwd=tmp_path).code == 0
    certs = tmp_path / "certs"
    key = serialization.load_pem_private_key((certs / "client.key").read_bytes(), None)
    cert = x509.load_pem_x509_certificate((certs / "client.pem").read_bytes())
    (tmp_path / "client.p12").write_bytes(
        pkcs12.serialize_key_and_certificates(
            b"client",
            key,  # type: ignore[arg-type]
            cert,
            None,
            serialization.BestAvailableEncryption(b"s3cret"),
        )
    )
    (certs / "client.pem").unlink()  # only the key store can authenticate us now
    with serving(ssl_context=_tls_server_context(certs)) as server:
        env = {"MLLP_TRIO_KEYSTORE_PASSWORD": "s3cret"}
        ok = invoke(
            "send",
            server.target,
            "--keystore",
            "client.p12",
            "--tls-min",
            "1.3",
            cwd=tmp_path,
            stdin=make_message(control_id="P12"),
            env=env,
        )
        wrong = invoke(
            "send",
            server.target,
            "--keystore",
            "client.p12",
            "--keystore-password",
            "nope",
            cwd=tmp_path,
            stdin=make_message(control_id="P13"),
        )
        ciphers = invoke(
            "send",
            server.target,
            "--ciphers",
            "NO-SUCH-CIPHER",
            cwd=tmp_path,
            stdin=make_message(control_id="P14"),
        )
    assert ok.code == 0, ok.output
    assert ok.stdout.splitlines() == ["P12 AA"]
    assert "client key store client.p12" in ok.stderr and "TLS 1.3 only" in ok.stderr
    assert wrong.code == 2 and "wrong password" in wrong.stderr
    assert "nope" not in wrong.output
    assert ciphers.code == 2 and "NO-SUCH-CIPHER" in ciphers.stderr
    assert ids(server.received) == ["P12"]
