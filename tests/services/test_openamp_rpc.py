"""OpenAMP's rpmsg-rpc: the wire layouts, a confined server under hostile requests, and both roles
against each other over OpenAMP's Linux transport (the two commands) and over a Region."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ampipc import Region
from ampipc.rpmsg import open_region
from ampipc.services import openamp_rpc as rpc

from ._support import region_rpc_client


@pytest.fixture
def root() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="ampipc-rpc-root-")
    try:
        yield path
    finally:
        for dirpath, dirnames, filenames in os.walk(path, topdown=False):
            for name in filenames + dirnames:
                full = os.path.join(dirpath, name)
                (os.rmdir if os.path.isdir(full) and not os.path.islink(full) else os.unlink)(full)
        os.rmdir(path)


def make_server(root: str, words: list[str] | None = None) -> rpc.RpcFileServer:
    feed = iter(words or [])
    return rpc.RpcFileServer(root, read_input=lambda: next(feed, ""), console=lambda b: None, out=lambda s: None)


def test_wire_layouts_match_openamp() -> None:
    # the reference's wire sample of the demo's first OPEN
    assert rpc.encode_open("remote.file", 0x441, 0x180).hex() == "0100000072656d6f74652e66696c650041040000" "80010000"
    assert [len(m) for m in (rpc.encode_open("a", 0, 0), rpc.encode_close(5), rpc.encode_write(5, b"x"),
                             rpc.encode_read(5), rpc.encode_term(), rpc.encode_input())] == [24, 8, 312, 12, 8, 8]
    assert rpc.encode_term() == struct.pack("<Ii", 6, 6)
    with pytest.raises(ValueError):
        rpc.encode_open("twelve-chars", 0, 0)  # 12 bytes + NUL do not fit filename[10] + pad
    # replies of every length a server sends
    assert rpc.decode_reply(struct.pack("<Ii", 1, 0)) == rpc.Reply(1, 0, None)  # stock, 4 bytes short
    assert rpc.decode_reply(struct.pack("<Iii", 1, 0, 5)) == rpc.Reply(1, 0, 5)
    full = struct.pack("<Iii300s", 4, 0, 3, b"abc")
    assert rpc.decode_reply(full) == rpc.Reply(4, 0, 3, b"abc") and rpc.decode_reply(full[:308]).data == b"abc"


def test_server_replies_are_complete_and_confined(root: str) -> None:
    s = make_server(root, ["alice"])
    reply = s.handle(rpc.encode_open("remote.file", 0x441, 0o600))
    assert reply is not None and len(reply) == 12
    fd = rpc.decode_reply(reply).value
    assert fd == 3
    reply = s.handle(rpc.encode_write(fd, rpc.TEST_STRING))
    assert reply is not None and len(reply) == 12 and rpc.decode_reply(reply).value == 45
    assert rpc.decode_reply(s.handle(rpc.encode_close(fd)) or b"").value == 0
    fd = rpc.decode_reply(s.handle(rpc.encode_open("remote.file", 0, 0)) or b"").value
    reply = s.handle(rpc.encode_read(fd or 0, 300))
    assert reply is not None and len(reply) == 312 and rpc.decode_reply(reply).data == rpc.TEST_STRING
    reply = s.handle(rpc.encode_input(50))
    assert reply is not None and len(reply) == 312 and rpc.decode_reply(reply).data == b"alice\0"
    assert s.handle(rpc.encode_term()) is None and s.terminated
    with open(os.path.join(root, "remote.file"), "rb") as f:
        assert f.read() == rpc.TEST_STRING
    s.close()


def test_hostile_requests_are_refused(root: str, tmp_path: Any) -> None:
    outside = os.path.join(os.fspath(tmp_path), "secret")
    with open(outside, "w") as f:
        f.write("outside")
    os.symlink(outside, os.path.join(root, "lnk"))
    s = make_server(root)

    def value(payload: bytes) -> int | None:
        reply = s.handle(payload)
        assert reply is not None
        return rpc.decode_reply(reply).value

    def open_raw(name: bytes, flags: int, mode: int = 0) -> int | None:
        return value(struct.pack("<I12sii", rpc.OPEN_ID, name, flags, mode))

    for name in (b"../../etc/p\0", b"/etc/passwd\0", b"lnk\0", b"..\0", b"a/../../b\0", b"no-nul-here!"):
        assert open_raw(name, 0) == -1, name
    for flags in (0o200000, 0o10000000, 0o20200000, 3, -1, 0o100 | 0o40000000):  # O_DIRECTORY, O_PATH, O_TMPFILE...
        assert open_raw(b"f\0", flags, 0o600) == -1, oct(flags)
    assert open_raw(b"f\0", 0o101, 0o4755) == -1  # setuid mode bits
    # no fd the peer did not open: not the server's stdin/out, not its real descriptors
    for fd in [-1, 3, 4, 5, 7, 100, *range(3, 20)]:
        assert value(rpc.encode_close(fd)) == -1
        assert value(rpc.encode_write(fd, b"x")) == -1
        assert rpc.decode_reply(s.handle(rpc.encode_read(fd)) or b"").value == -1
    # malformed requests: unknown ids (the stock server dispatches on byte 0: 0x101 is not OPEN here),
    # short and overlong requests, an oversized write length
    for payload in (b"", b"\x01\x00", struct.pack("<I", 5), struct.pack("<I", 0x101) + bytes(20),
                    rpc.encode_open("x", 0, 0)[:20], rpc.encode_write(3, b"x") + bytes(200),
                    struct.pack("<IiI300s", rpc.WRITE_ID, 3, 5000, b"")):
        reply = s.handle(payload)
        assert reply is not None and len(reply) == 8 and rpc.decode_reply(reply).status == rpc.RPC_INVALID_ID
    assert os.listdir(root) == ["lnk"]
    with open(outside) as f:
        assert f.read() == "outside"
    assert s.statistics.refused >= 20
    s.close()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=500) | st.builds(lambda i, b: struct.pack("<I", i) + b, st.sampled_from([1, 2, 3, 4, 6, 7]),
                                           st.binary(max_size=320)))
def test_fuzzed_requests(root: str, payload: bytes) -> None:
    s = make_server(root)
    try:
        reply = s.handle(payload)
        if reply is None:
            assert payload[:4] == struct.pack("<I", rpc.TERM_ID)
        else:
            assert len(reply) in (8, 12, 312)
        for name in os.listdir(root):  # whatever it created is in the root, a plain file
            assert os.path.isfile(os.path.join(root, name)) and not os.path.islink(os.path.join(root, name))
    finally:
        s.close()


def _run(cmd: list[str], **kw: Any) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "ampipc.cli", *cmd], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **kw)


def test_the_two_commands_over_the_linux_transport(root: str, unique_name: Callable[..., str]) -> None:
    shm = unique_name("rpc")
    sock = f"/tmp/{shm}.sock"
    link = ["--shm-name", shm, "--socket", sock, "--open-timeout", "60"]
    server = _run(["openamp-rpc", "--role", "server", "--root", root, *link], stdin=subprocess.PIPE)
    client = None
    try:
        assert server.stdin is not None
        server.stdin.write("alice 42 3.14\n")
        server.stdin.close()
        client = _run(["openamp-rpc", "--role", "client", *link])
        client_out, _ = client.communicate(timeout=120)
        assert server.stdout is not None
        server_out = server.stdout.read()
        server.wait(60)
        assert client.returncode == 0, client_out
        assert server.returncode == 0, server_out
        assert "Read from fd = 3, size = 45, printing contents below .. This is a test string being written to file.." in client_out
        assert "User name = 'alice'" in client_out and "User age = '42'" in client_out and "'3.14'" in client_out
        assert "Received termination request at id 6" in server_out and "Host> Endpoint is destroyed" in server_out
        with open(os.path.join(root, "remote.file"), "rb") as f:
            assert f.read() == rpc.TEST_STRING
        # a second run appends to remote.file: the client sees it and fails, as the C demo's check would
        server = _run(["openamp-rpc", "--role", "server", "--root", root, *link], stdin=subprocess.DEVNULL)
        client = _run(["openamp-rpc", "--role", "client", *link])
        out, _ = client.communicate(timeout=120)
        server.communicate(timeout=60)
        assert client.returncode == 1 and "earlier run" in out
    finally:
        for p in (server, client):
            if p is not None and p.poll() is None:
                p.kill()
                p.communicate()
        if os.path.exists(sock):
            os.unlink(sock)


def test_bad_root_is_a_one_line_user_error(unique_name: Callable[..., str]) -> None:
    p = _run(["openamp-rpc", "--role", "server", "--root", "/nonexistent/dir", "--shm-name", unique_name("rb")])
    out, _ = p.communicate(timeout=60)
    assert p.returncode == 2 and out.strip().count("\n") == 0 and "not a directory" in out


def test_roles_over_a_region(make_region: Callable[..., Region], spawn: Any, root: str) -> None:
    region = make_region(1 << 20)
    host = open_region(region, "rpc-link", "driver", create=True, open_timeout=60, io_thread=False)
    server = make_server(root, ["bob", "7", "2.71"])
    try:
        results = spawn.ctx.Queue()
        proc = spawn(region_rpc_client, region.name, "rpc-link", results)
        lines: list[str] = []
        assert rpc.serve(host, server, out=lines.append, timeout=60) == 0
        client_lines = results.get(timeout=60)
        assert spawn.join(proc, 60) == 0, client_lines
        assert "User name = 'bob'" in client_lines and "User entered value of pi = '2.71'" in client_lines
        assert any("PASS" in line for line in client_lines)
        assert "Host> Endpoint is destroyed" in lines
        assert server.statistics.requests == 10 and server.statistics.refused == 0
    finally:
        server.close()
        host.close()
