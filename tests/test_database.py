"""The database lifecycle playbooks, against the real local PostgreSQL.

The main `cruddur` database is only read here; every destructive test works on a throwaway
database (scratch_db_name) passed with -e cruddur_db_name=..."""

import os
import secrets
import shutil
import stat
import subprocess
import threading
from pathlib import Path

import pytest

from conftest import PG, REPO, SCRATCH_ENV_FILE, connect, query, run_playbook

MIGRATIONS = REPO / "sql" / "migrations"


def schema_dump(dbname):
    env = {**os.environ, "PGPASSWORD": PG["password"]}
    proc = subprocess.run(
        ["pg_dump", "--schema-only", "--no-owner", "-h", PG["host"], "-U", PG["user"], dbname],
        env=env, capture_output=True, text=True, check=True)
    return "\n".join(line for line in proc.stdout.splitlines()
                     if not line.startswith(("--", "\\restrict", "\\unrestrict")))


def setup_scratch(name, *args, **extra):
    run = run_playbook("playbooks/db-setup.yml", *args,
                       extra_vars={"cruddur_db_name": name, "cruddur_db_env_file": SCRATCH_ENV_FILE, **extra})
    assert run.rc == 0, run.output[-3000:]
    return run


@pytest.fixture
def migrations_copy(tmp_path):
    target = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS, target)
    return target


# --- after the main command -------------------------------------------------------------

def test_database_extension_and_tables(converged):
    assert query("postgres", "SELECT 1 FROM pg_database WHERE datname = 'cruddur'") == [(1,)]
    assert query("cruddur", "SELECT extname FROM pg_extension WHERE extname = 'uuid-ossp'") == [("uuid-ossp",)]
    tables = {r[0] for r in query("cruddur", "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert {"users", "activities", "cruddur_schema_migrations"} <= tables


def test_constraints_the_seed_lacked(converged):
    constraints = dict(query("cruddur", """
        SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint
        WHERE conrelid IN ('public.users'::regclass, 'public.activities'::regclass)"""))
    assert constraints["users_handle_key"] == "UNIQUE (handle)"
    assert constraints["users_cognito_user_id_key"] == "UNIQUE (cognito_user_id)"
    assert constraints["activities_user_uuid_fkey"].startswith("FOREIGN KEY (user_uuid) REFERENCES users(uuid)")
    assert constraints["activities_reply_to_activity_uuid_fkey"].startswith(
        "FOREIGN KEY (reply_to_activity_uuid) REFERENCES activities(uuid)")
    columns = dict(query("cruddur", """
        SELECT column_name, data_type FROM information_schema.columns
        WHERE table_name IN ('users', 'activities') AND column_name IN ('email', 'reply_to_activity_uuid')"""))
    assert columns == {"email": "text", "reply_to_activity_uuid": "uuid"}
    index = query("cruddur", "SELECT indexdef FROM pg_indexes WHERE indexname = 'activities_feed_idx'")
    assert "(created_at DESC, uuid DESC)" in index[0][0]


def test_seed_rows(converged):
    users = query("cruddur", "SELECT display_name, handle FROM users WHERE handle IN ('andrewbrown', 'bayko')"
                             " ORDER BY handle")
    assert users == [("Andrew Brown", "andrewbrown"), ("Andrew Bayko", "bayko")]
    seeded = query("cruddur", """
        SELECT count(*), min(activities.expires_at - activities.created_at) FROM activities JOIN users ON users.uuid = user_uuid
        WHERE handle = 'andrewbrown' AND message = 'This was imported as seed data!'""")
    assert seeded[0][0] == 1
    assert seeded[0][1].days == 10


def test_env_file_is_private_and_holds_the_url(converged):
    env_file = REPO / ".env"
    mode = stat.S_IMODE(env_file.stat().st_mode)
    assert mode == 0o600
    lines = [line for line in env_file.read_text().splitlines() if line.startswith("CONNECTION_URL=")]
    assert len(lines) == 1
    assert lines[0].endswith("@127.0.0.1:5432/cruddur")


def test_seeding_twice_adds_nothing(converged):
    before = query("cruddur", "SELECT (SELECT count(*) FROM users), (SELECT count(*) FROM activities)")
    run = run_playbook("playbooks/db-seed.yml")
    assert run.rc == 0 and run.changed() == 0, run.output[-3000:]
    assert query("cruddur", "SELECT (SELECT count(*) FROM users), (SELECT count(*) FROM activities)") == before


def test_sessions_prints_a_table(converged):
    run = run_playbook("playbooks/db-sessions.yml")
    assert run.rc == 0 and run.changed() == 0, run.output[-3000:]
    header = next(line for line in run.output.splitlines() if "pid" in line and "client" in line)
    assert header.split()[-6:] == ["pid", "user", "db", "client", "app", "state"]
    assert "cruddur-api" in run.output  # the API's pool connections are named
    assert "sessions)" in run.output


# --- lifecycle on a throwaway database ---------------------------------------------------

def test_setup_then_migrate_and_seed_again_change_nothing(scratch_db_name):
    first = setup_scratch(scratch_db_name)
    assert first.changed() > 0
    # db-setup leaves the URL file alone; db-create writes it once.
    assert run_playbook("playbooks/db-create.yml", extra_vars={
        "cruddur_db_name": scratch_db_name, "cruddur_db_env_file": SCRATCH_ENV_FILE}).rc == 0
    for playbook in ("db-create", "db-migrate", "db-seed"):
        again = run_playbook(f"playbooks/{playbook}.yml",
                             extra_vars={"cruddur_db_name": scratch_db_name, "cruddur_db_env_file": SCRATCH_ENV_FILE})
        assert again.rc == 0 and again.changed() == 0, (playbook, again.output[-3000:])


def test_check_mode_lists_pending_migrations_and_touches_nothing(scratch_db_name):
    run = run_playbook("playbooks/db-setup.yml", "--check", extra_vars={"cruddur_db_name": scratch_db_name})
    assert run.rc == 0, run.output[-3000:]
    assert "Would apply: 0001_uuid_ossp, 0002_users_activities" in run.output
    assert query("postgres", "SELECT count(*) FROM pg_database WHERE datname = %s", (scratch_db_name,)) == [(0,)]


def test_concurrent_migrations_apply_each_migration_once(scratch_db_name, migrations_copy):
    (migrations_copy / "0003_slow.sql").write_text(
        "-- depends: 0002_users_activities\nCREATE TABLE public.slow_marker (id int);\nSELECT pg_sleep(2);\n")
    create = run_playbook("playbooks/db-create.yml",
                          extra_vars={"cruddur_db_name": scratch_db_name, "cruddur_db_env_file": SCRATCH_ENV_FILE})
    assert create.rc == 0, create.output[-2000:]
    runs = []

    def migrate():
        runs.append(run_playbook("playbooks/db-migrate.yml", extra_vars={
            "cruddur_db_name": scratch_db_name, "cruddur_db_migrations_dir": migrations_copy}))

    threads = [threading.Thread(target=migrate) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(run.rc == 0 for run in runs), [run.output[-2000:] for run in runs]
    assert sorted(run.changed() for run in runs) == [0, 1]
    recorded = query(scratch_db_name, "SELECT migration_id FROM cruddur_schema_migrations ORDER BY seq")
    assert recorded == [("0001_uuid_ossp",), ("0002_users_activities",), ("0003_slow",)]


def test_edited_applied_migration_is_refused(scratch_db_name, migrations_copy):
    setup_scratch(scratch_db_name)
    edited = migrations_copy / "0002_users_activities.sql"
    edited.write_text(edited.read_text() + "\nCREATE TABLE public.sneaky (id int);\n")
    run = run_playbook("playbooks/db-migrate.yml", extra_vars={
        "cruddur_db_name": scratch_db_name, "cruddur_db_migrations_dir": migrations_copy})
    assert run.rc != 0
    assert "migration 0002_users_activities" in run.output
    assert str(edited) in run.output
    assert "has changed since it was applied" in run.output
    assert query(scratch_db_name, "SELECT to_regclass('public.sneaky')") == [(None,)]


def test_rollback_then_migrate_gives_the_same_schema(scratch_db_name):
    setup_scratch(scratch_db_name)
    before = schema_dump(scratch_db_name)
    rollback = run_playbook("playbooks/db-rollback.yml", extra_vars={"cruddur_db_name": scratch_db_name})
    assert rollback.rc == 0 and rollback.changed() == 1, rollback.output[-3000:]
    assert "Rolled back: 0002_users_activities" in rollback.output
    assert query(scratch_db_name, "SELECT to_regclass('public.activities')") == [(None,)]
    migrate = run_playbook("playbooks/db-migrate.yml", extra_vars={"cruddur_db_name": scratch_db_name})
    assert migrate.rc == 0 and migrate.changed() == 1, migrate.output[-3000:]
    assert schema_dump(scratch_db_name) == before


def test_failing_migration_leaves_the_database_as_it_was(scratch_db_name, migrations_copy):
    setup_scratch(scratch_db_name)
    before = schema_dump(scratch_db_name)
    (migrations_copy / "0003_broken.sql").write_text(
        "-- depends: 0002_users_activities\n"
        "CREATE TABLE public.half_done (id int);\n"
        "ALTER TABLE public.users ADD COLUMN nickname text;\n"
        "SELECT 1 / 0;\n")
    run = run_playbook("playbooks/db-migrate.yml", extra_vars={
        "cruddur_db_name": scratch_db_name, "cruddur_db_migrations_dir": migrations_copy})
    assert run.rc != 0
    assert "apply of migration 0003_broken failed and was rolled back" in run.output
    assert "division by zero" in run.output
    assert schema_dump(scratch_db_name) == before
    recorded = query(scratch_db_name, "SELECT count(*) FROM cruddur_schema_migrations")
    assert recorded == [(2,)]


# --- the prod guard and secrets ----------------------------------------------------------

PROD_ENV = {"CRUDDUR_PROD_DB_HOST": "127.0.0.1", "CRUDDUR_PROD_DB_USER": PG["user"],
            "CRUDDUR_PROD_DB_PASSWORD": PG["password"]}
# The local test server has no TLS; prod itself keeps sslmode=require.
PROD_OVERRIDES = {"cruddur_db_ssl_mode": "disable", "cruddur_db_env_file": SCRATCH_ENV_FILE}


@pytest.mark.parametrize("playbook", ["db-drop", "db-setup"])
def test_prod_guard_refuses_without_confirmation(scratch_db_name, playbook):
    setup_scratch(scratch_db_name)
    marker = query(scratch_db_name, "SELECT count(*) FROM activities")
    refused = run_playbook(f"playbooks/{playbook}.yml", "-i", "inventories/prod", env=PROD_ENV,
                           extra_vars={"cruddur_db_name": scratch_db_name, **PROD_OVERRIDES})
    assert refused.rc != 0
    assert f"Refusing to drop database {scratch_db_name}" in refused.output
    assert f"-e cruddur_db_confirm_drop={scratch_db_name}" in refused.output
    assert query(scratch_db_name, "SELECT count(*) FROM activities") == marker

    wrong = run_playbook(f"playbooks/{playbook}.yml", "-i", "inventories/prod", env=PROD_ENV, extra_vars={
        "cruddur_db_name": scratch_db_name, "cruddur_db_confirm_drop": "cruddur", **PROD_OVERRIDES})
    assert wrong.rc != 0
    assert query(scratch_db_name, "SELECT count(*) FROM activities") == marker

    confirmed = run_playbook(f"playbooks/{playbook}.yml", "-i", "inventories/prod", env=PROD_ENV, extra_vars={
        "cruddur_db_name": scratch_db_name, "cruddur_db_confirm_drop": scratch_db_name, **PROD_OVERRIDES})
    assert confirmed.rc == 0, confirmed.output[-3000:]
    assert confirmed.changed() > 0


def test_prod_without_password_names_the_problem():
    run = run_playbook("playbooks/db-migrate.yml", "-i", "inventories/prod",
                       env={"CRUDDUR_PROD_DB_HOST": "127.0.0.1", "CRUDDUR_PROD_DB_PASSWORD": ""})
    assert run.rc != 0
    assert "cruddur_db_password" in run.output
    assert "Traceback" not in run.output


def test_no_password_in_verbose_output(scratch_db_name, tmp_path):
    """-vvv runs of the database chores never print the password or a URL holding it."""
    role, password = f"leak_{secrets.token_hex(4)}", f"Pw{secrets.token_hex(12)}"
    admin = connect("postgres")
    with admin.cursor() as cur:
        cur.execute(f"CREATE ROLE {role} LOGIN CREATEDB PASSWORD %s", (password,))
    admin.close()
    env_file = tmp_path / "leak.env"
    common = {"cruddur_db_name": scratch_db_name, "cruddur_db_user": role,
              "cruddur_db_password": password, "cruddur_db_env_file": env_file}
    try:
        outputs = [run_playbook(f"playbooks/{p}.yml", "-vvv", extra_vars=common)
                   for p in ("db-setup", "db-create", "db-migrate", "db-seed", "db-sessions", "db-rollback")]
        outputs.append(run_playbook("playbooks/db-migrate.yml", "-vvv",
                                    extra_vars={**common, "cruddur_db_host": "127.0.0.2"}))  # failing
    finally:
        from conftest import drop_database
        drop_database(scratch_db_name)
        admin = connect("postgres")
        with admin.cursor() as cur:
            cur.execute(f"DROP ROLE IF EXISTS {role}")
        admin.close()
    assert all(run.rc == 0 for run in outputs[:-1]), [r.output[-2000:] for r in outputs]
    assert outputs[-1].rc != 0
    for run in outputs:
        assert password not in run.output
    assert password in env_file.read_text()  # it was really used, and written only there


def test_db_connect_opens_psql_on_the_local_database(converged):
    result = subprocess.run([str(REPO / "bin" / "db-connect"), "-tAc", "SELECT current_database(), current_user"],
                            capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "cruddur|postgres"


def test_db_connect_prod_without_url_says_what_to_run(tmp_path):
    result = subprocess.run([str(REPO / "bin" / "db-connect"), "prod", "-c", "select 1"],
                            capture_output=True, text=True, timeout=30, check=False)
    if result.returncode == 0:
        pytest.skip("a PROD_CONNECTION_URL is configured on this machine")
    assert "PROD_CONNECTION_URL is not in .env" in result.stderr


def test_dropping_twice_changes_nothing_the_second_time(scratch_db_name):
    setup_scratch(scratch_db_name)
    first = run_playbook("playbooks/db-drop.yml", extra_vars={"cruddur_db_name": scratch_db_name})
    assert first.rc == 0 and first.changed() == 1, first.output[-3000:]
    second = run_playbook("playbooks/db-drop.yml", extra_vars={"cruddur_db_name": scratch_db_name})
    assert second.rc == 0 and second.changed() == 0, second.output[-3000:]
    assert query("postgres", "SELECT count(*) FROM pg_database WHERE datname = %s", (scratch_db_name,)) == [(0,)]
