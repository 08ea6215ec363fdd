"""The command line's parser (issue 12): validation with the flag named, choices,
contradictions, --version, environment variables and the --config file.

Everything runs in this process (``invoke``) and never opens a listener for
long: a command that gets past its parser meets a port that is already taken.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

import mllp_trio
from mllp_trio.store import InboundRecord, open_sqlite_store

from .hl7_samples import make_message
from .test_cli_support import invoke


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A loopback port held by a listening socket: ``listen`` on it fails at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


LISTEN_QUICK = ("listen", "--plaintext", "--no-store")


# --- values validated in the parser, with the flag named -------------------------------------


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--port", "70000"),
        ("--port", "-1"),
        ("--handshake-timeout", "0"),
        ("--idle-timeout", "-5"),
        ("--read-timeout", "0"),
        ("--write-timeout", "-1"),
        ("--shutdown-grace", "0"),
        ("--ack-timeout", "0"),
        ("--max-connections", "0"),
        ("--max-connections-per-peer", "-3"),
        ("--max-message-size", "0"),
        ("--retries", "-1"),
        ("--framing", "mllp3"),
    ],
)
def test_listen_refuses_a_bad_value_naming_the_flag(tmp_path: Path, flag: str, value: str) -> None:
    result = invoke(*LISTEN_QUICK, flag, value, cwd=tmp_path)
    assert result.code == 2, result.output
    assert flag in result.stderr
    assert "Traceback" not in result.output
    assert "listening on" not in result.stdout


@pytest.mark.parametrize(
    "args",
    [
        ["127.0.0.1:70000"],
        ["127.0.0.1:0"],
        ["127.0.0.1:2575", "--ack-timeout", "0"],
        ["127.0.0.1:2575", "--handshake-timeout", "-1"],
        ["127.0.0.1:2575", "--retries", "-1"],
        ["127.0.0.1:2575", "--max-message-size", "0"],
        ["127.0.0.1:2575", "--queue", "--give-up-after", "-1"],
        ["127.0.0.1:2575", "--connect-timeout", "0"],
        ["127.0.0.1:2575", "--response-timeout", "-2"],
        ["127.0.0.1:2575", "--keepalive", "0"],
        ["127.0.0.1:2575", "--charset", "KLINGON"],
        ["127.0.0.1:2575", "--charset-override", "EBCDIC-9"],
        ["127.0.0.1:2575", "--bind", "not-an-address"],
        ["127.0.0.1:2575", "--framing", "hllp", "--hllp-protocol-id", "2x"],
        ["127.0.0.1:2575", "--framing", "hllp", "--hllp-checksum", "crc"],
    ],
)
def test_send_refuses_a_bad_value_naming_it(tmp_path: Path, args: list[str]) -> None:
    result = invoke("send", "--plaintext", *args, cwd=tmp_path, stdin=make_message())
    assert result.code == 2, result.output
    named = args[-2] if len(args) > 1 else "HOST:PORT"
    assert named in result.stderr
    assert "Traceback" not in result.output


@pytest.mark.parametrize("value", ["none", "0", "off"])
def test_idle_timeout_can_be_turned_off(tmp_path: Path, busy_port: int, value: str) -> None:
    # Past the parser: the listener then fails on the taken port, and says which.
    result = invoke(*LISTEN_QUICK, "--idle-timeout", value, "--port", str(busy_port), cwd=tmp_path)
    assert result.code == 1, result.output
    assert f"cannot listen on 127.0.0.1:{busy_port}" in result.stderr
    assert "address already in use" in result.stderr


def test_idle_timeout_help_says_how_to_turn_it_off(tmp_path: Path) -> None:
    result = invoke("listen", "--help", cwd=tmp_path)
    assert "'none': no limit" in " ".join(result.stdout.split())


def test_address_in_use_names_the_address_and_what_to_do(tmp_path: Path, busy_port: int) -> None:
    result = invoke(*LISTEN_QUICK, "--port", str(busy_port), cwd=tmp_path)
    assert result.code == 1
    assert f"127.0.0.1:{busy_port}" in result.stderr
    assert "--port" in result.stderr
    assert "Errno" not in result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["--log-level", "warning"],
        ["--log-level", "Debug"],
        ["--framing", "MLLP2"],
        ["--tls-stream", "TRIO"],
        ["--delivery", "AFTER_COMMIT", "--store", "journal"],
    ],
)
def test_choices_are_case_insensitive(tmp_path: Path, busy_port: int, args: list[str]) -> None:
    base = ["listen", "--plaintext"] + ([] if "--store" in args else ["--no-store"])
    result = invoke(*base, *args, "--port", str(busy_port), cwd=tmp_path)
    assert result.code == 1, result.output  # past the parser, stopped by the taken port
    assert "cannot listen on" in result.stderr


def test_version(tmp_path: Path) -> None:
    result = invoke("--version", cwd=tmp_path)
    assert result.code == 0
    assert mllp_trio.__version__ in result.stdout


# --- contradictions are refused ---------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "flags"),
    [
        (["--plaintext", "--allow", "CN:lab"], ["--plaintext", "--allow"]),
        (["--plaintext", "--crl", "crl.pem"], ["--plaintext", "--crl"]),
        (["--no-store", "--delivery", "after_commit"], ["--no-store", "--delivery"]),
        (["--no-store", "--store", "journal"], ["--no-store", "--store"]),
        (["--no-store", "--retention", "1d"], ["--no-store", "--retention"]),
        (["--no-store", "--ready-min-free", "1GB"], ["--no-store", "--ready-min-free"]),
        (["--allow", "CN:lab", "--no-client-cert"], ["--allow", "--no-client-cert"]),
    ],
)
def test_listen_refuses_contradictions(tmp_path: Path, args: list[str], flags: list[str]) -> None:
    result = invoke("listen", *args, cwd=tmp_path)
    assert result.code == 2, result.output
    for flag in flags:
        assert flag in result.stderr
    assert not (tmp_path / "journal").exists()
    assert not (tmp_path / "certs").exists()


def test_listen_error_names_flags_not_api_parameters(tmp_path: Path) -> None:
    # A certificate without the CA of client certificates: mutual TLS cannot verify anyone.
    result = invoke("listen", "--cert", "server.pem", "--key", "server.key", cwd=tmp_path)
    assert result.code == 2, result.output
    assert "--ca" in result.stderr and "--no-client-cert" in result.stderr
    assert "require_client_cert" not in result.output
    assert "ca_file" not in result.output


def test_send_plaintext_warns(tmp_path: Path) -> None:
    port = _closed_port()
    result = invoke("send", f"127.0.0.1:{port}", "--plaintext", cwd=tmp_path, stdin=make_message())
    assert "warning" in result.stderr and "--plaintext" in result.stderr
    assert "unencrypted" in result.stderr


@pytest.mark.parametrize(
    ("args", "flags"),
    [
        (["--hllp-checksum", "oracle"], ["--hllp-checksum", "--framing"]),
        (["--framing", "mllp2", "--hllp-protocol-id", "21"], ["--hllp-protocol-id", "--framing"]),
        (["--keystore", "c.p12", "--cert", "c.pem"], ["--keystore", "--cert"]),
        (["--keystore-password", "x"], ["--keystore-password", "--keystore"]),
        (["--plaintext", "--tls-min", "1.3"], ["--plaintext", "--tls-min"]),
    ],
)
def test_send_refuses_contradictions(tmp_path: Path, args: list[str], flags: list[str]) -> None:
    result = invoke("send", "127.0.0.1:2575", *args, cwd=tmp_path, stdin=make_message())
    assert result.code == 2, result.output
    for flag in flags:
        assert flag in result.stderr


def test_listen_hllp_options_reach_the_parser(tmp_path: Path, busy_port: int) -> None:
    result = invoke(
        *LISTEN_QUICK,
        "--framing",
        "hllp",
        "--hllp-checksum",
        "ORACLE",
        "--hllp-protocol-id",
        "21",
        "--port",
        str(busy_port),
        cwd=tmp_path,
    )
    assert "cannot listen on" in result.stderr, result.output


def test_send_refuses_plaintext_with_certificates(tmp_path: Path) -> None:
    result = invoke("send", "127.0.0.1:2575", "--plaintext", "--cert", "c.pem", cwd=tmp_path)
    assert result.code == 2
    assert "--plaintext" in result.stderr and "--cert" in result.stderr


# --- the destination: HOST:PORT or --host/--port, never both silently ------------------------


def test_send_port_option_does_not_silently_override_host_port(tmp_path: Path) -> None:
    result = invoke(
        "send", "127.0.0.1:2575", "--port", "2576", "--plaintext", cwd=tmp_path, stdin=b""
    )
    assert result.code == 2
    assert "--port" in result.stderr and "127.0.0.1:2575" in result.stderr


def test_send_help_shows_no_host_or_port_default(tmp_path: Path) -> None:
    help_text = " ".join(invoke("send", "--help", cwd=tmp_path).stdout.split())
    assert "--host TEXT destination address, instead of HOST:PORT" in help_text
    assert "default: 127.0.0.1" not in help_text
    assert "default: 2575" not in help_text


def test_send_to_port_option_alone(tmp_path: Path) -> None:
    port = _closed_port()
    message = tmp_path / "adt.hl7"
    message.write_bytes(make_message())
    result = invoke("send", "--port", str(port), "--plaintext", "adt.hl7", cwd=tmp_path)
    # adt.hl7 is read as input, not as HOST:PORT: the connection is what fails.
    assert result.code == 3, result.output
    assert f"127.0.0.1:{port}" in result.stderr


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# --- logging ------------------------------------------------------------------------------


def test_log_level_debug_shows_debug_lines(tmp_path: Path) -> None:
    port = _closed_port()
    result = invoke(
        "send",
        f"127.0.0.1:{port}",
        "--plaintext",
        "--log-level",
        "DEBUG",
        cwd=tmp_path,
        stdin=make_message(),
    )
    assert " DEBUG mllp_trio" in result.stderr


# --- environment and --config: flag > environment > file > default --------------------------


def _journal(path: Path, count: int) -> None:
    async def fill() -> None:
        async with open_sqlite_store(path) as store:
            for n in range(count):
                await store.commit_inbound(
                    InboundRecord(
                        data=make_message(control_id=f"CFG{n}"),
                        peer="127.0.0.1:1",
                        control_id=f"CFG{n}",
                        sending_application="A",
                        sending_facility="B",
                    )
                )

    trio.run(fill)


def test_precedence_flag_environment_file_default(tmp_path: Path) -> None:
    _journal(tmp_path / "mllp-data", 6)
    config = tmp_path / "mllp.toml"
    config.write_text("[store.list]\nlimit = 2\n")
    env = {"MLLP_TRIO_STORE_LIST_LIMIT": "3"}

    default = invoke("store", "list", cwd=tmp_path)
    from_file = invoke("--config", config, "store", "list", cwd=tmp_path)
    from_env = invoke("--config", config, "store", "list", cwd=tmp_path, env=env)
    from_flag = invoke("--config", config, "store", "list", "--limit", "4", cwd=tmp_path, env=env)
    counts = [len(r.stdout.splitlines()) for r in (default, from_file, from_env, from_flag)]
    assert counts == [6, 2, 3, 4]


def test_config_file_from_environment_and_top_level_keys(tmp_path: Path, busy_port: int) -> None:
    config = tmp_path / "mllp.toml"
    config.write_text(f"plaintext = true\n[listen]\nno-store = true\nport = {busy_port}\n")
    result = invoke("listen", cwd=tmp_path, env={"MLLP_TRIO_CONFIG": str(config)})
    assert f"cannot listen on 127.0.0.1:{busy_port}" in result.stderr
    assert not (tmp_path / "certs").exists()  # plaintext came from the top level


def test_environment_value_is_validated_naming_the_flag(tmp_path: Path) -> None:
    result = invoke("listen", cwd=tmp_path, env={"MLLP_TRIO_LISTEN_PORT": "70000"})
    assert result.code == 2
    assert "--port" in result.stderr


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("[listen]\nportt = 1\n", "'portt'"),
        ("[lisen]\nport = 1\n", "'lisen'"),
        ("[listen\n", "not valid TOML"),
        ("[listen]\nport = 70000\n", "--port"),
    ],
)
def test_config_file_mistakes_are_named(tmp_path: Path, content: str, expected: str) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(content)
    result = invoke("--config", config, "listen", "--plaintext", "--no-store", cwd=tmp_path)
    assert result.code == 2, result.output
    assert expected in result.stderr
    assert "Traceback" not in result.output


def test_help_documents_environment_config_and_precedence(tmp_path: Path) -> None:
    text = " ".join(invoke("--help", cwd=tmp_path).stdout.split())
    assert "MLLP_TRIO_" in text and "--config" in text
    assert "A flag wins over the environment, which wins over the file" in text


def test_config_file_takes_flag_aliases_and_none(tmp_path: Path, busy_port: int) -> None:
    config = tmp_path / "mllp.toml"
    config.write_text(
        f'[listen]\nplaintext = true\nno-store = true\nidle-timeout = "none"\nport = {busy_port}\n'
        "[send]\nresponse-timeout = -1\n"
    )
    listen = invoke("--config", config, "listen", cwd=tmp_path)
    assert f"cannot listen on 127.0.0.1:{busy_port}" in listen.stderr, listen.output
    send = invoke("--config", config, "send", "127.0.0.1:9", "--plaintext", cwd=tmp_path)
    assert send.code == 2
    assert "--response-timeout" in send.stderr


def test_busy_metrics_port_names_the_metrics_flag(tmp_path: Path) -> None:
    # Regression: the error blamed --port and named the listener's address.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        result = invoke(
            "listen",
            "--plaintext",
            "--no-store",
            "--port",
            "0",
            "--metrics",
            str(busy),
            cwd=tmp_path,
        )
    assert result.code == 1, result.output
    assert f"cannot serve --metrics on 127.0.0.1:{busy}" in result.stderr
    assert "choose another --port" not in result.stderr
