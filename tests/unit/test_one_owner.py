"""The connection has one owner in the code too: roles build no URL and reach out of their
directory nowhere; the filter that renders URLs and logins does it right."""

import re

import pytest

from conftest import REPO

from ansible_collections.cruddur.ops.plugins.filter import cruddur_db as filters

ROLE_FILES = [p for p in (REPO / "roles").rglob("*") if p.is_file() and p.suffix in (".yml", ".j2", ".py")]
# A URL being assembled: the scheme followed by a template or a string concatenation.
BUILDS_URL = re.compile(r"postgres(ql)?://(\{\{|\"\s*~|'\s*~|\{[a-z_])")


def test_no_role_builds_a_connection_url():
    assert ROLE_FILES
    assert [str(p) for p in ROLE_FILES if BUILDS_URL.search(p.read_text())] == []
    renderers = [p for p in (REPO / "collections").rglob("*.py") if "postgresql://" in p.read_text()]
    assert [p.name for p in renderers] == ["cruddur_db.py"]


def test_aws_region_and_endpoint_reach_modules_one_way():
    """No role task passes a region or an endpoint: every play that may call AWS hands the one
    value (cruddur_aws_defaults, playbooks/group_vars/all.yml) to module_defaults."""
    task_files = [p for p in (REPO / "roles").glob("*/tasks/*.yml")]
    assert task_files
    passing = [f"{p.relative_to(REPO)}:{n}" for p in task_files
               for n, line in enumerate(p.read_text().splitlines(), 1)
               if re.match(r"\s+(region|endpoint_url|aws_region|aws_endpoint_url):", line)]
    assert passing == []
    wiring = (REPO / "playbooks" / "group_vars" / "all.yml").read_text()
    assert wiring.count("cruddur_aws_defaults:") == 1
    for playbook in (REPO / "playbooks").glob("*.yml"):
        text = playbook.read_text()
        assert "region:" not in text and "endpoint_url:" not in text, playbook.name
        for play in re.split(r"\n- name: ", text)[1:]:
            # The roles that may reach AWS (SSM secrets, RDS, EC2, Lambda, Cognito).
            if re.search(r"(name|role): cruddur_(db|rds|dev_access)\b|tasks_from: (deploy|absent|reconcile)\b", play):
                assert 'cruddur_secret: "{{ cruddur_aws_defaults }}"' in play, (playbook.name, play[:60])


def test_no_role_reaches_out_of_its_directory():
    assert [str(p) for p in ROLE_FILES if "role_path }}/.." in p.read_text() or "role_path ~ '/.." in p.read_text()] == []


CONNECTION = {"host": "db.example", "port": 5432, "name": "cruddur", "sslmode": "prefer", "sslrootcert": ""}


@pytest.mark.parametrize("connection, user, password, url", [
    (CONNECTION, "cruddur_api", "p@ss/w:rd?", "postgresql://cruddur_api:p%40ss%2Fw%3Ard%3F@db.example:5432/cruddur"),
    ({**CONNECTION, "sslmode": "verify-full", "sslrootcert": "/etc/ca.pem"}, "u", "p",
     "postgresql://u:p@db.example:5432/cruddur?sslmode=verify-full&sslrootcert=/etc/ca.pem"),
    ({**CONNECTION, "host": "::1", "port": "5433"}, "u", "", "postgresql://u@[::1]:5433/cruddur"),
])
def test_urls(connection, user, password, url):
    assert filters.cruddur_pg_url(connection, user, password) == url


@pytest.mark.parametrize("connection, message", [
    ({**CONNECTION, "host": ""}, "lacks host"),
    ({**CONNECTION, "port": "five"}, "not a number"),
    ({**CONNECTION, "sslmode": "sometimes"}, "is not one of"),
    ({**CONNECTION, "sslmode": "verify-full"}, "needs sslrootcert"),
    ("postgresql://x", "must be a dict"),
])
def test_bad_connections_are_named(connection, message):
    from ansible.errors import AnsibleFilterError

    with pytest.raises(AnsibleFilterError, match=message):
        filters.cruddur_pg_url(connection, "u", "p")


def test_logins_carry_the_same_connection():
    login = filters.cruddur_pg_login({**CONNECTION, "sslmode": "verify-full", "sslrootcert": "/ca"}, "u", "p")
    assert login == {"login_host": "db.example", "login_port": 5432, "login_user": "u", "login_password": "p",
                     "ssl_mode": "verify-full", "ca_cert": "/ca"}


def test_privilege_rows_admit_table_privileges_only():
    from ansible.errors import AnsibleFilterError

    rows = filters.cruddur_privilege_rows([{"name": "r", "grants": [{"table": "t", "privs": ["select", "INSERT"]}]}])
    assert rows == [{"role": "r", "table": "t", "privilege": "SELECT"}, {"role": "r", "table": "t", "privilege": "INSERT"}]
    with pytest.raises(AnsibleFilterError, match="not a table privilege"):
        filters.cruddur_privilege_rows([{"name": "r", "grants": [{"table": "t", "privs": ["ALL; DROP TABLE t"]}]}])
    assert filters.cruddur_pg_ident('we"ird') == '"we""ird"'
