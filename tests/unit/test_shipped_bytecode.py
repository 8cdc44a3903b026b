"""Shipped modules carry their bytecode (plugins/shipped_bytecode.py): a `.pyc` the target's Python
really imports, and the source whenever the `.pyc` does not fit (another Python, other source).
The same results with and without it: tests/unit/test_in_process.py."""

import base64
import importlib.util
import re
import subprocess
import zipfile

from conftest import REPO, load_module, run_playbook
from test_in_process import OTHER_PYTHON as TARGET_PYTHON


def kept_payload(tmp_path, switch: str) -> zipfile.ZipFile:
    """The zip of a `stat` task shipped to TARGET_PYTHON, from the AnsiballZ file Ansible keeps."""
    remote = tmp_path / f"remote-{switch}"
    playbook = tmp_path / "stat.yml"
    playbook.write_text("- hosts: all\n  gather_facts: false\n  tasks:\n"
                        "    - ansible.builtin.stat: {path: /etc/hostname}\n")
    run = run_playbook(str(playbook), "-i", "probe,", extra_vars={
        "ansible_connection": "local", "ansible_python_interpreter": TARGET_PYTHON},
        env={"ANSIBLE_KEEP_REMOTE_FILES": "1", "ANSIBLE_PIPELINING": "0", "ANSIBLE_REMOTE_TMP": str(remote),
             "CRUDDUR_SHIPPED_BYTECODE": switch})
    assert run.rc == 0, run.output[-3000:]
    (wrapper,) = remote.glob("ansible-tmp-*/AnsiballZ_stat.py")
    data = base64.b64decode(re.search(r"zip_data='([^']+)'", wrapper.read_text()).group(1))
    path = tmp_path / f"payload-{switch}.zip"
    path.write_bytes(data)
    return zipfile.ZipFile(path)


def imported_from(payload: str, module: str = "ansible.module_utils.basic") -> str:
    """Where the target's Python found the module in the payload (zipimport's __file__)."""
    return subprocess.run([TARGET_PYTHON, "-c", f"import sys; sys.path.insert(0, {payload!r}); import {module} as m;"
                           " print(m.__file__)"], capture_output=True, text=True, check=True).stdout.strip()


def rewritten(source: zipfile.ZipFile, target, change) -> str:
    """A copy of the payload with change(name, data) applied to each member."""
    with zipfile.ZipFile(target, "w") as out:
        for info in source.infolist():
            out.writestr(zipfile.ZipInfo(info.filename, info.date_time), change(info.filename, source.read(info)))
    return str(target)


def test_each_source_gets_a_checked_pyc_that_the_target_imports(tmp_path):
    payload = kept_payload(tmp_path, "1")
    names = set(payload.namelist())
    sources = {name for name in names if name.endswith(".py")}
    assert "ansible/module_utils/basic.py" in sources and "ansible/modules/stat.py" in sources
    assert {name for name in names if name.endswith(".pyc")} == {name + "c" for name in sources}
    for name in sources:
        header = payload.read(name + "c")[:16]
        assert header == (importlib.util.MAGIC_NUMBER + (0b11).to_bytes(4, "little")
                          + importlib.util.source_hash(payload.read(name))), name
    assert imported_from(payload.filename).endswith("/ansible/module_utils/basic.pyc")
    # Without the plugin: sources only, as Ansible ships them.
    plain = kept_payload(tmp_path, "0")
    assert not [name for name in plain.namelist() if name.endswith(".pyc")]
    assert {name for name in plain.namelist()} == sources
    assert imported_from(plain.filename).endswith("/ansible/module_utils/basic.py")


def test_a_pyc_that_does_not_fit_gives_way_to_the_source(tmp_path):
    payload = kept_payload(tmp_path, "1")
    # Another Python's magic number: its bytecode is not this one's, the source is compiled.
    other_python = rewritten(payload, tmp_path / "other-python.zip", lambda name, data: (
        b"\x00\x00\r\n" + data[4:] if name == "ansible/module_utils/basic.pyc" else data))
    assert imported_from(other_python).endswith("/ansible/module_utils/basic.py")
    # Other source than the .pyc was made from: the hash check refuses the .pyc, the source runs.
    edited = rewritten(payload, tmp_path / "edited.zip", lambda name, data: (
        data + b"\nCRUDDUR_EDITED = True\n" if name == "ansible/module_utils/basic.py" else data))
    assert imported_from(edited).endswith("/ansible/module_utils/basic.py")
    assert subprocess.run([TARGET_PYTHON, "-c", f"import sys; sys.path.insert(0, {edited!r});"
                           " import ansible.module_utils.basic as m; print(m.CRUDDUR_EDITED)"],
                          capture_output=True, text=True, check=True).stdout.strip() == "True"


def test_only_python_that_compiles_gets_a_pyc(tmp_path):
    plugin = load_module(REPO / "plugins" / "shipped_bytecode.py", "cruddur_shipped_bytecode")
    store = load_module(REPO / "plugins" / "private_cache.py", "cruddur_private_cache").Store(str(tmp_path / "store"))
    with zipfile.ZipFile(tmp_path / "payload.zip", "w") as zf:
        payload = plugin.WithBytecode(zf, store)
        payload.writestr(zipfile.ZipInfo("pkg/good.py"), b"ANSWER = 42\n")
        payload.writestr(zipfile.ZipInfo("pkg/old.py"), b"print 'Python 2 only'\n")
        payload.writestr("pkg/data.txt", b"not Python")
    with zipfile.ZipFile(tmp_path / "payload.zip") as zf:
        assert sorted(zf.namelist()) == ["pkg/data.txt", "pkg/good.py", "pkg/good.pyc", "pkg/old.py"]
    # The store keeps the one compiled file, for the next zip (the next run) to read back.
    assert len(list((tmp_path / "store").iterdir())) == 1
