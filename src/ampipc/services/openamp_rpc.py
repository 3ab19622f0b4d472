"""OpenAMP's ``rpmsg-rpc`` file-I/O proxy, wire-compatible, both roles.

Theory of operation
-------------------
The service is the endpoint ``"rpmsg-rpc"`` (open-amp ``lib/service/rpmsg/rpc``, the
``linux_rpc_demo`` / ``linux_rpc_demod`` pair). Every message is a host-native little-endian C
struct copied raw. Requests are ``id u32`` followed by the operation's struct; replies are
``id u32, status i32, params``. Layouts (offsets in the RPMsg payload, natural alignment):

=====  ==  ===  ============================================================================
op     id  len  request fields after the id
=====  ==  ===  ============================================================================
OPEN    1   24  @4 filename[10] (NUL-terminated; the C client lets it run into the pad, so up to
                12 bytes with the NUL are accepted), @14 pad[2], @16 flags i32 (raw Linux
                open(2) flags), @20 mode i32
CLOSE   2    8  @4 fd i32
WRITE   3  312  @4 fd i32, @8 len u32, @12 ptr[300]
READ    4   12  @4 fd i32, @8 buflen u32
TERM    6    8  @4 id i32 (= 6)
INPUT   7    8  @4 buflen u32
=====  ==  ===  ============================================================================

Replies: OPEN/CLOSE/WRITE ``@8 value i32`` (12 bytes: the fd, close's and write's result);
READ/INPUT ``@8 bytes_read i32, @12 buf[300]`` (312 bytes). TERM is never answered (the stock
client asserts on an answer it did not expect). Unlike the stock server, this one always sends
**complete** replies (12 or 312 bytes: the stock one sends 4 bytes short, so its clients read a
stale fd), and answers an unknown id with ``(id, status -1)`` instead of aborting.

The server (`RpcFileServer`) is sans-I/O: ``handle(payload) -> reply or None``. It is confined to a
`RootDir`: a path never leaves the root and never follows a symlink; a request may only use fds
this server opened for the peer (its own numbering from 3, never the server's real descriptors;
fd 0 reads the server's console input, fds 1 and 2 write to its console); open flags are
validated against the Linux values below (anything else, e.g. O_DIRECTORY or O_PATH, is refused);
lengths are capped at the 300-byte buffers; a request longer than 488 bytes or shorter than its
struct is refused. OS failures come back as value -1 with status 0, as the stock server does.

The client (`RpcFileClient`) plays ``linux_rpc_demo 1``'s script with `run_client_script`:
open/create ``remote.file`` (append), write the 45-byte test string, close, reopen read-only,
read 300, close, three INPUT calls, TERM, then destroys its endpoint (name-service DESTROY).

Roles on the link: the server is the VIRTIO *driver* and proc 0 (socket server, writes the
resource table); the client is the VIRTIO *device* (proc 1).
"""

from __future__ import annotations

import logging
import os
import struct
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

from ..errors import IpcError, ProtocolError, Timeout
from ..rpmsg._wire import DEMO_SHM_NAME, DEMO_SHM_SIZE, DEMO_SOCKET_PATH
from ..rpmsg.api import RpmsgDevice
from ..rpmsg.endpoints import Endpoint
from ..rpmsg.transports import LinuxTransport
from .rpc_files import RootDir

__all__ = [
    "SERVICE_NAME",
    "OPEN_ID", "CLOSE_ID", "WRITE_ID", "READ_ID", "ACK_STATUS_ID", "TERM_ID", "INPUT_ID",
    "RPC_OK", "RPC_INVALID_ID", "MAX_REQUEST", "BUF_SIZE", "TEST_STRING",
    "LINUX_O_ACCMODE", "LINUX_O_CREAT", "LINUX_O_EXCL", "LINUX_O_TRUNC", "LINUX_O_APPEND",
    "encode_open", "encode_close", "encode_write", "encode_read", "encode_term", "encode_input",
    "Reply", "decode_reply", "RpcFileServer", "RpcFileClient", "ServerStatistics",
    "serve", "run_client_script", "run_server", "run_client", "TokenReader",
]

log = logging.getLogger("ampipc.services.openamp_rpc")

SERVICE_NAME = "rpmsg-rpc"
OPEN_ID, CLOSE_ID, WRITE_ID, READ_ID, ACK_STATUS_ID, TERM_ID, INPUT_ID = 1, 2, 3, 4, 5, 6, 7
RPC_OK, RPC_INVALID_ID = 0, -1
MAX_REQUEST = 488  # the client's tmpbuf; the stock server aborts on longer requests
BUF_SIZE = 300
FILENAME_FIELD = 12  # filename[10] plus the 2 pad bytes the C client's memcpy fills
TEST_STRING = b"This is a test string being written to file.."

# Linux open(2) flag values (asm-generic), which the peer sends raw
LINUX_O_ACCMODE, LINUX_O_CREAT, LINUX_O_EXCL, LINUX_O_TRUNC, LINUX_O_APPEND = 0o3, 0o100, 0o200, 0o1000, 0o2000
_ALLOWED_FLAGS = LINUX_O_ACCMODE | LINUX_O_CREAT | LINUX_O_EXCL | LINUX_O_TRUNC | LINUX_O_APPEND
_TO_OS = ((LINUX_O_CREAT, os.O_CREAT), (LINUX_O_EXCL, os.O_EXCL), (LINUX_O_TRUNC, os.O_TRUNC), (LINUX_O_APPEND, os.O_APPEND))

_ID = struct.Struct("<I")
_OPEN = struct.Struct(f"<I{FILENAME_FIELD}sii")  # 24
_FD = struct.Struct("<Ii")  # CLOSE, TERM: 8
_WRITE = struct.Struct(f"<IiI{BUF_SIZE}s")  # 312
_READ = struct.Struct("<IiI")  # 12
_INPUT = struct.Struct("<II")  # 8
_REPLY_VALUE = struct.Struct("<Iii")  # 12
_REPLY_BUF = struct.Struct(f"<Iii{BUF_SIZE}s")  # 312
_REPLY_HEAD = struct.Struct("<Ii")  # 8


# ---- wire ----------------------------------------------------------------------------------


def encode_open(path: str | bytes, flags: int, mode: int) -> bytes:
    raw = path.encode() if isinstance(path, str) else path
    if len(raw) + 1 > FILENAME_FIELD or b"\0" in raw:
        raise ValueError(f"an rpmsg-rpc file name holds at most {FILENAME_FIELD - 1} bytes, not {raw!r}")
    return _OPEN.pack(OPEN_ID, raw, flags, mode)


def encode_close(fd: int) -> bytes:
    return _FD.pack(CLOSE_ID, fd)


def encode_write(fd: int, data: bytes) -> bytes:
    if len(data) > BUF_SIZE - 1:
        raise ValueError(f"an rpmsg-rpc write carries at most {BUF_SIZE - 1} bytes (plus a NUL), not {len(data)}")
    return _WRITE.pack(WRITE_ID, fd, len(data), data)


def encode_read(fd: int, buflen: int = BUF_SIZE) -> bytes:
    return _READ.pack(READ_ID, fd, buflen)


def encode_term() -> bytes:
    return _FD.pack(TERM_ID, TERM_ID)


def encode_input(buflen: int = 50) -> bytes:
    return _INPUT.pack(INPUT_ID, buflen)


@dataclass(frozen=True)
class Reply:
    """A decoded reply: ``value`` is None when the server sent no value (the stock 8-byte replies)."""

    id: int
    status: int
    value: int | None
    data: bytes = b""


def decode_reply(payload: bytes) -> Reply:
    """Decode any reply length a server may send (4, 8, 12, 308 or 312 bytes)."""
    if len(payload) < 4:
        raise ProtocolError(f"an rpmsg-rpc reply of {len(payload)} bytes")
    (rid,) = _ID.unpack_from(payload)
    if len(payload) < 8:
        return Reply(rid, RPC_INVALID_ID, None)
    _, status = _REPLY_HEAD.unpack_from(payload)
    if len(payload) < 12:
        return Reply(rid, status, None)
    (value,) = struct.unpack_from("<i", payload, 8)
    data = b""
    if rid in (READ_ID, INPUT_ID) and len(payload) > 12:
        buf = payload[12 : 12 + BUF_SIZE]
        data = buf[: max(0, min(value, len(buf)))]
    return Reply(rid, status, value, data)


# ---- server ---------------------------------------------------------------------------------


@dataclass
class ServerStatistics:
    requests: int = 0
    refused: int = 0
    opened: int = 0
    bytes_written: int = 0
    bytes_read: int = 0


class TokenReader:
    """``scanf("%s")`` over a text stream: the next whitespace-delimited word ("" at end of input)."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def __call__(self) -> str:
        chars: list[str] = []
        while True:
            c = self._stream.read(1)
            if not c:
                return "".join(chars)
            if c.isspace():
                if chars:
                    return "".join(chars)
                continue
            chars.append(c)
            if len(chars) >= BUF_SIZE - 1:
                return "".join(chars)


def _to_stdout(data: bytes) -> None:
    sys.stdout.write(data.decode(errors="replace"))
    sys.stdout.flush()


class RpcFileServer:
    """The server's protocol logic (sans-I/O): one request payload in, one reply (or None) out."""

    def __init__(self, root: str | os.PathLike[str], *, read_input: Callable[[], str] | None = None,
                 console: Callable[[bytes], None] | None = None, out: Callable[[str], None] | None = None) -> None:
        self.root = RootDir(root)
        self._input = read_input or TokenReader(sys.stdin)
        self._console = console or _to_stdout
        self._out = out or (lambda text: print(text, flush=True))
        self._fds: dict[int, int] = {}  # peer-visible fd -> our descriptor
        self.terminated = False
        self.statistics = ServerStatistics()

    def close(self) -> None:
        for fd in self._fds.values():
            try:
                os.close(fd)
            except OSError:
                pass
        self._fds.clear()
        self.root.close()

    def _refuse(self, rid: int, why: str) -> bytes:
        self.statistics.refused += 1
        log.warning("rpmsg-rpc: refused request %d: %s", rid, why)
        return _REPLY_HEAD.pack(rid, RPC_INVALID_ID)

    def _new_fd(self, real: int) -> int:
        fd = 3
        while fd in self._fds:
            fd += 1
        self._fds[fd] = real
        return fd

    def handle(self, payload: bytes) -> bytes | None:
        """The reply to one request payload (None for TERM, which is never answered)."""
        self.statistics.requests += 1
        if len(payload) < 4:
            return self._refuse(0, f"{len(payload)}-byte request")
        (rid,) = _ID.unpack_from(payload)
        if len(payload) > MAX_REQUEST:
            return self._refuse(rid, f"{len(payload)}-byte request (at most {MAX_REQUEST})")
        sizes = {OPEN_ID: _OPEN.size, CLOSE_ID: _FD.size, WRITE_ID: _WRITE.size, READ_ID: _READ.size,
                 TERM_ID: _FD.size, INPUT_ID: _INPUT.size}
        need = sizes.get(rid)
        if need is None:
            return self._refuse(rid, "unknown id")
        if len(payload) < need:
            return self._refuse(rid, f"{len(payload)} bytes, the request needs {need}")
        if rid == OPEN_ID:
            _, raw_name, flags, mode = _OPEN.unpack_from(payload)
            return _REPLY_VALUE.pack(rid, RPC_OK, self._open(raw_name, flags, mode))
        if rid == CLOSE_ID:
            _, fd = _FD.unpack_from(payload)
            real = self._fds.pop(fd, None)
            if real is None:
                log.warning("rpmsg-rpc: close of fd %d, which the peer never opened", fd)
                return _REPLY_VALUE.pack(rid, RPC_OK, -1)
            os.close(real)
            return _REPLY_VALUE.pack(rid, RPC_OK, 0)
        if rid == WRITE_ID:
            _, fd, length, data = _WRITE.unpack_from(payload)
            if length > BUF_SIZE:
                return self._refuse(rid, f"write length {length} exceeds the {BUF_SIZE}-byte buffer")
            return _REPLY_VALUE.pack(rid, RPC_OK, self._write(fd, data[:length]))
        if rid == READ_ID:
            _, fd, buflen = _READ.unpack_from(payload)
            got = self._read(fd, min(buflen, BUF_SIZE))
            if got is None:
                return _REPLY_BUF.pack(rid, RPC_OK, -1, b"")
            return _REPLY_BUF.pack(rid, RPC_OK, len(got), got)
        if rid == INPUT_ID:
            word = self._input().encode()[: BUF_SIZE - 1] + b"\0"
            return _REPLY_BUF.pack(rid, RPC_OK, len(word), word)
        # TERM
        self._out(f"Received termination request at id {TERM_ID}")
        self.terminated = True
        return None

    def _open(self, raw_name: bytes, flags: int, mode: int) -> int:
        if b"\0" not in raw_name:
            log.warning("rpmsg-rpc: open: the file name is not NUL-terminated within %d bytes", FILENAME_FIELD)
            self.statistics.refused += 1
            return -1
        name = raw_name.split(b"\0", 1)[0].decode("utf-8", "replace")
        if flags & ~_ALLOWED_FLAGS or flags & LINUX_O_ACCMODE == LINUX_O_ACCMODE or mode & ~0o777 or flags < 0:
            log.warning("rpmsg-rpc: open %r: refused flags %#o / mode %#o", name, flags, mode)
            self.statistics.refused += 1
            return -1
        os_flags = (os.O_RDONLY, os.O_WRONLY, os.O_RDWR)[flags & LINUX_O_ACCMODE]
        for linux, local in _TO_OS:
            if flags & linux:
                os_flags |= local
        try:
            real = self.root.open(name, os_flags, mode & 0o666)
        except OSError as exc:
            log.warning("rpmsg-rpc: open %r failed: %s", name, exc)
            if isinstance(exc, PermissionError):
                self.statistics.refused += 1
            return -1
        self.statistics.opened += 1
        return self._new_fd(real)

    def _write(self, fd: int, data: bytes) -> int:
        if fd in (1, 2):
            self._console(data)
            return len(data)
        real = self._fds.get(fd)
        if real is None:
            log.warning("rpmsg-rpc: write to fd %d, which the peer never opened", fd)
            return -1
        try:
            n = os.write(real, data)
        except OSError as exc:
            log.warning("rpmsg-rpc: write to fd %d failed: %s", fd, exc)
            return -1
        self.statistics.bytes_written += n
        return n

    def _read(self, fd: int, size: int) -> bytes | None:
        if fd == 0:
            return self._input().encode()[:size]
        real = self._fds.get(fd)
        if real is None:
            log.warning("rpmsg-rpc: read of fd %d, which the peer never opened", fd)
            return None
        try:
            got = os.read(real, size)
        except OSError as exc:
            log.warning("rpmsg-rpc: read of fd %d failed: %s", fd, exc)
            return None
        self.statistics.bytes_read += len(got)
        return got


def serve(device: RpmsgDevice, server: RpcFileServer, *, out: Callable[[str], None] | None = None,
          timeout: float | None = None) -> int:
    """Serve ``rpmsg-rpc`` on ``device`` (no I/O thread: callbacks run in this loop, as the C server).

    Returns 0 after TERM and the peer's name-service DESTROY, 1 if the peer left without TERM or the
    link failed, 2 if no peer bound within ``timeout``.
    """
    say = out or (lambda text: print(text, flush=True))
    gone = threading.Event()

    def on_message(ept: Endpoint, data: bytes, src: int) -> None:
        reply = server.handle(data)
        if reply is not None:
            ept.send_to(src, reply)

    def on_unbind(ept: Endpoint) -> None:
        say("Host> Endpoint is destroyed")
        gone.set()

    ept = device.create_endpoint(SERVICE_NAME, on_message, on_unbind=on_unbind)
    say(f"rpmsg-rpc: serving {server.root.path} at {ept.addr:#x}")
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        while not gone.is_set() and not device.closed:
            device.poll(0.1)
            if deadline is not None and not ept.is_bound and time.monotonic() > deadline:
                say(f"rpmsg-rpc: no client within {timeout} s")
                return 2
        say("RPC service exiting !!")
        return 0 if gone.is_set() and server.terminated else 1
    finally:
        say("Destroying endpoint.")
        if not device.closed:
            ept.destroy()


# ---- client ---------------------------------------------------------------------------------


class RpcFileClient:
    """The client side over an endpoint bound to the server's ``rpmsg-rpc`` (no callback)."""

    def __init__(self, endpoint: Endpoint, *, timeout: float = 15.0, fallback_fd: int = 5) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self.fallback_fd = fallback_fd
        self.short_replies = 0

    def _call(self, request: bytes) -> Reply:
        rid = _ID.unpack_from(request)[0]
        self.endpoint.send(request, timeout=self.timeout)
        while True:
            try:
                payload = self.endpoint.receive(self.timeout)
            except TimeoutError:
                raise Timeout(f"rpmsg-rpc: no reply to request {rid} within {self.timeout} s") from None
            reply = decode_reply(payload)
            if reply.id == rid:
                if reply.value is None:
                    self.short_replies += 1
                return reply
            log.warning("rpmsg-rpc: dropped a reply for id %d while waiting for %d", reply.id, rid)

    def open(self, path: str, flags: int, mode: int = 0) -> int:
        reply = self._call(encode_open(path, flags, mode))
        if reply.status != RPC_OK:
            return -1
        # a stock server sends no fd: it hands out its lowest free descriptor, 5 in traced runs
        return self.fallback_fd if reply.value is None else reply.value

    def close(self, fd: int) -> int:
        reply = self._call(encode_close(fd))
        return 0 if reply.value is None and reply.status == RPC_OK else (reply.value if reply.value is not None else -1)

    def write(self, fd: int, data: bytes) -> int:
        reply = self._call(encode_write(fd, data))
        if reply.status != RPC_OK:
            return 0
        return len(data) if reply.value is None else reply.value

    def read(self, fd: int, size: int = BUF_SIZE) -> bytes | None:
        reply = self._call(encode_read(fd, size))
        if reply.status != RPC_OK or reply.value is None or reply.value < 0:
            return None
        return reply.data

    def input(self, buflen: int = 50) -> str:
        reply = self._call(encode_input(buflen))
        if reply.status != RPC_OK:
            return ""
        return reply.data.split(b"\0", 1)[0].decode(errors="replace")

    def term(self) -> None:
        """Ask the server to stop; it never answers."""
        self.endpoint.send(encode_term(), timeout=self.timeout)


def run_client_script(client: RpcFileClient, *, out: Callable[[str], None] | None = None) -> int:
    """``linux_rpc_demo``'s script; 0 only if what was read back equals what was written."""
    say = out or (lambda text: print(text, flush=True))
    fname = "remote.file"
    fd = client.open(fname, LINUX_O_CREAT | 0o1 | LINUX_O_APPEND, 0o600)
    say(f"Opened file '{fname}' with fd = {fd}")
    if fd < 0:
        say("Remote open failed")
        return 1
    written = client.write(fd, TEST_STRING)
    say(f"Wrote to fd = {fd}, size = {written}, content = {TEST_STRING.decode()}")
    say(f"Closed fd {fd}: {client.close(fd)}")
    fd = client.open(fname, 0, 0)
    say(f"Opened file '{fname}' with fd = {fd}")
    data = client.read(fd, BUF_SIZE) if fd >= 0 else None
    say(f"Read from fd = {fd}, size = {-1 if data is None else len(data)}, "
        f"printing contents below .. {(data or b'').decode(errors='replace')}")
    say(f"Closed fd {fd}: {client.close(fd)}")
    name = client.input(50)
    say(f"User name = '{name}'")
    age = client.input(50)
    say(f"User age = '{age}'")
    pi = client.input(50)
    say(f"User entered value of pi = '{pi}'")
    client.term()
    say("Sent termination request")
    ok = data == TEST_STRING and written == len(TEST_STRING)
    if not ok and data is not None and data.endswith(TEST_STRING):
        say(f"{fname} held data from an earlier run: run the server in a fresh directory")
    say(f"rpmsg-rpc client: {'PASS' if ok else 'FAIL'} (read back {'equals' if ok else 'differs from'} what was written)")
    return 0 if ok else 1


# ---- programs over OpenAMP's Linux transport ---------------------------------------------------


def run_server(*, root: str = ".", shm_name: str = DEMO_SHM_NAME, shm_size: int = DEMO_SHM_SIZE,
               socket_path: str = DEMO_SOCKET_PATH, open_timeout: float | None = None,
               read_input: Callable[[], str] | None = None, out: Callable[[str], None] | None = None) -> int:
    """``linux_rpc_demod``: the VIRTIO driver and proc 0 (socket server, resource-table writer)."""
    say = out or (lambda text: print(text, flush=True))
    if not os.path.isdir(root):
        raise ValueError(f"--root {root!r} is not a directory")
    server = RpcFileServer(root, read_input=read_input, out=say)
    try:
        transport = LinuxTransport("driver", shm_name=shm_name, shm_size=shm_size, socket_path=socket_path, server=True)
        say(f"rpmsg-rpc server (ampipc, VIRTIO driver): waiting for the client on {socket_path}")
        device = RpmsgDevice(transport, open_timeout=open_timeout, io_thread=False)
        try:
            status = serve(device, server, out=say)
            say(f"Stopping application... ({server.statistics.requests} requests, {server.statistics.refused} refused)")
            return status
        finally:
            device.close()
    finally:
        server.close()


def run_client(*, shm_name: str = DEMO_SHM_NAME, shm_size: int = DEMO_SHM_SIZE, socket_path: str = DEMO_SOCKET_PATH,
               open_timeout: float | None = 60.0, out: Callable[[str], None] | None = None) -> int:
    """``linux_rpc_demo 1``: the VIRTIO device and proc 1 (socket client); runs the script."""
    say = out or (lambda text: print(text, flush=True))
    transport = LinuxTransport("device", shm_name=shm_name, shm_size=shm_size, socket_path=socket_path, server=False)
    try:
        device = RpmsgDevice(transport, open_timeout=open_timeout)
    except (TimeoutError, IpcError, OSError) as exc:
        say(f"rpmsg-rpc client (ampipc): cannot start: {exc}")
        return 2
    try:
        ept = device.create_endpoint(SERVICE_NAME)
        try:
            ept.wait_bound(open_timeout)
        except TimeoutError:
            say(f"no {SERVICE_NAME!r} endpoint was announced by the server")
            return 2
        say(f"bound {SERVICE_NAME!r}: local {ept.addr:#x} -> remote {ept.dest:#x}")
        try:
            status = run_client_script(RpcFileClient(ept), out=say)
        except IpcError as exc:
            say(f"link failed: {exc}")
            return 1
        ept.destroy()  # the name-service DESTROY that lets the server exit
        return status
    finally:
        device.close()
