"""Unit tests of the cruddur_migrations module's logic (real files; a real database for run())."""

import subprocess
import sys
import threading
import uuid
from pathlib import Path
from types import SimpleNamespace

import psycopg2
import pytest

from conftest import PG, REPO, connect, drop_database, load_migrations_module, query

mig = load_migrations_module()


def write(directory, name, text):
    (directory / name).write_text(text)


@pytest.fixture
def mdir(tmp_path):
    write(tmp_path, "0001_a.sql", "CREATE TABLE a (id int);\nCREATE TABLE a2 (id int);\n")
    write(tmp_path, "0001_a.rollback.sql", "DROP TABLE a2;\nDROP TABLE a;\n")
    write(tmp_path, "0002_b.sql", "-- depends: 0001_a\nCREATE TABLE b (id int);\n")
    write(tmp_path, "0002_b.rollback.sql", "DROP TABLE b;\n")
    return tmp_path


@pytest.fixture
def db(postgresql):
    name = f"cruddur_unit_{uuid.uuid4().hex[:10]}"
    admin = connect("postgres")
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    admin.close()
    conn = connect(name)
    conn.autocommit = False
    yield name, conn
    conn.close()
    drop_database(name)


def test_load_orders_and_splits(mdir):
    migrations = mig.load_migrations(str(mdir))
    assert [m.id for m in migrations] == ["0001_a", "0002_b"]
    assert len(migrations[0].statements) == 2
    assert migrations[0].rollback_statements()[0].startswith("DROP TABLE a2")


def test_missing_directory_is_named(tmp_path):
    with pytest.raises(mig.MigrationError, match="does not exist"):
        mig.load_migrations(str(tmp_path / "nope"))


def test_changed_file_is_refused(mdir):
    migrations = mig.load_migrations(str(mdir))
    applied = [("0001_a", "0" * 64)]
    with pytest.raises(mig.MigrationError, match=r"0001_a .*0001_a\.sql\) has changed"):
        mig.verify_applied(migrations, applied)


def test_missing_applied_file_is_refused(mdir):
    migrations = mig.load_migrations(str(mdir))
    with pytest.raises(mig.MigrationError, match="0000_gone is recorded as applied but its file is missing"):
        mig.verify_applied(migrations, [("0000_gone", "x")])


def test_plan_rollback_picks_the_last_applied(mdir):
    migrations = mig.load_migrations(str(mdir))
    applied = [(m.id, m.sha256) for m in migrations]
    assert mig.plan(migrations, applied, "rolled_back") == ([], [migrations[1]])
    assert mig.plan(migrations, [], "rolled_back") == ([], [])
    assert [m.id for m in mig.plan(migrations, applied[:1], "latest")[0]] == ["0002_b"]


def test_missing_rollback_file_is_named(mdir, db):
    (mdir / "0002_b.rollback.sql").unlink()
    name, conn = db
    migrations = mig.load_migrations(str(mdir))
    mig.run(conn, migrations, "latest", False, 5)
    with pytest.raises(mig.MigrationError, match="0002_b has no rollback file"):
        mig.run(conn, migrations, "rolled_back", False, 5)
    assert query(name, "SELECT to_regclass('public.b') IS NOT NULL") == [(True,)]


def test_check_mode_writes_nothing(mdir, db):
    name, conn = db
    result = mig.run(conn, mig.load_migrations(str(mdir)), "latest", True, 5)
    assert result["applied"] == ["0001_a", "0002_b"]
    assert query(name, "SELECT to_regclass('public.cruddur_schema_migrations')") == [(None,)]


def test_apply_rollback_apply(mdir, db):
    name, conn = db
    migrations = mig.load_migrations(str(mdir))
    assert mig.run(conn, migrations, "latest", False, 5)["applied"] == ["0001_a", "0002_b"]
    assert mig.run(conn, migrations, "latest", False, 5)["applied"] == []
    assert mig.run(conn, migrations, "rolled_back", False, 5)["rolled_back"] == ["0002_b"]
    assert query(name, "SELECT to_regclass('public.b')") == [(None,)]
    assert mig.run(conn, migrations, "latest", False, 5)["current"] == ["0001_a", "0002_b"]


def test_non_transactional_migration(mdir, db):
    name, conn = db
    write(mdir, "0003_idx.sql", "-- transactional: false\n-- depends: 0002_b\n"
                                "CREATE INDEX CONCURRENTLY b_id_idx ON b (id);\n")
    mig.run(conn, mig.load_migrations(str(mdir)), "latest", False, 5)
    assert query(name, "SELECT count(*) FROM pg_indexes WHERE indexname = 'b_id_idx'") == [(1,)]


def test_lock_timeout_is_named(mdir, db):
    name, conn = db
    holder = connect(name)
    with holder.cursor() as cur:
        cur.execute("SELECT pg_advisory_lock(%s)", (mig.LOCK_KEY,))
    try:
        with pytest.raises(mig.MigrationError, match="held the lock for more than 1s"):
            mig.run(conn, mig.load_migrations(str(mdir)), "latest", False, 1)
    finally:
        holder.close()
    assert query(name, "SELECT to_regclass('public.a')") == [(None,)]


def test_a_non_transactional_migration_that_fails_part_way_says_what_stays(mdir, db):
    name, conn = db
    write(mdir, "0003_idx.sql", "-- transactional: false\n-- depends: 0002_b\n"
                                "CREATE INDEX CONCURRENTLY b_id_idx ON b (id);\n"
                                "CREATE INDEX CONCURRENTLY missing_idx ON no_such_table (id);\n")
    with pytest.raises(mig.MigrationError) as failure:
        mig.run(conn, mig.load_migrations(str(mdir)), "latest", False, 5)
    message = str(failure.value)
    assert "apply of migration 0003_idx failed part-way: it is non-transactional" in message
    assert "statement 2 of 2 failed" in message and "Statements 1 to 1 were applied and stay" in message
    assert "not recorded as applied" in message
    assert query(name, "SELECT count(*) FROM pg_indexes WHERE indexname = 'b_id_idx'") == [(1,)]
    assert query(name, "SELECT migration_id FROM cruddur_schema_migrations ORDER BY seq") == [("0001_a",), ("0002_b",)]


def test_a_migration_blocked_by_a_lock_fails_fast_instead_of_queueing_the_api(mdir, db):
    name, conn = db
    mig.run(conn, mig.load_migrations(str(mdir)), "latest", False, 5)
    write(mdir, "0003_alter.sql", "-- depends: 0002_b\nALTER TABLE b ADD COLUMN note text;\n")
    reader = connect(name)  # an API transaction left open on the table
    reader.autocommit = False
    with reader.cursor() as cur:
        cur.execute("SELECT * FROM b")
    try:
        with pytest.raises(mig.MigrationError) as failure:
            mig.run(conn, mig.load_migrations(str(mdir)), "latest", False, 5, ddl_lock_timeout=1)
    finally:
        reader.close()
    assert "waited longer than ddl_lock_timeout for a table lock" in str(failure.value)
    assert "failed and was rolled back (nothing of it is left)" in str(failure.value)
    assert query(name, "SELECT count(*) FROM information_schema.columns WHERE table_name = 'b' "
                       "AND column_name = 'note'") == [(0,)]


def test_a_statement_over_its_time_limit_is_named(mdir, db):
    name, conn = db
    write(mdir, "0003_slow.sql", "-- depends: 0002_b\nSELECT pg_sleep(3);\n")
    with pytest.raises(mig.MigrationError, match="ran longer than statement_timeout"):
        mig.run(conn, mig.load_migrations(str(mdir)), "latest", False, 5, statement_timeout=1)
    assert query(name, "SELECT count(*) FROM cruddur_schema_migrations") == [(2,)]


@pytest.fixture
def app_role(db):
    name, conn = db
    role = f"cruddur_unit_role_{uuid.uuid4().hex[:8]}"
    with conn.cursor() as cur:
        cur.execute(f'CREATE ROLE "{role}" NOLOGIN')
        cur.execute("CREATE TABLE t (id int); CREATE TABLE \"we\"\"ird\" (id int)")
    conn.commit()
    yield role
    with conn.cursor() as cur:
        cur.execute("DROP TABLE t, \"we\"\"ird\"")
        cur.execute(f'DROP ROLE "{role}"')
    conn.commit()


def privileges_of(conn, role):
    with conn.cursor() as cur:
        cur.execute("SELECT table_name, privilege_type FROM information_schema.role_table_grants "
                    "WHERE grantee = %s ORDER BY 1, 2", (role,))
        rows = cur.fetchall()
    conn.rollback()
    return rows


def test_grants_only_what_a_role_lacks_and_only_reports_in_check_mode(db, app_role):
    _name, conn = db
    wanted = [{"role": app_role, "table": "t", "privilege": "SELECT"},
              {"role": app_role, "table": "t", "privilege": "INSERT"},
              {"role": app_role, "table": 'we"ird', "privilege": "SELECT"}]
    with conn.cursor() as cur:
        cur.execute(f'GRANT SELECT ON t TO "{app_role}"')
    conn.commit()
    missing = [{"role": app_role, "table": "t", "privileges": ["INSERT"]},
               {"role": app_role, "table": 'we"ird', "privileges": ["SELECT"]}]
    assert mig.grant(conn, wanted, True, 5) == missing
    assert privileges_of(conn, app_role) == [("t", "SELECT")]
    assert mig.grant(conn, wanted, False, 5) == missing
    assert privileges_of(conn, app_role) == [("t", "INSERT"), ("t", "SELECT"), ('we"ird', "SELECT")]
    assert mig.grant(conn, wanted, False, 5) == []
    assert mig.grant(conn, [], False, 5) == []


def test_grants_wait_for_the_lock_the_migrations_hold(db, app_role):
    name, conn = db
    holder = connect(name)  # another run, migrating
    with holder.cursor() as cur:
        cur.execute("SELECT pg_advisory_lock(%s)", (mig.LOCK_KEY,))
    try:
        with pytest.raises(mig.MigrationError, match="another migration run held the lock"):
            mig.grant(conn, [{"role": app_role, "table": "t", "privilege": "SELECT"}], False, 1)
    finally:
        holder.close()
    assert privileges_of(conn, app_role) == []


# --- a migration that waits for a lock: retried, the blocker named ----------------------------

def hold_table(name, application):
    """An API-like session that read table b and left its transaction open (holding its lock)."""
    holder = psycopg2.connect(**{**PG, "dbname": name, "application_name": application})
    with holder.cursor() as cur:
        cur.execute("SELECT * FROM b")
        cur.execute("SELECT pg_backend_pid()")
        pid = cur.fetchone()[0]
    return holder, pid


def test_a_blocked_migration_is_retried_with_backoff_and_names_the_blocking_session(mdir, db):
    name, conn = db
    mig.run(conn, mig.load_migrations(str(mdir)), "latest", False, 5)
    write(mdir, "0003_alter.sql", "-- depends: 0002_b\nALTER TABLE b ADD COLUMN note text;\n")
    holder, pid = hold_table(name, "cruddur-api-test")
    waits = []
    try:
        mig.set_timeouts(conn, 1, 0)
        with pytest.raises(mig.MigrationError) as failure:
            mig.apply_with_retries(conn, mig.load_migrations(str(mdir))[-1], 2, lambda: connect(name),
                                   sleep=waits.append)
    finally:
        holder.close()
    message = " ".join(str(failure.value).split())
    assert waits == [1, 2]
    assert "It timed out waiting for a lock 3 times (backing off 1, 2 s between tries)" in message
    assert (f"blocked by: pid {pid} (client backend, application 'cruddur-api-test', user postgres, "
            "state 'idle in transaction', transaction started 20") in message
    assert "failed and was rolled back (nothing of it is left)" in message
    assert query(name, "SELECT count(*) FROM information_schema.columns WHERE table_name = 'b' "
                       "AND column_name = 'note'") == [(0,)]
    assert query(name, "SELECT count(*) FROM cruddur_schema_migrations") == [(2,)]


def test_a_blocked_migration_applies_once_the_blocking_session_ends(mdir, db):
    name, conn = db
    mig.run(conn, mig.load_migrations(str(mdir)), "latest", False, 5)
    write(mdir, "0003_alter.sql", "-- depends: 0002_b\nALTER TABLE b ADD COLUMN note text;\n")
    holder, _pid = hold_table(name, "cruddur-api-test")
    ender = threading.Timer(1.5, holder.close)  # the long transaction ends during the backoff
    ender.start()
    try:
        result = mig.run(conn, mig.load_migrations(str(mdir)), "latest", False, 5, ddl_lock_timeout=1,
                         ddl_lock_retries=3, watch_connection=lambda: connect(name))
    finally:
        ender.join()
    assert result["applied"] == ["0003_alter"]
    assert query(name, "SELECT count(*) FROM information_schema.columns WHERE table_name = 'b' "
                       "AND column_name = 'note'") == [(1,)]


# --- squawk ----------------------------------------------------------------------------------

SQUAWK = str(Path(sys.executable).parent / "squawk")


def lint(migrations, config=str(REPO / "sql" / "squawk.toml")):
    def run_command(command):
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        return done.returncode, done.stdout, done.stderr
    return mig.squawk_findings(run_command, SQUAWK, config, migrations)


def test_the_projects_migrations_and_adoption_script_pass_squawk():
    """Every forward migration (linted as the module lints it) and the adoption script pass, the
    script through its reviewed exemptions."""
    migrations = mig.load_migrations(str(REPO / "sql" / "migrations"))
    assert lint(migrations) == []
    adoption = SimpleNamespace(path=str(REPO / "sql" / "adopt" / "original_schema.sql"), transactional=True)
    assert lint([adoption]) == []


def test_squawk_findings_name_the_line_the_rule_and_the_fix(mdir):
    write(mdir, "0003_idx.sql", "-- depends: 0002_b\n\nCREATE INDEX b_id_idx ON b (id);\n")
    findings = lint(mig.load_migrations(str(mdir))[-1:])
    assert [(Path(f["file"]).name, f["line"], f["rule"]) for f in findings] == [
        ("0003_idx.sql", 3, "require-concurrent-index-creation")]
    assert "concurrently" in findings[0]["help"]


def test_an_exemption_needs_its_reason(mdir):
    write(mdir, "0003_idx.sql", "-- depends: 0002_b\n-- squawk-ignore require-concurrent-index-creation\n"
                                "CREATE INDEX b_id_idx ON b (id);\n")
    findings = lint(mig.load_migrations(str(mdir))[-1:])
    assert [(f["line"], f["rule"]) for f in findings] == [(2, "exemption-without-reason")]
    write(mdir, "0003_idx.sql", "-- depends: 0002_b\n-- squawk-ignore require-concurrent-index-creation "
                                "-- reviewed: b is new and empty\nCREATE INDEX b_id_idx ON b (id);\n")
    assert lint(mig.load_migrations(str(mdir))[-1:]) == []


def test_a_finding_stops_the_run_before_anything_changes(mdir, db):
    name, conn = db
    write(mdir, "0003_idx.sql", "-- depends: 0002_b\nCREATE INDEX b_id_idx ON b (id);\n")
    with pytest.raises(mig.MigrationError) as failure:
        mig.run(conn, mig.load_migrations(str(mdir)), "latest", False, 5, lint=lint)
    assert "0003_idx.sql:2 require-concurrent-index-creation" in str(failure.value)
    assert query(name, "SELECT to_regclass('public.a')") == [(None,)]  # not even 0001 was applied
    checked = mig.run(conn, mig.load_migrations(str(mdir)), "latest", True, 5, lint=lint)
    assert [f["rule"] for f in checked["lint_findings"]] == ["require-concurrent-index-creation"]
    assert checked["applied"] == ["0001_a", "0002_b", "0003_idx"]
