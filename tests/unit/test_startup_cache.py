"""plugins/startup_cache.py: what ansible-core parses from the same YAML at every start-up (its
routing table, its configuration definitions, its plugins' documentation) is kept in a private
directory and read back, the same values with the same tags."""

import hashlib
import json
import marshal
import os
import pickle
import subprocess

from conftest import REPO, VENV_BIN

# What ansible-core made of those files: digests of the values, and where one option came from.
SCRIPT = r"""
import hashlib, json
from ansible import constants as C
from ansible._internal._datatag._tags import Origin
from ansible.plugins.loader import connection_loader, init_plugin_loader
from ansible.utils.collection_loader._collection_finder import _get_collection_metadata

def digest(value):
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=repr).encode()).hexdigest()

init_plugin_loader()
connection_loader.get("ssh", class_only=True)  # its documentation, for its options
options = C.config.get_configuration_definitions("connection", "ssh")
print(json.dumps({
    "base": digest(C.config._base_defs),
    "routing": digest(_get_collection_metadata("ansible.builtin")),
    "ssh": digest(options),
    "origin": str(Origin.get_tag(options["host"]["description"])),
}))
"""


def run(setting: str) -> dict:
    env = {"PATH": f"{VENV_BIN}:/usr/bin:/bin", "HOME": os.environ.get("HOME", "/root"),
           "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "CRUDDUR_STARTUP_CACHE": setting}
    proc = subprocess.run([str(VENV_BIN / "python"), "-c", SCRIPT], cwd=REPO, env=env,
                          capture_output=True, text=True, check=False, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.splitlines()[-1])


def entries(directory) -> dict:
    return {path.name: path.read_bytes() for path in directory.iterdir()}


def test_the_venv_imports_it_at_start_up_unless_switched_off():
    probe = "import sys; print(any(type(f).__module__ == 'cruddur_startup_cache' for f in sys.meta_path))"
    for setting, expected in (("", "True"), ("0", "False")):
        proc = subprocess.run([str(VENV_BIN / "python"), "-c", probe], env={**os.environ, "CRUDDUR_STARTUP_CACHE": setting},
                              capture_output=True, text=True, check=True)
        assert proc.stdout.strip() == expected


def test_what_start_up_parses_is_kept_and_read_back_the_same(tmp_path):
    directory = tmp_path / "startup"
    parsed = run("0")
    assert "ssh.py" in parsed["origin"]
    assert run(str(directory)) == parsed  # parsed, and kept
    kept = entries(directory)
    assert len(kept) >= 3 and os.stat(directory).st_mode & 0o777 == 0o700
    assert run(str(directory)) == parsed  # read back
    assert entries(directory) == kept  # nothing new


def test_the_kept_value_is_the_one_used(tmp_path):
    directory = tmp_path / "startup"
    parsed = run(str(directory))
    for path in directory.iterdir():
        try:
            value = marshal.loads(path.read_bytes())
        except ValueError:
            continue
        if isinstance(value, dict) and "DEFAULT_FORKS" in value:
            value["DEFAULT_FORKS"]["description"] = "read back from the cache"
            path.write_bytes(marshal.dumps(value))
    assert run(str(directory))["base"] != parsed["base"]


def test_a_damaged_entry_is_parsed_again_and_replaced(tmp_path):
    directory = tmp_path / "startup"
    parsed = run(str(directory))
    for path in directory.iterdir():
        path.write_bytes(b"\x00damaged")
    assert run(str(directory)) == parsed
    for path in directory.iterdir():
        data = path.read_bytes()
        assert data != b"\x00damaged"
        try:
            marshal.loads(data)
        except ValueError:
            pickle.loads(data)  # noqa: S301 (the test's own directory)


def test_a_directory_others_may_write_to_is_not_used(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    assert run(str(shared)) == run("0")
    assert list(shared.iterdir()) == []


def test_a_changed_file_is_a_new_entry(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("startup_cache_changed", REPO / "plugins" / "startup_cache.py")
    cache = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cache)
    store = cache.Store(str(tmp_path / "startup"))
    parses = []

    def parse(text):
        parses.append(text)
        return {"text": text.decode(), "digest": hashlib.sha256(text).hexdigest()}

    for text in (b"a: 1", b"a: 1", b"a: 2", b"a: 1"):
        assert store.value("kind", text, lambda text=text: parse(text))["text"] == text.decode()
    assert parses == [b"a: 1", b"a: 2"]  # each text parsed once
    assert len(list((tmp_path / "startup").iterdir())) == 2
