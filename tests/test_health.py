"""/healthz and /readyz: readiness flips when the journal, the disk or the certificate fail."""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
import trustme

from mllp_trio._service import ServiceConfig, tls_expiries
from mllp_trio._service._health import check_disk, check_writable
from mllp_trio._tls import ServerTLS, ServerTLSConfig

from .service_helpers import http_get, running_service, samples
from .tls_helpers import SERVER_NAMES, make_tls_material, write_crl, write_leaf


@contextlib.contextmanager
def read_only_directory(directory: Path) -> Iterator[None]:
    """Make ``directory`` refuse new files, for root as well as for others.

    Root ignores permission bits, so as root the directory is made
    immutable (chattr +i), which stops root too; otherwise mode 0500.
    """
    if os.geteuid() != 0:
        os.chmod(directory, 0o500)
        try:
            yield
        finally:
            os.chmod(directory, 0o700)
        return
    chattr = shutil.which("chattr")
    if chattr is None:
        pytest.skip("running as root without chattr: no way to make a directory read-only")
    result = subprocess.run([chattr, "+i", str(directory)], capture_output=True, check=False)
    if result.returncode != 0:
        pytest.skip(f"chattr +i is not supported here: {result.stderr.decode().strip()}")
    try:
        yield
    finally:
        subprocess.run([chattr, "-i", str(directory)], check=True)


def test_writable_check_fails_in_a_read_only_directory(tmp_path: Path) -> None:
    assert check_writable(tmp_path) is None
    with read_only_directory(tmp_path):
        reason = check_writable(tmp_path)
    assert reason is not None and "not writable" in reason and str(tmp_path) in reason
    assert check_writable(tmp_path) is None
    assert not list(tmp_path.iterdir())  # the probe leaves nothing behind


def test_disk_check_compares_free_space_with_the_threshold(tmp_path: Path) -> None:
    free = shutil.disk_usage(tmp_path).free
    assert check_disk(tmp_path, 0) is None
    reason = check_disk(tmp_path, free * 4 + 2**30)
    assert reason is not None and "disk space low" in reason


async def test_readyz_flips_when_the_journal_folder_becomes_read_only(tmp_path: Path) -> None:
    journal = tmp_path / "journal"
    async with running_service(journal) as svc:
        assert await http_get(svc.http_port, "/readyz") == (200, "ready\n")
        with read_only_directory(journal):
            status, body = await http_get(svc.http_port, "/readyz")
            metrics = await http_get(svc.http_port, "/metrics")
        assert status == 503
        assert body.startswith("not ready:\n- journal directory")
        assert "not writable" in body
        assert samples(metrics[1])[("mllp_ready", ())] == 0
        assert await http_get(svc.http_port, "/readyz") == (200, "ready\n")
        # Liveness never depended on it.
        assert (await http_get(svc.http_port, "/healthz"))[0] == 200


async def test_readyz_says_when_disk_space_is_below_the_threshold(tmp_path: Path) -> None:
    huge = ServiceConfig(metrics_port=0, min_free_bytes=2**62)
    async with running_service(tmp_path / "journal", service=huge) as svc:
        status, body = await http_get(svc.http_port, "/readyz")
    assert status == 503 and "disk space low" in body


async def test_readyz_not_ready_while_not_listening_and_after_shutdown(tmp_path: Path) -> None:
    async with running_service(tmp_path / "journal") as svc:
        assert (await svc.monitor.readiness()).ready
        svc.server.shutdown()
        with trio.fail_after(5):
            while svc.server.listeners[0].socket.fileno() >= 0:
                await trio.sleep(0.001)
        readiness = await svc.monitor.readiness()
        assert readiness.reasons == ("listener closed (shutting down)",)


def short_lived_tls(directory: Path, days: int) -> ServerTLSConfig:
    """A server certificate that expires in ``days`` days (its CA lives long)."""
    ca = trustme.CA()
    now = datetime.datetime.now(datetime.UTC)
    leaf = ca.issue_cert(*SERVER_NAMES, not_after=now + datetime.timedelta(days=days))
    cert, key = write_leaf(leaf, directory, "server")
    ca_file = directory / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    return ServerTLSConfig(cert_file=cert, key_file=key, ca_file=ca_file)


async def test_readyz_flips_when_the_certificate_is_about_to_expire(tmp_path: Path) -> None:
    tls = ServerTLS(short_lived_tls(tmp_path, days=3))
    # A 2-day window: ready; a 7-day window: not ready, with the reason.
    relaxed = ServiceConfig(metrics_port=0, min_free_bytes=0, cert_warning=datetime.timedelta(2))
    async with running_service(tmp_path / "a", service=relaxed, tls=tls) as svc:
        assert await http_get(svc.http_port, "/readyz") == (200, "ready\n")
        found = samples((await http_get(svc.http_port, "/metrics"))[1])
    expiry = found[("mllp_certificate_expiry_timestamp_seconds", (("kind", "server"),))]
    remaining = expiry - datetime.datetime.now(datetime.UTC).timestamp()
    assert 2 * 86400 < remaining <= 3 * 86400

    strict = ServiceConfig(metrics_port=0, min_free_bytes=0, cert_warning=datetime.timedelta(7))
    async with running_service(tmp_path / "b", service=strict, tls=tls) as svc:
        status, body = await http_get(svc.http_port, "/readyz")
    assert status == 503
    assert "expiring soon: server certificate" in body and "server.pem" in body


def test_expiry_covers_server_chain_ca_and_crl(tmp_path: Path) -> None:
    material = make_tls_material(tmp_path)
    next_update = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=1)
    crl = write_crl(material.ca, [], tmp_path / "crl.pem", next_update=next_update)
    config = ServerTLSConfig(
        cert_file=material.server_cert_file,
        key_file=material.server_key_file,
        ca_file=material.ca_file,
        crl_file=crl,
    )
    found = tls_expiries(config)
    assert {e.kind for e in found} == {"server", "ca", "crl"}
    (crl_expiry,) = [e for e in found if e.kind == "crl"]
    assert abs((crl_expiry.not_after - next_update).total_seconds()) < 1
    assert "CRL of" in crl_expiry.describe()


async def test_expiring_certificate_is_logged_at_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="mllp_trio")
    tls = ServerTLS(short_lived_tls(tmp_path, days=3))
    async with running_service(tmp_path / "j", tls=tls):
        pass
    warnings = [r for r in caplog.records if r.name == "mllp_trio.service"]
    assert any("expiring soon: server certificate" in r.getMessage() for r in warnings)
