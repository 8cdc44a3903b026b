"""db-doctor: green on the converged local stack (and the same in --check); then each link
broken on purpose, one test each, sees exactly that link fail with its fix while the links before
it are still reported OK and those after it are skipped, naming what they need."""

from __future__ import annotations

import re
import socket

import pytest

from conftest import REPO, create_migrated_database, drop_database, forbid_lookup, free_port, \
    make_tls, on_database, query, run_playbook

LINE = re.compile(r"^\s+(OK|FAIL|SKIP)\s+(roles \S+|\S+)\s+(.*)$", re.M)


def doctor(*args, **extra_vars):
    run = run_playbook("playbooks/db-doctor.yml", *args, extra_vars=extra_vars or None)
    return run, {link: (status, text) for status, link, text in LINE.findall(run.output)}


def statuses(links: dict) -> dict:
    return {link: status for link, (status, _) in links.items()}


ALL = ["resolve", "tcp", "tls", "login", "database", "migrations",
       "roles cruddur_owner", "roles cruddur_api", "roles cruddur_signup"]


def test_green_on_the_local_stack_and_the_same_in_check_mode(converged):
    run, links = doctor()
    assert run.rc == 0, run.output[-3000:]
    assert list(links) == ALL
    assert set(statuses(links).values()) == {"OK"}, run.output[-3000:]
    assert "postgres accepted (secret from the inventory (cruddur_db_admin))" in links["login"][1]
    assert links["roles cruddur_api"][1] == f"logs in (secret from {REPO}/.secrets/local/cruddur_api)"
    assert "SKIP  aws                   the local inventory has no AWS side (no aws group)" in run.output
    check, check_links = doctor("--check")
    assert check.rc == 0 and check.changed() == 0
    assert statuses(check_links) == statuses(links)


def test_nothing_listening_fails_tcp_with_the_server_playbook_as_fix(postgresql):
    port = free_port()
    run, links = doctor(**on_database("cruddur", port=port))
    assert run.rc != 0
    assert links["resolve"][0] == "OK"
    status, text = links["tcp"]
    assert status == "FAIL" and f"127.0.0.1:{port}" in text and "nothing listens there" in text
    assert "fix: ansible-playbook playbooks/postgresql-server.yml" in text
    assert {link: s for link, s in statuses(links).items() if link not in ("resolve", "tcp")} == \
        dict.fromkeys(ALL[2:], "SKIP")
    assert "1 link(s) failed: tcp" in run.output


def test_a_wrong_administrative_secret_fails_login_naming_where_it_came_from(postgresql):
    run, links = doctor(cruddur_db_admin={"user": "postgres", "password": "not-the-one"})
    assert run.rc != 0
    assert statuses(links)["tls"] == "OK"
    status, text = links["login"]
    assert status == "FAIL" and "postgres refused (secret from the inventory (cruddur_db_admin))" in text
    assert "fix: export CRUDDUR_LOCAL_DB_PASSWORD=" in text
    assert links["database"] == ("SKIP", "needs login")
    assert "not-the-one" not in run.output


def test_a_missing_database_fails_with_db_create_as_fix(postgresql):
    run, links = doctor(**on_database("cruddur_doctor_absent"))
    assert run.rc != 0
    assert [statuses(links)[link] for link in ALL[:4]] == ["OK"] * 4
    assert links["database"][0] == "FAIL" and "cruddur_doctor_absent does not exist" in links["database"][1]
    assert "fix: ansible-playbook playbooks/db-create.yml" in links["database"][1]
    assert links["migrations"] == ("SKIP", "needs database")
    assert links["roles cruddur_owner"] == ("SKIP", "needs database")


def test_a_pending_migration_is_named_with_db_migrate_as_fix(postgresql):
    name = create_migrated_database("cruddur_doctor", seed=False)
    try:
        query(name, "DELETE FROM cruddur_schema_migrations WHERE migration_id = '0002_users_activities'")
        run, links = doctor(**on_database(name))
    finally:
        drop_database(name)
    assert run.rc != 0
    assert links["database"][0] == "OK"
    assert links["migrations"][0] == "FAIL"
    assert "1 pending: 0002_users_activities" in links["migrations"][1]
    assert "fix: ansible-playbook playbooks/db-migrate.yml" in links["migrations"][1]
    assert "link(s) failed: migrations" in run.output  # first of the failures


def test_stale_or_missing_role_secrets_fail_each_role_with_db_create_as_fix(converged, tmp_path):
    stale = tmp_path / "stale"
    stale.mkdir(mode=0o700)
    for role in ("cruddur_owner", "cruddur_api", "cruddur_signup"):
        (stale / role).write_text("an-older-secret\n")
        (stale / role).chmod(0o600)
    run, links = doctor(cruddur_db_secret_dir=str(stale))
    assert run.rc != 0
    assert [statuses(links)[link] for link in ALL[:6]] == ["OK"] * 6
    for role in ("cruddur_owner", "cruddur_api", "cruddur_signup"):
        status, text = links[f"roles {role}"]
        assert status == "FAIL" and f"from {stale}/{role}" in text and "authentication failed" in text
        assert "fix: ansible-playbook playbooks/db-create.yml" in text
    missing, missing_links = doctor(cruddur_db_secret_dir=str(tmp_path / "absent"))
    assert missing.rc != 0
    assert all(missing_links[f"roles {role}"][0] == "FAIL" and "no kept secret" in missing_links[f"roles {role}"][1]
               for role in ("cruddur_owner", "cruddur_api", "cruddur_signup"))
    assert not (tmp_path / "absent").exists()  # the doctor generates nothing


def test_a_certificate_from_another_ca_fails_tls_naming_the_bundle(rds_standin, tmp_path):
    other = make_tls(tmp_path / "other", "some other CA")
    run, links = doctor(**on_database("cruddur", port=rds_standin.port, sslmode="verify-full",
                                      sslrootcert=str(other["ca"])))
    assert run.rc != 0
    assert [statuses(links)[link] for link in ("resolve", "tcp")] == ["OK", "OK"]
    status, text = links["tls"]
    assert status == "FAIL" and f"does not verify against {other['ca']}" in text
    assert links["login"] == ("SKIP", "needs tls")
    ours, our_links = doctor(**on_database("cruddur", port=rds_standin.port, sslmode="verify-full",
                                           sslrootcert=str(rds_standin.ca)))
    assert our_links["tls"][0] == "OK" and "verified against" in our_links["tls"][1]


def test_an_endpoint_that_does_not_resolve_is_the_first_failure(monkeypatch):
    """Without sending a DNS query anywhere: the resolver itself answers that the name is unknown."""
    from ansible_collections.cruddur.ops.plugins.modules import cruddur_db_doctor as doctor_module

    def unknown(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(doctor_module.socket, "getaddrinfo", unknown)
    report = doctor_module.walk({
        "connection": {"host": "db.example.invalid", "port": 5432, "name": "cruddur", "sslmode": "verify-full"},
        "admin_user": "cruddurroot", "admin_password": "x", "admin_source": "SSM /cruddur/rds/master-password",
        "roles": {"cruddur_api": "y"}, "role_sources": {}, "maintenance_db": "postgres",
        "migrations_dir": str(REPO / "sql" / "migrations"), "timeout": 1,
        "fixes": {"resolve": "export CRUDDUR_PROD_DB_HOST=<the RDS endpoint>"}})
    assert report.links[0] == {"link": "resolve", "status": "fail",
                               "detail": "db.example.invalid does not resolve: Name or service not known",
                               "fix": "export CRUDDUR_PROD_DB_HOST=<the RDS endpoint>"}
    assert [entry["status"] for entry in report.links[1:]] == ["skip"] * 6


def test_pghostaddr_gives_the_endpoint_its_address_without_a_lookup(monkeypatch):
    """As libpq does: the name is kept (the certificate is checked against it), no query is sent."""
    from ansible_collections.cruddur.ops.plugins.modules import cruddur_db_doctor as doctor_module

    forbid_lookup(monkeypatch, doctor_module.socket, "db.example.invalid")
    monkeypatch.setenv("PGHOSTADDR", "127.0.0.1")
    port = free_port()  # nothing listens there
    report = doctor_module.walk({
        "connection": {"host": "db.example.invalid", "port": port, "name": "cruddur", "sslmode": "verify-full"},
        "admin_user": "cruddurroot", "admin_password": "x", "admin_source": "SSM /cruddur/rds/master-password",
        "roles": {}, "role_sources": {}, "maintenance_db": "postgres",
        "migrations_dir": str(REPO / "sql" / "migrations"), "timeout": 1, "fixes": {}})
    assert report.links[0]["status"] == "ok"
    assert report.links[0]["detail"] == "db.example.invalid is 127.0.0.1 (PGHOSTADDR; no lookup)"
    assert report.links[1]["status"] == "fail" and f"127.0.0.1:{port}" in report.links[1]["detail"]
