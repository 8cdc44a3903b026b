"""The README's main command: site.yml converges and is safe in --check. (That a second run
changes nothing is Molecule's idempotence step, molecule/default, run by bin/test: not run twice.)"""

import hashlib
from pathlib import Path

import pytest

from conftest import query, run_playbook, server_config_dir

# Idempotence and --check on the stack: nothing else may change it meanwhile.
pytestmark = pytest.mark.serial

WATCHED_FILES = [
    str(server_config_dir() / "conf.d" / "50-cruddur-ops.conf"),
    str(server_config_dir() / "pg_hba.conf"),
    "/etc/cruddur-api/config.json",
    "/etc/cruddur-api/gunicorn.conf.py",
    "/etc/supervisor/conf.d/cruddur-api.conf",
    "/opt/cruddur-api/app/cruddur_api/db.py",
]


def fingerprint():
    files = {p: hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in WATCHED_FILES}
    rows = query("cruddur", "SELECT (SELECT count(*) FROM users), (SELECT count(*) FROM activities),"
                            " (SELECT count(*) FROM cruddur_schema_migrations)")
    return files, rows


def test_first_run_targets_every_group(converged):
    assert set(converged.recap) == {"cruddur-local", "cruddur-db"}
    assert converged.failed() == 0


def test_check_mode_on_converged_host_changes_nothing(converged):
    before = fingerprint()
    check = run_playbook("site.yml", "--check")
    assert check.rc == 0, check.output[-3000:]
    assert check.changed() == 0, check.output[-6000:]
    assert fingerprint() == before
