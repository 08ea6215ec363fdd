"""The ``mllp-trio`` command line, run for real in subprocesses on loopback.

Every subprocess is bounded by a timeout and killed in a ``finally`` block.
"""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from .hl7_samples import make_message

CLI = [sys.executable, "-m", "mllp_trio"]
# Upper bound on any one subprocess step: a hang fails instead of blocking the
# run. The steps take well under a second; this is not a speed assertion.
STEP_TIMEOUT = 20.0

SHARED_OPTIONS = (
    "--host",
    "--port",
    "--cert",
    "--key",
    "--ca",
    "--crl",
    "--allow",
    "--plaintext",
    "--framing",
    "--max-message-size",
    "--max-connections",
    "--handshake-timeout",
    "--idle-timeout",
    "--read-timeout",
    "--ack-timeout",
    "--retries",
    "--log-level",
)
CLIENT_OPTIONS = tuple(
    o
    for o in SHARED_OPTIONS
    if o not in ("--crl", "--allow", "--max-connections", "--idle-timeout", "--read-timeout")
)
CERT_FILES = ("ca.pem", "server.pem", "server.key", "client.pem", "client.key")


def run_cli(*args: str, cwd: Path, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``python -m mllp_trio ARGS`` to completion in ``cwd``."""
    result = subprocess.run(
        [*CLI, *args],
        cwd=cwd,
        input=stdin if stdin is not None else b"",
        capture_output=True,
        timeout=STEP_TIMEOUT,
    )
    return subprocess.CompletedProcess(
        result.args,
        result.returncode,
        result.stdout.decode("utf-8", "replace"),
        result.stderr.decode("utf-8", "replace"),
    )


def write_lf_message(path: Path, control_id: str, *, version: str = "2.5") -> Path:
    """A sample ADT file with LF line endings, as an editor would save it."""
    path.write_bytes(make_message(control_id=control_id, version=version, terminator="\n"))
    return path


class Listener:
    """A running ``mllp-trio listen`` whose output is collected line by line by threads."""

    def __init__(self, cwd: Path, *args: str) -> None:
        self.cwd = cwd
        self.proc = subprocess.Popen(
            [*CLI, "listen", "--port", "0", *args],
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._changed = threading.Condition()
        self._ended = 0  # output streams read to the end
        self.lines: dict[str, list[str]] = {"stdout": [], "stderr": []}
        self._readers = [
            threading.Thread(target=self._collect, args=(name,), daemon=True) for name in self.lines
        ]
        for reader in self._readers:
            reader.start()
        self.port = 0

    def _collect(self, name: str) -> None:
        stream = self.proc.stdout if name == "stdout" else self.proc.stderr
        assert stream is not None
        for line in stream:
            with self._changed:
                self.lines[name].append(line)
                self._changed.notify_all()
        with self._changed:
            self._ended += 1
            self._changed.notify_all()

    def text(self, name: str) -> str:
        with self._changed:
            return "".join(self.lines[name])

    def wait_for(self, name: str, pattern: str) -> re.Match[str]:
        """Wait until a line of ``name`` matches ``pattern``; fail if the output ends first."""
        regex = re.compile(pattern)

        def found() -> re.Match[str] | None:
            for line in self.lines[name]:
                match = regex.search(line)
                if match:
                    return match
            return None

        with self._changed:
            self._changed.wait_for(
                lambda: found() is not None or self._ended == len(self.lines),
                timeout=STEP_TIMEOUT,
            )
            result = found()
        if result is None:
            raise AssertionError(
                f"no {pattern!r} in the listener's {name} (exit code {self.proc.poll()}):\n"
                f"stdout:\n{self.text('stdout')}\nstderr:\n{self.text('stderr')}"
            )
        return result

    def started(self) -> Listener:
        match = self.wait_for("stdout", r"^listening on 127\.0\.0\.1:(\d+) ")
        self.port = int(match.group(1))
        return self

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def send(
        self, *args: str, stdin: bytes | None = None, cwd: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        """``mllp-trio send 127.0.0.1:PORT ARGS`` from the listener's folder (or ``cwd``)."""
        return run_cli("send", self.target, *args, cwd=cwd or self.cwd, stdin=stdin)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(STEP_TIMEOUT)
        for reader in self._readers:
            reader.join(STEP_TIMEOUT)
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self.proc.stdout.close()
        self.proc.stderr.close()


@contextmanager
def listening(cwd: Path, *args: str) -> Iterator[Listener]:
    """Start a listener on a free port; it is always killed on exit."""
    listener = Listener(cwd, *args)
    try:
        yield listener.started()
    finally:
        listener.stop()


@pytest.fixture(scope="module")
def tls_listener(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Listener]:
    """One listener on the defaults (mutual TLS, development certificates) for the send tests."""
    with listening(tmp_path_factory.mktemp("tls")) as listener:
        yield listener


# --- certs -----------------------------------------------------------------------------


def test_certs_writes_five_files_and_refuses_to_overwrite(tmp_path: Path) -> None:
    first = run_cli("certs", "dev", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    written = sorted(p.name for p in (tmp_path / "dev").iterdir())
    assert written == sorted(CERT_FILES)
    ca = (tmp_path / "dev" / "ca.pem").read_bytes()
    assert b"BEGIN CERTIFICATE" in ca

    again = run_cli("certs", "dev", cwd=tmp_path)
    assert again.returncode != 0
    assert "--force" in again.stderr
    assert (tmp_path / "dev" / "ca.pem").read_bytes() == ca

    forced = run_cli("certs", "dev", "--force", cwd=tmp_path)
    assert forced.returncode == 0, forced.stderr
    assert (tmp_path / "dev" / "ca.pem").read_bytes() != ca


# --- listen and send on the defaults (mutual TLS) ------------------------------------------


def test_listener_creates_development_certificates_and_says_so(tls_listener: Listener) -> None:
    stdout = tls_listener.text("stdout")
    assert "created development certificates" in stdout
    assert "(mllp, mutual TLS)" in stdout
    for name in CERT_FILES:
        assert (tls_listener.cwd / "certs" / name).is_file()


def test_send_file_with_lf_endings_gets_aa(tls_listener: Listener) -> None:
    path = write_lf_message(tls_listener.cwd / "adt.hl7", "CLIFILE01")
    result = tls_listener.send(str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines() == ["CLIFILE01 AA"]


def test_send_file_named_after_options(tls_listener: Listener) -> None:
    path = write_lf_message(tls_listener.cwd / "after.hl7", "CLIAFTER1")
    result = tls_listener.send("--framing", "mllp", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines() == ["CLIAFTER1 AA"]


def test_send_from_stdin(tls_listener: Listener) -> None:
    data = make_message(control_id="STDIN0001", terminator="\n") + make_message(
        control_id="STDIN0002", terminator="\r\n"
    )
    result = tls_listener.send(stdin=data)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines() == ["STDIN0001 AA", "STDIN0002 AA"]


def test_rejected_message_exits_non_zero(tls_listener: Listener) -> None:
    # Version 3.0 is not an HL7 v2 version: the listener answers AR 203.
    ok = write_lf_message(tls_listener.cwd / "ok.hl7", "CLIOK0001")
    bad = write_lf_message(tls_listener.cwd / "v3.hl7", "CLIV30001", version="3.0")
    result = tls_listener.send(str(ok), str(bad))
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert lines[0] == "CLIOK0001 AA"
    assert lines[1].split()[:2] == ["CLIV30001", "AR"]


def test_non_hl7_input_exits_non_zero(tls_listener: Listener) -> None:
    result = tls_listener.send(stdin=b"hello\nthis is not HL7\n")
    assert result.returncode != 0
    assert "not an HL7 message" in result.stdout
    assert " AA" not in result.stdout


@pytest.mark.parametrize(
    "client_args",
    [
        pytest.param(["--cert", "missing.pem"], id="cert-file-missing"),
        pytest.param(["--plaintext"], id="plaintext-to-tls"),
        pytest.param(["--certs-dir", "nowhere", "--ca", "certs/ca.pem"], id="no-client-cert"),
        pytest.param(["--certs-dir", "nowhere"], id="untrusted-server"),
    ],
)
def test_client_without_certificate_fails_and_listener_serves_on(
    tls_listener: Listener, client_args: list[str]
) -> None:
    path = write_lf_message(tls_listener.cwd / "refused.hl7", "CLINOCERT")
    refused = tls_listener.send(*client_args, str(path))
    assert refused.returncode != 0
    assert "AA" not in refused.stdout
    assert "Traceback" not in refused.stderr

    path = write_lf_message(tls_listener.cwd / "next.hl7", "CLINEXT01")
    served = tls_listener.send(str(path))
    assert served.returncode == 0, served.stdout + served.stderr
    assert served.stdout.splitlines() == ["CLINEXT01 AA"]


# --- plaintext, signals --------------------------------------------------------------------


def test_plaintext_on_both_sides_with_a_loud_warning(tmp_path: Path) -> None:
    with listening(tmp_path, "--plaintext") as listener:
        assert "PLAINTEXT" in listener.text("stderr")
        assert "(mllp, plaintext)" in listener.text("stdout")
        path = write_lf_message(tmp_path / "adt.hl7", "PLAIN0001")
        result = listener.send("--plaintext", str(path))
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout.splitlines() == ["PLAIN0001 AA"]
    assert not (tmp_path / "certs").exists()


def test_sigterm_shuts_down_gracefully(tmp_path: Path) -> None:
    with listening(tmp_path, "--plaintext") as listener:
        # An idle client connection must not hold the shutdown up.
        with socket.create_connection(("127.0.0.1", listener.port), timeout=STEP_TIMEOUT) as idle:
            listener.proc.send_signal(signal.SIGTERM)
            assert listener.proc.wait(STEP_TIMEOUT) == 0
            assert idle.recv(1) == b""
        listener.wait_for("stdout", "shutting down")
        assert "Traceback" not in listener.text("stderr")


def test_sighup_reloads_certificates(tmp_path: Path) -> None:
    with listening(tmp_path) as listener:
        path = write_lf_message(tmp_path / "adt.hl7", "HUP000001")
        before = listener.send(str(path))
        assert before.stdout.splitlines() == ["HUP000001 AA"]

        # New CA, server and client certificates: the running listener does not
        # trust the new client until it reloads.
        regenerated = run_cli("certs", "certs", "--force", cwd=tmp_path)
        assert regenerated.returncode == 0, regenerated.stderr
        stale = listener.send(str(path))
        assert stale.returncode != 0

        listener.proc.send_signal(signal.SIGHUP)
        listener.wait_for("stderr", "certificates reloaded")
        after = listener.send(str(path))
        assert after.returncode == 0, after.stdout + after.stderr
        assert after.stdout.splitlines() == ["HUP000001 AA"]
        assert listener.proc.poll() is None


# --- help ------------------------------------------------------------------------------------


def test_top_level_help_lists_the_commands(tmp_path: Path) -> None:
    result = run_cli("--help", cwd=tmp_path)
    assert result.returncode == 0
    for command in ("listen", "send", "certs"):
        assert command in result.stdout


def test_listen_help_lists_the_shared_options(tmp_path: Path) -> None:
    result = run_cli("listen", "--help", cwd=tmp_path)
    assert result.returncode == 0
    missing = [o for o in SHARED_OPTIONS if not re.search(rf"{o}\b(?!-)", result.stdout)]
    assert missing == []


def test_send_help_lists_the_client_options(tmp_path: Path) -> None:
    result = run_cli("send", "--help", cwd=tmp_path)
    assert result.returncode == 0
    missing = [o for o in CLIENT_OPTIONS if not re.search(rf"{o}\b(?!-)", result.stdout)]
    assert missing == []


def test_console_script_listen_help(tmp_path: Path) -> None:
    script = Path(sys.executable).with_name("mllp-trio")
    assert script.is_file(), "the mllp-trio console script is not installed"
    result = subprocess.run(
        [str(script), "listen", "--help"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=STEP_TIMEOUT,
    )
    assert result.returncode == 0
    assert result.stdout.lower().startswith("usage: mllp-trio listen")
    missing = [o for o in SHARED_OPTIONS if not re.search(rf"{o}\b(?!-)", result.stdout)]
    assert missing == []
