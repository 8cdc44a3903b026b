"""Ship a module's bytecode beside its source, so the target does not compile it at every task.

A module that is not run in the worker (plugins/in_process.py: another host, another interpreter,
become) travels as AnsiballZ: a zip of its source and the module_utils it imports, which the
target's Python imports with zipimport. zipimport never writes bytecode, so every task compiled
ansible.module_utils.basic and the rest again: about 70 ms of a 190 ms `stat` on this machine,
in each container of the rolling scenario, at every task.

Here each `.py` written into the zip gets a `.pyc` next to it, which zipimport prefers:

- compiled by the controller's Python, with its magic number. A target whose Python differs
  finds a magic number it does not know, ignores the `.pyc` and compiles the source as before;
- hash-based and checked (PEP 552): the target's Python compares the source's hash with the
  one the `.pyc` carries before using it, so a `.pyc` never runs in place of other source;
- kept in .cache/bytecode (private_cache.Store, keyed by the source, the file's name and the
  magic number), as __pycache__ keeps bytecode: the zip is built once per module in each run,
  and its `.pyc`s are compiled once per source on this machine;
- what differs on the target: the module_utils' `__file__` names the `.pyc` (zipimport's
  convention), and a traceback names a file by its place in the zip (ansible/module_utils/...)
  rather than under the temporary directory it was unpacked to.

Anything unexpected (source that does not compile, a cache that cannot be read or written) leaves
that file as Ansible ships it. CRUDDUR_SHIPPED_BYTECODE=0 turns this off, and so does
CRUDDUR_IN_PROCESS=0 (modules shipped as Ansible ships them, for comparisons).
"""

from __future__ import annotations

import importlib.util
import marshal
import os
import zipfile

SWITCH = "CRUDDUR_SHIPPED_BYTECODE"
# PEP 552 flags: hash-based (bit 0), checked against the source on import (bit 1).
CHECKED_HASH = 0b11


def pyc(source: bytes, name: str) -> bytes:
    """The `.pyc` for this source: a checked hash-based header, then the marshalled code."""
    code = compile(source, name, "exec", dont_inherit=True)
    return (importlib.util.MAGIC_NUMBER + CHECKED_HASH.to_bytes(4, "little")
            + importlib.util.source_hash(source) + marshal.dumps(code))


class WithBytecode:
    """A zip being written that gets a `.pyc` beside each `.py`; everything else is passed on."""

    def __init__(self, zf: zipfile.ZipFile, store):
        self._zf, self._store = zf, store

    def __getattr__(self, name):
        return getattr(self._zf, name)

    def writestr(self, zinfo_or_arcname, data, *args, **kwargs):
        self._zf.writestr(zinfo_or_arcname, data, *args, **kwargs)
        name = getattr(zinfo_or_arcname, "filename", zinfo_or_arcname)
        if not isinstance(name, str) or not name.endswith(".py"):
            return
        try:
            source = data.encode("utf-8") if isinstance(data, str) else bytes(data)
            compiled = self._store.value("shipped-pyc", source, lambda: pyc(source, name), name,
                                         importlib.util.MAGIC_NUMBER)
        except Exception:  # noqa: BLE001 (source Python will not compile: shipped as it is)
            return
        info = zipfile.ZipInfo(name + "c", date_time=getattr(zinfo_or_arcname, "date_time", (1980, 1, 1, 0, 0, 0)))
        info.compress_type = self._zf.compression
        self._zf.writestr(info, compiled)


def enabled() -> bool:
    return os.environ.get(SWITCH, "1") != "0" and os.environ.get("CRUDDUR_IN_PROCESS", "1") != "0"


def install(store) -> bool:
    """Wrap the two functions that write sources into AnsiballZ zips (module_utils, the module
    itself). Installed in ansible-playbook's process before any worker forks; idempotent."""
    if not enabled():
        return False
    from ansible.executor import module_common

    finder, add_module = module_common.recursive_finder, module_common._add_module_to_zip
    if getattr(finder, "cruddur_bytecode", False):
        return True

    def recursive_finder(name, module_fqn, module_data, zf, *args, **kwargs):
        return finder(name, module_fqn, module_data, WithBytecode(zf, store), *args, **kwargs)

    def _add_module_to_zip(zf, *args, **kwargs):
        return add_module(WithBytecode(zf, store), *args, **kwargs)

    recursive_finder.cruddur_bytecode = True
    module_common.recursive_finder = recursive_finder
    module_common._add_module_to_zip = _add_module_to_zip
    return True
