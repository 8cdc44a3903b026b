"""A cache directory that is its owner's alone, its entries written whole or not at all, and a
store of values keyed by the text they are made from.

Shared by plugins/template_cache.py (compiled templates), plugins/startup_cache.py (what
ansible-core parses at every start-up) and plugins/callback/cruddur_preload.py (modules'
analyses). Their files are read back as code or data, as Python reads __pycache__: a directory
anyone else could write to is never used. Imports nothing of Ansible's.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tempfile

# A directory whose own size passes this holds some ten thousand entries (about 120 bytes each on
# ext4): entries whose sources changed or are gone accumulate, so it is emptied and filled again.
PRUNE_AT = 1 << 20


def private_directory(path: str) -> str | None:
    """The directory, made if missing (or emptied when it has grown past PRUNE_AT), when it is
    this user's and no one else's; else None."""
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
        info = os.stat(path)
        if info.st_uid == os.getuid() and info.st_size > PRUNE_AT:
            # A new directory (a directory does not shrink as its entries go), swapped in whole.
            fresh = tempfile.mkdtemp(dir=os.path.dirname(path), prefix=f".{os.path.basename(path)}-")
            old = fresh + ".old"
            os.rename(path, old)
            os.rename(fresh, path)
            shutil.rmtree(old, ignore_errors=True)
            info = os.stat(path)
    except OSError:
        return None
    if info.st_uid != os.getuid() or stat.S_IMODE(info.st_mode) & 0o077:
        return None
    return path


def read(directory: str, key: str) -> bytes | None:
    try:
        with open(os.path.join(directory, key), "rb") as handle:
            return handle.read()
    except OSError:
        return None


def write(directory: str, key: str, data: bytes) -> bool:
    """The entry, replaced whole (a reader sees the old file or the new one); False when it could
    not be written (read-only, full, gone), and nothing is left behind."""
    temporary = None
    try:
        handle, temporary = tempfile.mkstemp(dir=directory, prefix=".new-")
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.replace(temporary, os.path.join(directory, key))
    except OSError:
        if temporary:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
        return False
    return True


class Store:
    """Values by the text they are made from (parsed, analysed, compiled), one file each in a
    private directory, checked when first used. A value is kept only when its codec (marshal
    unless given) gives back an equal one; a damaged entry is made again and replaced."""

    FORMAT = 1  # the layout of a key; a change makes every older entry a miss

    def __init__(self, path: str):
        self.path = path
        self._directory: str | None | bool = False  # False: not checked yet

    def directory(self) -> str | None:
        if self._directory is False:
            self._directory = private_directory(self.path)
        return self._directory

    def value(self, kind: str, text: bytes, make, *identity, codec=None):
        """make()'s value for this text, read back when it was made before, else made and kept."""
        import hashlib
        import marshal
        import sys

        codec = codec or marshal
        directory = self.directory()
        if directory is None:
            return make()
        key = hashlib.sha256(repr((self.FORMAT, kind, sys.version, identity)).encode("utf-8", "surrogateescape")
                             + b"\0" + text).hexdigest()
        data = read(directory, key)
        if data is not None:
            try:
                return codec.loads(data)
            except Exception:  # noqa: BLE001,S110 (damaged: made again, and replaced)
                pass
        value = make()
        try:
            data = codec.dumps(value)
            if codec.loads(data) == value:
                write(directory, key, data)
        except Exception:  # noqa: BLE001,S110 (not data this codec keeps: not kept)
            pass
        return value
