"""``mllp-trio batch pull`` and ``batch push`` in-process, against the loopback SFTP server."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from mllp_trio._cli import run

from .sftp_server import PASSWORD, SFTPTestServer, batch_file, sftp_server


@pytest.fixture
def server(tmp_path: Path) -> Iterator[SFTPTestServer]:
    with sftp_server(tmp_path / "served") as srv:
        (srv.root / "inbox").mkdir()
        yield srv


@pytest.fixture
def known_hosts(tmp_path: Path, server: SFTPTestServer) -> Path:
    return server.write_known_hosts(tmp_path / "known_hosts")


@pytest.fixture(autouse=True)
def password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAB_SFTP_PASSWORD", PASSWORD)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_push_then_pull_once(
    tmp_path: Path,
    server: SFTPTestServer,
    known_hosts: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    source = tmp_path / "lab.hl7"
    source.write_bytes(batch_file(["C1", "C2", "C3"]))
    common = ["--known-hosts", str(known_hosts), "--password-env", "LAB_SFTP_PASSWORD"]
    sent = tmp_path / "sent"
    assert run(["batch", "push", str(source), server.url(), *common, "--sent-dir", str(sent)]) == 0
    err = capsys.readouterr().err
    assert "sent  " in err and "-> inbox/lab.hl7" in err
    assert "1 file(s) uploaded, 0 already there, 0 refused" in err
    assert (sent / "lab.hl7").exists() and not source.exists()

    args = ["batch", "pull", server.url(), "--store", str(tmp_path / "j"), *common]
    assert run([*args, "--once", "--stable-seconds", "0", "--interval", "0.05"]) == 0
    out, err = capsys.readouterr()
    assert out == "done  lab.hl7: 3 message(s) -> inbox/done/lab.hl7\n"
    assert "1 file(s) done, 0 to error/, 0 deferred; 3 message(s) processed (0 refused)" in err
    assert server.files("inbox/done")["lab.hl7.ack"].count(b"MSA|AA|") == 3
    # The default staging folder sits in the journal folder, one per remote inbox.
    (staging,) = (tmp_path / "j" / "remote").iterdir()
    assert staging.name.startswith("sftp_127.0.0.1_")


def test_pull_exits_1_when_a_file_goes_to_error(
    tmp_path: Path,
    server: SFTPTestServer,
    known_hosts: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    (server.root / "inbox" / "bad.hl7").write_bytes(batch_file(["B1"], count=4))
    args = ["batch", "pull", server.url(), "--store", str(tmp_path / "j"), "--once", "-q"]
    args += ["--known-hosts", str(known_hosts), "--password-env", "LAB_SFTP_PASSWORD"]
    assert run([*args, "--stable-seconds", "0", "--interval", "0.05"]) == 1
    assert "1 to error/" in capsys.readouterr().err
    assert "bad.hl7.error" in server.files("inbox/error")


def test_an_unknown_host_key_exits_3_with_the_fix_and_no_traceback(
    tmp_path: Path, server: SFTPTestServer, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    args = ["batch", "pull", server.url(), "--store", str(tmp_path / "j"), "--once"]
    assert run([*args, "--known-hosts", str(empty), "--password-env", "LAB_SFTP_PASSWORD"]) == 3
    err = capsys.readouterr().err
    assert "is not in" in err and "--accept-new-host-key" in err
    assert "Traceback" not in err


def test_a_wrong_password_exits_3(
    tmp_path: Path,
    server: SFTPTestServer,
    known_hosts: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    secret = tmp_path / "password"
    secret.write_text("not-it\n")
    args = ["batch", "push", str(secret), server.url(), "--known-hosts", str(known_hosts)]
    assert run([*args, "--password-file", str(secret)]) == 3
    err = capsys.readouterr().err
    assert "refused the login of 'lab'" in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("extra", "url", "flag", "words"),
    [
        ([], "ftp://lab@127.0.0.1:{port}/in", "'URL'", "--insecure-plain-ftp"),
        ([], "sftp://lab:pw@127.0.0.1:{port}/in", "'URL'", "no password in the URL"),
        ([], "http://127.0.0.1/in", "'URL'", "sftp://, ftps:// or ftp://"),
        (["--identity", "{file}"], "ftps://lab@127.0.0.1:{port}/in", "'--identity'", "sftp://"),
        (["--ca", "{file}"], "sftp://lab@127.0.0.1:{port}/in", "'--ca'", "ftps://"),
        (["--insecure-plain-ftp"], "sftp://lab@127.0.0.1:{port}/in", "'--insecure-plain-ftp'", ""),
        (["--password-env", "NOT_SET_ANYWHERE"], "sftp://h/in", "'--password-env'", "not set"),
        (["--password-env", "pass word"], "sftp://h/in", "'--password-env'", "NAME of"),
        (["--key", "{file}"], "ftps://h/in", "'--key'", "needs --cert"),
    ],
)
def test_usage_errors_name_the_flag(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    url: str,
    flag: str,
    words: str,
) -> None:
    some = tmp_path / "f"
    some.write_text("x")
    extra = [e.format(file=some) for e in extra]
    url = url.format(port=free_port())
    for command in (["pull", url, "--store", str(tmp_path / "j")], ["push", str(some), url]):
        assert run(["batch", *command, *extra]) == 2
        err = capsys.readouterr().err
        assert flag in err and words in err, err


def test_plain_ftp_warns_at_every_start(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"ftp://lab@127.0.0.1:{free_port()}/in"
    some = tmp_path / "f"
    some.write_text("x")
    for _ in range(2):
        code = run(["batch", "push", str(some), url, "--insecure-plain-ftp", "--retries", "0"])
        assert code == 3  # nothing listens there
        err = capsys.readouterr().err
        assert "WARNING: plain FTP (--insecure-plain-ftp)" in err
        assert "Traceback" not in err


def test_push_then_pull_over_ftps(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # The same engine over the FTPS backend (pyftpdlib's TLS handler on loopback).
    from .ftps_server import PASSWORD as FTP_PASSWORD
    from .ftps_server import FTPTestServer, make_tls_files

    files = make_tls_files(tmp_path / "tls")
    (tmp_path / "ftp" / "inbox").mkdir(parents=True)
    with FTPTestServer(tmp_path / "ftp", tls_files=files, require_session_reuse=True) as server:
        secret = tmp_path / "password"
        secret.write_text(FTP_PASSWORD)
        common = ["--ca", str(files.ca), "--password-file", str(secret)]
        source = tmp_path / "lab.hl7"
        source.write_bytes(batch_file(["F1", "F2"]))
        assert run(["batch", "push", str(source), server.url("inbox"), *common]) == 0
        args = ["batch", "pull", server.url("inbox"), "--store", str(tmp_path / "j"), *common]
        assert run([*args, "--once", "--stable-seconds", "0", "--interval", "0.05"]) == 0
        out, err = capsys.readouterr()
        assert out == "done  lab.hl7: 2 message(s) -> inbox/done/lab.hl7\n", err
        assert server.files("inbox") == {}
        done = server.files("inbox/done")
        assert done["lab.hl7"] == source.read_bytes()
        assert done["lab.hl7.ack"].count(b"MSA|AA|") == 2


def test_push_exits_3_when_the_ftps_server_offers_no_tls(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The server cannot be used at all (exit 3, once), not "a file refused" per file.
    from .ftps_server import FTPTestServer

    first, second = tmp_path / "a.hl7", tmp_path / "b.hl7"
    for path in (first, second):
        path.write_bytes(batch_file(["N1"]))
    with FTPTestServer(tmp_path / "ftp", tls="none") as plain:
        url = f"ftps://batch@{plain.host}:{plain.port}/"
        code = run(["batch", "push", str(first), str(second), url, "--retries", "0"])
    err = capsys.readouterr().err
    assert code == 3, err
    assert "does not offer TLS" in err and "refused " not in err
    assert "Traceback" not in err


def test_push_checks_sent_dir_before_uploading(
    tmp_path: Path, server: SFTPTestServer, known_hosts: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "lab.hl7"
    source.write_bytes(batch_file(["S1"]))
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    common = ["--known-hosts", str(known_hosts), "--password-env", "LAB_SFTP_PASSWORD"]
    sent = blocker / "sent"  # cannot be made: its parent is a file
    code = run(["batch", "push", str(source), server.url(), *common, "--sent-dir", str(sent)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "'--sent-dir'" in err and "Traceback" not in err
    assert server.files("inbox") == {} and source.exists()
