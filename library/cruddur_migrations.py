#!/usr/bin/python
"""Apply or roll back Cruddur's plain-SQL schema migrations."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: cruddur_migrations
short_description: Apply or roll back plain-SQL migrations, each in its own transaction
description:
  - Reads C(NNNN_name.sql) migrations (and their C(NNNN_name.rollback.sql) files) from a
    directory with yoyo-migrations, which orders them (file name and C(-- depends:) lines)
    and splits them into statements.
  - Applies each pending migration and records it in one transaction on one connection, so
    a failing migration leaves the database as it was before it, and a recorded migration is
    always an applied one.
  - Holds a PostgreSQL session advisory lock for the whole run, so concurrent runs apply each
    migration exactly once; the lock dies with the session, so a killed run leaves no stale lock.
  - Records the SHA-256 of each applied file and refuses to run when an applied migration's file
    has changed since.
  - In check mode it only reads, and reports what it would apply or roll back.
options:
  state:
    description: C(latest) applies every pending migration; C(rolled_back) rolls back the
      last applied one.
    type: str
    choices: [latest, rolled_back]
    default: latest
  migrations_dir:
    description: Directory holding the migration files.
    type: path
    required: true
  db:
    description: Database to migrate.
    type: str
    required: true
  login_host:
    description: Database server host.
    type: str
    default: 127.0.0.1
  login_port:
    description: Database server port.
    type: int
    default: 5432
  login_user:
    description: Role to connect as (the database's owner role).
    type: str
    default: postgres
  login_password:
    description: Password of I(login_user).
    type: str
    no_log: true
  ssl_mode:
    description: libpq sslmode.
    type: str
    default: prefer
  ca_cert:
    description: CA bundle that verifies the server (verify-ca, verify-full).
    type: path
    aliases: [ssl_rootcert]
  connect_timeout:
    description: Seconds to wait for the connection.
    type: int
    default: 10
notes:
  - The connection options are those of module_utils/cruddur_postgres.py, named as in
    community.postgresql, so one module_defaults entry serves both.
  lock_timeout:
    description: Seconds to wait for another run's migration lock.
    type: int
    default: 120
requirements: [psycopg2, yoyo-migrations]
"""

EXAMPLES = r"""
- name: Apply pending migrations
  cruddur_migrations:
    migrations_dir: "{{ playbook_dir }}/../sql/migrations"
    login_host: 127.0.0.1
    login_password: "{{ db_password }}"
    db: cruddur
"""

RETURN = r"""
applied:
  description: Migrations applied by this run (or that would be, in check mode), in order.
  type: list
  elements: str
  returned: always
rolled_back:
  description: Migration rolled back by this run (or that would be, in check mode).
  type: list
  elements: str
  returned: always
current:
  description: Migrations recorded as applied after the run, in order.
  type: list
  elements: str
  returned: always
"""

import hashlib
import os
import re
import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible.module_utils.cruddur_postgres import (
    connect as pg_connect, postgres_argument_spec, reason, require_driver, where as pg_where)

try:
    import psycopg2
    from psycopg2 import errors as pg_errors
except ImportError:
    psycopg2 = None  # require_driver() reports it

try:
    from yoyo import read_migrations
    from yoyo.migrations import read_sql_migration, topological_sort
except ImportError:
    read_migrations = None
    YOYO_IMPORT_ERROR = traceback.format_exc()
else:
    YOYO_IMPORT_ERROR = None

RECORD_TABLE = "cruddur_schema_migrations"
# Key of the session advisory lock every run takes ("cruddur" as a number).
LOCK_KEY = 0x6372756464757200

CREATE_RECORD_TABLE = f"""
CREATE TABLE IF NOT EXISTS public.{RECORD_TABLE} (
  seq          bigserial   PRIMARY KEY,
  migration_id text        NOT NULL UNIQUE,
  sha256       text        NOT NULL,
  applied_at   timestamptz NOT NULL DEFAULT clock_timestamp()
)
"""


class MigrationError(Exception):
    """A problem with the migrations themselves: the message says which and why."""


class SqlMigration:
    """One migration file, its statements and its optional rollback file."""

    def __init__(self, yoyo_migration):
        self.id = yoyo_migration.id
        self.path = yoyo_migration.path
        with open(self.path, "rb") as handle:
            self.sha256 = hashlib.sha256(handle.read()).hexdigest()
        directives, _comment, self.statements = read_sql_migration(self.path)
        self.transactional = directives.get("transactional", "true").lower() != "false"
        self.rollback_path = re.sub(r"\.sql$", ".rollback.sql", self.path)

    def rollback_statements(self):
        if not os.path.exists(self.rollback_path):
            raise MigrationError(
                f"migration {self.id} has no rollback file ({self.rollback_path})"
            )
        return read_sql_migration(self.rollback_path)[2]


def load_migrations(directory):
    """Return the directory's migrations in the order they must be applied."""
    if not os.path.isdir(directory):
        raise MigrationError(f"migrations directory {directory} does not exist")
    found = read_migrations(directory)
    for migration in found:
        if not migration.path.endswith(".sql"):
            raise MigrationError(f"{migration.path}: only plain-SQL migrations are supported")
        migration.load()
    return [SqlMigration(m) for m in topological_sort(found)]


def read_applied(cursor):
    """Return [(migration_id, sha256)] in the order applied, [] when nothing was recorded yet."""
    cursor.execute("SELECT to_regclass(%s) IS NOT NULL", (f"public.{RECORD_TABLE}",))
    if not cursor.fetchone()[0]:
        return []
    cursor.execute(f"SELECT migration_id, sha256 FROM public.{RECORD_TABLE} ORDER BY seq")
    return list(cursor.fetchall())


def verify_applied(migrations, applied):
    """Refuse to go on when an applied migration's file changed or went missing."""
    by_id = {m.id: m for m in migrations}
    for migration_id, sha256 in applied:
        migration = by_id.get(migration_id)
        if migration is None:
            raise MigrationError(
                f"migration {migration_id} is recorded as applied but its file is missing"
            )
        if migration.sha256 != sha256:
            raise MigrationError(
                f"migration {migration_id} ({migration.path}) has changed since it was applied; "
                "write a new migration instead of editing an applied one"
            )


def execute_all(cursor, statements, migration_id, direction):
    for statement in statements:
        try:
            cursor.execute(statement)
        except psycopg2.Error as exc:
            detail = (exc.pgerror or str(exc)).strip()
            raise MigrationError(
                f"{direction} of migration {migration_id} failed and was rolled back: {detail}"
            ) from exc


def apply_one(conn, migration):
    """Apply one migration and record it atomically (or as closely as a non-transactional one allows)."""
    if migration.transactional:
        try:
            with conn.cursor() as cursor:
                execute_all(cursor, migration.statements, migration.id, "apply")
                cursor.execute(
                    f"INSERT INTO public.{RECORD_TABLE} (migration_id, sha256) VALUES (%s, %s)",
                    (migration.id, migration.sha256),
                )
            conn.commit()
        except Exception:
            conn.rollback()
            raise
    else:
        # Statements such as CREATE INDEX CONCURRENTLY cannot run in a transaction block.
        conn.autocommit = True
        try:
            with conn.cursor() as cursor:
                execute_all(cursor, migration.statements, migration.id, "apply")
                cursor.execute(
                    f"INSERT INTO public.{RECORD_TABLE} (migration_id, sha256) VALUES (%s, %s)",
                    (migration.id, migration.sha256),
                )
        finally:
            conn.autocommit = False


def rollback_one(conn, migration):
    statements = migration.rollback_statements()
    try:
        with conn.cursor() as cursor:
            execute_all(cursor, statements, migration.id, "rollback")
            cursor.execute(
                f"DELETE FROM public.{RECORD_TABLE} WHERE migration_id = %s", (migration.id,)
            )
        conn.commit()
    except Exception:
        conn.rollback()
        raise


class AdvisoryLock:
    """Session advisory lock on its own connection, held for the whole run."""

    def __init__(self, conn, timeout):
        self.conn = conn
        self.timeout = timeout

    def __enter__(self):
        with self.conn.cursor() as cursor:
            cursor.execute("SELECT set_config('lock_timeout', %s, false)", (f"{self.timeout}s",))
            try:
                cursor.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
            except pg_errors.LockNotAvailable as exc:
                raise MigrationError(
                    f"another migration run held the lock for more than {self.timeout}s"
                ) from exc
            cursor.execute("SELECT set_config('lock_timeout', '0', false)")
        self.conn.commit()
        return self

    def __exit__(self, *exc_info):
        if self.conn.closed:
            return
        self.conn.rollback()
        with self.conn.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))
        self.conn.commit()


def plan(migrations, applied, state):
    """Return (to_apply, to_roll_back) for the requested state."""
    applied_ids = [migration_id for migration_id, _sha in applied]
    if state == "latest":
        return [m for m in migrations if m.id not in applied_ids], []
    if not applied_ids:
        return [], []
    last = next(m for m in migrations if m.id == applied_ids[-1])
    return [], [last]


def run(conn, migrations, state, check_mode, lock_timeout):
    """Bring the database to `state`; returns the module result (without `changed`)."""
    with conn.cursor() as cursor:
        applied = read_applied(cursor)
    conn.rollback()
    verify_applied(migrations, applied)
    to_apply, to_roll_back = plan(migrations, applied, state)
    if check_mode or not (to_apply or to_roll_back):
        current = [migration_id for migration_id, _sha in applied]
        return {
            "applied": [m.id for m in to_apply],
            "rolled_back": [m.id for m in to_roll_back],
            "current": current,
        }

    with AdvisoryLock(conn, lock_timeout):
        with conn.cursor() as cursor:
            cursor.execute(CREATE_RECORD_TABLE)
            conn.commit()
            # Read again under the lock: another run may have finished meanwhile.
            applied = read_applied(cursor)
        conn.rollback()
        verify_applied(migrations, applied)
        to_apply, to_roll_back = plan(migrations, applied, state)
        for migration in to_apply:
            apply_one(conn, migration)
        for migration in to_roll_back:
            rollback_one(conn, migration)
        with conn.cursor() as cursor:
            current = [migration_id for migration_id, _sha in read_applied(cursor)]
        conn.rollback()
    return {
        "applied": [m.id for m in to_apply],
        "rolled_back": [m.id for m in to_roll_back],
        "current": current,
    }


def connect(params):
    return pg_connect(params, "cruddur-migrations")


def main():
    module = AnsibleModule(
        argument_spec=dict(
            state=dict(type="str", default="latest", choices=["latest", "rolled_back"]),
            migrations_dir=dict(type="path", required=True),
            lock_timeout=dict(type="int", default=120),
            **postgres_argument_spec(),
        ),
        supports_check_mode=True,
    )
    require_driver(module)
    if read_migrations is None:
        module.fail_json(msg=missing_required_lib("yoyo-migrations"), exception=YOYO_IMPORT_ERROR)

    params = module.params
    try:
        migrations = load_migrations(params["migrations_dir"])
    except MigrationError as exc:
        module.fail_json(msg=str(exc))

    where = pg_where(params)
    try:
        conn = connect(params)
    except psycopg2.OperationalError as exc:
        if module.check_mode and "does not exist" in str(exc):
            # The database itself is still to be created (by an earlier task, simulated in
            # --check): everything would be applied.
            would = [m.id for m in migrations] if params["state"] == "latest" else []
            module.exit_json(changed=bool(would), applied=would, rolled_back=[], current=[])
        module.fail_json(msg=f"cannot connect to {where}: {reason(exc)}")

    try:
        result = run(conn, migrations, params["state"], module.check_mode, params["lock_timeout"])
    except MigrationError as exc:
        module.fail_json(msg=f"{where}: {exc}")
    except psycopg2.Error as exc:
        module.fail_json(msg=f"{where}: {reason(exc)}")
    finally:
        conn.close()

    changed = bool(result["applied"] or result["rolled_back"])
    module.exit_json(changed=changed, **result)


if __name__ == "__main__":
    main()
