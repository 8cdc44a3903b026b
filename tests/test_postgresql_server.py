"""pytest-testinfra checks of the local PostgreSQL server the postgresql_server role provides."""

import socket
from pathlib import Path

import psycopg2
import pytest

from conftest import PASSWORD, run_playbook, server_config_dir

CONF = server_config_dir() / "conf.d" / "50-cruddur-ops.conf"
HBA = server_config_dir() / "pg_hba.conf"


def test_packages_installed(host, converged):
    major = server_config_dir().parent.name  # the release's major, from the role's vars
    for name in ("postgresql", f"postgresql-{major}", "postgresql-contrib", "python3-psycopg2"):
        assert host.package(name).is_installed, name


@pytest.mark.parametrize("playbook, role", [("playbooks/postgresql-server.yml", "postgresql_server"),
                                            ("playbooks/api-deploy.yml", "cruddur_api")])
def test_a_release_the_roles_do_not_know_fails_before_any_change(converged, playbook, role):
    """This Debian 12 host, its release faked as Debian 11: the role stops at once, naming the
    releases it supports (one vars file each), and nothing changes."""
    run = run_playbook(playbook, "-e", "ansible_distribution_major_version=11")
    assert run.rc != 0 and run.changed() == 0, run.output[-3000:]
    text = " ".join(run.output.split())
    assert "Debian 11 is not a release this role supports (Debian-12, Debian-13" in text, text[-2000:]
    assert "Debian-13" in text and "Nothing was changed." in text


def test_listens_on_loopback_only(host, converged):
    assert host.socket("tcp://127.0.0.1:5432").is_listening
    assert not host.socket("tcp://0.0.0.0:5432").is_listening


def test_password_login_over_tcp(host, converged):
    result = host.run(
        "psql postgresql://postgres:%s@127.0.0.1:5432/postgres -tAc 'select 1'", PASSWORD)
    assert result.rc == 0, result.stderr
    assert result.stdout.strip() == "1"


def test_password_is_stored_as_scram(host, converged):
    result = host.run("su postgres -c \"psql -tAc \\\"SELECT left(rolpassword, 14) FROM pg_authid"
                      " WHERE rolname = 'postgres'\\\"\"")
    assert result.stdout.strip() == "SCRAM-SHA-256$"


def test_wrong_password_refused(converged):
    with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
        psycopg2.connect(host="127.0.0.1", port=5432, user="postgres",
                         password=PASSWORD + "-wrong", dbname="postgres")


def test_taken_port_is_named_and_nothing_changes(converged):
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    port = blocker.getsockname()[1]
    conf_before = CONF.read_bytes()
    try:
        run = run_playbook("playbooks/postgresql-server.yml",
                           extra_vars={"postgresql_server_port": port})
    finally:
        blocker.close()
    assert run.rc != 0
    assert f"Port {port} on 127.0.0.1 is already taken by another process" in run.output
    assert "Traceback" not in run.output
    assert CONF.read_bytes() == conf_before
    assert run.changed() == 0


@pytest.mark.serial
def test_refused_password_login_is_named(host, converged):
    """An earlier pg_hba rule that rejects the address: the play says so instead of a trace."""
    original = HBA.read_text()
    HBA.write_text("host all postgres 127.0.0.1/32 reject\n" + original)
    try:
        assert host.run("su postgres -c 'psql -tAc \"select pg_reload_conf()\"'").rc == 0
        run = run_playbook("playbooks/postgresql-server.yml")
    finally:
        HBA.write_text(original)
        host.run("su postgres -c 'psql -tAc \"select pg_reload_conf()\"'")
    assert run.rc != 0
    assert "refused a password login as postgres" in run.output
    assert "pg_hba.conf" in run.output
    assert "Traceback" not in run.output


@pytest.mark.serial
def test_the_local_server_can_be_given_tls_that_clients_verify(postgresql, tmp_path):
    from conftest import make_tls
    ours, other = make_tls(tmp_path / "ours"), make_tls(tmp_path / "other", "another CA")
    tls = {"postgresql_server_tls_cert": str(ours["cert"]), "postgresql_server_tls_key": str(ours["key"])}
    login = {"host": "127.0.0.1", "port": 5432, "user": "postgres", "password": PASSWORD, "dbname": "postgres"}
    try:
        on = run_playbook("playbooks/postgresql-server.yml", extra_vars=tls)
        assert on.rc == 0, on.output[-3000:]
        conn = psycopg2.connect(**login, sslmode="verify-full", sslrootcert=str(ours["ca"]))
        with conn.cursor() as cur:
            cur.execute("SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            assert cur.fetchone()[0] is True
        with pytest.raises(psycopg2.OperationalError, match="certificate verify failed"):
            psycopg2.connect(**login, sslmode="verify-full", sslrootcert=str(other["ca"]))
        again = run_playbook("playbooks/postgresql-server.yml", extra_vars=tls)
        assert again.rc == 0 and again.changed() == 0, again.output[-3000:]
        # Reloaded, never restarted: the session opened before the second run is still there.
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
        conn.close()
        half = run_playbook("playbooks/postgresql-server.yml", extra_vars={"postgresql_server_tls_cert": str(ours["cert"])})
        assert half.rc != 0 and "TLS needs both" in half.output
    finally:
        off = run_playbook("playbooks/postgresql-server.yml")
        assert off.rc == 0, off.output[-3000:]
    # Back to the package's own setting (a snakeoil certificate, or no TLS): ours is not served.
    with pytest.raises(psycopg2.OperationalError, match="certificate verify failed|does not support SSL"):
        psycopg2.connect(**login, sslmode="verify-full", sslrootcert=str(ours["ca"]))
