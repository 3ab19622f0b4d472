"""`ampipc demo service` as a user runs it: real processes, a real pty, the summary checked."""

from __future__ import annotations

import os
import subprocess
import sys

from ampipc.services.rpc_files import RootDir


def test_demo_service_quiet_prints_only_a_passing_summary() -> None:
    proc = subprocess.Popen([sys.executable, "-m", "ampipc.cli", "demo", "service", "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, out + err
    lines = out.strip().splitlines()
    assert lines[0] == "service demo summary" and lines[-1].split() == ["result", "OK"]
    rows = {line.split("  ")[1].strip(): line.rsplit("  ", 1)[-1].strip() for line in lines[1:] if line.startswith("  ")}
    assert rows["failed checks"] == "0"
    assert rows["calls"] == "615"  # 3 clients x (1 + 25 x 8 + 1 + 3) calls
    assert "ms]" not in out  # quiet: no timeline


def test_root_dir_never_leaves_its_root(tmp_path: object) -> None:
    root = os.fspath(tmp_path)  # type: ignore[call-overload]
    os.mkdir(os.path.join(root, "sub"))
    with open(os.path.join(root, "sub", "f.txt"), "w") as f:
        f.write("inside")
    os.symlink("/etc/passwd", os.path.join(root, "link"))
    os.symlink("/etc", os.path.join(root, "dirlink"))
    with RootDir(root) as r:
        fd = r.open("sub/f.txt", os.O_RDONLY)
        assert os.read(fd, 100) == b"inside"
        os.close(fd)
        assert r.listdir() == ["dirlink", "link", "sub"] and r.listdir("sub") == ["f.txt"]
        for bad in ("../etc/passwd", "/etc/passwd", "sub/../../x", "a\0b", "link", "dirlink/passwd"):
            try:
                fd = r.open(bad, os.O_RDONLY)
            except PermissionError:
                continue
            os.close(fd)
            raise AssertionError(f"{bad!r} was opened")
        assert r.stat("link").st_size == len("/etc/passwd")  # the link itself, not its target
