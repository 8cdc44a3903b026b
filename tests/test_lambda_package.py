"""The post-confirmation package: built by the playbook, reproducible to the byte."""

import hashlib
import os
import time
import zipfile

import pytest

from conftest import run_playbook

from ansible_collections.cruddur.ops.plugins.modules import cruddur_lambda_zip as lambda_zip


def sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def build(build_dir, *args):
    run = run_playbook("playbooks/lambda-package.yml", *args, extra_vars={"cruddur_lambda_build_dir": build_dir})
    assert run.rc == 0, run.output[-3000:]
    return run


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    build_dir = tmp_path_factory.mktemp("lambda-build")
    first = build(build_dir)
    return build_dir, first


def test_second_build_changes_nothing_and_gives_the_same_bytes(built):
    build_dir, first = built
    zip_path = build_dir / "cruddur-post-confirmation.zip"
    assert first.changed() >= 1
    before = sha256(zip_path)
    again = build(build_dir)
    assert again.changed() == 0
    assert sha256(zip_path) == before


def test_a_build_from_scratch_gives_the_same_bytes(built, tmp_path):
    build_dir, _ = built
    build(tmp_path)
    assert sha256(tmp_path / "cruddur-post-confirmation.zip") == sha256(build_dir / "cruddur-post-confirmation.zip")


def test_package_layout(built):
    build_dir, _ = built
    with zipfile.ZipFile(build_dir / "cruddur-post-confirmation.zip") as archive:
        infos = archive.infolist()
    names = [info.filename for info in infos]
    assert names == sorted(names)
    assert {"attributes.json", "handler.py", "insert_user.sql", "psycopg2/__init__.py"} <= set(names)
    extensions = [n for n in names if n.startswith("psycopg2/_psycopg") and n.endswith(".so")]
    assert len(extensions) == 1 and "cpython-312-x86_64-linux-gnu" in extensions[0]
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    assert {info.date_time for info in infos} == {(1980, 1, 1, 0, 0, 0)}


def test_check_mode_builds_nothing(tmp_path):
    run = run_playbook("playbooks/lambda-package.yml", "--check",
                       extra_vars={"cruddur_lambda_build_dir": tmp_path})
    assert run.rc == 0, run.output[-3000:]
    assert not (tmp_path / "cruddur-post-confirmation.zip").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("deps-")]


def test_the_seed_layer_is_opt_in(tmp_path):
    build(tmp_path, "-e", "cruddur_lambda_use_seed_layer=true")
    with zipfile.ZipFile(tmp_path / "cruddur-post-confirmation.zip") as archive:
        assert sorted(archive.namelist()) == ["attributes.json", "handler.py", "insert_user.sql"]


# --- the zip module itself ---------------------------------------------------------------

def make_tree(root):
    (root / "pkg").mkdir(parents=True)
    (root / "a.py").write_text("print('a')\n")
    (root / "pkg" / "b.txt").write_text("b\n")
    (root / "run.sh").write_text("#!/bin/sh\n")
    os.chmod(root / "run.sh", 0o755)
    (root / "pkg" / "__pycache__").mkdir()
    (root / "pkg" / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"\0")


def test_bytes_do_not_depend_on_mtimes_or_umask(tmp_path):
    make_tree(tmp_path / "one")
    first, count = lambda_zip.build([str(tmp_path / "one")])
    assert count == 3
    old = time.time() - 86400
    for path in (tmp_path / "one").rglob("*"):
        os.utime(path, (old, old))
    os.chmod(tmp_path / "one" / "a.py", 0o600)
    second, _ = lambda_zip.build([str(tmp_path / "one")])
    assert first == second


def test_executables_keep_their_bit(tmp_path):
    make_tree(tmp_path / "one")
    data, _ = lambda_zip.build([str(tmp_path / "one")])
    archive = zipfile.ZipFile(__import__("io").BytesIO(data))
    assert archive.getinfo("run.sh").external_attr >> 16 & 0o777 == 0o755
    assert archive.getinfo("a.py").external_attr >> 16 & 0o777 == 0o644


def test_the_same_path_in_two_sources_is_refused(tmp_path):
    make_tree(tmp_path / "one")
    make_tree(tmp_path / "two")
    with pytest.raises(lambda_zip.ZipInputError, match="a.py is in both"):
        lambda_zip.build([str(tmp_path / "one"), str(tmp_path / "two")])


def test_a_missing_source_is_named(tmp_path):
    with pytest.raises(lambda_zip.ZipInputError, match="does not exist"):
        lambda_zip.build([str(tmp_path / "nope")])


def test_a_zip_built_from_the_same_inputs_is_recognised_and_any_other_is_not(tmp_path):
    make_tree(tmp_path / "one")
    data, _ = lambda_zip.build([str(tmp_path / "one")])
    dest = tmp_path / "out.zip"
    dest.write_bytes(data)
    assert lambda_zip.built_from(str(dest), lambda_zip.collect([str(tmp_path / "one")])) == data
    # An input edited, a mode changed, a file added: not the same zip any more.
    (tmp_path / "one" / "a.py").write_text("print('A')\n")
    assert lambda_zip.built_from(str(dest), lambda_zip.collect([str(tmp_path / "one")])) is None
    (tmp_path / "one" / "a.py").write_text("print('a')\n")
    os.chmod(tmp_path / "one" / "a.py", 0o755)
    assert lambda_zip.built_from(str(dest), lambda_zip.collect([str(tmp_path / "one")])) is None
    os.chmod(tmp_path / "one" / "a.py", 0o644)
    (tmp_path / "one" / "c.txt").write_text("c\n")
    assert lambda_zip.built_from(str(dest), lambda_zip.collect([str(tmp_path / "one")])) is None
    (tmp_path / "one" / "c.txt").unlink()
    assert lambda_zip.built_from(str(dest), lambda_zip.collect([str(tmp_path / "one")])) == data


def test_a_damaged_or_foreign_zip_at_dest_is_rebuilt(tmp_path):
    make_tree(tmp_path / "one")
    data, _ = lambda_zip.build([str(tmp_path / "one")])
    dest = tmp_path / "out.zip"
    # Same central directory, one byte of compressed data flipped: the data test catches it.
    with zipfile.ZipFile(__import__("io").BytesIO(data)) as archive:
        offset = archive.getinfo("a.py").header_offset + 30 + len("a.py") + 2
    damaged = bytearray(data)
    damaged[offset] ^= 0xFF
    dest.write_bytes(bytes(damaged))
    assert lambda_zip.built_from(str(dest), lambda_zip.collect([str(tmp_path / "one")])) is None
    # The same members written by another tool (no format comment): rebuilt, not trusted.
    with zipfile.ZipFile(dest, "w") as archive:
        for name in ("a.py", "pkg/b.txt", "run.sh"):
            archive.write(tmp_path / "one" / name, name)
    assert lambda_zip.built_from(str(dest), lambda_zip.collect([str(tmp_path / "one")])) is None
    dest.write_bytes(b"not a zip")
    assert lambda_zip.built_from(str(dest), lambda_zip.collect([str(tmp_path / "one")])) is None
