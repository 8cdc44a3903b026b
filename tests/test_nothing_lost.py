"""Nothing lost: destructive chores check their target, back up first, restore verifiably; the
migrations take over a database built by the original schema.sql and keep every row; db-status
and db-repair. Each test makes and drops databases of its own on the local server."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess

import pytest

from conftest import (PG, REPO, SCRATCH_ENV_FILE, build_original, connect, drop_database, on_database, query,
                      run_playbook)

# The chores on the local server share its cluster-wide roles (created, altered, granted to the
# administrator): they run one after another on one worker, beside the other tests (bin/run-pytest).
pytestmark = pytest.mark.xdist_group("local-chores")

# The local inventory pointed at a host that is not loopback: 0.0.0.0 reaches this machine's
# server (so the refusal is tested without any traffic leaving it), but it is not a loopback address.
NOT_LOOPBACK = {"host": "0.0.0.0"}


def full_dump(dbname: str) -> str:
    """pg_dump of schema and data, without the per-run restrict key (compared before/after)."""
    proc = subprocess.run(["pg_dump", "--no-owner", "-h", PG["host"], "-U", PG["user"], dbname],
                          env={**os.environ, "PGPASSWORD": PG["password"]}, capture_output=True, text=True,
                          check=True)
    return "\n".join(line for line in proc.stdout.splitlines()
                     if not line.startswith(("\\restrict", "\\unrestrict", "-- Dumped")))


def catalogue(dbname: str) -> list[tuple]:
    """The schema as the application sees it: columns, constraints, indexes, owners (column order aside)."""
    return query(dbname, """
        SELECT 'column', table_name::text, column_name::text,
               data_type || ' ' || is_nullable || ' ' || coalesce(column_default, '')
        FROM information_schema.columns WHERE table_schema = 'public' AND table_name IN ('users', 'activities')
        UNION ALL
        SELECT 'constraint', conrelid::regclass::text, conname::text, pg_get_constraintdef(oid)
        FROM pg_constraint WHERE conrelid::regclass::text IN ('users', 'activities')
        UNION ALL
        SELECT 'index', tablename::text, indexname::text, indexdef FROM pg_indexes
        WHERE schemaname = 'public' AND tablename IN ('users', 'activities')
        UNION ALL
        SELECT 'owner', relname::text, pg_get_userbyid(relowner)::text, coalesce(relacl::text, '')
        FROM pg_class WHERE relnamespace = 'public'::regnamespace AND relname IN ('users', 'activities')
        ORDER BY 1, 2, 3""")


def setup(name: str, **extra):
    run = run_playbook("playbooks/db-setup.yml",
                       extra_vars={**on_database(name), "cruddur_db_env_file": SCRATCH_ENV_FILE, **extra})
    assert run.rc == 0, run.output[-3000:]


@pytest.fixture
def backups(tmp_path):
    directory = tmp_path / "backups"
    return directory


def chore(playbook: str, name: str, backups, *args, connection=None, **extra):
    return run_playbook(f"playbooks/{playbook}.yml", *args, extra_vars={
        **on_database(name, **(connection or {})), "cruddur_db_env_file": SCRATCH_ENV_FILE,
        "cruddur_db_backup_dir": str(backups), **extra})


def add_rows(name: str, count: int = 3) -> None:
    query(name, "INSERT INTO users (display_name, handle) SELECT 'User ' || i, 'user' || i "
                "FROM generate_series(1, %s) AS i", (count,))
    query(name, "INSERT INTO activities (user_uuid, message) SELECT uuid, 'hello from ' || handle "
                "FROM users WHERE handle LIKE 'user%%'")


# --- guards -----------------------------------------------------------------------------------

@pytest.mark.parametrize("playbook", ["db-drop", "db-setup", "db-rollback", "db-restore"])
def test_destructive_chores_refuse_a_target_not_proven_local(scratch_db_name, backups, playbook):
    setup(scratch_db_name)
    add_rows(scratch_db_name)
    if playbook == "db-restore":  # something to restore, so only the guard can stop it
        assert chore("db-backup", scratch_db_name, backups).rc == 0
    before = full_dump(scratch_db_name)
    for confirm in ({}, {"cruddur_db_confirm": "cruddur"}):  # nothing, or another database's name
        run = chore(playbook, scratch_db_name, backups, connection=NOT_LOOPBACK, **confirm)
        assert run.rc != 0 and run.changed() == 0, run.output[-3000:]
        text = " ".join(run.output.split())
        assert f"database {scratch_db_name} (activities: 4 rows, users: 5 rows;" in text
        assert "0.0.0.0 resolves to 0.0.0.0, which is not loopback" in text
        assert f"Nothing was changed. To go ahead, run again with -e cruddur_db_confirm={scratch_db_name}" in text
    assert full_dump(scratch_db_name) == before
    databases = query("postgres", "SELECT datname FROM pg_database WHERE datname LIKE %s", (scratch_db_name + "%",))
    assert databases == [(scratch_db_name,)]


def test_the_same_target_on_loopback_is_proven_local(scratch_db_name, backups):
    setup(scratch_db_name)
    run = chore("db-drop", scratch_db_name, backups, "-v")
    assert run.rc == 0 and run.changed() == 1, run.output[-3000:]
    text = " ".join(run.output.split())
    assert "127.0.0.1 resolves only to loopback (127.0.0.1), and the session's server process" in text
    assert not backups.exists()  # local: no confirmation, no backup


def test_db_setup_checks_every_chores_options_before_it_drops_anything(scratch_db_name, backups):
    # A bad option of a later chore (migrate's lock timeout) stops db-setup before the drop.
    setup(scratch_db_name)
    add_rows(scratch_db_name)
    before = full_dump(scratch_db_name)
    run = chore("db-setup", scratch_db_name, backups, cruddur_db_lock_timeout="soon")
    assert run.rc != 0 and run.changed() == 0, run.output[-3000:]
    assert "cruddur_db_lock_timeout" in run.output and "'soon'" in run.output
    assert "Drop the database (closing its sessions)" not in run.output
    assert full_dump(scratch_db_name) == before


def test_proof_of_locality_looks_at_the_server_process():
    from ansible_collections.cruddur.ops.plugins.modules import cruddur_db_target as target
    conn = connect("postgres")
    with conn.cursor() as cur:
        cur.execute("SELECT pg_backend_pid(), current_user")
        pid, user = cur.fetchone()
        assert target.backend_is_here(pid, user, "postgres")[0]
        # A PID that is not this session's server process (as through a tunnel to another
        # machine's server: its PID means nothing here): not local.
        here, why = target.backend_is_here(os.getpid(), user, "postgres")
        assert not here and "is not this session's server process" in why
        here, why = target.backend_is_here(2 ** 22 + 17, user, "postgres")
        assert not here and "the port leads elsewhere" in why
    conn.close()
    assert target.host_is_loopback("localhost", 5432)[0]
    assert not target.host_is_loopback("0.0.0.0", 5432)[0]
    assert not target.host_is_loopback("/nonexistent", 5432)[0]


def test_the_guard_reads_a_process_title_again_while_postgresql_rewrites_it(monkeypatch):
    """A backend's title read while PostgreSQL rewrites it is empty: read again, do not refuse."""
    from ansible_collections.cruddur.ops.plugins.modules import cruddur_db_target as target
    conn = connect("postgres")
    with conn.cursor() as cur:
        cur.execute("SELECT pg_backend_pid(), current_user")
        pid, user = cur.fetchone()
    real_read, empty_reads = target.read_proc, [2]

    def rewriting(read_pid, name):
        if name == "cmdline" and read_pid == pid and empty_reads[0] > 0:
            empty_reads[0] -= 1
            return b""
        return real_read(read_pid, name)

    monkeypatch.setattr(target, "read_proc", rewriting)
    try:
        assert target.backend_is_here(pid, user, "postgres")[0]
        assert empty_reads == [0]
    finally:
        conn.close()


def test_the_guard_judges_the_session_while_it_is_open():
    """The guard reads /proc for the session's server process while the session is open: once
    closed, that process exits, and a read right after (as fast as a module run in the worker
    process makes it) found it gone and refused the machine's own server as "elsewhere"."""
    from conftest import call_module
    from ansible_collections.cruddur.ops.plugins.modules import cruddur_db_target as target
    args = {"db": "postgres", "maintenance_db": "postgres", "login_host": PG["host"], "login_port": PG["port"],
            "login_user": PG["user"], "login_password": PG["password"]}
    verdicts = []
    for _ in range(40):
        result = call_module(target, args, check=True)
        verdicts.append((result["local"], result["why"]))
    refused = [why for local, why in verdicts if not local]
    assert not refused, f"{len(refused)} of 40 runs refused the local server, e.g. {refused[0]}"


def test_the_guard_takes_the_address_libpq_connects_to_from_pghostaddr(monkeypatch):
    """With PGHOSTADDR (the offline rehearsal's way to reach the emulated endpoint) libpq never
    looks the name up, and neither does the guard: it judges the address given."""
    from conftest import forbid_lookup
    from ansible_collections.cruddur.ops.plugins.modules import cruddur_db_target as target

    forbid_lookup(monkeypatch, target.socket, "db.example.invalid")
    monkeypatch.setenv("PGHOSTADDR", "127.0.0.1")
    assert target.host_is_loopback("db.example.invalid", 5432) == (
        True, "db.example.invalid (PGHOSTADDR) resolves only to loopback (127.0.0.1)")
    monkeypatch.setenv("PGHOSTADDR", "192.0.2.7")
    assert target.host_is_loopback("db.example.invalid", 5432) == (
        False, "db.example.invalid (PGHOSTADDR) resolves to 192.0.2.7, which is not loopback")


# --- backup and restore -----------------------------------------------------------------------

def test_a_confirmed_drop_backs_up_first_and_restore_gives_the_same_database(scratch_db_name, backups):
    setup(scratch_db_name)
    add_rows(scratch_db_name, 50)
    before = full_dump(scratch_db_name)
    dropped = chore("db-drop", scratch_db_name, backups, connection=NOT_LOOPBACK,
                    cruddur_db_confirm=scratch_db_name)
    assert dropped.rc == 0, dropped.output[-3000:]
    assert query("postgres", "SELECT count(*) FROM pg_database WHERE datname = %s", (scratch_db_name,)) == [(0,)]

    (dump,) = backups.glob(f"{scratch_db_name}-*.dump")
    assert dump.stat().st_mode & 0o777 == 0o600 and backups.stat().st_mode & 0o777 == 0o700
    digest, name = (dump.parent / (dump.name + ".sha256")).read_text().split()
    assert (digest, name) == (hashlib.sha256(dump.read_bytes()).hexdigest(), dump.name)
    manifest = json.loads((dump.parent / (dump.name + ".json")).read_text())
    assert manifest["tables"] == {"users": 52, "activities": 51, "cruddur_schema_migrations": 5}
    listing = subprocess.run(["pg_restore", "--list", str(dump)], capture_output=True, text=True, check=True).stdout
    assert "TABLE DATA public users" in listing and "TABLE DATA public activities" in listing
    assert f"Backed up to {dump}" in " ".join(dropped.output.split())

    # The database is gone: restoring needs no confirmation (nothing would be replaced).
    restored = chore("db-restore", scratch_db_name, backups, connection=NOT_LOOPBACK)
    assert restored.rc == 0, restored.output[-3000:]
    assert full_dump(scratch_db_name) == before


def test_restore_replaces_by_rename_keeps_the_old_database_and_check_mode_changes_nothing(scratch_db_name, backups):
    setup(scratch_db_name)
    add_rows(scratch_db_name, 5)
    assert chore("db-backup", scratch_db_name, backups).rc == 0
    before = full_dump(scratch_db_name)
    query(scratch_db_name, "DELETE FROM activities")  # the accident the backup undoes
    after_accident = full_dump(scratch_db_name)

    check = chore("db-restore", scratch_db_name, backups, "--check")
    assert check.rc == 0, check.output[-3000:]
    assert "Would restore" in check.output and "would be kept as" in " ".join(check.output.split())
    assert full_dump(scratch_db_name) == after_accident
    assert query("postgres", "SELECT count(*) FROM pg_database WHERE datname LIKE %s",
                 (scratch_db_name + "_%",)) == [(0,)]

    run = chore("db-restore", scratch_db_name, backups)
    assert run.rc == 0, run.output[-3000:]
    assert full_dump(scratch_db_name) == before
    (kept,) = query("postgres", "SELECT datname FROM pg_database WHERE datname LIKE %s", (scratch_db_name + "_before_%",))
    try:
        assert full_dump(kept[0]) == after_accident
        assert f"-e cruddur_db_drop_database={kept[0]}" in " ".join(run.output.split())
        # The application roles kept their privileges in the restored database.
        assert query(scratch_db_name, "SELECT has_table_privilege('cruddur_api', 'activities', 'INSERT'),"
                                      " has_table_privilege('cruddur_api', 'users', 'DELETE')") == [(True, False)]
        drop = chore("db-drop", scratch_db_name, backups, cruddur_db_drop_database=kept[0])
        assert drop.rc == 0 and drop.changed() == 1, drop.output[-3000:]
    finally:
        drop_database(kept[0])


def test_a_damaged_backup_is_refused_and_nothing_is_replaced(scratch_db_name, backups):
    setup(scratch_db_name)
    assert chore("db-backup", scratch_db_name, backups).rc == 0
    (dump,) = backups.glob("*.dump")
    data = bytearray(dump.read_bytes())
    data[-10] ^= 0xFF
    dump.write_bytes(bytes(data))
    before = full_dump(scratch_db_name)
    run = chore("db-restore", scratch_db_name, backups)
    assert run.rc != 0 and "does not match its .sha256" in " ".join(run.output.split())
    assert full_dump(scratch_db_name) == before
    assert query("postgres", "SELECT count(*) FROM pg_database WHERE datname LIKE %s",
                 (scratch_db_name + "_%",)) == [(0,)]


def test_backups_keep_the_last_n(scratch_db_name, backups):
    setup(scratch_db_name)
    for _ in range(3):
        run = chore("db-backup", scratch_db_name, backups, cruddur_db_backup_keep=2)
        assert run.rc == 0, run.output[-3000:]
        subprocess.run(["sleep", "1.1"], check=True)  # the name holds the second
    kept = sorted(p.name for p in backups.iterdir())
    assert len(kept) == 6, kept  # two dumps, each with its .sha256 and .json


# --- adopting a database built by the original schema.sql -------------------------------------

def rows(name: str) -> dict:
    users = query(name, "SELECT uuid::text, display_name, handle, to_jsonb(u) ->> 'email', cognito_user_id,"
                        " to_char(created_at, 'YYYY-MM-DD HH24:MI:SS.US') FROM users u ORDER BY uuid")
    activities = query(name, "SELECT uuid::text, user_uuid::text, message, coalesce(likes_count, 0), "
                             "to_char(expires_at, 'YYYY-MM-DD HH24:MI:SS.US') FROM activities ORDER BY uuid")
    return {"users": users, "activities": activities}


ORIGINAL_LAMBDA_USERS = """
    INSERT INTO public.users (display_name, email, handle, cognito_user_id) VALUES
      ('Real Person', 'real@example.com', 'realperson', '8e0a4c5e-0000-4000-8000-000000000001'),
      ('Other Person', 'other@example.com', 'other', '8e0a4c5e-0000-4000-8000-000000000002');
    INSERT INTO public.activities (user_uuid, message, likes_count)
    SELECT uuid, 'posted before cruddur-ops', NULL FROM public.users WHERE handle = 'realperson';
"""


@pytest.mark.parametrize("variant", ["as-is", "with-email"])
def test_migrate_adopts_the_original_schema_and_keeps_every_row(scratch_db_name, variant):
    fresh = scratch_db_name + "_fresh"
    try:
        setup(fresh)
        if variant == "as-is":
            build_original(scratch_db_name)
        else:
            build_original(scratch_db_name, "email_by_hand.sql", sql=ORIGINAL_LAMBDA_USERS)
        before = rows(scratch_db_name)
        run = run_playbook("playbooks/db-migrate.yml", extra_vars=on_database(scratch_db_name))
        assert run.rc == 0, run.output[-3000:]
        assert "recorded 0001_uuid_ossp, 0002_users_activities as applied, every row kept" in " ".join(run.output.split())
        after = rows(scratch_db_name)
        # Every row kept; only the seed's placeholder Cognito id 'MOCK' became NULL (unique now).
        expected_users = [tuple(None if v == "MOCK" else v for v in user) for user in before["users"]]
        assert after["users"] == expected_users
        assert after["activities"] == before["activities"]
        assert catalogue(scratch_db_name) == catalogue(fresh)
        assert query(scratch_db_name, "SELECT migration_id, how FROM cruddur_schema_migrations ORDER BY seq") == \
            [("0001_uuid_ossp", "adopted"), ("0002_users_activities", "adopted"), ("0003_reply_to_index", "applied"),
             ("0004_feed_indexes", "applied"), ("0005_replies_count", "applied")]
        again = run_playbook("playbooks/db-migrate.yml", extra_vars=on_database(scratch_db_name))
        assert again.rc == 0 and again.changed() == 0, again.output[-3000:]
        # The API's role can now post as an adopted user.
        query(scratch_db_name, "SET ROLE cruddur_api; INSERT INTO activities (user_uuid, message) "
                               "SELECT uuid, 'after adoption' FROM users WHERE handle = 'andrewbrown'")
        # And reply: the parent's count goes up, though the role may not update activities.
        query(scratch_db_name, "SET ROLE cruddur_api; INSERT INTO activities (user_uuid, message, reply_to_activity_uuid) "
                               "SELECT uuid, 'a reply', (SELECT uuid FROM activities WHERE message = 'after adoption') "
                               "FROM users WHERE handle = 'andrewbrown'")
        assert query(scratch_db_name, "SELECT replies_count FROM activities WHERE message = 'after adoption'") == [(1,)]
        assert query(scratch_db_name, "SELECT has_table_privilege('cruddur_api', 'activities', 'UPDATE')") == [(False,)]
    finally:
        drop_database(fresh)


def test_adoption_stops_before_any_change_naming_the_rows(scratch_db_name):
    # The original seed run twice (duplicate handles), and an activity of a user who is gone.
    build_original(scratch_db_name, "seed.sql", sql="INSERT INTO activities (user_uuid, message) "
                                                    "VALUES ('00000000-0000-4000-8000-00000000dead', 'orphan')")
    before = full_dump(scratch_db_name)
    owner_before = query("postgres", "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s",
                         (scratch_db_name,))
    run = run_playbook("playbooks/db-migrate.yml", extra_vars=on_database(scratch_db_name))
    assert run.rc != 0
    text = " ".join(run.output.split())
    assert "users sharing a handle (it must be unique):" in text and "(andrewbrown)" in text and "(bayko)" in text
    assert "activities whose user does not exist:" in text and "(00000000-0000-4000-8000-00000000dead)" in text
    assert "nothing was changed" in text
    assert full_dump(scratch_db_name) == before
    assert query("postgres", "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s",
                 (scratch_db_name,)) == owner_before


# --- db-status and db-repair ------------------------------------------------------------------

def test_status_shows_pending_and_edited_migrations_and_repair_accepts_the_edit(scratch_db_name, tmp_path):
    migrations = tmp_path / "migrations"
    shutil.copytree(REPO / "sql" / "migrations", migrations)
    extra = {**on_database(scratch_db_name), "cruddur_db_migrations_dir": str(migrations),
             "cruddur_db_env_file": SCRATCH_ENV_FILE}
    assert run_playbook("playbooks/db-setup.yml", extra_vars=extra).rc == 0
    edited = migrations / "0001_uuid_ossp.sql"
    edited.write_text(edited.read_text() + "-- a comment added after it was applied\n")
    (migrations / "0003_bio.sql").write_text("-- depends: 0002_users_activities\nALTER TABLE users ADD COLUMN bio text;\n")

    status = run_playbook("playbooks/db-status.yml", extra_vars=extra)
    assert status.rc != 0  # drift is an error, and the table says which
    lines = [" ".join(line.split()) for line in status.output.splitlines()]
    assert any(line.startswith("- 0001_uuid_ossp changed ") for line in lines), status.output
    assert any(line.startswith("- 0002_users_activities applied ") for line in lines), status.output
    assert any(line.startswith("- 0003_bio pending - -") for line in lines), status.output
    assert "accept it with ansible-playbook playbooks/db-repair.yml" in " ".join(status.output.split())
    migrate = run_playbook("playbooks/db-migrate.yml", extra_vars=extra)
    assert migrate.rc != 0 and "has changed since it was applied" in migrate.output

    check = run_playbook("playbooks/db-repair.yml", "--check", extra_vars=extra)
    assert check.rc == 0 and check.changed() == 1 and "Would record 0001_uuid_ossp" in check.output
    repair = run_playbook("playbooks/db-repair.yml", extra_vars=extra)
    assert repair.rc == 0 and repair.changed() == 1, repair.output[-3000:]
    new = hashlib.sha256(edited.read_bytes()).hexdigest()
    (old,) = query(scratch_db_name, "SELECT old_sha256 FROM cruddur_schema_repairs WHERE migration_id = '0001_uuid_ossp'"
                                    " AND new_sha256 = %s", (new,))[0]
    assert old != new
    clean = run_playbook("playbooks/db-status.yml", extra_vars=extra)
    assert clean.rc == 0, clean.output[-3000:]
    assert run_playbook("playbooks/db-migrate.yml", extra_vars=extra).rc == 0
    assert run_playbook("playbooks/db-repair.yml", extra_vars=extra).changed() == 0


# --- seed ---------------------------------------------------------------------------------------

def test_seed_data_stays_on_local_databases_unless_asked_for(scratch_db_name):
    extra = {**on_database(scratch_db_name), "cruddur_db_env_file": SCRATCH_ENV_FILE, "cruddur_db_environment": "staging"}
    run = run_playbook("playbooks/db-setup.yml", extra_vars={**extra, "cruddur_db_confirm": scratch_db_name})
    assert run.rc == 0, run.output[-3000:]
    assert "Not seeding" in run.output
    assert query(scratch_db_name, "SELECT count(*) FROM users") == [(0,)]
    asked = run_playbook("playbooks/db-seed.yml", extra_vars={**extra, "cruddur_db_seed_data": True})
    assert asked.rc == 0 and asked.changed() == 1
    assert query(scratch_db_name, "SELECT count(*) FROM users") == [(2,)]
