"""Files that survive a kill: atomic replacement, durable directories, a writer's lock.

Every file charlm writes goes to a hidden temporary name beside its target
(`.NAME.XXXX.tmp`), is flushed and fsynced, then renamed over the target
(`os.replace`), and the directory is fsynced so the rename itself survives a
power cut. A reader therefore sees the old file or the new one, never half of
one. A kill between the write and the rename leaves a stale temporary file,
which `remove_stale_temps` clears the next time a writer opens the directory.

Errors of the file system (disk full, no permission, read-only) become one-line
`StorageError`s that name the file and the fix; the previous file is kept.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from charlm.errors import StorageError

try:  # POSIX; elsewhere a run directory is simply not locked
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

LOCK_FILE = ".lock"


def current_umask() -> int:
    """The process's umask, which decides the permissions of what `open()` and `mkdir()` create."""
    umask = os.umask(0)  # the umask can only be read by setting it
    os.umask(umask)
    return umask


def storage_error(exc: OSError, path: Path, what: str = "write") -> StorageError:
    """A one-line error for a failed file operation, with the fix for the usual causes."""
    reason = exc.strerror or type(exc).__name__
    fix = {
        28: "free some disk space",  # ENOSPC
        122: "free some disk space (quota exceeded)",  # EDQUOT
        13: "check the permissions",  # EACCES
        30: "choose a writable location",  # EROFS
    }.get(exc.errno or 0, "check the disk and the permissions")
    return StorageError(f"cannot {what} {path}: {reason}; {fix} (the previous file is kept)", reason)


@contextmanager
def _replacing(path: Path) -> Iterator[str]:
    """The name of a fresh temporary file beside `path`; once the block has filled it, it becomes `path`.

    The file gets the permissions a plain `open()` would give (not mkstemp's 0600). It is
    fsynced, renamed over `path` and the directory fsynced; on any error it is removed, and
    an OSError becomes a one-line StorageError.
    """
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise storage_error(exc, path) from None
    try:
        os.close(fd)
        os.chmod(tmp, 0o666 & ~current_umask())
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise storage_error(exc, path) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> None:
    """Run `write(tmp_name)` to fill a temporary file beside `path`, then make it `path` atomically."""
    with _replacing(Path(path)) as tmp:
        write(tmp)


@contextmanager
def atomic_open(path: str | os.PathLike) -> Iterator[IO[bytes]]:
    """A binary file to write in pieces; when the block ends without an error it atomically becomes `path`."""
    with _replacing(Path(path)) as tmp, open(tmp, "wb") as f:
        yield f


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` so that readers see the old file or the new one, never half."""

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(data)

    atomic_write(path, write)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode("utf-8"))


def fsync_dir(directory: str | os.PathLike) -> None:
    """Make the renames and removals in `directory` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems refuse fsync on a directory; the rename is still atomic
    finally:
        os.close(fd)


def is_temp_name(name: str) -> bool:
    """True for the temporary names `atomic_write` uses."""
    return name.startswith(".") and name.endswith(".tmp")


def remove_stale_temps(directory: str | os.PathLike) -> list[str]:
    """Delete temporary files a killed writer left in `directory`; return their names.

    Only a directory's writer (who holds its lock) may call this: another writer's
    temporary file is not stale.
    """
    directory = Path(directory)
    removed = []
    if directory.is_dir():
        for p in directory.iterdir():
            if is_temp_name(p.name) and p.is_file():
                p.unlink(missing_ok=True)
                removed.append(p.name)
    return removed


class DirectoryLock:
    """An exclusive, advisory lock on a directory, held while one process writes into it.

    The lock is an `flock` on DIR/.lock, released by the kernel when the process
    dies, so a killed run never leaves a directory locked.
    """

    def __init__(self, directory: str | os.PathLike) -> None:
        self.directory = Path(directory)
        self._fd: int | None = None

    def acquire(self, what: str) -> DirectoryLock:
        """Take the lock or raise a one-line StorageError naming the process that holds it."""
        if fcntl is None:  # pragma: no cover - no flock here
            return self
        path = self.directory / LOCK_FILE
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666 & ~current_umask())
        except OSError as exc:
            raise storage_error(exc, path, "create") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "another process"
            os.close(fd)
            raise StorageError(
                f"{self.directory} is in use by {holder} ({what}); wait for it to finish or choose another --out"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}".encode("ascii"), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None
