"""Crash-safe file writing shared by every dc_keras tool.

`AtomicFile` / `atomic_write`: data goes to a temporary file in the destination directory, is flushed to
disk, then renamed over the destination (and the directory entry flushed too), so a reader sees either the
old file or the complete new one, and a failure leaves the old file byte-for-byte as it was. New files get
the permissions a plain `open()` would give them (0o666 minus the umask), not mkstemp's 0600.

`scratch_tempdir`: points Python's `tempfile` default at a directory of our choosing for a block, so that
libraries creating their own temporary files (TensorFlow's TFLite converter saves a SavedModel under
`tempfile.mkdtemp()`) put them where our cleanup can find them.

`OwnerMarker`: a small JSON file naming the process that created a working directory (host, boot, pid and
the pid's start time), so a later run can prove the process is gone and remove what it left behind.
"""
from __future__ import annotations

import contextlib
import json
import os
import socket
import tempfile
import threading
from pathlib import Path
from typing import Iterator, Optional, Union

PathLike = Union[str, "os.PathLike[str]"]


def current_umask() -> int:
    """The process umask (reading it means setting it; it is put back at once)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """Permissions of a new regular file, as open() would create it."""
    return 0o666 & ~current_umask()


def directory_mode() -> int:
    """Permissions of a new directory, as os.mkdir() would create it."""
    return 0o777 & ~current_umask()


def fsync_directory(path: PathLike) -> None:
    """Flush a directory's entries (a rename is durable only once its directory is)."""
    try:
        fd = os.open(os.fspath(path), os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return  # some filesystems do not let directories be opened; nothing more can be done there
    try:
        os.fsync(fd)
    except OSError:
        pass  # e.g. EINVAL on filesystems without directory fsync
    finally:
        os.close(fd)


class AtomicFile:
    """A destination file written through a temporary sibling and one rename.

    Usage:
        with AtomicFile(path) as f:
            f.write(data)          # the temporary file, flushed and fsynced
            check(f.temp_path)     # anything that must pass before the file replaces the old one
            f.commit()             # rename over `path`; without it the temporary file is removed

    The destination directory must exist (the caller decides whether creating it is wanted).
    """

    def __init__(self, path: PathLike):
        self.path = Path(os.fspath(path)).absolute()
        fd, temp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp")
        self.temp_path = Path(temp)
        self._fd: Optional[int] = fd
        self.committed = False
        try:
            os.fchmod(fd, file_mode())
        except BaseException:
            self.discard()
            raise

    def write(self, data: bytes) -> None:
        """Write all of `data` to the temporary file and flush it to disk (once per AtomicFile)."""
        if self._fd is None:
            raise ValueError(f"AtomicFile({self.path}): already written or discarded")
        fd, self._fd = self._fd, None
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())

    def commit(self) -> Path:
        """Rename the temporary file over the destination and flush the directory entry."""
        if self._fd is not None:
            raise ValueError(f"AtomicFile({self.path}): nothing written")
        os.replace(self.temp_path, self.path)
        self.committed = True
        fsync_directory(self.path.parent)
        return self.path

    def discard(self) -> None:
        """Remove the temporary file (the destination is untouched)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if not self.committed:
            try:
                os.unlink(self.temp_path)
            except FileNotFoundError:
                pass

    def __enter__(self) -> "AtomicFile":
        return self

    def __exit__(self, *exc) -> bool:
        if not self.committed:
            self.discard()
        return False


def atomic_write(path: PathLike, data: bytes) -> Path:
    """Replace `path` by `data` atomically and durably; on any failure the old file stays as it was.

    The directory of `path` must exist.
    """
    with AtomicFile(path) as f:
        f.write(data)
        return f.commit()


_tempdir_lock = threading.RLock()


@contextlib.contextmanager
def scratch_tempdir(parent: Optional[PathLike], prefix: str = ".dc_keras.") -> Iterator[Optional[str]]:
    """A fresh directory under `parent`, made Python's default temporary directory for the block.

    Libraries that call tempfile.mkdtemp() without a `dir` (TensorFlow's TFLite converter) then write inside
    it; the directory and everything in them is removed when the block ends. With `parent` None, nothing
    changes and None is yielded. Other threads calling tempfile during the block also use the directory.
    """
    if parent is None:
        yield None
        return
    import shutil

    path = tempfile.mkdtemp(dir=os.fspath(parent), prefix=prefix, suffix=".scratch")
    with _tempdir_lock:
        previous = tempfile.tempdir
        tempfile.tempdir = path
        try:
            yield path
        finally:
            tempfile.tempdir = previous
            shutil.rmtree(path, ignore_errors=True)


# --------------------------------------------------------------------------------------------------
# Ownership markers of working directories

MARKER_NAME = ".dc_keras_owner.json"


def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
            return f.read().strip()
    except OSError:
        return ""


def _start_time(pid: int) -> str:
    """The process's start time in clock ticks since boot (Linux), '' when unknown."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            stat = f.read()
    except OSError:
        return ""
    # The command name (field 2) may hold spaces and parentheses: count fields after its closing ')'.
    fields = stat[stat.rfind(")") + 2:].split()
    return fields[19] if len(fields) > 19 else ""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def write_marker(directory: PathLike) -> None:
    """Record this process as the owner of `directory` (a working directory it will remove itself)."""
    pid = os.getpid()
    payload = {"tool": "dc_keras", "host": socket.gethostname(), "boot_id": _boot_id(), "pid": pid,
               "start_time": _start_time(pid)}
    atomic_write(Path(os.fspath(directory)) / MARKER_NAME, (json.dumps(payload) + "\n").encode())


def read_marker(directory: PathLike) -> Optional[dict]:
    """The owner record of `directory`, or None when it has none (or not one we wrote)."""
    path = Path(os.fspath(directory)) / MARKER_NAME
    try:
        if path.is_symlink() or not path.is_file() or path.stat().st_size > 4096:
            return None
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if (not isinstance(payload, dict) or payload.get("tool") != "dc_keras"
            or not isinstance(payload.get("pid"), int) or not isinstance(payload.get("host"), str)):
        return None
    return payload


def owner_is_gone(marker: dict) -> bool:
    """True only when the marker provably names a process of this host that no longer runs.

    A marker of another host, or of a pid that runs and whose start time cannot be told apart, counts as
    alive: the directory may still be in use.
    """
    if marker.get("host") != socket.gethostname():
        return False
    recorded_boot = marker.get("boot_id") or ""
    if recorded_boot and _boot_id() and recorded_boot != _boot_id():
        return True  # written before the last reboot
    pid = marker["pid"]
    if pid == os.getpid():
        return False
    if not _pid_alive(pid):
        return True
    recorded_start = marker.get("start_time") or ""
    current_start = _start_time(pid)
    return bool(recorded_start and current_start and recorded_start != current_start)  # pid reused
