"""A TLS ``trio.abc.Stream`` that drives a non-blocking ``ssl.SSLSocket``.

``trio.SSLStream`` moves every TLS record through ``ssl.MemoryBIO`` objects in
Python. :class:`SSLSocketStream` instead hands the connected socket to
OpenSSL, so record processing and socket I/O happen in C; Trio only waits for
readiness with :func:`trio.lowlevel.wait_readable` /
:func:`trio.lowlevel.wait_writable`. The public surface follows
``trio.SSLStream`` so the two are interchangeable on a listener.
"""

from __future__ import annotations

import contextlib
import enum
import operator
import socket as stdlib_socket
import ssl
from types import TracebackType
from typing import Any, Final

import trio

__all__ = ["SSLSocketStream"]

# Plaintext of one TLS record is at most 16 KiB; asking for more lets OpenSSL
# hand over several records' worth when they are already decrypted.
_DEFAULT_RECEIVE_SIZE: Final = 65536

# aclose() sends close_notify best-effort; if the send buffer is full it waits
# for room at most this long, so closing never hangs on a stuck peer.
_CLOSE_NOTIFY_TIMEOUT: Final = 1.0
# How long a refused client may take to read our alert and close.
_LINGER_SECONDS: Final = 1.0

# A send that needs to read, or a receive that needs to write, only happens
# around a TLS 1.2 renegotiation. The other task may consume the readiness
# such a waiter sleeps on, so it re-polls instead of relying on one wake-up.
_CROSS_WAIT_POLL: Final = 0.01

_READ: Final = 0
_WRITE: Final = 1


class _ConflictDetector:
    """Raise ``trio.BusyResourceError`` when two tasks enter at once."""

    __slots__ = ("_held", "_msg")

    def __init__(self, msg: str) -> None:
        self._msg = msg
        self._held = False

    @property
    def held(self) -> bool:
        return self._held

    def __enter__(self) -> None:
        if self._held:
            raise trio.BusyResourceError(self._msg)
        self._held = True

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._held = False


class _State(enum.Enum):
    OK = "ok"
    BROKEN = "broken"
    CLOSED = "closed"


class SSLSocketStream(trio.abc.Stream):
    """TLS over a TCP connection, with record processing done by OpenSSL in C.

    A drop-in alternative to ``trio.SSLStream`` for a ``trio.SocketStream``
    transport, markedly cheaper per message (``benchmarks/tls_stream.py``
    measures the difference).

    Ownership: the constructor takes the operating-system socket out of
    ``transport_stream`` (which is unusable afterwards) and wraps it in a
    non-blocking ``ssl.SSLSocket``; from then on this stream owns the socket
    and closes it in :meth:`aclose`, or at once if the handshake fails.
    Socket options already set on the transport, such as ``TCP_NODELAY``,
    stay in force. There is no ``transport_stream`` attribute: read the
    address with :meth:`getpeername`, before the handshake if it may fail.

    The handshake is explicit (:meth:`do_handshake`) so the caller can bound
    it with ``trio.fail_after``; :meth:`receive_some` and :meth:`send_all`
    perform it on first use if it has not happened yet.

    End of stream: a ``close_notify`` alert from the peer ends the stream
    (``receive_some`` returns ``b""``, and keeps doing so). A TCP FIN
    without ``close_notify`` does too when ``suppress_ragged_eofs`` is true
    (the default): MLLP frames carry their own end marker, so a cut-off
    stream cannot pass a partial message off as whole, and many HL7 peers
    close without the alert. With ``suppress_ragged_eofs=False`` it raises
    ``trio.BrokenResourceError`` instead. A TCP reset seen while receiving
    follows the same rule (on every Python version, although the ``ssl``
    module reports it as ``SSLEOFError`` before 3.13 and as
    ``ConnectionResetError`` from 3.13); a reset seen while sending is
    always ``trio.BrokenResourceError``.

    Checkpoints: every method is a full trio checkpoint (cancel point and
    schedule point), as ``trio.abc.Stream`` asks; the stream passes
    ``trio.testing.check_two_way_stream`` unmodified.

    Errors: ``ssl.SSLError`` and ``OSError`` surface as
    ``trio.BrokenResourceError`` with the original as ``__cause__``. A
    cancelled handshake or a send cancelled part way leaves the stream
    broken; later calls raise ``trio.BrokenResourceError``. Renegotiation
    works but is slow; prefer a context with ``ssl.OP_NO_RENEGOTIATION``.

    Attributes:
        server_side: Whether this end is the TLS server.
        server_hostname: The name the server certificate was checked against
            (client side), else ``None``.
    """

    def __init__(
        self,
        transport_stream: trio.SocketStream,
        ssl_context: ssl.SSLContext,
        *,
        server_side: bool = False,
        server_hostname: str | None = None,
        suppress_ragged_eofs: bool = True,
    ) -> None:
        """Take over the socket of ``transport_stream`` and prepare TLS on it.

        Args:
            transport_stream: A connected TCP stream; its socket is detached
                and owned by the new object.
            ssl_context: The context to wrap the socket with.
            server_side: ``True`` on the accepting end. Default ``False``.
            server_hostname: The expected server name (client side); needed
                when ``ssl_context.check_hostname`` is set. Default ``None``.
            suppress_ragged_eofs: Treat a TCP FIN without ``close_notify`` as
                a clean end of stream. Default ``True``.

        Raises:
            TypeError: ``transport_stream`` is not a ``trio.SocketStream``.
            ValueError: ``ssl_context`` refused the arguments (for example a
                client with ``check_hostname`` and no ``server_hostname``);
                the socket is closed in that case.
        """
        if not isinstance(transport_stream, trio.SocketStream):
            raise TypeError(
                f"SSLSocketStream needs a trio.SocketStream, not {type(transport_stream).__name__}"
            )
        trio_sock = transport_stream.socket
        family, type_, proto = trio_sock.family, trio_sock.type, trio_sock.proto
        # detach() hands us the descriptor without closing it; Trio keys its
        # I/O registrations by descriptor number, so they stay coherent.
        raw = stdlib_socket.socket(family, type_, proto, fileno=trio_sock.detach())
        # Non-blocking before wrapping: SSLSocket copies the timeout, and
        # OpenSSL must report want-read/want-write instead of blocking.
        raw.setblocking(False)
        try:
            sock = ssl_context.wrap_socket(
                raw,
                server_side=server_side,
                server_hostname=server_hostname,
                do_handshake_on_connect=False,
                suppress_ragged_eofs=False,
            )
        except BaseException as exc:
            trio.lowlevel.notify_closing(raw)
            raw.close()
            _close_orphan(exc)
            raise
        self._sock: ssl.SSLSocket = sock
        self._fd: int = sock.fileno()
        self.server_side: bool = server_side
        self.server_hostname: str | None = server_hostname
        self._suppress_ragged_eofs = suppress_ragged_eofs
        self._state = _State.OK
        self._sock_closed = False
        self._handshake_done = False
        self._handshake_running: trio.Event | None = None
        self._eof = False
        self._drained = False  # the last read emptied OpenSSL's buffer and asked for more
        self._receive_conflict = _ConflictDetector(
            "another task is already receiving on this SSLSocketStream"
        )
        self._send_conflict = _ConflictDetector(
            "another task is already sending on this SSLSocketStream"
        )
        # Trio allows one waiter per descriptor and direction; a second task
        # wanting the same readiness waits for the first one's wake-up.
        self._io_waiting = [False, False]
        self._io_wakeup: list[trio.Event | None] = [None, None]

    # ------------------------------------------------------------------
    # Information about the connection

    @property
    def ssl_object(self) -> ssl.SSLSocket:
        """The underlying ``ssl.SSLSocket``.

        It has the methods of ``ssl.SSLObject``. The ones ``trio.SSLStream``
        forwards (``getpeercert``, ``version``, ``cipher``,
        ``selected_alpn_protocol``, ...) are also methods of this stream, so
        identity code written for ``trio.SSLStream`` works unchanged. Do not
        read or write through it.
        """
        return self._sock

    def getpeercert(self, binary_form: bool = False) -> Any:
        """Return the peer certificate, as ``ssl.SSLSocket.getpeercert`` does.

        Args:
            binary_form: Return the DER bytes instead of the decoded dict.

        Returns:
            The certificate (``None`` if the peer sent none).
        """
        return self._sock.getpeercert(binary_form)

    def version(self) -> str | None:
        """Return the negotiated protocol version, such as ``"TLSv1.3"``."""
        return self._sock.version()

    def cipher(self) -> tuple[str, str, int] | None:
        """Return the negotiated cipher as ``(name, protocol, secret_bits)``."""
        return self._sock.cipher()

    def selected_alpn_protocol(self) -> str | None:
        """Return the ALPN protocol agreed in the handshake, if any."""
        return self._sock.selected_alpn_protocol()

    def shared_ciphers(self) -> list[tuple[str, str, int]] | None:
        """Return the ciphers both ends offered (server side only)."""
        return self._sock.shared_ciphers()

    def get_channel_binding(self, cb_type: str = "tls-unique") -> bytes | None:
        """Return channel binding data, as ``ssl.SSLSocket`` does."""
        return self._sock.get_channel_binding(cb_type)

    @property
    def context(self) -> ssl.SSLContext:
        """The ``ssl.SSLContext`` the socket was wrapped with."""
        return self._sock.context

    @property
    def session_reused(self) -> bool | None:
        """Whether the handshake resumed an earlier TLS session."""
        return self._sock.session_reused

    def getpeername(self) -> Any:
        """Return the remote address of the socket."""
        return self._sock.getpeername()

    def getsockname(self) -> Any:
        """Return the local address of the socket."""
        return self._sock.getsockname()

    # ------------------------------------------------------------------
    # Internals

    def _check_status(self) -> None:
        if self._state is _State.OK:
            return
        if self._state is _State.BROKEN:
            raise trio.BrokenResourceError("this SSLSocketStream is broken")
        raise trio.ClosedResourceError("this SSLSocketStream is closed")

    def _close_socket(self) -> None:
        if self._sock_closed:
            return
        self._sock_closed = True
        # Wake tasks parked on the descriptor before it goes away, so nobody
        # waits on a number the kernel may reuse.
        trio.lowlevel.notify_closing(self._fd)
        self._sock.close()

    async def _wait_io(self, direction: int, *, cross: bool) -> None:
        """Wait until the socket may be ready for ``direction``.

        May return early (the caller retries its operation anyway).
        """
        if cross:
            with trio.move_on_after(_CROSS_WAIT_POLL):
                await self._wait_io(direction, cross=False)
            if self._sock_closed:
                raise trio.ClosedResourceError("this SSLSocketStream was closed")
            return
        if self._io_waiting[direction]:
            event = self._io_wakeup[direction]
            if event is None:
                event = self._io_wakeup[direction] = trio.Event()
            await event.wait()
        else:
            self._io_waiting[direction] = True
            try:
                if direction == _READ:
                    await trio.lowlevel.wait_readable(self._fd)
                else:
                    await trio.lowlevel.wait_writable(self._fd)
            finally:
                self._io_waiting[direction] = False
                event = self._io_wakeup[direction]
                if event is not None:
                    self._io_wakeup[direction] = None
                    event.set()
        if self._sock_closed:
            raise trio.ClosedResourceError("this SSLSocketStream was closed")

    def _broken(self, what: str, exc: BaseException) -> trio.BrokenResourceError:
        self._state = _State.BROKEN
        return trio.BrokenResourceError(f"{what}: {exc}")

    # ------------------------------------------------------------------
    # Handshake

    async def do_handshake(self) -> None:
        """Perform the TLS handshake, or wait for the one in progress.

        Returns at once (after a checkpoint) if it is already done. Run it
        under ``trio.fail_after`` to bound a silent peer.

        Raises:
            trio.BrokenResourceError: The handshake failed (the message says
                why, the ``ssl.SSLError`` or ``OSError`` is the cause), or was
                cancelled earlier. The socket is closed already.
            trio.ClosedResourceError: The stream was closed.
        """
        self._check_status()
        if self._handshake_done:
            await trio.lowlevel.checkpoint()
            return
        running = self._handshake_running
        if running is not None:
            await running.wait()
            self._check_status()
            return
        running = self._handshake_running = trio.Event()
        try:
            await self._handshake()
        finally:
            running.set()

    async def _handshake(self) -> None:
        await trio.lowlevel.checkpoint_if_cancelled()
        sock = self._sock
        try:
            while True:
                try:
                    sock.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    await self._wait_io(_READ, cross=False)
                except ssl.SSLWantWriteError:
                    await self._wait_io(_WRITE, cross=False)
        except ssl.SSLEOFError as exc:
            self._state = _State.BROKEN
            self._close_socket()
            raise trio.BrokenResourceError(
                "TLS handshake failed: the peer closed the connection"
            ) from exc
        except (ssl.SSLError, OSError) as exc:
            self._state = _State.BROKEN
            if self.server_side and isinstance(exc, ssl.SSLError):
                await self._linger()
            self._close_socket()
            raise trio.BrokenResourceError(f"TLS handshake failed: {exc}") from exc
        except BaseException:
            # Cancelled or closed mid-handshake: TLS cannot resume from here.
            if self._state is _State.OK:
                self._state = _State.BROKEN
            self._close_socket()
            raise
        self._handshake_done = True

    async def _linger(self) -> None:
        """Half-close after refusing a client and read until it closes (at most a second).

        Under TLS 1.3 the client's handshake is over before we have checked
        its certificate, so its first message may already be on the way when
        our alert leaves; closing with those bytes unread makes the kernel
        send a reset, which can reach the client first and discard the alert.
        """
        sock = self._sock
        with (
            trio.move_on_after(_LINGER_SECONDS),
            contextlib.suppress(OSError),
        ):
            # SSLSocket.shutdown drops the TLS object: the reads below are plain.
            sock.shutdown(stdlib_socket.SHUT_WR)
            while True:
                await trio.lowlevel.wait_readable(sock)
                if not sock.recv(65536):
                    return

    # ------------------------------------------------------------------
    # trio.abc.Stream

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        """Receive and decrypt some data.

        Args:
            max_bytes: Most bytes to return. Default: up to 64 KiB.

        Returns:
            At least one byte, or ``b""`` at end of stream (see the class
            docstring for what counts as end of stream).

        Raises:
            trio.BusyResourceError: Another task is already receiving.
            trio.BrokenResourceError: The connection failed.
            trio.ClosedResourceError: The stream was closed, before or
                during the call.
            ValueError: ``max_bytes`` is smaller than 1.
        """
        with self._receive_conflict:
            if max_bytes is None:
                max_bytes = _DEFAULT_RECEIVE_SIZE
            else:
                max_bytes = operator.index(max_bytes)
                if max_bytes < 1:
                    raise ValueError("max_bytes must be >= 1")
            self._check_status()
            if not self._handshake_done:
                await self.do_handshake()
            if self._eof:
                await trio.lowlevel.checkpoint()
                return b""
            read = self._sock.read
            waited = self._drained
            if waited:
                # The last read took every decrypted byte and left the socket
                # empty: a request/response peer has sent nothing since, so
                # a read now would only fail (SSLWantReadError) before the
                # wait. Wait first (a full checkpoint).
                await self._wait_io(_READ, cross=False)
            else:
                await trio.lowlevel.checkpoint_if_cancelled()
            while True:
                try:
                    data = read(max_bytes)
                    break
                except ssl.SSLWantReadError:
                    direction = _READ
                except ssl.SSLWantWriteError:
                    direction = _WRITE
                except (ssl.SSLEOFError, ConnectionResetError) as exc:
                    # Python 3.13 reports a reset as ConnectionResetError
                    # (CPython gh-115627), older versions as SSLEOFError.
                    if not self._suppress_ragged_eofs:
                        raise self._broken(
                            "TCP connection closed without TLS close_notify", exc
                        ) from exc
                    data = b""
                    break
                except (ssl.SSLError, OSError) as exc:
                    if self._sock_closed:
                        raise trio.ClosedResourceError("this SSLSocketStream was closed") from None
                    raise self._broken("TLS receive failed", exc) from exc
                waited = True
                try:
                    await self._wait_io(direction, cross=direction == _WRITE)
                except trio.Cancelled:
                    # A pending handshake-level write must be retried before
                    # any other TLS call; nobody will, so the stream is done.
                    if direction == _WRITE:
                        self._state = _State.BROKEN
                    raise
            # Nothing left in OpenSSL (pending) or, probably, in the socket.
            self._drained = 0 < len(data) < max_bytes and not self._sock.pending()
            if not waited:
                await trio.lowlevel.cancel_shielded_checkpoint()
            if not data:
                self._eof = True
            return data

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        """Encrypt and send all of ``data``.

        Raises:
            trio.BusyResourceError: Another task is already sending.
            trio.BrokenResourceError: The connection failed, or an earlier
                send was cancelled part way.
            trio.ClosedResourceError: The stream was closed, before or
                during the call.
        """
        with self._send_conflict:
            self._check_status()
            if not self._handshake_done:
                await self.do_handshake()
            if not data:
                # SSL_write() of nothing is an error in OpenSSL, not a no-op.
                await trio.lowlevel.checkpoint()
                return
            await trio.lowlevel.checkpoint_if_cancelled()
            write = self._sock.write
            total = len(data) if not isinstance(data, memoryview) else data.nbytes
            view: memoryview | None = None
            sent = 0
            waited = False
            while True:
                try:
                    sent += write(data if view is None else view[sent:])
                    if sent >= total:
                        break
                    # Only with SSL_MODE_ENABLE_PARTIAL_WRITE, which Python
                    # does not set; handled so a future change cannot lose data.
                    if view is None:
                        view = memoryview(data).cast("B")
                    continue
                except ssl.SSLWantReadError:
                    direction = _READ
                except ssl.SSLWantWriteError:
                    direction = _WRITE
                except (ssl.SSLError, OSError) as exc:
                    if self._sock_closed:
                        raise trio.ClosedResourceError("this SSLSocketStream was closed") from None
                    raise self._broken("TLS send failed", exc) from exc
                waited = True
                try:
                    await self._wait_io(direction, cross=direction == _READ)
                except BaseException:
                    # OpenSSL holds a partly sent record that only a retry of
                    # this very write can finish.
                    if self._state is _State.OK:
                        self._state = _State.BROKEN
                    raise
            if not waited:
                await trio.lowlevel.cancel_shielded_checkpoint()

    async def wait_send_all_might_not_block(self) -> None:
        """Wait until the socket has room to send.

        Raises:
            trio.BusyResourceError: Another task is already sending.
            trio.BrokenResourceError: The stream is broken.
            trio.ClosedResourceError: The stream was closed.
        """
        with self._send_conflict:
            self._check_status()
            await self._wait_io(_WRITE, cross=False)

    async def aclose(self) -> None:
        """Send ``close_notify`` best-effort, then close the socket.

        Does not wait for the peer's ``close_notify``. Waits at most one
        second for room to send the alert, and skips it when the handshake
        never finished, the stream is broken, or another task is mid-send.
        Closing twice is fine. Tasks blocked in :meth:`receive_some` or
        :meth:`send_all` get ``trio.ClosedResourceError``.

        A full checkpoint: when cancelled it still closes (the alert goes
        out if it can without waiting), then raises ``trio.Cancelled``.
        """
        if self._state is not _State.CLOSED:
            try:
                if (
                    self._state is _State.OK
                    and self._handshake_done
                    and not self._sock_closed
                    and not self._send_conflict.held
                ):
                    await self._send_close_notify()
            finally:
                self._state = _State.CLOSED
                self._close_socket()
        await trio.lowlevel.checkpoint()

    async def _send_close_notify(self) -> None:
        with trio.move_on_after(_CLOSE_NOTIFY_TIMEOUT):
            while True:
                try:
                    self._sock.unwrap()
                except ssl.SSLWantWriteError:
                    await self._wait_io(_WRITE, cross=False)
                    continue
                except ssl.SSLWantReadError:
                    # Our alert is out; the peer's answer is not awaited.
                    pass
                except (ssl.SSLError, OSError, ValueError):
                    # The peer is gone or already shut TLS down: nothing to say.
                    pass
                break


def _close_orphan(exc: BaseException) -> None:
    """Close the SSLSocket that ``wrap_socket`` built and then lost to ``exc``.

    CPython's ``SSLSocket._create`` takes the descriptor over from the raw
    socket before it checks the connection; when that check fails (a peer
    that reset before we wrapped: ECONNRESET) the half-built SSLSocket is
    only reachable from the traceback, and the garbage collector would close
    it later with a ResourceWarning. Close it now.
    """
    tb = exc.__traceback__
    while tb is not None:
        orphan = tb.tb_frame.f_locals.get("self")
        if isinstance(orphan, ssl.SSLSocket):
            orphan.close()
            return
        tb = tb.tb_next
