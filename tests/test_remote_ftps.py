"""The FTPS backend against a real pyftpdlib server on loopback (tests/ftps_server.py)."""

from __future__ import annotations

import calendar
import contextlib
import ftplib
import io
import os
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
import trustme
from OpenSSL import SSL

from mllp_trio._hl7 import InboundMessage
from mllp_trio.store import JournalProcessor, open_sqlite_store
from mllp_trio.store._remote import (
    PullConfig,
    RemoteClient,
    RemotePuller,
    RetryPolicy,
    parse_target,
    push_file,
)
from mllp_trio.store._remote._base import (
    RemoteEntry,
    RemoteError,
    RemoteErrorKind,
    RemoteOptions,
    RemoteTarget,
)
from mllp_trio.store._remote._ftps import FTPSession, connect_ftp

from .ftps_server import PASSWORD, USER, FTPTestServer, TLSFiles, make_tls_files
from .hl7_samples import make_message
from .tls_helpers import write_leaf


@pytest.fixture
def tls_files(tmp_path: Path) -> TLSFiles:
    return make_tls_files(tmp_path / "tls")


@pytest.fixture
def server(tmp_path: Path, tls_files: TLSFiles) -> Iterator[FTPTestServer]:
    with FTPTestServer(tmp_path / "home", tls_files=tls_files) as running:
        yield running


def connect(
    server: FTPTestServer,
    ca: Path | None,
    *,
    host: str | None = None,
    username: str = USER,
    **options: Any,
) -> FTPSession:
    target = RemoteTarget(
        scheme="ftp" if server.tls == "none" else "ftps",
        host=host or server.host,
        port=server.port,
        username=username,
    )
    options.setdefault("password", PASSWORD)
    options.setdefault("timeout", 10.0)
    options.setdefault("implicit_tls", server.tls == "implicit")
    session = connect_ftp(target, RemoteOptions(ca=ca, **options))
    assert isinstance(session, FTPSession)
    return session


def refused(server: FTPTestServer, ca: Path | None, **kwargs: Any) -> RemoteError:
    """The RemoteError connecting raises (and no other exception)."""
    with pytest.raises(RemoteError) as caught:
        connect(server, ca, **kwargs).close()
    return caught.value


# -- the RemoteSession methods -----------------------------------------------


def test_round_trip(server: FTPTestServer, tls_files: TLSFiles) -> None:
    payload = os.urandom(300_000)
    with connect(server, tls_files.ca) as session:
        session.makedirs("inbox/done")
        session.makedirs("inbox/done")  # existing folders are fine
        assert (server.root / "inbox" / "done").is_dir()

        assert session.upload(io.BytesIO(payload), "inbox/.a.hl7.part") == len(payload)
        assert (server.root / "inbox" / ".a.hl7.part").read_bytes() == payload
        assert session.size("inbox/.a.hl7.part") == len(payload)
        assert session.size("inbox/missing.hl7") is None

        session.rename("inbox/.a.hl7.part", "inbox/a.hl7")
        listed = session.list_files("inbox")
        assert [(e.name, e.size) for e in listed] == [("a.hl7", len(payload))]  # no folders

        local = io.BytesIO()
        assert session.download("inbox/a.hl7", local) == len(payload)
        assert local.getvalue() == payload

        session.rename("inbox/a.hl7", "inbox/done/a.hl7")
        assert session.list_files("inbox") == []
        assert (server.root / "inbox" / "done" / "a.hl7").read_bytes() == payload

        session.delete("inbox/done/a.hl7")
        session.delete("inbox/done/a.hl7")  # already gone: not an error
        assert not (server.root / "inbox" / "done" / "a.hl7").exists()


def test_rename_never_replaces(server: FTPTestServer, tls_files: TLSFiles) -> None:
    (server.root / "a.hl7").write_bytes(b"first")
    (server.root / "b.hl7").write_bytes(b"second")
    with connect(server, tls_files.ca) as session, pytest.raises(RemoteError) as caught:
        session.rename("a.hl7", "b.hl7")
    assert caught.value.kind is RemoteErrorKind.REFUSED
    assert "b.hl7 exists" in str(caught.value)
    assert (server.root / "a.hl7").read_bytes() == b"first"
    assert (server.root / "b.hl7").read_bytes() == b"second"


def test_not_found_and_refused(server: FTPTestServer, tls_files: TLSFiles) -> None:
    (server.root / "file.hl7").write_bytes(b"x")
    with connect(server, tls_files.ca) as session:
        with pytest.raises(RemoteError) as caught:
            session.download("nowhere.hl7", io.BytesIO())
        assert caught.value.kind is RemoteErrorKind.NOT_FOUND
        with pytest.raises(RemoteError) as caught:
            session.list_files("no-such-folder")
        assert caught.value.kind is RemoteErrorKind.NOT_FOUND
        with pytest.raises(RemoteError) as caught:
            session.rename("nowhere.hl7", "elsewhere.hl7")
        assert caught.value.kind is RemoteErrorKind.NOT_FOUND
        # A file where a folder should be: MKD fails and it is not a folder.
        with pytest.raises(RemoteError) as caught:
            session.makedirs("file.hl7/sub")
        assert not caught.value.transient
        # The session is still usable after each refusal.
        assert session.size("file.hl7") == 1


def test_delete_refused_is_not_success(tmp_path: Path, tls_files: TLSFiles) -> None:
    """A 550 to DELE for a file that is still there is a refusal, not "already gone"."""
    with FTPTestServer(tmp_path / "home", tls_files=tls_files, perm="elr") as server:
        (server.root / "kept.hl7").write_bytes(b"x")
        with connect(server, tls_files.ca) as session, pytest.raises(RemoteError) as caught:
            session.delete("kept.hl7")
    assert caught.value.kind is RemoteErrorKind.REFUSED
    assert (server.root / "kept.hl7").exists()


def test_mlsd_size_and_mtime(server: FTPTestServer, tls_files: TLSFiles) -> None:
    stamp = calendar.timegm((2024, 2, 29, 13, 14, 15, 0, 0, 0))
    for name, size in (("a.hl7", 10), ("b.hl7", 0), ("c.hl7", 70_000)):
        (server.root / name).write_bytes(b"m" * size)
        os.utime(server.root / name, (stamp, stamp + size))
    (server.root / "folder").mkdir()
    with connect(server, tls_files.ca) as session:
        entries = sorted(session.list_files(""), key=lambda e: e.name)
    assert entries == [
        RemoteEntry(name="a.hl7", size=10, mtime=stamp + 10),
        RemoteEntry(name="b.hl7", size=0, mtime=stamp),
        RemoteEntry(name="c.hl7", size=70_000, mtime=stamp + 70_000),
    ]


def test_listing_without_mlsd(tmp_path: Path, tls_files: TLSFiles) -> None:
    """An old server without MLSD: NLST, then SIZE and MDTM per name (folders left out)."""
    stamp = calendar.timegm((2023, 7, 1, 0, 0, 1, 0, 0, 0))
    with FTPTestServer(tmp_path / "home", tls_files=tls_files, mlsd=False) as server:
        (server.root / "in").mkdir()
        (server.root / "in" / "sub").mkdir()
        (server.root / "in" / "x.hl7").write_bytes(b"12345")
        os.utime(server.root / "in" / "x.hl7", (stamp, stamp))
        with connect(server, tls_files.ca) as session:
            first = session.list_files("in")
            second = session.list_files("in")
            assert session.list_files("in/sub") == []
    assert first == second == [RemoteEntry(name="x.hl7", size=5, mtime=stamp)]


@pytest.mark.parametrize("mlsd", [True, False], ids=["mlsd", "nlst"])
def test_empty_listings(tmp_path: Path, tls_files: TLSFiles, mlsd: bool) -> None:
    """Regression: an empty listing once failed about one time in four.

    The server closes an empty data connection without a TLS close_notify
    while its TLS 1.3 session tickets are still arriving; ftplib's TLS
    shutdown then raised SHUTDOWN_WHILE_IN_INIT. Forty listings in a row.
    """
    with FTPTestServer(tmp_path / "home", tls_files=tls_files, mlsd=mlsd) as server:
        (server.root / "empty").mkdir()
        (server.root / "full").mkdir()
        (server.root / "full" / "x.hl7").write_bytes(b"x")
        with connect(server, tls_files.ca) as session:
            for _ in range(20):
                assert [e.name for e in session.list_files("full")] == ["x.hl7"]
                assert session.list_files("empty") == []


def test_close_twice_and_after_the_server_left(server: FTPTestServer, tls_files: TLSFiles) -> None:
    session = connect(server, tls_files.ca)
    server.stop()
    with pytest.raises(RemoteError) as caught:
        session.list_files("")
    assert caught.value.kind is RemoteErrorKind.CONNECTION
    assert caught.value.transient
    session.close()
    session.close()


def test_close_from_another_thread_during_a_transfer(tmp_path: Path, tls_files: TLSFiles) -> None:
    """What an abandoned worker thread meets: the close does not wait for the transfer.

    The server answers QUIT only once a transfer is over (here, 100 s of a
    throttled download); the close shuts the connection down instead and
    the download fails at once.
    """
    with FTPTestServer(tmp_path / "home", tls_files=tls_files, rate=10_000) as server:
        (server.root / "slow.hl7").write_bytes(b"s" * 1_000_000)
        session = connect(server, tls_files.ca, timeout=60)
        local = io.BytesIO()
        errors: list[BaseException] = []

        def download() -> None:
            try:
                session.download("slow.hl7", local)
            except BaseException as exc:
                errors.append(exc)

        worker = threading.Thread(target=download)
        worker.start()
        try:
            while local.tell() == 0 and worker.is_alive():
                time.sleep(0.01)
            closer = threading.Thread(target=session.close)
            closer.start()
            closer.join(20)
            worker.join(20)
            assert not closer.is_alive()
            assert not worker.is_alive()
        finally:
            server.stop()
            worker.join()
    assert len(errors) == 1 and isinstance(errors[0], RemoteError)
    assert errors[0].kind is RemoteErrorKind.CONNECTION
    assert 0 < local.tell() < 1_000_000
    assert "QUIT" not in server.commands


# -- trust and credentials ---------------------------------------------------


def test_untrusted_certificate_refused(tmp_path: Path) -> None:
    theirs = make_tls_files(tmp_path / "theirs")  # the server's CA is not ours
    ours = make_tls_files(tmp_path / "ours")
    with FTPTestServer(tmp_path / "home", tls_files=theirs) as server:
        error = refused(server, ours.ca)
        assert server.connections == 1
    assert error.kind is RemoteErrorKind.TRUST
    assert not error.transient
    message = str(error)
    assert "certificate failed verification" in message
    assert "unable to get local issuer certificate" in message
    assert "--ca" in message
    assert f"{server.host}:{server.port}" in message


def test_system_store_does_not_trust_a_private_ca(
    server: FTPTestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without --ca the system's store decides, and it knows nothing of trustme's CA."""
    monkeypatch.setenv("SSL_CERT_FILE", os.devnull)
    monkeypatch.setenv("SSL_CERT_DIR", os.devnull)
    assert refused(server, None).kind is RemoteErrorKind.TRUST


def test_hostname_mismatch_refused(tmp_path: Path) -> None:
    ca = trustme.CA()
    files = make_tls_files(tmp_path / "tls", ca, names=("ftp.example.org",))
    with FTPTestServer(tmp_path / "home", tls_files=files) as server:
        error = refused(server, files.ca)
    assert error.kind is RemoteErrorKind.TRUST
    assert "127.0.0.1" in str(error)
    assert "not for this host name" in str(error)


def test_hostname_checked_by_name(tmp_path: Path) -> None:
    files = make_tls_files(tmp_path / "tls", names=("127.0.0.1",))
    with FTPTestServer(tmp_path / "home", tls_files=files) as server:
        error = refused(server, files.ca, host="localhost")
    assert error.kind is RemoteErrorKind.TRUST
    assert "not for this host name" in str(error)


def test_wrong_password(server: FTPTestServer, tls_files: TLSFiles) -> None:
    error = refused(server, tls_files.ca, password="not-the-password")
    assert error.kind is RemoteErrorKind.AUTH
    assert not error.transient
    assert "530" in str(error)
    assert "check the user name ('batch', in the URL) and the password" in str(error)
    assert "not-the-password" not in str(error)
    assert refused(server, tls_files.ca, username="nobody").kind is RemoteErrorKind.AUTH


def test_tls_version_floor(tmp_path: Path, tls_files: TLSFiles) -> None:
    with FTPTestServer(
        tmp_path / "home", tls_files=tls_files, max_tls=SSL.TLS1_2_VERSION
    ) as server:
        with connect(server, tls_files.ca) as session:
            session.upload(io.BytesIO(b"ok"), "a.hl7")
        assert [channel.tls_version for channel in server.data_channels] == ["TLSv1.2"]
        error = refused(server, tls_files.ca, tls_minimum="1.3")
    assert error.kind is RemoteErrorKind.REFUSED
    assert "--tls-min" in str(error)


@pytest.mark.parametrize("max_tls", [None, SSL.TLS1_2_VERSION], ids=["tls1.3", "tls1.2"])
def test_client_certificate(tmp_path: Path, tls_files: TLSFiles, max_tls: int | None) -> None:
    client_ca = trustme.CA()
    client_ca_file = tmp_path / "client-ca.pem"
    client_ca.cert_pem.write_to_path(str(client_ca_file))
    cert, key = write_leaf(client_ca.issue_cert("lab-sender.example"), tmp_path, "client")
    stranger, stranger_key = write_leaf(trustme.CA().issue_cert("x.example"), tmp_path, "other")
    with FTPTestServer(
        tmp_path / "home", tls_files=tls_files, client_ca=client_ca_file, max_tls=max_tls
    ) as server:
        with connect(server, tls_files.ca, cert=cert, key=key) as session:
            session.upload(io.BytesIO(b"signed"), "a.hl7")
            assert [(e.name, e.size) for e in session.list_files("")] == [("a.hl7", 6)]
        assert (server.root / "a.hl7").read_bytes() == b"signed"
        without = refused(server, tls_files.ca)
        wrong = refused(server, tls_files.ca, cert=stranger, key=stranger_key)
    # TLS 1.2: the server refuses in the handshake (no certificate: a
    # handshake_failure alert, ambiguous, so REFUSED naming --cert; a
    # stranger's: unknown_ca, AUTH). TLS 1.3: at the first command (AUTH).
    assert without.kind is (RemoteErrorKind.REFUSED if max_tls else RemoteErrorKind.AUTH)
    assert wrong.kind is RemoteErrorKind.AUTH
    for error in (without, wrong):
        assert not error.transient
        assert "client certificate" in str(error)
        assert "--cert" in str(error)


def test_unreadable_ca_file(server: FTPTestServer, tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.pem"
    bogus.write_text("not a certificate\n")
    error = refused(server, bogus)
    assert error.kind is RemoteErrorKind.TRUST
    assert "--ca" in str(error)
    assert server.connections == 0


# -- plain FTP and the TLS modes -----------------------------------------------


def test_plain_ftp_refused_unless_asked_for(tmp_path: Path) -> None:
    with FTPTestServer(tmp_path / "home", tls="none") as server:
        error = refused(server, None)
        assert error.kind is RemoteErrorKind.REFUSED
        assert "--insecure-plain-ftp" in str(error)
        assert server.connections == 0  # refused before connecting: no password sent

        with connect(server, None, insecure_plain_ftp=True) as session:
            session.makedirs("in")
            session.upload(io.BytesIO(b"plain"), "in/a.hl7")
            assert [e.name for e in session.list_files("in")] == ["a.hl7"]
            local = io.BytesIO()
            session.download("in/a.hl7", local)
        assert local.getvalue() == b"plain"
        assert server.connections == 1


def test_ftps_against_a_plain_server(tmp_path: Path, tls_files: TLSFiles) -> None:
    with FTPTestServer(tmp_path / "home", tls="none") as plain:
        target = RemoteTarget(scheme="ftps", host=plain.host, port=plain.port, username=USER)
        with pytest.raises(RemoteError) as caught:
            connect_ftp(target, RemoteOptions(password=PASSWORD, ca=tls_files.ca, timeout=10))
    assert caught.value.kind is RemoteErrorKind.REFUSED
    assert "does not offer TLS" in str(caught.value)


def test_implicit_tls(tmp_path: Path, tls_files: TLSFiles) -> None:
    payload = os.urandom(100_000)
    with FTPTestServer(
        tmp_path / "home", tls="implicit", tls_files=tls_files, require_session_reuse=True
    ) as server:
        with connect(server, tls_files.ca) as session:
            session.upload(io.BytesIO(payload), "a.hl7")
            local = io.BytesIO()
            session.download("a.hl7", local)
        assert local.getvalue() == payload
        assert [(c.secure, c.established, c.reused) for c in server.data_channels] == [
            (True, True, True)
        ] * 2
        # The wrong mode is a clear refusal, not a hang: implicit TLS
        # against an explicit server.
    with FTPTestServer(tmp_path / "home2", tls_files=tls_files) as explicit:
        error = refused(explicit, tls_files.ca, implicit_tls=True)
    assert error.kind is RemoteErrorKind.REFUSED
    assert "--implicit-tls" in str(error)


def test_explicit_client_against_an_implicit_server(tmp_path: Path, tls_files: TLSFiles) -> None:
    """Both sides wait for the other: the timeout ends it, and the error says what to try."""
    with FTPTestServer(tmp_path / "home", tls="implicit", tls_files=tls_files) as server:
        error = refused(server, tls_files.ca, implicit_tls=False, timeout=0.5)
    assert error.kind is RemoteErrorKind.CONNECTION
    assert "no greeting in 0.5 s (--timeout)" in str(error)
    assert "--implicit-tls" in str(error)


def test_implicit_tls_checks_the_certificate(tmp_path: Path, tls_files: TLSFiles) -> None:
    other = make_tls_files(tmp_path / "other")
    with FTPTestServer(tmp_path / "home", tls="implicit", tls_files=tls_files) as server:
        assert refused(server, other.ca).kind is RemoteErrorKind.TRUST


# -- the data channel ----------------------------------------------------------


def test_data_channel_is_protected(server: FTPTestServer, tls_files: TLSFiles) -> None:
    """PROT P is in force: every data connection the server saw was TLS (1.2 or later)."""
    with connect(server, tls_files.ca) as session:
        session.upload(io.BytesIO(b"a" * 1000), "a.hl7")
        session.list_files("")
        session.download("a.hl7", io.BytesIO())
    assert len(server.data_channels) == 3
    for channel in server.data_channels:
        assert channel.secure and channel.established
        assert channel.tls_version in ("TLSv1.2", "TLSv1.3")


def test_data_channel_resumes_the_control_session(tmp_path: Path, tls_files: TLSFiles) -> None:
    """A server requiring session reuse (vsftpd's default) accepts our transfers.

    The same server refuses ftplib's own FTP_TLS, which opens a fresh TLS
    session per data connection: the requirement is real, and it is our
    ntransfercmd that meets it.
    """
    payload = os.urandom(50_000)
    with FTPTestServer(
        tmp_path / "home", tls_files=tls_files, require_session_reuse=True
    ) as server:
        with connect(server, tls_files.ca) as session:
            session.upload(io.BytesIO(payload), "a.hl7")
            local = io.BytesIO()
            session.download("a.hl7", local)
            assert [e.name for e in session.list_files("")] == ["a.hl7"]
        assert local.getvalue() == payload
        assert [c.reused for c in server.data_channels] == [True, True, True]

        context = ssl.create_default_context(cafile=str(tls_files.ca))
        stock = ftplib.FTP_TLS(context=context, timeout=10)
        with contextlib.closing(stock):
            stock.connect(server.host, server.port)
            stock.login(USER, PASSWORD)
            stock.prot_p()
            with pytest.raises((ftplib.error_perm, OSError, EOFError)):
                stock.retrbinary("RETR a.hl7", lambda data: None)
        assert server.data_channels[-1].reused is False


# -- the server going away mid-transfer ---------------------------------------


class DiskFull(io.BytesIO):
    """A staging file that fails like a full disk after ``room`` bytes."""

    def __init__(self, room: int) -> None:
        super().__init__()
        self.room = room

    def write(self, data: Any) -> int:
        if self.tell() + len(data) > self.room:
            raise OSError(28, "No space left on device")
        return super().write(data)


def test_a_local_write_failure_is_not_the_servers(
    server: FTPTestServer, tls_files: TLSFiles
) -> None:
    payload = os.urandom(500_000)
    (server.root / "a.hl7").write_bytes(payload)
    with connect(server, tls_files.ca) as session, pytest.raises(RemoteError) as caught:
        session.download("a.hl7", DiskFull(room=100_000))
    # Transient (the session is dropped, the download tried again later),
    # and it says the local side failed.
    assert caught.value.kind is RemoteErrorKind.CONNECTION
    assert "local side: No space left on device" in str(caught.value)
    with connect(server, tls_files.ca) as session:
        local = io.BytesIO()
        session.download("a.hl7", local)
    assert local.getvalue() == payload


class StopsServer(io.BytesIO):
    """A staging file that stops the server once ``after`` bytes have been written."""

    def __init__(self, server: FTPTestServer, after: int) -> None:
        super().__init__()
        self.server = server
        self.after = after

    def write(self, data: Any) -> int:
        written = super().write(data)
        if self.after and self.tell() >= self.after:
            self.after = 0
            self.server.stop()
        return written


class StopsServerReading(io.BytesIO):
    """A local file that stops the server once ``after`` bytes have been read from it."""

    def __init__(self, payload: bytes, server: FTPTestServer, after: int) -> None:
        super().__init__(payload)
        self.server = server
        self.after = after

    def read(self, size: int | None = -1) -> bytes:
        data = super().read(size)
        if self.after and self.tell() >= self.after:
            self.after = 0
            self.server.stop()
        return data


def test_download_resumes_after_the_server_went_away(tmp_path: Path, tls_files: TLSFiles) -> None:
    payload = os.urandom(1_000_000)
    # Throttled so that most of the file is still on the server when it stops.
    with FTPTestServer(tmp_path / "home", tls_files=tls_files, rate=400_000) as server:
        (server.root / "big.hl7").write_bytes(payload)
        staging = StopsServer(server, after=100_000)
        with connect(server, tls_files.ca) as session, pytest.raises(RemoteError) as caught:
            session.download("big.hl7", staging)
        assert caught.value.kind is RemoteErrorKind.CONNECTION
        assert caught.value.transient
        got = staging.getvalue()
        assert 100_000 <= len(got) < len(payload)

        server.set_rate(0)
        server.start()  # the same port
        with connect(server, tls_files.ca) as session:
            staging.seek(len(got))
            resumed = session.download("big.hl7", staging, offset=len(got))
    assert resumed == len(payload) - len(got)
    assert staging.getvalue() == payload


def test_upload_resumes_after_the_server_went_away(tmp_path: Path, tls_files: TLSFiles) -> None:
    payload = os.urandom(1_000_000)
    with FTPTestServer(tmp_path / "home", tls_files=tls_files) as server:
        local = StopsServerReading(payload, server, after=200_000)
        with connect(server, tls_files.ca) as session, pytest.raises(RemoteError) as caught:
            session.upload(local, "big.hl7")
        assert caught.value.kind is RemoteErrorKind.CONNECTION
        partial = (server.root / "big.hl7").read_bytes()
        assert len(partial) < len(payload)
        assert payload.startswith(partial)

        server.start()
        with connect(server, tls_files.ca) as session:
            offset = session.size("big.hl7")
            assert offset == len(partial)
            sent = session.upload(io.BytesIO(payload), "big.hl7", offset=offset)
            assert session.size("big.hl7") == len(payload)
    assert sent == len(payload) - len(partial)
    assert (server.root / "big.hl7").read_bytes() == payload


# -- through the pickup engine -------------------------------------------------


def batch_file(ids: list[str]) -> bytes:
    """A batch file (FHS, BHS, one message per control id, BTS, FTS)."""
    body = b"".join(make_message(control_id=i) for i in ids)
    return (
        b"FHS|^~\\&|LAB|HOSP|EHR|CLINIC|20240131||lab.hl7||F001\r"
        b"BHS|^~\\&|LAB|HOSP|EHR|CLINIC|20240131||||B001\r" + body + b"BTS|%d\rFTS|1\r" % len(ids)
    )


async def test_pull_over_ftps_into_the_journal_exactly_once(
    tmp_path: Path, tls_files: TLSFiles, autojump_clock: trio.testing.MockClock
) -> None:
    files = {"a.hl7": ["A1", "A2", "A3"], "b.hl7": ["B1", "B2"]}
    seen: list[str] = []

    async def handler(message: InboundMessage) -> None:
        seen.append(message.control_id)

    def client(server: FTPTestServer) -> RemoteClient:
        return RemoteClient(
            parse_target(server.url("inbox")),
            RemoteOptions(password=PASSWORD, ca=tls_files.ca, timeout=10),
            policy=RetryPolicy(retries=3, base=0.05, cap=0.2),
        )

    # vsftpd-like: the data channel must resume the control channel's session.
    with FTPTestServer(
        tmp_path / "home", tls_files=tls_files, require_session_reuse=True
    ) as server:
        inbox = server.root / "inbox"
        inbox.mkdir()
        for name, ids in files.items():
            (inbox / name).write_bytes(batch_file(ids))
        stamps = {name: (inbox / name).stat().st_mtime for name in files}

        async with open_sqlite_store(tmp_path / "journal") as store:
            processor = JournalProcessor(store, handler)
            config = PullConfig(stable_seconds=1, poll_interval=1)
            staging = tmp_path / "staging"
            stats = await RemotePuller(
                client(server), staging, store, processor, config=config
            ).run(once=True)
            assert (stats.files_done, stats.messages) == (2, 5)
            assert sorted(seen) == ["A1", "A2", "A3", "B1", "B2"]
            assert await store.count() == 5
            assert sorted(p.name for p in inbox.iterdir() if p.is_file()) == []
            done = inbox / "done"
            for name, ids in files.items():
                assert (done / name).read_bytes() == batch_file(ids)
                assert (done / (name + ".ack")).is_file()

            # A crash after the messages, before the move: the file is back
            # in the inbox as it was. A new puller only moves it again.
            (done / "a.hl7").rename(inbox / "a.hl7")
            (done / "a.hl7.ack").unlink()
            os.utime(inbox / "a.hl7", (stamps["a.hl7"], stamps["a.hl7"]))
            stats = await RemotePuller(
                client(server), staging, store, processor, config=config
            ).run(once=True)
            assert (stats.files_done, stats.messages) == (1, 0)
            assert sorted(seen) == ["A1", "A2", "A3", "B1", "B2"]
            assert await store.count() == 5
            assert (done / "a.hl7").is_file()
            assert not (inbox / "a.hl7").exists()
        assert server.data_channels
        assert all(c.secure and c.reused for c in server.data_channels)


async def stop_when(
    server: FTPTestServer, grown: Callable[[], int], at: int, *, down_for: float = 0.3
) -> int:
    """Stop ``server`` once ``grown()`` reaches ``at`` bytes; start it again (unthrottled)."""
    while (size := grown()) < at:
        await trio.sleep(0.005)
    await trio.to_thread.run_sync(server.stop)
    await trio.sleep(down_for)
    server.set_rate(0)
    await trio.to_thread.run_sync(server.start)
    return size


def size_of(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


async def test_pull_resumes_after_the_server_went_away_mid_download(
    tmp_path: Path, tls_files: TLSFiles
) -> None:
    expected = [f"M{n:05d}" for n in range(1500)]
    data = batch_file(expected)
    seen: list[str] = []

    async def handler(message: InboundMessage) -> None:
        seen.append(message.control_id)

    # Throttled (50 kB/s) so that the cut lands well inside the file (264 kB).
    with FTPTestServer(tmp_path / "home", tls_files=tls_files, rate=50_000) as server:
        (server.root / "inbox").mkdir()
        (server.root / "inbox" / "big.hl7").write_bytes(data)
        client = RemoteClient(
            parse_target(server.url("inbox")),
            RemoteOptions(password=PASSWORD, ca=tls_files.ca, timeout=10),
            policy=RetryPolicy(retries=20, base=0.05, cap=0.2),
        )
        staging = tmp_path / "staging"
        async with open_sqlite_store(tmp_path / "journal") as store, trio.open_nursery() as nursery:
            cut_at: list[int] = []

            async def cutter() -> None:
                part = staging / "incoming" / "big.hl7"
                cut_at.append(await stop_when(server, lambda: size_of(part), 60_000))

            nursery.start_soon(cutter)
            puller = RemotePuller(
                client,
                staging,
                store,
                JournalProcessor(store, handler),
                config=PullConfig(stable_seconds=0, poll_interval=0.05, window=50),
            )
            stats = await puller.run(once=True)
            assert await store.count() == len(expected)
    assert 60_000 <= cut_at[0] < len(data)
    assert stats.reconnects >= 1
    assert stats.files_done == 1
    # Resumed, not started again: less than twice the file went over the wire.
    assert len(data) <= stats.bytes_downloaded < 2 * len(data)
    assert sorted(seen) == expected  # each message once
    assert server.files("inbox/done")["big.hl7"] == data
    assert any(c.startswith("REST ") for c in server.commands)


async def test_push_resumes_after_the_server_went_away_mid_upload(
    tmp_path: Path, tls_files: TLSFiles
) -> None:
    data = os.urandom(600_000)
    source = tmp_path / "out" / "big.hl7"
    source.parent.mkdir()
    source.write_bytes(data)
    # The server reads 100 kB/s: the upload is under way when it stops.
    with FTPTestServer(tmp_path / "home", tls_files=tls_files, rate=100_000) as server:
        (server.root / "pushed").mkdir()
        client = RemoteClient(
            parse_target(server.url("pushed")),
            RemoteOptions(password=PASSWORD, ca=tls_files.ca, timeout=10),
            policy=RetryPolicy(retries=20, base=0.05, cap=0.2),
        )

        def partial() -> int:
            return sum(size_of(p) for p in (server.root / "pushed").glob(".big.hl7.*.part"))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(stop_when, server, partial, 60_000)
            result = await push_file(client, source)
        await client.aclose()
    assert result.outcome == "uploaded"
    assert 0 < result.resumed_from < len(data)
    assert server.files("pushed") == {"big.hl7": data}  # no temporary file left
    # Written under the temporary name only (STOR, then APPE to resume),
    # renamed into place once.
    writes = [c for c in server.commands if c.split()[0] in ("STOR", "APPE", "RNFR", "RNTO")]
    temp = writes[0].split()[1]
    assert temp.startswith("/pushed/.big.hl7.") and temp.endswith(".part")
    assert writes == [f"STOR {temp}", f"APPE {temp}", f"RNFR {temp}", "RNTO /pushed/big.hl7"]


async def test_push_compares_content_not_only_size_with_a_file_in_place(
    server: FTPTestServer, tls_files: TLSFiles, tmp_path: Path
) -> None:
    (server.root / "pushed").mkdir()
    source = tmp_path / "lab.hl7"
    source.write_bytes(batch_file(["T1", "T2"]))
    other = source.read_bytes().replace(b"T1", b"Y1")
    (server.root / "pushed" / "lab.hl7").write_bytes(other)
    client = RemoteClient(
        parse_target(server.url("pushed")),
        RemoteOptions(password=PASSWORD, ca=tls_files.ca, timeout=10),
        policy=RetryPolicy(retries=0),
    )
    try:
        with pytest.raises(RemoteError) as info:
            await push_file(client, source)
        assert info.value.kind is RemoteErrorKind.REFUSED
        (server.root / "pushed" / "lab.hl7").write_bytes(source.read_bytes())
        assert (await push_file(client, source)).outcome == "present"
    finally:
        await client.aclose()
    assert server.files("pushed") == {"lab.hl7": source.read_bytes()}


async def test_a_file_still_growing_or_rewritten_is_not_taken_until_stable(
    tmp_path: Path, server: FTPTestServer, tls_files: TLSFiles
) -> None:
    """Stability over FTPS: the size and the MLSD time (whole seconds) across listings."""
    (server.root / "inbox").mkdir()
    path = server.root / "inbox" / "lab.hl7"
    whole = batch_file(["G1", "G2", "G3", "G4"])
    path.write_bytes(whole[:150])
    os.utime(path, (1_700_000_000, 1_700_000_000))
    seen: list[str] = []

    async def handler(message: InboundMessage) -> None:
        seen.append(message.control_id)

    client = RemoteClient(
        parse_target(server.url("inbox")),
        RemoteOptions(password=PASSWORD, ca=tls_files.ca, timeout=10),
        policy=RetryPolicy(retries=3, base=0.05, cap=0.2),
    )
    async with open_sqlite_store(tmp_path / "journal") as store:
        puller = RemotePuller(
            client,
            tmp_path / "staging",
            store,
            JournalProcessor(store, handler),
            config=PullConfig(stable_seconds=0),
        )
        assert await puller.scan() == ([], 1)  # first seen
        with open(path, "ab") as f:
            f.write(whole[150:])
        os.utime(path, (1_700_000_001, 1_700_000_001))
        assert await puller.scan() == ([], 1)  # it grew: not stable
        # Rewritten in place with the same size: only the time tells.
        path.write_bytes(whole)
        os.utime(path, (1_700_000_002, 1_700_000_002))
        assert await puller.scan() == ([], 1)
        assert seen == []
        reports, waiting = await puller.scan()  # unchanged across two listings
        await client.aclose()
    assert [(r.name, r.outcome, r.messages) for r in reports] == [("lab.hl7", "done", 4)]
    assert waiting == 0
    assert seen == ["G1", "G2", "G3", "G4"]
