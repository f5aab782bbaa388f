"""The result directory of a dc_keras run: written whole, and only where dc_keras owns what it replaces.

A run writes into `output_dir` only when that directory
  * does not exist yet (it then appears at once, by renaming a hidden sibling `.NAME.XXXX.partial`), or
  * exists and is empty, or
  * holds an earlier dc_keras result, recognised by the manifest `.dc_keras_manifest.json` that lists every
    file the run wrote with its size and SHA-256; files the user added next to them stay untouched.
Anything else (a directory holding other files, a listed file that was edited since, a file of ours that
would overwrite an unlisted file) is refused before any work starts.

New files are staged in a hidden working directory (`.NAME.XXXX.partial` beside a new `output_dir`, or
`.dc_keras.XXXX.partial` inside an existing one) that carries an owner marker (`dc_keras.atomic`). A run
killed outright leaves it behind; the next run removes such directories once it can prove the process that
made them is gone.

Committing into an existing directory renames each new file over the old one, removes the old files the
manifest lists and the new result does not have, then writes the new manifest. Meanwhile the manifest names
both the old and the new version of each file, so a result interrupted mid-commit (power loss, SIGKILL) is
still recognised as ours by the next run. SIGINT and SIGTERM wait for the commit to finish
(`dc_keras.interrupts`).
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import tempfile
from typing import Dict, Iterable, List, Optional, Tuple

from dc_keras import atomic, interrupts

MANIFEST_NAME = ".dc_keras_manifest.json"
_INNER_PREFIX = ".dc_keras."
_PARTIAL_SUFFIX = ".partial"
_MANIFEST_FORMAT = 1
_MAX_MANIFEST_BYTES = 1 << 20


class OutputDirError(ValueError):
    """`output_dir` cannot be created or written; `reason` says why (the OS error or what is in the way)."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"cannot write to {path}: {reason}")
        self.path = path
        self.reason = reason


class NotOwnedError(ValueError):
    """`output_dir` holds files dc_keras did not write, so writing there could destroy them."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"refusing to write into {path}: {reason}")
        self.path = path
        self.reason = reason


def sha256_file(path: str) -> str:
    """Hex SHA-256 of a file's contents."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _entry(path: str) -> Dict[str, object]:
    return {"size": os.path.getsize(path), "sha256": sha256_file(path)}


def _valid_name(name) -> bool:
    return (isinstance(name, str) and name not in ("", ".", "..") and not name.startswith(".")
            and os.sep not in name and (os.altsep is None or os.altsep not in name) and "\0" not in name)


def _reason(error: OSError) -> str:
    return error.strerror or str(error)


# --------------------------------------------------------------------------------------------------
# Stale working directories

def _is_partial_dir(directory: str, name: str, prefix: str) -> bool:
    path = os.path.join(directory, name)
    return (name.startswith(prefix) and name.endswith(_PARTIAL_SUFFIX) and os.path.isdir(path)
            and not os.path.islink(path))


def _partial_dirs(directory: str, prefix: str) -> List[Tuple[str, Optional[dict]]]:
    """(path, owner marker or None) of the working directories named like ours in `directory`."""
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    return [(os.path.join(directory, n), atomic.read_marker(os.path.join(directory, n)))
            for n in sorted(names) if _is_partial_dir(directory, n, prefix)]


def remove_stale_partials(directory: str, prefix: str) -> List[str]:
    """Remove the working directories in `directory` whose marker proves their process is gone.

    Directories without a marker, or whose process may still run, are left alone. Returns the removed paths.
    """
    removed = []
    for path, marker in _partial_dirs(directory, prefix):
        if marker is not None and atomic.owner_is_gone(marker):
            shutil.rmtree(path, ignore_errors=True)
            if not os.path.lexists(path):
                removed.append(path)
    return removed


def _sibling_prefix(final: str) -> str:
    return f".{os.path.basename(final)}."


# --------------------------------------------------------------------------------------------------
# Manifest and ownership

def read_manifest(directory: str) -> Optional[Dict[str, dict]]:
    """name -> list of accepted {size, sha256} of the result in `directory`; None when there is no manifest.

    Raises NotOwnedError when a manifest exists but is not one dc_keras wrote.
    """
    path = os.path.join(directory, MANIFEST_NAME)
    if not os.path.lexists(path):
        return None
    try:
        if os.path.islink(path) or not os.path.isfile(path) or os.path.getsize(path) > _MAX_MANIFEST_BYTES:
            raise ValueError("not a regular file of sensible size")
        with open(path, encoding="utf-8") as f:
            payload = json.load(f)
        if not isinstance(payload, dict) or payload.get("tool") != "dc_keras":
            raise ValueError("not written by dc_keras")
        accepted: Dict[str, List[dict]] = {}
        for key in ("files", "previous"):
            entries = payload.get(key, {})
            if not isinstance(entries, dict):
                raise ValueError(f"{key!r} is not an object")
            for name, entry in entries.items():
                if (not _valid_name(name) or not isinstance(entry, dict) or not isinstance(entry.get("size"), int)
                        or not isinstance(entry.get("sha256"), str)):
                    raise ValueError(f"bad entry {name!r}")
                accepted.setdefault(name, []).append({"size": entry["size"], "sha256": entry["sha256"]})
        return accepted
    except (OSError, ValueError) as error:
        raise NotOwnedError(directory, f"its {MANIFEST_NAME} is unreadable ({error}); it may not be a dc_keras "
                                       "result") from None


def owned_files(directory: str, names: Iterable[str] = (), own_working_dir: Optional[str] = None) -> Dict[str, dict]:
    """The files of an existing `directory` that dc_keras wrote and may replace: name -> {size, sha256}.

    `names` are the files the new result may write. Raises NotOwnedError when the directory holds other
    files but no manifest, when a listed file changed since it was written, or when a name in `names` is
    taken by a file the manifest does not list. `own_working_dir` names this run's working directory.
    """
    manifest = read_manifest(directory)
    try:
        entries = sorted(os.listdir(directory))
    except OSError as error:
        raise OutputDirError(directory, _reason(error)) from None
    others = []
    for name in entries:
        if name in (MANIFEST_NAME, own_working_dir):
            continue
        if _is_partial_dir(directory, name, _INNER_PREFIX):
            marker = atomic.read_marker(os.path.join(directory, name))
            if marker is not None and not atomic.owner_is_gone(marker):
                raise NotOwnedError(directory, f"another dc_keras run (pid {marker['pid']} on {marker['host']}) "
                                               f"is writing into it")
            if marker is not None:
                continue  # stale, ours: removed before writing
        others.append(name)
    if manifest is None:
        if others:
            shown = ", ".join(others[:5]) + (f" and {len(others) - 5} more" if len(others) > 5 else "")
            raise NotOwnedError(directory, f"it holds files dc-compress did not write ({shown}); give a new or "
                                           "empty directory, or one holding an earlier dc-compress result")
        return {}
    owned = {}
    for name, accepted in manifest.items():
        path = os.path.join(directory, name)
        if not os.path.lexists(path):
            continue  # removed by the user since: nothing to replace
        if os.path.islink(path) or not os.path.isfile(path):
            raise NotOwnedError(directory, f"{name} is no longer the file dc-compress wrote there")
        size = os.path.getsize(path)
        if not any(size == entry["size"] for entry in accepted):
            raise NotOwnedError(directory, f"{name} changed since dc-compress wrote it; move it away first")
        digest = sha256_file(path)
        if not any(size == entry["size"] and digest == entry["sha256"] for entry in accepted):
            raise NotOwnedError(directory, f"{name} changed since dc-compress wrote it; move it away first")
        owned[name] = {"size": size, "sha256": digest}
    clashes = sorted(set(names) & (set(others) - set(owned)))
    if clashes:
        raise NotOwnedError(directory, f"{', '.join(clashes)} would be overwritten but dc-compress did not write "
                                       f"{'it' if len(clashes) == 1 else 'them'}; move them away first")
    return owned


def _nearest_existing(path: str) -> str:
    while not os.path.lexists(path):
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return path


def _probe_writable(directory: str, final: str) -> None:
    """Raise OutputDirError unless a working directory can be made in `directory`."""
    if not os.path.isdir(directory):
        raise OutputDirError(final, f"{directory} is not a directory")
    try:
        probe = tempfile.mkdtemp(dir=directory, prefix=".dc_keras_probe.")
    except OSError as error:
        raise OutputDirError(final, _reason(error)) from None
    os.rmdir(probe)


def check_output_dir(output_dir: str, names: Iterable[str] = ()) -> str:
    """Check, before any work, that a result can be written to `output_dir`; returns its absolute path.

    Raises OutputDirError (it cannot be created or written) or NotOwnedError (it holds files dc_keras did
    not write, or one of `names` would overwrite such a file). Removes stale working directories of ours.
    """
    final = os.path.abspath(output_dir)
    if os.path.isdir(final):
        remove_stale_partials(final, _INNER_PREFIX)
        owned_files(final, names)
        _probe_writable(final, final)
    elif os.path.lexists(final):
        raise OutputDirError(final, "it exists and is not a directory")
    else:
        existing = _nearest_existing(os.path.dirname(final))
        if not os.path.isdir(existing):
            raise OutputDirError(final, f"{existing} is not a directory")
        if existing == os.path.dirname(final):
            remove_stale_partials(existing, _sibling_prefix(final))
        _probe_writable(existing, final)
    return final


# --------------------------------------------------------------------------------------------------
# Staging and commit

class ResultDirectory:
    """A working directory whose files become `final`'s result on `commit()` (see the module docstring).

    Used as a context manager: leaving the block without `commit()` (an exception, Ctrl-C) removes the
    working directory and any parent directories it created, so `final` is either untouched or holds the
    complete new result. `names` are the files the result may hold (checked against unlisted files).
    """

    def __init__(self, final: str, names: Iterable[str] = ()):
        self.final = check_output_dir(final, names)
        self.names = tuple(names)
        self.committed = False
        self._created_parents: List[str] = []
        self.in_place = os.path.isdir(self.final)
        try:
            if self.in_place:
                parent, prefix = self.final, _INNER_PREFIX
            else:
                parent, prefix = os.path.dirname(self.final), _sibling_prefix(self.final)
                self._make_parents(parent)
            self.path = tempfile.mkdtemp(dir=parent, prefix=prefix, suffix=_PARTIAL_SUFFIX)
        except OSError as error:
            self._remove_parents()
            raise OutputDirError(self.final, _reason(error)) from None
        try:
            os.chmod(self.path, atomic.directory_mode())  # mkdtemp's 0700 would become the result's mode
            atomic.write_marker(self.path)
        except BaseException:
            self._discard()
            raise

    def _make_parents(self, parent: str) -> None:
        missing = []
        path = parent
        while not os.path.lexists(path):
            missing.append(path)
            path = os.path.dirname(path)
        for path in reversed(missing):
            os.mkdir(path)
            self._created_parents.append(path)

    def _remove_parents(self) -> None:
        for path in reversed(self._created_parents):
            try:
                os.rmdir(path)
            except OSError:
                break  # something else was put there meanwhile: keep it and everything above
        self._created_parents = []

    def _discard(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
        self._remove_parents()

    def _new_entries(self) -> Dict[str, dict]:
        entries = {}
        for name in sorted(os.listdir(self.path)):
            if name == atomic.MARKER_NAME:
                continue
            path = os.path.join(self.path, name)
            if not _valid_name(name) or os.path.islink(path) or not os.path.isfile(path):
                raise ValueError(f"result directory {self.path}: unexpected entry {name!r}")
            entries[name] = _entry(path)
        return entries

    def _manifest_bytes(self, files: Dict[str, dict], previous: Optional[Dict[str, dict]] = None) -> bytes:
        payload = {"tool": "dc_keras", "format": _MANIFEST_FORMAT, "files": files}
        if previous:
            payload["previous"] = previous
        return (json.dumps(payload, indent=2, sort_keys=True) + "\n").encode()

    def _write_manifest(self, data: bytes) -> None:
        """Write the manifest into the working directory, then rename it into `final` (same filesystem)."""
        staged = os.path.join(self.path, MANIFEST_NAME)
        atomic.atomic_write(staged, data)
        os.replace(staged, os.path.join(self.final, MANIFEST_NAME))
        atomic.fsync_directory(self.final)

    def commit(self) -> str:
        """Make the staged files the result in `final`; returns `final`.

        A signal recorded before this point aborts (Interrupted) with the old result untouched.
        """
        interrupts.check()
        new = self._new_entries()
        with interrupts.deferred():
            if self.in_place:
                self._commit_in_place(new)
            else:
                self._commit_new(new)
            self.committed = True
        return self.final

    def _commit_new(self, new: Dict[str, dict]) -> None:
        atomic.atomic_write(os.path.join(self.path, MANIFEST_NAME), self._manifest_bytes(new))
        os.unlink(os.path.join(self.path, atomic.MARKER_NAME))
        atomic.fsync_directory(self.path)
        try:
            os.rename(self.path, self.final)
        except OSError as error:
            if error.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR, errno.EISDIR):
                raise NotOwnedError(self.final, "it was created by someone else during the run") from None
            raise OutputDirError(self.final, _reason(error)) from None
        atomic.fsync_directory(os.path.dirname(self.final))
        self._created_parents = []

    def _commit_in_place(self, new: Dict[str, dict]) -> None:
        # Checked again: the directory may have changed during the run.
        old = owned_files(self.final, new, own_working_dir=os.path.basename(self.path))
        self._write_manifest(self._manifest_bytes(new, previous=old))
        for name in new:
            os.replace(os.path.join(self.path, name), os.path.join(self.final, name))
        for name, entry in old.items():
            path = os.path.join(self.final, name)
            if name not in new and os.path.isfile(path) and not os.path.islink(path):
                os.unlink(path)
        atomic.fsync_directory(self.final)
        self._write_manifest(self._manifest_bytes(new))
        shutil.rmtree(self.path, ignore_errors=True)

    def __enter__(self) -> "ResultDirectory":
        return self

    def __exit__(self, *exc) -> bool:
        if not self.committed:
            with interrupts.deferred():  # a second Ctrl-C must not leave the cleanup half done
                self._discard()
        return False
