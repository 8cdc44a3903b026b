"""The database lifecycle playbooks, against the real local PostgreSQL.

The main `cruddur` database is only read here; every destructive test works on a throwaway
database (scratch_db_name) passed as the connection's name (-e cruddur_db_connection=...)."""

import json
import os
import secrets
import shutil
import stat
import subprocess
import threading
from pathlib import Path

import pytest

from conftest import PG, REPO, SCRATCH_ENV_FILE, connect, on_database, query, role_password, run_playbook

# The chores on the local server share its cluster-wide roles (created, altered, granted to the
# administrator): they run one after another on one worker, beside the other tests (bin/run-pytest).
pytestmark = pytest.mark.xdist_group("local-chores")

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
                       extra_vars={**on_database(name), "cruddur_db_env_file": SCRATCH_ENV_FILE, **extra})
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
    assert lines[0].startswith("CONNECTION_URL=postgresql://cruddur_owner:")
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
        **on_database(scratch_db_name), "cruddur_db_env_file": SCRATCH_ENV_FILE}).rc == 0
    for playbook in ("db-create", "db-migrate", "db-seed"):
        again = run_playbook(f"playbooks/{playbook}.yml",
                             extra_vars={**on_database(scratch_db_name), "cruddur_db_env_file": SCRATCH_ENV_FILE})
        assert again.rc == 0 and again.changed() == 0, (playbook, again.output[-3000:])


def test_seed_waits_for_the_migrations_then_adds_what_is_missing(scratch_db_name):
    """db-seed on a database with pending migrations stops, naming them, and writes nothing;
    once migrated, --check counts what it would add and writes nothing, and the real run adds it
    once."""
    vars_ = {**on_database(scratch_db_name), "cruddur_db_env_file": SCRATCH_ENV_FILE}
    assert run_playbook("playbooks/db-create.yml", extra_vars=vars_).rc == 0
    early = run_playbook("playbooks/db-seed.yml", extra_vars=vars_)
    assert early.rc != 0
    assert ("migrations 0001_uuid_ossp, 0002_users_activities, 0003_reply_to_index, 0004_feed_indexes, "
            "0005_replies_count are pending: apply them first (db-migrate); nothing was seeded"
            ) in " ".join(early.output.split()), early.output[-3000:]
    assert query(scratch_db_name, "SELECT to_regclass('public.users')") == [(None,)]
    assert run_playbook("playbooks/db-migrate.yml", extra_vars=vars_).rc == 0
    checked = run_playbook("playbooks/db-seed.yml", "--check", extra_vars=vars_)
    assert checked.rc == 0 and checked.changed() == 1, checked.output[-3000:]
    assert "Would seed: users_added 2, activities_added 1" in checked.output
    assert query(scratch_db_name, "SELECT count(*) FROM users") == [(0,)]
    seeded = run_playbook("playbooks/db-seed.yml", extra_vars=vars_)
    assert seeded.rc == 0 and seeded.changed() == 1, seeded.output[-3000:]
    assert "Seeded: users_added 2, activities_added 1" in seeded.output
    assert query(scratch_db_name, "SELECT (SELECT count(*) FROM users), (SELECT count(*) FROM activities)"
                 ) == [(2, 1)]


def test_create_gives_the_owner_what_the_administrator_made_and_keeps_the_rows(scratch_db_name):
    """A database migrated before the owner role existed (or changed by hand as postgres): db-create
    gives its objects to the owner, rows kept; a sequence owned by a column follows its table."""
    setup_scratch(scratch_db_name)
    query(scratch_db_name, "ALTER TABLE activities OWNER TO postgres;"
                           "CREATE TABLE notes (id serial PRIMARY KEY, body text);"
                           "INSERT INTO notes (body) VALUES ('kept');"
                           "CREATE VIEW note_bodies AS SELECT body FROM notes")
    owners = ("SELECT c.relname::text, pg_get_userbyid(c.relowner)::text FROM pg_class c "
              "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public' "
              "AND c.relname IN ('activities', 'notes', 'notes_id_seq', 'note_bodies') ORDER BY 1")
    assert dict(query(scratch_db_name, owners)) == dict.fromkeys(
        ("activities", "note_bodies", "notes", "notes_id_seq"), "postgres")
    vars_ = {**on_database(scratch_db_name), "cruddur_db_env_file": SCRATCH_ENV_FILE}
    checked = run_playbook("playbooks/db-create.yml", "--check", extra_vars=vars_)
    assert checked.rc == 0 and checked.recap["cruddur-db"]["changed"] > 0, checked.output[-3000:]
    assert dict(query(scratch_db_name, owners))["activities"] == "postgres"  # --check changed nothing
    given = "cruddur_owner what the administrator owned: public.activities, public.note_bodies, public.notes."
    assert f"Would give {given}" in " ".join(checked.output.split())
    run = run_playbook("playbooks/db-create.yml", extra_vars=vars_)
    assert run.rc == 0, run.output[-3000:]
    assert f"Gave {given}" in " ".join(run.output.split())
    assert dict(query(scratch_db_name, owners)) == dict.fromkeys(
        ("activities", "note_bodies", "notes", "notes_id_seq"), "cruddur_owner")
    assert query(scratch_db_name, "SELECT body FROM notes") == [("kept",)]
    again = run_playbook("playbooks/db-create.yml", extra_vars=vars_)
    assert again.rc == 0 and again.changed() == 0, again.output[-3000:]


def test_check_mode_lists_pending_migrations_and_touches_nothing(scratch_db_name):
    run = run_playbook("playbooks/db-setup.yml", "--check", extra_vars=on_database(scratch_db_name))
    assert run.rc == 0, run.output[-3000:]
    assert ("Would apply: 0001_uuid_ossp, 0002_users_activities, 0003_reply_to_index, 0004_feed_indexes, "
            "0005_replies_count") in " ".join(run.output.split())
    assert query("postgres", "SELECT count(*) FROM pg_database WHERE datname = %s", (scratch_db_name,)) == [(0,)]


def test_check_mode_on_an_existing_database_says_what_it_does_not_simulate(scratch_db_name):
    extra = on_database(scratch_db_name)
    assert run_playbook("playbooks/db-setup.yml", extra_vars=extra).rc == 0
    rows = query(scratch_db_name, "SELECT handle FROM users ORDER BY handle")
    run = run_playbook("playbooks/db-setup.yml", "--check", extra_vars=extra)
    assert run.rc == 0, run.output[-3000:]
    # The drop is the one change reported; what would follow on the new database is said, not
    # simulated against the old one (where it would report nothing to do).
    assert run.changed() == 1, run.output[-3000:]
    assert "Not simulating create, migrate and seed" in " ".join(run.output.split())
    assert "migrate_steps" not in run.output
    assert query(scratch_db_name, "SELECT handle FROM users ORDER BY handle") == rows


def test_a_migration_squawk_flags_stops_db_migrate_until_it_carries_a_reviewed_exemption(
        scratch_db_name, migrations_copy):
    setup_scratch(scratch_db_name)
    extra = {**on_database(scratch_db_name), "cruddur_db_migrations_dir": migrations_copy}
    migration = migrations_copy / "0006_message_index.sql"
    statement = "CREATE INDEX activities_message_idx ON public.activities (message);\n"
    migration.write_text("-- depends: 0005_replies_count\n" + statement)
    index = "SELECT count(*) FROM pg_indexes WHERE indexname = 'activities_message_idx'"

    checked = run_playbook("playbooks/db-migrate.yml", "--check", extra_vars=extra)
    assert checked.rc == 0, checked.output[-3000:]
    said = " ".join(checked.output.split())
    assert ("squawk would stop db-migrate before it applies anything: 0006_message_index.sql:2 "
            "require-concurrent-index-creation") in said and "Fix: Use `concurrently`" in said

    stopped = run_playbook("playbooks/db-migrate.yml", extra_vars=extra)
    assert stopped.rc != 0
    said = " ".join(stopped.output.split())
    assert "squawk stops these migrations before anything is applied (1 finding): " \
           "0006_message_index.sql:2 require-concurrent-index-creation" in said, stopped.output[-3000:]
    assert query(scratch_db_name, index) == [(0,)]
    assert query(scratch_db_name, "SELECT count(*) FROM cruddur_schema_migrations "
                                  "WHERE migration_id = '0006_message_index'") == [(0,)]

    migration.write_text("-- depends: 0005_replies_count\n-- squawk-ignore require-concurrent-index-creation"
                         " -- reviewed: written for this test\n" + statement)
    applied = run_playbook("playbooks/db-migrate.yml", extra_vars=extra)
    assert applied.rc == 0 and "Applied: 0006_message_index" in applied.output, applied.output[-3000:]
    assert query(scratch_db_name, index) == [(1,)]


def test_concurrent_migrations_apply_each_migration_once(scratch_db_name, migrations_copy):
    (migrations_copy / "0003_slow.sql").write_text(
        "-- depends: 0002_users_activities\nCREATE TABLE public.slow_marker (id int);\nSELECT pg_sleep(2);\n")
    create = run_playbook("playbooks/db-create.yml",
                          extra_vars={**on_database(scratch_db_name), "cruddur_db_env_file": SCRATCH_ENV_FILE})
    assert create.rc == 0, create.output[-2000:]
    runs = []

    def migrate():
        runs.append(run_playbook("playbooks/db-migrate.yml", extra_vars={
            **on_database(scratch_db_name), "cruddur_db_migrations_dir": migrations_copy}))

    threads = [threading.Thread(target=migrate) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(run.rc == 0 for run in runs), [run.output[-2000:] for run in runs]
    # Exactly one run applied the migrations (the other waited for the lock, then found none);
    # either may be the one that granted the roles their privileges.
    applied = [" ".join(run.output.split()) for run in runs]
    assert sum("Applied: 0001_uuid_ossp, 0002_users_activities, 0003_reply_to_index, 0003_slow, "
               "0004_feed_indexes, 0005_replies_count" in out for out in applied) == 1
    # The other applied nothing: it says so only when it was the one that granted.
    assert sum("Applied: 0" in out for out in applied) == 1, [out[out.find("Applied:"):][:300] for out in applied]
    assert all("Applied: 0" in out or "Applied:" not in out or "Applied: nothing (up to date); granted" in out
               for out in applied), [out[out.find("Applied:"):][:300] for out in applied]
    recorded = query(scratch_db_name, "SELECT migration_id FROM cruddur_schema_migrations ORDER BY seq")
    assert recorded == [("0001_uuid_ossp",), ("0002_users_activities",), ("0003_reply_to_index",), ("0003_slow",),
                        ("0004_feed_indexes",), ("0005_replies_count",)]


def test_edited_applied_migration_is_refused(scratch_db_name, migrations_copy):
    setup_scratch(scratch_db_name)
    edited = migrations_copy / "0002_users_activities.sql"
    edited.write_text(edited.read_text() + "\nCREATE TABLE public.sneaky (id int);\n")
    run = run_playbook("playbooks/db-migrate.yml", extra_vars={
        **on_database(scratch_db_name), "cruddur_db_migrations_dir": migrations_copy})
    assert run.rc != 0
    assert "migration 0002_users_activities" in run.output
    assert str(edited) in run.output
    assert "has changed since it was applied" in run.output
    assert query(scratch_db_name, "SELECT to_regclass('public.sneaky')") == [(None,)]


def test_rollback_then_migrate_gives_the_same_schema(scratch_db_name):
    setup_scratch(scratch_db_name)
    before = schema_dump(scratch_db_name)
    # Each run rolls back the last applied migration: the replies' trigger, the feed indexes, the
    # reply index, then the tables.
    for last, gone in (("0005_replies_count", "SELECT to_regprocedure('public.activities_count_replies()')"),
                       ("0004_feed_indexes", "SELECT to_regclass('public.activities_home_idx')"),
                       ("0003_reply_to_index", "SELECT to_regclass('public.activities_reply_to_activity_uuid_idx')"),
                       ("0002_users_activities", "SELECT to_regclass('public.activities')")):
        rollback = run_playbook("playbooks/db-rollback.yml", extra_vars=on_database(scratch_db_name))
        assert rollback.rc == 0 and rollback.changed() == 1, rollback.output[-3000:]
        assert f"Rolled back: {last}" in rollback.output
        assert query(scratch_db_name, gone) == [(None,)]
    migrate = run_playbook("playbooks/db-migrate.yml", extra_vars=on_database(scratch_db_name))
    # The migrations, then the grants on the tables they made again (one task, one connection).
    assert migrate.rc == 0 and migrate.changed() == 1, migrate.output[-3000:]
    assert ("Applied: 0002_users_activities, 0003_reply_to_index, 0004_feed_indexes, 0005_replies_count; "
            "granted cruddur_api INSERT/SELECT on activities" in " ".join(migrate.output.split()))
    assert schema_dump(scratch_db_name) == before  # privileges included


def test_failing_migration_leaves_the_database_as_it_was(scratch_db_name, migrations_copy):
    setup_scratch(scratch_db_name)
    before = schema_dump(scratch_db_name)
    (migrations_copy / "0003_broken.sql").write_text(
        "-- depends: 0002_users_activities\n"
        "CREATE TABLE public.half_done (id int);\n"
        "ALTER TABLE public.users ADD COLUMN nickname text;\n"
        "SELECT 1 / 0;\n")
    run = run_playbook("playbooks/db-migrate.yml", extra_vars={
        **on_database(scratch_db_name), "cruddur_db_migrations_dir": migrations_copy})
    assert run.rc != 0
    assert "apply of migration 0003_broken failed and was rolled back" in run.output
    assert "division by zero" in run.output
    assert schema_dump(scratch_db_name) == before
    recorded = query(scratch_db_name, "SELECT count(*) FROM cruddur_schema_migrations")
    assert recorded == [(5,)]  # 0001-0005, applied by the setup before


# --- secrets -------------------------------------------------------------------------------

def test_no_password_in_verbose_output(scratch_db_name, tmp_path):
    """-vvvv runs of the database chores never print a password (the administrative one given,
    the generated ones of the roles) or a URL holding one, failed runs included."""
    # An administrator like RDS's master user: not a superuser, may create databases and roles.
    admin_role, admin_password = f"leak_{secrets.token_hex(4)}", f"Pw{secrets.token_hex(12)}"
    conn = connect("postgres")
    with conn.cursor() as cur:
        cur.execute(f"CREATE ROLE {admin_role} LOGIN CREATEDB CREATEROLE PASSWORD %s", (admin_password,))
    conn.close()
    env_file = tmp_path / "leak.env"
    # Given as a vars file, as a user would (ansible-playbook echoes its command line at -vvvv).
    given = tmp_path / "admin.json"
    given.write_text(json.dumps({**on_database(scratch_db_name), "cruddur_db_env_file": str(env_file),
                                 "cruddur_db_admin": {"user": admin_role, "password": admin_password}}))
    try:
        outputs = [run_playbook(f"playbooks/{p}.yml", "-vvvv", "-e", f"@{given}")
                   for p in ("db-setup", "db-create", "db-migrate", "db-seed", "db-sessions", "db-rollback")]
        outputs.append(run_playbook("playbooks/db-migrate.yml", "-vvvv", "-e", f"@{given}",  # failing
                                    extra_vars=on_database(scratch_db_name, host="127.0.0.2")))
    finally:
        from conftest import drop_database
        drop_database(scratch_db_name)
        conn = connect("postgres")
        with conn.cursor() as cur:
            cur.execute(f"DROP OWNED BY {admin_role}")
            cur.execute(f"DROP ROLE IF EXISTS {admin_role}")
        conn.close()
    assert all(run.rc == 0 for run in outputs[:-1]), [r.output[-2000:] for r in outputs]
    assert outputs[-1].rc != 0
    generated = [role_password(role) for role in ("cruddur_owner", "cruddur_api", "cruddur_signup")]
    for run in outputs:
        for secret in (admin_password, *generated):
            assert secret not in run.output
    # They were really used: the owner's URL went to the env file, and only there.
    assert generated[0] in env_file.read_text()
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600


def test_generated_passwords_are_private_files_outside_git(converged):
    secrets_dir = REPO / ".secrets" / "local"
    assert stat.S_IMODE(secrets_dir.stat().st_mode) == 0o700
    for role in ("cruddur_owner", "cruddur_api", "cruddur_signup"):
        path = secrets_dir / role
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert len(path.read_text().strip()) >= 32
    ignored = subprocess.run(["git", "check-ignore", "-q", str(secrets_dir / "cruddur_api")], cwd=REPO, check=False)
    assert ignored.returncode == 0


def test_db_connect_opens_psql_on_the_local_database(converged):
    result = subprocess.run([str(REPO / "bin" / "db-connect"), "-tAc", "SELECT current_database(), current_user"],
                            capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "cruddur|cruddur_owner"  # the owner, not the superuser


def test_db_connect_prod_without_url_says_what_to_run(tmp_path):
    result = subprocess.run([str(REPO / "bin" / "db-connect"), "prod", "-c", "select 1"],
                            capture_output=True, text=True, timeout=30, check=False)
    if result.returncode == 0:
        pytest.skip("a PROD_CONNECTION_URL is configured on this machine")
    assert "PROD_CONNECTION_URL is not in .env" in result.stderr


def test_dropping_twice_changes_nothing_the_second_time(scratch_db_name):
    setup_scratch(scratch_db_name)
    first = run_playbook("playbooks/db-drop.yml", extra_vars=on_database(scratch_db_name))
    assert first.rc == 0 and first.changed() == 1, first.output[-3000:]
    second = run_playbook("playbooks/db-drop.yml", extra_vars=on_database(scratch_db_name))
    assert second.rc == 0 and second.changed() == 0, second.output[-3000:]
    assert query("postgres", "SELECT count(*) FROM pg_database WHERE datname = %s", (scratch_db_name,)) == [(0,)]


def test_the_input_is_checked_first_the_connection_before_the_administrative_login():
    """One assert checks the input: an incomplete connection is named before a missing
    administrative password, and nothing is read or touched before either."""
    no_password = {"user": "postgres", "password": ""}
    run = run_playbook("playbooks/db-drop.yml", extra_vars={
        "cruddur_db_connection": {"host": "", "name": "cruddur_never_made"}, "cruddur_db_admin": no_password})
    text = " ".join(run.output.split())
    assert run.rc != 0 and "The database connection is incomplete for cruddur-db" in text, run.output[-3000:]
    assert "No password for the administrative login" not in text
    assert run.recap["cruddur-db"]["changed"] == 0
    run = run_playbook("playbooks/db-drop.yml", extra_vars={
        "cruddur_db_connection": {"host": "127.0.0.1", "name": "cruddur_never_made"}, "cruddur_db_admin": no_password})
    text = " ".join(run.output.split())
    assert run.rc != 0 and "No password for the administrative login postgres of cruddur-db" in text, run.output[-3000:]
    assert run.recap["cruddur-db"]["changed"] == 0
