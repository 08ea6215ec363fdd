"""The SFTP backend (paramiko) against a real asyncssh server, and remote URLs."""

from __future__ import annotations

import io
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from mllp_trio.store._remote import (
    RemoteEntry,
    RemoteError,
    RemoteErrorKind,
    RemoteOptions,
    RemoteTarget,
    format_target,
    open_session,
    parse_target,
)
from mllp_trio.store._remote._sftp import SFTPSession

from .sftp_server import PASSWORD, SFTPTestServer, sftp_server


@pytest.fixture
def server(tmp_path: Path) -> Iterator[SFTPTestServer]:
    with sftp_server(tmp_path / "served") as srv:
        (srv.root / "inbox").mkdir()
        yield srv


@pytest.fixture
def session(tmp_path: Path, server: SFTPTestServer) -> Iterator[SFTPSession]:
    known = server.write_known_hosts(tmp_path / "known_hosts")
    opened = open_session(
        parse_target(server.url()), RemoteOptions(password=PASSWORD, known_hosts=known, timeout=5)
    )
    assert isinstance(opened, SFTPSession)
    try:
        yield opened
    finally:
        opened.close()
        opened.close()  # twice is fine


def test_listing_has_regular_files_only_with_size_and_mtime(
    server: SFTPTestServer, session: SFTPSession
) -> None:
    path = server.root / "inbox" / "a.hl7"
    path.write_bytes(b"12345")
    os.utime(path, (1_700_000_000, 1_700_000_000))
    (server.root / "inbox" / "sub").mkdir()
    assert session.list_files("inbox") == [RemoteEntry(name="a.hl7", size=5, mtime=1_700_000_000)]


def test_download_and_upload_from_an_offset(server: SFTPTestServer, session: SFTPSession) -> None:
    (server.root / "inbox" / "a.hl7").write_bytes(b"0123456789" * 10_000)
    sink = io.BytesIO()
    assert session.download("inbox/a.hl7", sink, offset=99_990) == 10
    assert sink.getvalue() == b"0123456789"
    assert session.upload(io.BytesIO(b"hello "), "inbox/b.part") == 6
    assert session.upload(io.BytesIO(b"hello world"[6:]), "inbox/b.part", offset=6) == 5
    assert (server.root / "inbox" / "b.part").read_bytes() == b"hello world"
    assert session.size("inbox/b.part") == 11
    assert session.size("inbox/nothing") is None


def test_rename_never_replaces_and_errors_have_kinds(
    server: SFTPTestServer, session: SFTPSession
) -> None:
    (server.root / "inbox" / "a").write_bytes(b"a")
    (server.root / "inbox" / "b").write_bytes(b"b")
    with pytest.raises(RemoteError) as info:
        session.rename("inbox/a", "inbox/b")
    assert info.value.kind is RemoteErrorKind.REFUSED and not info.value.transient
    assert (server.root / "inbox" / "b").read_bytes() == b"b"
    with pytest.raises(RemoteError) as info:
        session.download("inbox/missing", io.BytesIO())
    assert info.value.kind is RemoteErrorKind.NOT_FOUND
    with pytest.raises(RemoteError) as info:
        session.list_files("nowhere")
    assert info.value.kind is RemoteErrorKind.NOT_FOUND
    session.delete("inbox/a")
    session.delete("inbox/a")  # gone already: fine
    assert not (server.root / "inbox" / "a").exists()


def test_makedirs_creates_parents_and_accepts_existing(
    server: SFTPTestServer, session: SFTPSession
) -> None:
    session.makedirs("inbox/done/2024/01")
    session.makedirs("inbox/done/2024/01")
    assert (server.root / "inbox" / "done" / "2024" / "01").is_dir()


def test_a_broken_connection_is_a_transient_error(
    server: SFTPTestServer, session: SFTPSession
) -> None:
    server.stop()
    with pytest.raises(RemoteError) as info:
        session.list_files("inbox")
    assert info.value.kind is RemoteErrorKind.CONNECTION and info.value.transient


def test_nothing_listening_is_a_connection_error(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    target = RemoteTarget(scheme="sftp", host="127.0.0.1", port=port, username="lab")
    with pytest.raises(RemoteError) as info:
        open_session(target, RemoteOptions(known_hosts=tmp_path / "kh", timeout=2, password="x"))
    assert info.value.kind is RemoteErrorKind.CONNECTION
    assert f"cannot connect to 127.0.0.1:{port}" in str(info.value)


def test_an_encrypted_key_without_its_passphrase_is_an_auth_error(
    tmp_path: Path, server: SFTPTestServer
) -> None:
    import asyncssh

    key = asyncssh.generate_private_key("ssh-ed25519")
    path = tmp_path / "id_enc"
    key.write_private_key(str(path), passphrase="pp", format_name="openssh")
    known = server.write_known_hosts(tmp_path / "known_hosts")
    with pytest.raises(RemoteError) as info:
        open_session(
            parse_target(server.url()), RemoteOptions(known_hosts=known, identity=path, timeout=5)
        )
    assert info.value.kind is RemoteErrorKind.AUTH


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "sftp://lab@host/inbox",
            RemoteTarget(scheme="sftp", host="host", port=22, username="lab", folder="inbox"),
        ),
        (
            "sftp://host:2222//data/in/",
            RemoteTarget(scheme="sftp", host="host", port=2222, folder="/data/in"),
        ),
        (
            "ftps://a%40b@h/x%20y",
            RemoteTarget(scheme="ftps", host="h", port=21, username="a@b", folder="x y"),
        ),
        ("FTP://h", RemoteTarget(scheme="ftp", host="h", port=21)),
        ("sftp://[::1]:22/in", RemoteTarget(scheme="sftp", host="::1", port=22, folder="in")),
    ],
)
def test_parse_target(url: str, expected: RemoteTarget) -> None:
    assert parse_target(url) == expected
    assert parse_target(format_target(expected)) == expected


def test_parse_target_implicit_ftps_port_and_refusals() -> None:
    assert parse_target("ftps://h/in", implicit_tls=True).port == 990
    for bad, words in [
        ("sftp://u:secret@h/in", "no password in the URL"),
        ("http://h/in", "must start with"),
        ("sftp:///in", "no host"),
        ("sftp://h:99999/in", "port"),
        ("sftp://h/in?x=1", "no ?query"),
    ]:
        with pytest.raises(ValueError, match=words.replace("?", r"\?")):
            parse_target(bad)


def test_the_remote_classes_are_public_in_mllp_trio_store() -> None:
    # Users import them from the public namespace, not from store._remote.
    import mllp_trio.store
    from mllp_trio.store import _remote

    wanted = {
        "PullConfig",
        "PullStats",
        "PushResult",
        "RemoteClient",
        "RemoteDestination",
        "RemoteError",
        "RemoteErrorKind",
        "RemoteOptions",
        "RemotePuller",
        "RemoteReport",
        "RemoteTarget",
        "RetryPolicy",
        "format_target",
        "parse_target",
        "push_file",
    }
    assert wanted <= set(mllp_trio.store.__all__)
    for name in wanted:
        public = getattr(mllp_trio.store, name)
        assert public is getattr(_remote, name)
        assert public.__module__ == "mllp_trio.store"
        assert public.__doc__
