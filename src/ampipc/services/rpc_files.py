"""A directory that remote callers cannot escape: paths resolved beneath a root, symlinks never followed.

Theory of operation
-------------------
A `RootDir` holds an open descriptor of its root directory. A caller's path is split into
components and checked: relative only, no ``..``, no NUL, no empty name; then every directory
component is opened relative to the previous one with ``O_NOFOLLOW | O_DIRECTORY`` (``openat``),
and the last component with ``O_NOFOLLOW``. No path string is ever handed to the kernel as a whole,
and no symbolic link is followed, so neither ``../../etc/passwd`` nor a symlink planted inside the
root reaches anything outside it. A refused path raises `PermissionError` (EACCES) naming it.
"""

from __future__ import annotations

import errno
import os
import stat as stat_module

__all__ = ["RootDir"]

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class RootDir:
    """File operations confined to ``root`` (which must be an existing directory)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.path = os.path.realpath(os.fspath(root))
        self._fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> RootDir:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def parts(self, path: str) -> list[str]:
        """The checked components of ``path`` ("." and empty components dropped)."""
        if not isinstance(path, str):
            raise TypeError(f"a path is a str, not {type(path).__name__}")
        if "\0" in path:
            raise PermissionError(errno.EACCES, "a path may not contain NUL", path)
        if path.startswith("/"):
            raise PermissionError(errno.EACCES, "absolute paths are outside the served root", path)
        parts = [p for p in path.split("/") if p not in ("", ".")]
        if ".." in parts:
            raise PermissionError(errno.EACCES, "'..' would leave the served root", path)
        return parts

    def _parent(self, parts: list[str], path: str) -> int:
        """A descriptor of the directory holding the last component (the caller closes it)."""
        fd = os.dup(self._fd)
        try:
            for part in parts[:-1]:
                nxt = os.open(part, _DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = nxt
        except OSError as exc:
            os.close(fd)
            if exc.errno == errno.ELOOP or exc.errno == errno.ENOTDIR:
                raise PermissionError(errno.EACCES, "a path component is a link or not a directory", path) from None
            raise type(exc)(exc.errno, exc.strerror, path) from None
        return fd

    def open(self, path: str, flags: int, mode: int = 0o600) -> int:
        """``open(2)`` beneath the root; never follows a symlink. Returns a new descriptor."""
        parts = self.parts(path)
        if not parts:
            raise IsADirectoryError(errno.EISDIR, "the root itself is a directory", path)
        parent = self._parent(parts, path)
        try:
            return os.open(parts[-1], flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=parent)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise PermissionError(errno.EACCES, "symbolic links are not followed", path) from None
            raise type(exc)(exc.errno, exc.strerror, path) from None
        finally:
            os.close(parent)

    def listdir(self, path: str = ".") -> list[str]:
        parts = self.parts(path)
        if not parts:
            fd = os.dup(self._fd)
        else:
            parent = self._parent(parts, path)
            try:
                fd = os.open(parts[-1], _DIR_FLAGS, dir_fd=parent)
            except OSError as exc:
                raise type(exc)(exc.errno, exc.strerror, path) from None
            finally:
                os.close(parent)
        try:
            return sorted(os.listdir(fd))
        finally:
            os.close(fd)

    def stat(self, path: str) -> os.stat_result:
        """``lstat`` beneath the root (a symlink is reported as itself, never followed)."""
        parts = self.parts(path)
        if not parts:
            return os.stat(self._fd)
        parent = self._parent(parts, path)
        try:
            return os.stat(parts[-1], dir_fd=parent, follow_symlinks=False)
        except OSError as exc:
            raise type(exc)(exc.errno, exc.strerror, path) from None
        finally:
            os.close(parent)

    def is_dir(self, path: str) -> bool:
        return stat_module.S_ISDIR(self.stat(path).st_mode)
