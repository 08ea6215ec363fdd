"""``mllp-trio batch pull`` and ``batch push``: batch files over SFTP and FTPS.

``pull`` runs :class:`~mllp_trio.store._remote.RemotePuller` with the journal
and the processor of ``batch watch``; ``push`` uploads files with
:func:`~mllp_trio.store._remote.push_file` (temporary name, size check,
rename). Both share the connection options below. Registered in the
``batch`` group by ``_batch``.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import time
from functools import partial
from pathlib import Path
from typing import Any

import attrs
import click
import trio

import mllp_trio
from mllp_trio._cli._common import DEFAULT_STORE, run_trio, setup_logging
from mllp_trio._cli._options import (
    NON_NEGATIVE_INT,
    POSITIVE_SECONDS,
    _option_set,
    choice,
    done_marker_suffix,
    file_pickup_options,
    log_level_option,
)
from mllp_trio._cli._progress import FileProgress
from mllp_trio._cli._send import EXIT_CONNECTION, EXIT_INTERRUPTED
from mllp_trio.store._files import make_private_dir
from mllp_trio.store._remote import (
    PullConfig,
    PullStats,
    RemoteClient,
    RemoteError,
    RemoteOptions,
    RemotePuller,
    RemoteReport,
    RemoteTarget,
    RetryPolicy,
    format_target,
    parse_target,
    push_file,
)

__all__ = ["pull", "push"]

_FILE = click.Path(path_type=Path, dir_okay=False)
_PASSWORD_VARIABLE = "MLLP_TRIO_REMOTE_PASSWORD"
_SFTP_ONLY = ("known_hosts", "accept_new_host_key", "identity")
_FTPS_ONLY = ("ca", "cert", "key", "implicit_tls")
_FLAG = {
    "known_hosts": "--known-hosts",
    "accept_new_host_key": "--accept-new-host-key",
    "identity": "--identity",
    "ca": "--ca",
    "cert": "--cert",
    "key": "--key",
    "implicit_tls": "--implicit-tls",
}


@attrs.frozen(kw_only=True)
class RemoteCLIOptions:
    """The connection flags of ``batch pull`` and ``batch push``."""

    password_env: str | None
    password_file: Path | None
    known_hosts: Path | None
    accept_new_host_key: bool
    identity: Path | None
    ca: Path | None
    cert: Path | None
    key: Path | None
    tls_min: str
    implicit_tls: bool
    insecure_plain_ftp: bool
    timeout: float
    retries: int
    retry_cap: float

    def build(self, url: str) -> tuple[RemoteTarget, RemoteOptions]:
        """The target and the options, every problem reported with its flag."""
        try:
            target = parse_target(url, implicit_tls=self.implicit_tls)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="'URL'") from None
        unused = _SFTP_ONLY if target.scheme != "sftp" else _FTPS_ONLY
        for name in unused:
            if getattr(self, name):
                raise click.BadParameter(
                    f"does not apply to {target.scheme}:// (only to "
                    f"{'sftp://' if name in _SFTP_ONLY else 'ftps://'})",
                    param_hint=f"'{_FLAG[name]}'",
                )
        if target.scheme == "ftp":
            if not self.insecure_plain_ftp:
                raise click.BadParameter(
                    "ftp:// sends the password and the patient data unencrypted: use ftps:// "
                    "(or sftp://), or add --insecure-plain-ftp inside a trusted network",
                    param_hint="'URL'",
                )
            click.echo(
                "WARNING: plain FTP (--insecure-plain-ftp): the password and every file cross "
                "the network unencrypted and the server is not verified",
                err=True,
            )
        elif self.insecure_plain_ftp:
            raise click.BadParameter(
                f"only applies to ftp:// URLs, not {target.scheme}://",
                param_hint="'--insecure-plain-ftp'",
            )
        for flag, path in (
            ("--identity", self.identity),
            ("--ca", self.ca),
            ("--cert", self.cert),
            ("--key", self.key),
        ):
            if path is not None and not path.is_file():
                raise click.BadParameter(f"{path}: no such file", param_hint=f"'{flag}'")
        if self.key is not None and self.cert is None:
            raise click.BadParameter(
                "needs --cert (the certificate it belongs to)", param_hint="'--key'"
            )
        options = RemoteOptions(
            password=self._password(),
            timeout=self.timeout,
            known_hosts=self.known_hosts,
            accept_new_host_key=self.accept_new_host_key,
            identity=self.identity,
            identity_password=os.environ.get("MLLP_TRIO_IDENTITY_PASSWORD"),
            ca=self.ca,
            cert=self.cert,
            key=self.key,
            tls_minimum="1.3" if self.tls_min == "1.3" else "1.2",
            implicit_tls=self.implicit_tls,
            insecure_plain_ftp=self.insecure_plain_ftp,
        )
        if self.accept_new_host_key:
            click.echo(
                "note: --accept-new-host-key trusts an unknown server on first use and pins "
                "its key (a changed key is still refused)",
                err=True,
            )
        return target, options

    def _password(self) -> str | None:
        if self.password_env is not None and self.password_file is not None:
            raise click.BadParameter(
                "give the password one way: --password-env or --password-file",
                param_hint="'--password-file'",
            )
        if self.password_file is not None:
            try:
                text = self.password_file.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise click.BadParameter(
                    f"{self.password_file}: {getattr(exc, 'strerror', None) or exc}",
                    param_hint="'--password-file'",
                ) from None
            return text.rstrip("\r\n")
        if self.password_env is not None:
            value = os.environ.get(self.password_env)
            if value is None:
                raise click.BadParameter(
                    f"the environment variable {self.password_env} is not set",
                    param_hint="'--password-env'",
                )
            return value
        return os.environ.get(_PASSWORD_VARIABLE)

    def client(self, url: str) -> RemoteClient:
        """A :class:`RemoteClient` for ``url``."""
        target, options = self.build(url)
        return RemoteClient(
            target, options, policy=RetryPolicy(retries=self.retries, cap=self.retry_cap)
        )


def _env_name(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value):
        raise click.BadParameter(
            "the NAME of an environment variable holding the password (not the password)",
            ctx,
            param,
        )
    return value


remote_options = _option_set(
    "remote",
    lambda **v: RemoteCLIOptions(**v),
    click.option(
        "--password-env",
        metavar="VAR",
        callback=_env_name,
        help=f"read the password from this environment variable  [default: {_PASSWORD_VARIABLE}"
        " when set]",
    ),
    click.option(
        "--password-file",
        type=_FILE,
        help="read the password from this file (first line)",
    ),
    click.option(
        "--known-hosts",
        type=_FILE,
        help="SFTP: OpenSSH known_hosts file the server's host key must be in  "
        "[default: ~/.ssh/known_hosts]",
    ),
    click.option(
        "--accept-new-host-key",
        is_flag=True,
        help="SFTP: trust an unknown server on first use and add its key to --known-hosts "
        "(a changed key is still refused)",
    ),
    click.option(
        "--identity",
        type=_FILE,
        help="SFTP: private key file (passphrase: MLLP_TRIO_IDENTITY_PASSWORD)  "
        "[default: ssh-agent and ~/.ssh keys when no password is given]",
    ),
    click.option("--ca", type=_FILE, help="FTPS: PEM CA bundle  [default: the system's]"),
    click.option("--cert", type=_FILE, help="FTPS: client certificate (PEM)"),
    click.option("--key", type=_FILE, help="FTPS: the client certificate's key when not in --cert"),
    click.option(
        "--tls-min",
        type=choice("1.2", "1.3"),
        default="1.2",
        show_default=True,
        help="FTPS: the lowest TLS version accepted",
    ),
    click.option(
        "--implicit-tls", is_flag=True, help="FTPS: TLS from the first byte (port 990 style)"
    ),
    click.option(
        "--insecure-plain-ftp",
        is_flag=True,
        help="allow ftp:// (nothing encrypted, server not verified): only inside a trusted "
        "network; warned at every start",
    ),
    click.option(
        "--timeout",
        type=POSITIVE_SECONDS,
        default=30.0,
        show_default=True,
        help="seconds to connect, and for each network operation to make progress",
    ),
    click.option(
        "--retries",
        type=NON_NEGATIVE_INT,
        default=5,
        show_default=True,
        help="reconnects after a broken connection before an operation gives up",
    ),
    click.option(
        "--retry-cap",
        type=POSITIVE_SECONDS,
        default=60.0,
        show_default=True,
        help="longest wait between reconnects, in seconds (exponential backoff)",
    ),
)


def _staging_for(store: Path, target: RemoteTarget) -> Path:
    """One staging folder per remote inbox, under the journal folder."""
    url = format_target(target)
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{target.scheme}_{target.host}_{target.port}")
    return store / "remote" / f"{slug}_{hashlib.sha256(url.encode()).hexdigest()[:10]}"


@click.command()
@click.argument("url")
@click.option(
    "--store",
    type=click.Path(path_type=Path, file_okay=False),
    default=DEFAULT_STORE,
    show_default=True,
    help="journal folder: every message is stored, and every file's progress",
)
@click.option(
    "--staging",
    type=click.Path(path_type=Path, file_okay=False),
    help="local folder for downloads  [default: STORE/remote/<server>_<hash of URL>]",
)
@click.option("--done", "done_folder", help="remote folder for processed files  [INBOX/done]")
@click.option("--error", "error_folder", help="remote folder for refused files  [INBOX/error]")
@click.option("--delete", is_flag=True, help="delete processed files on the server (not done/)")
@click.option("--outbox", help="remote folder that also gets each acknowledgement batch")
@click.option("--pattern", default="*", show_default=True, help="file names to pick up (glob)")
@click.option(
    "--interval",
    type=POSITIVE_SECONDS,
    default=5.0,
    show_default=True,
    help="seconds between listings of the inbox",
)
@file_pickup_options(
    stable="size and mtime unchanged across listings this long before a file is taken",
    marker="take NAME only once NAME<suffix> is listed (e.g. .done), whatever its age",
    left="on the server (journal or server refusing)",
    ack_batch="NAME.ack",
    window="messages of a file in the journal and handler at once (see batch watch)",
)
@click.option("--once", is_flag=True, help="exit when the inbox holds nothing left to take")
@remote_options
@click.option("-q", "--quiet", is_flag=True, help="no per-file lines nor progress")
@log_level_option("warning")
def pull(
    *,
    url: str,
    store: Path,
    staging: Path | None,
    done_folder: str | None,
    error_folder: str | None,
    delete: bool,
    outbox: str | None,
    pattern: str,
    stable_seconds: float,
    done_marker: str | None,
    interval: float,
    retry_interval: float,
    ack_mode: str,
    checkpoint_every: int,
    window: int,
    lenient: bool,
    once: bool,
    remote: RemoteCLIOptions,
    quiet: bool,
    log_level: str,
) -> int:
    """Pick batch files up from a remote inbox (sftp://, ftps://) into the journal, exactly once.

    URL is sftp://[USER@]HOST[:PORT]/FOLDER or ftps://... (the folder is
    relative to the login folder; //FOLDER for an absolute one). A file is
    taken once its size and modification time are the same across listings
    for --stable-seconds (or once its --done-marker is listed), downloaded
    to --staging (resumed after a broken connection), and its messages go
    through the same journal path as `batch watch`. Only when every message
    is committed does the file move to the remote done/ with its
    acknowledgement batch (NAME.ack; --outbox gets a copy), or to error/
    with NAME.error when its structure is broken. A crash or Ctrl-C
    anywhere resumes at the next start without duplicates.

    The server's SSH host key must be in --known-hosts; the password comes
    from --password-env/--password-file, never from the command line.

    Exit codes: 0 all done, 1 a file went to error/ or was left (--once),
    3 the server could not be used (connection, host key, login), 130
    interrupted.
    """
    setup_logging(log_level)
    client = remote.client(url)
    if staging is None:
        staging = _staging_for(store, client.target)
    config = PullConfig(
        done_folder=done_folder,
        error_folder=error_folder,
        delete=delete,
        outbox=outbox,
        pattern=pattern,
        stable_seconds=stable_seconds,
        done_marker=done_marker,
        poll_interval=interval,
        retry_interval=retry_interval,
        ack_mode=ack_mode.lower(),
        checkpoint_every=checkpoint_every,
        window=window,
        lenient=lenient,
    )
    started = time.monotonic()
    try:
        stats, interrupted = run_trio(
            partial(_pull, client, staging, store, config, once=once, quiet=quiet)
        )
    except RemoteError as exc:
        click.echo(f"mllp-trio: {exc}", err=True)
        return EXIT_CONNECTION
    elapsed = time.monotonic() - started
    rate = f", {stats.messages / elapsed:,.0f} msg/s" if elapsed > 0 and stats.messages else ""
    click.echo(
        f"{stats.files_done} file(s) done, {stats.files_error} to error/, "
        f"{stats.files_deferred} deferred; {stats.messages:,} message(s) processed "
        f"({stats.failed:,} refused), {stats.bytes_downloaded:,} bytes downloaded "
        f"({stats.download_seconds:.1f} s), "
        f"{stats.reconnects} reconnect(s) in {elapsed:.1f} s{rate}",
        err=True,
    )
    if interrupted:
        return EXIT_INTERRUPTED
    if stats.files_error or (once and stats.files_deferred):
        return 1
    return 0


def _report_line(report: RemoteReport) -> str:
    if report.outcome == "done":
        refused = f", {report.failed} refused" if report.failed else ""
        where = report.remote_path or "deleted on the server"
        return f"done  {report.name}: {report.messages:,} message(s){refused} -> {where}"
    if report.outcome == "error":
        return f"error {report.name}: {report.reason} -> {report.remote_path}"
    return f"left  {report.name}: {report.reason}"


async def _pull(
    client: RemoteClient,
    staging: Path,
    journal: Path,
    config: PullConfig,
    *,
    once: bool,
    quiet: bool,
) -> tuple[PullStats, bool]:
    progress = FileProgress(quiet=quiet)
    interrupted = False

    def on_report(report: RemoteReport) -> None:
        progress.finished(report.name)
        if not quiet:
            click.echo(_report_line(report), err=report.outcome != "done")

    async with mllp_trio.store.open_sqlite_store(journal) as store:
        processor = mllp_trio.store.JournalProcessor(store)
        puller = RemotePuller(
            client,
            staging,
            store,
            processor,
            config=config,
            on_report=on_report,
            on_progress=progress.update,
        )
        async with trio.open_nursery() as nursery:
            await nursery.start(processor.run)  # journaled messages left by a crash first
            if not quiet:
                click.echo(
                    f"pulling from {client.url} every {config.poll_interval:g} s (staging: "
                    f"{staging}/, journal: {journal}/); Ctrl-C stops",
                    err=True,
                )
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:

                async def stop_on_signal() -> None:
                    nonlocal interrupted
                    async for _ in signals:
                        click.echo(
                            "stopping: the file in progress resumes at the next start", err=True
                        )
                        interrupted = True
                        nursery.cancel_scope.cancel()
                        return

                nursery.start_soon(stop_on_signal)
                await puller.run(once=once)
                nursery.cancel_scope.cancel()
        return puller.stats, interrupted


@click.command()
@click.argument(
    "files",
    nargs=-1,
    required=True,
    type=click.Path(path_type=Path, dir_okay=False, exists=True, readable=True),
)
@click.argument("url")
@click.option("--name", help="remote file name (one FILE only)  [the name of FILE]")
@click.option("--replace", is_flag=True, help="replace a different file of that name on the server")
@click.option(
    "--done-marker",
    callback=done_marker_suffix,
    help="also write an empty NAME<suffix> after each file (for pickers that wait for one)",
)
@click.option(
    "--sent-dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="move each FILE here once it is in place on the server (the 'sent' mark)",
)
@remote_options
@click.option("-q", "--quiet", is_flag=True, help="no per-file lines")
@log_level_option("warning")
def push(
    *,
    files: tuple[Path, ...],
    url: str,
    name: str | None,
    replace: bool,
    done_marker: str | None,
    sent_dir: Path | None,
    remote: RemoteCLIOptions,
    quiet: bool,
    log_level: str,
) -> int:
    """Upload FILE... to the remote folder URL (sftp://, ftps://): each whole or not at all.

    Each file is uploaded under a hidden temporary name (.NAME.<hash>.part),
    its size on the server checked, then renamed to NAME. A broken
    connection is retried with backoff and the upload resumes where the
    server's temporary file ends. With --sent-dir, a file moves there only
    after its rename on the server. A file of the same name and content
    already on the server (same size, then same SHA-256) counts as sent (a
    rerun after a crash); a different one is refused unless --replace.

    Exit codes: 0 all uploaded, 1 a file was refused by the server, 3 the
    server could not be used (connection, host key, login), 130 interrupted.
    """
    setup_logging(log_level)
    if name is not None and (len(files) != 1 or "/" in name or name.startswith(".")):
        raise click.BadParameter(
            "a plain, not hidden file name, with exactly one FILE", param_hint="'--name'"
        )
    if sent_dir is not None:
        # Checked before anything is uploaded: a file sent but not movable
        # there would be sent again by the next run.
        try:
            make_private_dir(sent_dir)
            if not os.access(sent_dir, os.W_OK | os.X_OK):
                raise PermissionError(13, "not writable")
        except OSError as exc:
            raise click.BadParameter(
                f"{sent_dir}: {exc.strerror or exc}", param_hint="'--sent-dir'"
            ) from None
    client = remote.client(url)
    started = time.monotonic()
    results: dict[str, Any] = {"uploaded": 0, "present": 0, "refused": 0, "bytes": 0}

    async def main() -> bool:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:
                interrupted = False

                async def stop() -> None:
                    nonlocal interrupted
                    async for _ in signals:
                        interrupted = True
                        nursery.cancel_scope.cancel()
                        return

                nursery.start_soon(stop)
                try:
                    for file in files:
                        try:
                            result = await push_file(
                                client,
                                file,
                                name=name,
                                replace=replace,
                                done_marker=done_marker,
                                sent_dir=sent_dir,
                            )
                        except RemoteError as exc:
                            # No session: the server itself cannot be used (no
                            # TLS, no common TLS version...), not this one file.
                            if exc.transient or not client.connected:
                                raise
                            if exc.kind.value in ("trust", "auth"):
                                raise
                            results["refused"] += 1
                            click.echo(f"refused {file}: {exc}", err=True)
                            continue
                        results[result.outcome] += 1
                        results["bytes"] += result.size
                        if not quiet:
                            resumed = (
                                f", resumed at byte {result.resumed_from:,}"
                                if result.resumed_from
                                else ""
                            )
                            note = " (already there)" if result.outcome == "present" else ""
                            size = f"{result.size:,} bytes{resumed}"
                            click.echo(f"sent  {file} -> {result.path}{note} ({size})", err=True)
                finally:
                    await client.aclose()
                nursery.cancel_scope.cancel()
        return interrupted

    try:
        interrupted = run_trio(main)
    except RemoteError as exc:
        click.echo(f"mllp-trio: {exc}", err=True)
        return EXIT_CONNECTION
    except OSError as exc:
        raise click.ClickException(f"{exc.filename or ''}: {exc.strerror or exc}") from None
    elapsed = time.monotonic() - started
    click.echo(
        f"{results['uploaded']} file(s) uploaded, {results['present']} already there, "
        f"{results['refused']} refused; {results['bytes']:,} bytes in {elapsed:.1f} s, "
        f"{client.reconnects} reconnect(s)",
        err=True,
    )
    if interrupted:
        return EXIT_INTERRUPTED
    return 1 if results["refused"] else 0
