"""What the API role compares on the controller (the cruddur.ops filters, cruddur_api.py): pip runs only for
unmet pins, and only the code that differs is packed (the cruddur.ops.cruddur_code_archive module)."""

import hashlib
import tarfile

import pytest
from ansible_collections.cruddur.ops.plugins.filter import cruddur_api as api
from ansible_collections.cruddur.ops.plugins.modules import cruddur_code_archive as archive



def test_pins_are_met_by_the_installed_versions_under_any_spelling_of_the_name():
    installed = {"Flask": "3.1.3", "typing_extensions": "4.16.0", "psycopg-binary": "3.3.9"}
    assert api.cruddur_unmet_pins(["flask==3.1.3", "typing-extensions==4.16.0", "psycopg_binary==3.3.9"],
                                  installed) == []


def test_a_missing_package_another_version_an_unpinned_line_or_no_virtualenv_is_unmet():
    installed = {"Flask": "3.1.2"}
    assert api.cruddur_unmet_pins(["Flask==3.1.3", "gunicorn==27.0.1", "requests"], installed) == [
        "Flask==3.1.3", "gunicorn==27.0.1", "requests"]
    assert api.cruddur_unmet_pins(["Flask==3.1.3"], None) == ["Flask==3.1.3"]


def deployed_entry(path, content, mode="0644", owner="root", group="root"):
    return {"path": path, "isdir": False, "mode": mode, "pw_name": owner, "gr_name": group,
            "checksum": hashlib.sha1(content).hexdigest()}  # noqa: S324 (find's checksum)


def test_only_files_whose_content_mode_or_owner_differ_are_shipped(tmp_path):
    for name, content in {"same.py": b"same\n", "edited.py": b"new\n", "loose.sql": b"q\n",
                          "owned.py": b"o\n", "new.py": b"n\n"}.items():
        (tmp_path / name).write_bytes(content)
    tree = [{"path": "pkg", "src": str(tmp_path), "state": "directory"}] + [
        {"path": f"pkg/{name}", "src": str(tmp_path / name), "state": "file"}
        for name in ("same.py", "edited.py", "loose.sql", "owned.py", "new.py")]
    deployed = [deployed_entry("/app/pkg/same.py", b"same\n"), deployed_entry("/app/pkg/edited.py", b"old\n"),
                deployed_entry("/app/pkg/loose.sql", b"q\n", mode="0600"),
                deployed_entry("/app/pkg/owned.py", b"o\n", owner="cruddur"),
                {"path": "/app/pkg", "isdir": True, "mode": "0755", "pw_name": "root", "gr_name": "root"}]
    differs = [item["path"] for item in api.cruddur_code_differs(tree, deployed, "/app")]
    assert differs == ["pkg/edited.py", "pkg/loose.sql", "pkg/owned.py", "pkg/new.py"]
    # Nothing deployed yet: every file.
    assert len(api.cruddur_code_differs(tree, [], "/app")) == 5


def test_the_archive_holds_the_files_as_root_0644_and_refuses_paths_outside_the_tree(tmp_path):
    source = tmp_path / "src"
    (source / "pkg").mkdir(parents=True)
    (source / "pkg" / "a.py").write_text("a\n")
    (source / "b.sql").write_text("b\n")
    (source / "pkg" / "a.py").chmod(0o600)
    dest = tmp_path / "code.tar.gz"
    assert archive.pack(str(source), ["pkg/a.py", "b.sql"], str(dest)) == ["b.sql", "pkg/a.py"]
    with tarfile.open(dest) as packed:
        members = {m.name: (m.mode, m.uid, m.gid, m.uname, m.gname, m.isfile()) for m in packed.getmembers()}
        assert packed.extractfile("pkg/a.py").read() == b"a\n"
    assert members == {"b.sql": (0o644, 0, 0, "root", "root", True), "pkg/a.py": (0o644, 0, 0, "root", "root", True)}
    (tmp_path / "secret").write_text("s\n")
    for bad in ("../secret", str(tmp_path / "secret"), "pkg"):
        with pytest.raises(archive.ArchiveInputError):
            archive.pack(str(source), [bad], str(dest))
