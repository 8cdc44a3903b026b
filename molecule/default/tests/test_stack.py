"""Molecule verification of a converged stack, through whichever backend Molecule gives: this
machine in the default scenario, the first API host's container (database and API on a host
converged from bare Debian) in the rolling one."""

import json
import os
from pathlib import Path

import pytest
import yaml

PG_PORT = os.environ.get("CRUDDUR_PG_PORT", "5432")
API_PORT = os.environ.get("CRUDDUR_API_PORT", "4567")
ROLES = Path(os.environ.get("MOLECULE_PROJECT_DIRECTORY") or Path(__file__).resolve().parents[3]) / "roles"
PSQL = f"PGPASSWORD=password psql -h 127.0.0.1 -p {PG_PORT} -U postgres -d cruddur -tAc"


@pytest.fixture(scope="module")
def target(host):
    return host


def sql(host, statement):
    result = host.run(f"{PSQL} \"{statement}\"")
    assert result.rc == 0, result.stderr
    return result.stdout.strip()


def test_postgresql_listens(target):
    assert target.package("postgresql").is_installed
    assert target.socket(f"tcp://127.0.0.1:{PG_PORT}").is_listening


def test_schema_and_seed(target):
    assert sql(target, "SELECT extname FROM pg_extension WHERE extname = 'uuid-ossp'") == "uuid-ossp"
    assert sql(target, "SELECT string_agg(handle, ',' ORDER BY handle) FROM users"
                       " WHERE handle IN ('andrewbrown', 'bayko')") == "andrewbrown,bayko"
    assert sql(target, "SELECT count(*) FROM activities"
                       " WHERE message = 'This was imported as seed data!'") == "1"


def test_api_answers_the_home_feed(target):
    assert target.socket(f"tcp://127.0.0.1:{API_PORT}").is_listening
    fetch = ("/usr/bin/python3 -c \"import urllib.request;"
             f" print(urllib.request.urlopen('http://127.0.0.1:{API_PORT}/api/activities/home?limit=100')"
             ".read().decode())\"")
    result = target.run(fetch)
    assert result.rc == 0, result.stderr
    messages = [activity["message"] for activity in json.loads(result.stdout)]
    assert "This was imported as seed data!" in messages


def release_value(target, role, name):
    """A value of the role's vars file for the target's release (vars/Debian-13.yml, ...)."""
    release = f"{target.system_info.distribution.capitalize()}-{target.system_info.release.split('.')[0]}"
    return yaml.safe_load((ROLES / role / "vars" / f"{release}.yml").read_text())[name]


def test_the_release_gives_the_postgresql_major_and_the_apis_python(target):
    major = release_value(target, "postgresql_server", "__postgresql_server_version")
    assert sql(target, "SELECT current_setting('server_version_num')::int / 10000") == major
    assert target.file(f"/etc/postgresql/{major}/main/postgresql.conf").exists
    python = release_value(target, "cruddur_api", "__cruddur_api_release_python")
    release_python = target.run(f"{python} -c 'import sys; print(sys.version_info[:2])'")
    venv_python = target.run("/opt/cruddur-api/venv/bin/python -c 'import sys; print(sys.version_info[:2])'")
    assert release_python.rc == venv_python.rc == 0, venv_python.stderr
    assert venv_python.stdout == release_python.stdout
