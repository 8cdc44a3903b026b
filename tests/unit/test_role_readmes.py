"""Each role's README is what its argument specs give (bin/role-readmes): the docs a user reads
cannot drift from the options Ansible validates."""

import subprocess
import sys

from conftest import REPO


def test_every_role_readme_matches_its_argument_specs():
    roles = sorted(p.parent.parent.name for p in (REPO / "roles").glob("*/meta/argument_specs.yml"))
    assert roles and all((REPO / "roles" / role / "README.md").is_file() for role in roles)
    proc = subprocess.run([sys.executable, str(REPO / "bin" / "role-readmes"), "--check"],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr


def test_a_changed_spec_is_caught(tmp_path):
    """The check is not a formality: a description edited in the specs makes it fail."""
    import shutil

    copy = tmp_path / "repo"
    for part in ("bin", "roles", "playbooks"):
        shutil.copytree(REPO / part, copy / part, symlinks=True)
    specs = copy / "roles" / "cruddur_lb" / "meta" / "argument_specs.yml"
    specs.write_text(specs.read_text().replace("description:", "description: Changed.", 1))
    proc = subprocess.run([sys.executable, str(copy / "bin" / "role-readmes"), "--check"],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 1 and "out of date" in proc.stderr and "cruddur_lb" in proc.stderr
