#!/usr/bin/python
# Copyright: cruddur-ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Apply or roll back Cruddur's plain-SQL schema migrations."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: cruddur_migrations
author: cruddur-ops contributors (@cruddur-ops)
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
  - Each migration runs with I(ddl_lock_timeout) and I(statement_timeout), so an C(ALTER) that
    waits for a lock held by the API fails fast (and is rolled back) instead of queueing every
    API query behind it for longer than that. A transactional migration that timed out waiting
    for a lock is tried again up to I(ddl_lock_retries) times, backing off 1, 2, 4... seconds
    (at most 8) between tries; while it waits, a second session watches which sessions block it,
    and the final error names them (pid, application, user, state, transaction and query start).
  - "With I(lint) (the default), C(state=latest) first lints every pending migration with squawk
    (the C(squawk) command of squawk-cli, with I(squawk_config)); a transactional migration is
    linted as running inside a transaction. Any finding stops the run before anything changes,
    naming the file, line, rule and squawk's fix; in check mode the findings are returned in
    I(lint_findings) instead. A migration exempts one statement with a
    C(-- squawk-ignore <rule> -- reviewed: <why>) comment on the line before it (or a whole file
    with C(-- squawk-ignore-file <rule> -- reviewed: <why>)); an exemption without its
    C(-- reviewed:) reason is itself a finding."
  - C(state=status) only reads - applied migrations with their time and checksum, pending ones,
    and applied ones whose file changed since. C(state=repaired) is the deliberate answer to an
    edited applied migration - it records the file's new checksum and keeps the old and new ones
    in C(cruddur_schema_repairs).
  - C(state=adopted) (run as the administrative login) takes over a database built by the
    original C(db/schema.sql) - no migration record, and tables of a shape listed in
    I(adopt_dir). It checks every row that the current schema would reject first and stops,
    naming them, before any change; then, in one transaction, gives the tables to I(owner_role),
    runs the adoption script as that role, and records the migrations the script brings the
    database to as applied (C(how = adopted)). Then it gives I(owner_role) the objects in schema
    public it does not own (a database made before the owner role existed, or changed by hand as
    the administrator), in one transaction, and lists them as I(foreign_objects) - the owner runs
    the migrations, which alter them.
  - With I(privileges) (C(state=latest)), it then grants each application role the table
    privileges it lacks, and only those, in one transaction under the same advisory lock (two
    concurrent GRANTs on a table fail one with "tuple concurrently updated"). Run as the owner
    role, it may only grant on what the owner owns.
  - With I(seed_file), it then runs that SQL file as the login (the owner role) on the same
    connection, in one transaction, once no migration is pending - C(state=latest) after applying
    them, C(state=seeded) refusing to run while any is pending. The file must add only what is
    missing and end with a query that returns one row of counts of the rows it added; the run is
    changed when any count is above zero.
  - In check mode it only reads, and reports what it would apply, roll back or grant (grants
    that wait for pending migrations, whose tables do not exist yet, are not reported). The seed
    is run and rolled back, to count what it would add, unless migrations are pending.
options:
  state:
    description: C(latest) applies every pending migration; C(rolled_back) rolls back the
      last applied one; C(status) reports; C(repaired) accepts edited applied migrations;
      C(adopted) takes over a database built by the original schema; C(seeded) runs
      I(seed_file) on a database with no pending migration, and fails, changing nothing, on one
      with any.
    type: str
    choices: [latest, rolled_back, status, repaired, adopted, seeded]
    default: latest
  lock_timeout:
    description: Seconds to wait for another run's migration lock.
    type: int
    default: 120
  ddl_lock_timeout:
    description: Seconds (fractions allowed) a migration's statement may wait for a table lock
      (0 - no limit).
    type: float
    default: 5
  ddl_lock_retries:
    description: How many more times a transactional migration that timed out waiting for a
      lock is tried (0 - fail at the first timeout).
    type: int
    default: 3
  lint:
    description: Lint pending migrations with squawk before applying any (C(state=latest)).
    type: bool
    default: true
  squawk_config:
    description: squawk's configuration file (C(.squawk.toml) format) for the lint.
    type: path
  statement_timeout:
    description: Seconds a migration's statement may run (0 - no limit).
    type: int
    default: 300
  privileges:
    description: Table privileges the application roles must have in schema public, one per
      entry (C(state=latest)), as the C(cruddur_privilege_rows) filter lists them.
    type: list
    elements: dict
    default: []
    suboptions:
      role:
        description: Role that gets the privilege.
        type: str
        required: true
      table:
        description: Table in schema public.
        type: str
        required: true
      privilege:
        description: Table privilege.
        type: str
        required: true
        choices: [SELECT, INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER]
  seed_file:
    description: SQL file of seed rows, run after the migrations (C(state=latest) or
      C(state=seeded)); see the description for what it must do.
    type: path
  adopt_dir:
    description: Directory of the adoption scripts (C(state=adopted)).
    type: path
  owner_role:
    description: Role that receives adopted tables and runs the adoption script.
    type: str
  migrations_dir:
    description: Directory holding the migration files.
    type: path
    required: true
  db:
    description: Database to migrate.
    type: str
    required: true
extends_documentation_fragment:
  - cruddur.ops.postgres
requirements: [yoyo-migrations]
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
foreign_objects:
  description: With C(state=adopted), the tables, views, materialized views and sequences in
    schema public that I(owner_role) did not own and was given (or would be, in check mode;
    sequences owned by a column follow their table, extension members are left out), as
    C(name) (schema-qualified) and C(type).
  type: list
  elements: dict
  returned: always
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
status:
  description: "C(state=status) and C(repaired): one entry per migration, in order, with id,
    state (applied, pending, changed, missing), applied_at, how and the recorded and current
    sha256."
  type: list
  elements: dict
  returned: always
repaired:
  description: Applied migrations whose recorded checksum was replaced by the file's.
  type: list
  elements: dict
  returned: always
granted:
  description: With I(privileges), what this run granted (or would, in check mode), one entry
    per role and table, with the privileges as a sorted list.
  type: list
  elements: dict
  returned: always
adopted:
  description: Migrations recorded as matched by an adopted database.
  type: list
  elements: str
  returned: always
lint_findings:
  description: What squawk (or a reason-less exemption) found in the pending migrations, one
    entry per finding with file, line, rule, message and help; only check mode returns it
    non-empty (a real run fails on any).
  type: list
  elements: dict
  returned: always
seeded:
  description: With I(seed_file), the counts its last query returned (rows added, or that would
    be in check mode), by column name; empty when the seed did not run (in check mode, while
    migrations are pending).
  type: dict
  returned: always
  sample: {"users_added": 2, "activities_added": 1}
"""

import hashlib
import json
import os
import re
import sys
import threading
import time
import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.cruddur.ops.plugins.module_utils.cruddur_postgres import (
    RECORD_TABLE, connect as pg_connect, postgres_argument_spec, reason, require_driver,
    where as pg_where)

try:
    import psycopg2
    from psycopg2 import errors as pg_errors, sql
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

REPAIR_TABLE = "cruddur_schema_repairs"
TABLE_PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER")
# Key of the session advisory lock every run takes ("cruddur" as a number).
LOCK_KEY = 0x6372756464757200

CREATE_RECORD_TABLE = f"""
CREATE TABLE IF NOT EXISTS public.{RECORD_TABLE} (
  seq          bigserial   PRIMARY KEY,
  migration_id text        NOT NULL UNIQUE,
  sha256       text        NOT NULL,
  applied_at   timestamptz NOT NULL DEFAULT clock_timestamp()
);
ALTER TABLE public.{RECORD_TABLE} ADD COLUMN IF NOT EXISTS how text NOT NULL DEFAULT 'applied'
"""
CREATE_REPAIR_TABLE = f"""
CREATE TABLE IF NOT EXISTS public.{REPAIR_TABLE} (
  seq          bigserial   PRIMARY KEY,
  migration_id text        NOT NULL,
  old_sha256   text        NOT NULL,
  new_sha256   text        NOT NULL,
  repaired_at  timestamptz NOT NULL DEFAULT clock_timestamp()
)
"""


class MigrationError(Exception):
    """A problem with the migrations themselves: the message says which and why."""


class LockWaitError(MigrationError):
    """A transactional migration timed out waiting for a lock and was rolled back: it may be
    tried again."""


class SqlMigration:
    """One migration file, its statements and its optional rollback file."""

    def __init__(self, yoyo_migration):
        self.id = yoyo_migration.id
        self.path = yoyo_migration.path
        with open(self.path, "rb") as handle:
            self.sha256 = hashlib.sha256(handle.read()).hexdigest()
        # Parsed by yoyo when it loaded the migration (to order them); the statements are split
        # again only for a migration that is applied (sqlparse is the slow part of a run).
        self.transactional = getattr(yoyo_migration.module, "__transactional__", True)
        self._statements = None
        self.rollback_path = re.sub(r"\.sql$", ".rollback.sql", self.path)

    @property
    def statements(self):
        if self._statements is None:
            self._statements = read_sql_migration(self.path)[2]
        return self._statements

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


def execute_all(cursor, statements, migration_id, direction, transactional=True):
    for number, statement in enumerate(statements, start=1):
        try:
            cursor.execute(statement)
        except psycopg2.Error as exc:
            detail = (exc.pgerror or str(exc)).strip()
            if isinstance(exc, pg_errors.LockNotAvailable):
                detail = (f"it waited longer than ddl_lock_timeout for a table lock another session "
                          f"holds (a long transaction of the API?): {detail}")
            elif isinstance(exc, pg_errors.QueryCanceled):
                detail = f"it ran longer than statement_timeout: {detail}"
            if transactional:
                error = LockWaitError if isinstance(exc, pg_errors.LockNotAvailable) else MigrationError
                raise error(
                    f"{direction} of migration {migration_id} failed and was rolled back "
                    f"(nothing of it is left): {detail}"
                ) from exc
            raise MigrationError(
                f"{direction} of migration {migration_id} failed part-way: it is non-transactional "
                f"(-- transactional: false), and statement {number} of {len(statements)} failed: "
                f"{detail}. Statements 1 to {number - 1} were applied and stay (an index built "
                f"CONCURRENTLY may be left INVALID); the migration is not recorded as applied. "
                f"Undo them or make the statements re-runnable (IF NOT EXISTS), then run again."
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
                execute_all(cursor, migration.statements, migration.id, "apply", transactional=False)
                cursor.execute(
                    f"INSERT INTO public.{RECORD_TABLE} (migration_id, sha256) VALUES (%s, %s)",
                    (migration.id, migration.sha256),
                )
        finally:
            conn.autocommit = False


def rollback_one(conn, migration):
    """Roll one migration back and drop its record: in one transaction, or, for a migration
    marked -- transactional: false (whose rollback is too, e.g. DROP INDEX CONCURRENTLY),
    statement by statement with the record dropped last."""
    statements = migration.rollback_statements()
    if not migration.transactional:
        conn.autocommit = True
        try:
            with conn.cursor() as cursor:
                execute_all(cursor, statements, migration.id, "rollback", transactional=False)
                cursor.execute(f"DELETE FROM public.{RECORD_TABLE} WHERE migration_id = %s", (migration.id,))
        finally:
            conn.autocommit = False
        return
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


# A session of another user shows its state and times only to a superuser or a member of
# pg_read_all_stats; its pid, application, user and kind (an autovacuum worker, a client) always.
BLOCKERS_OF = """
    SELECT pid, coalesce(application_name, ''), coalesce(usename::text, ''), state,
           xact_start, query_start, backend_type
    FROM pg_stat_activity WHERE pid = ANY(pg_blocking_pids(%s)) ORDER BY pid
"""


class BlockerWatch:
    """While a migration runs, a second session notes every 0.1 s which sessions block the
    migration's session (pg_blocking_pids): once its statement has timed out, nothing blocks it
    any more, so they must be seen while it waits."""

    def __init__(self, open_connection, pid):
        self.open_connection = open_connection
        self.pid = pid
        self.seen = {}
        self._stop = threading.Event()
        self._thread = None

    def _watch(self, conn):
        try:
            with conn.cursor() as cursor:
                while not self._stop.wait(0.1):
                    cursor.execute(BLOCKERS_OF, (self.pid,))
                    for pid, application, user, state, xact_start, query_start, kind in cursor.fetchall():
                        self.seen[pid] = {
                            "pid": pid, "application": application, "user": user, "kind": kind,
                            "state": state if state is not None else "hidden from this login",
                            "xact_start": xact_start.isoformat() if xact_start else None,
                            "query_start": query_start.isoformat() if query_start else None}
                    conn.rollback()
        except psycopg2.Error:
            pass  # the watch only adds detail to an error; the migration does not depend on it
        finally:
            conn.close()

    def __enter__(self):
        if self.open_connection is None:
            return self  # nothing watches (the blockers are not named)
        try:
            conn = self.open_connection()
        except psycopg2.Error:
            return self
        self._thread = threading.Thread(target=self._watch, args=(conn,), daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info):
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def describe(self):
        if not self.seen:
            return "the blocking session was not seen (it ended before it could be named)"
        return "; ".join(
            f"pid {b['pid']} ({b['kind']}, application '{b['application']}', user {b['user'] or '-'}, "
            f"state '{b['state']}', transaction started {b['xact_start'] or '?'}, "
            f"query started {b['query_start'] or '?'})"
            for b in self.seen.values())


def apply_with_retries(conn, migration, retries, watch_connection=None, sleep=time.sleep):
    """apply_one(), tried again with backoff while a transactional migration times out waiting
    for a lock; the last error names the sessions that blocked it."""
    if not migration.transactional:
        # Not retried, nor watched: statements of it may have stayed, and a second session's
        # snapshots would hold up a CREATE INDEX CONCURRENTLY.
        apply_one(conn, migration)
        return
    blockers = {}
    waits = []
    for attempt in range(retries + 1):
        watch = BlockerWatch(watch_connection, conn.info.backend_pid)
        try:
            with watch:
                apply_one(conn, migration)
            return
        except LockWaitError as exc:
            blockers.update(watch.seen)
            if attempt == retries:
                named = BlockerWatch(None, None)
                named.seen = blockers
                tries = f"{attempt + 1} time{'s' if attempt else ''}"
                backoff = f" (backing off {', '.join(f'{w:g}' for w in waits)} s between tries)" if waits else ""
                raise MigrationError(
                    f"{exc}. It timed out waiting for a lock {tries}{backoff}; blocked by: "
                    f"{named.describe()}. End or wait out that session, then run again.") from exc
            wait = min(2 ** attempt, 8)
            waits.append(wait)
            sleep(wait)


# --- lint ----------------------------------------------------------------------------------

EXEMPTION = re.compile(r"^\s*--\s*squawk-ignore(?:-file)?\s+(.*)$", re.M)


def unreasoned_exemptions(migration):
    """A finding for each squawk-ignore comment that does not say why (-- reviewed: <why>)."""
    with open(migration.path, encoding="utf-8") as handle:
        text = handle.read()
    findings = []
    for match in EXEMPTION.finditer(text):
        rules, _sep, why = match.group(1).partition("-- reviewed:")
        if not why.strip():
            findings.append({
                "file": migration.path, "line": text.count("\n", 0, match.start()) + 1,
                "rule": "exemption-without-reason",
                "message": f"the exemption from {rules.strip() or 'a rule'} does not say why",
                "help": "end the comment with '-- reviewed: <why the statement is safe>'"})
    return findings


def squawk_findings(run_command, squawk, config, migrations):
    """squawk's findings in the migrations (one call for the transactional ones, one for the
    rest), plus exemptions without a reason."""
    findings = []
    for in_transaction in (True, False):
        paths = [m.path for m in migrations if m.transactional == in_transaction]
        if not paths:
            continue
        command = [squawk, "--reporter", "json", "--no-error-on-unmatched-pattern",
                   "--assume-in-transaction" if in_transaction else "--no-assume-in-transaction"]
        if config:
            command += ["--config", config]
        rc, out, err = run_command(command + paths)
        try:
            reported = json.loads(out or "[]")
        except ValueError:
            reported = None
        if rc not in (0, 1) or not isinstance(reported, list):
            raise MigrationError(f"squawk could not lint the migrations (exit {rc}): {(err or out).strip()[:2000]}")
        findings += [{"file": f["file"], "line": int(f.get("line", 0)) + 1, "rule": f.get("rule_name"),
                      "message": (f.get("message") or "").rstrip("."), "help": (f.get("help") or "").rstrip(".")}
                     for f in reported]
    for migration in migrations:
        findings += unreasoned_exemptions(migration)
    return sorted(findings, key=lambda f: (f["file"], f["line"]))


def describe_findings(findings):
    return " | ".join(f"{os.path.basename(f['file'])}:{f['line']} {f['rule']}: {f['message']}."
                      + (f" Fix: {f['help']}." if f["help"] else "") for f in findings)


class AdvisoryLock:
    """Session advisory lock on its own connection, held for the whole run."""

    def __init__(self, conn, timeout):
        self.conn = conn
        self.timeout = timeout

    def __enter__(self):
        # Polled, not waited for: a session blocked in pg_advisory_lock() holds a snapshot, and a
        # migration that builds an index CONCURRENTLY waits for every older snapshot, so the run
        # holding the lock and the run waiting for it would deadlock. Between attempts this
        # session holds no transaction at all.
        deadline = time.monotonic() + self.timeout
        with self.conn.cursor() as cursor:
            while True:
                cursor.execute("SELECT pg_try_advisory_lock(%s)", (LOCK_KEY,))
                (taken,) = cursor.fetchone()
                self.conn.commit()
                if taken:
                    return self
                if time.monotonic() >= deadline:
                    raise MigrationError(f"another migration run held the lock for more than {self.timeout}s")
                time.sleep(0.2)

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


def set_timeouts(conn, ddl_lock_timeout, statement_timeout):
    """Session limits for the migrations' statements (0: none)."""
    with conn.cursor() as cursor:
        cursor.execute("SELECT set_config('lock_timeout', %s, false), "
                       "set_config('statement_timeout', %s, false)",
                       (f"{round(ddl_lock_timeout * 1000)}ms", f"{statement_timeout}s"))
    conn.commit()


def run(conn, migrations, state, check_mode, lock_timeout, ddl_lock_timeout=5, statement_timeout=300,
        ddl_lock_retries=0, watch_connection=None, lint=None):
    """Bring the database to `state`; returns the module result (without `changed`).
    lint(migrations) returns findings in the pending ones (None: no lint); watch_connection()
    opens the session that names what blocks a migration."""
    with conn.cursor() as cursor:
        applied = read_applied(cursor)
    conn.rollback()
    verify_applied(migrations, applied)
    to_apply, to_roll_back = plan(migrations, applied, state)
    findings = lint(to_apply) if lint and to_apply else []
    if findings and not check_mode:
        raise MigrationError(
            f"squawk stops these migrations before anything is applied ({len(findings)} "
            f"finding{'s' if len(findings) > 1 else ''}): {describe_findings(findings)} Change the "
            "statement, or exempt it with '-- squawk-ignore <rule> -- reviewed: <why>' on the line "
            "before it.")
    if check_mode or not (to_apply or to_roll_back):
        current = [migration_id for migration_id, _sha in applied]
        return {
            "applied": [m.id for m in to_apply],
            "rolled_back": [m.id for m in to_roll_back],
            "current": current,
            "lint_findings": findings,
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
        set_timeouts(conn, ddl_lock_timeout, statement_timeout)
        for migration in to_apply:
            apply_with_retries(conn, migration, ddl_lock_retries, watch_connection)
        for migration in to_roll_back:
            rollback_one(conn, migration)
        set_timeouts(conn, 0, 0)
        with conn.cursor() as cursor:
            current = [migration_id for migration_id, _sha in read_applied(cursor)]
        conn.rollback()
    return {
        "applied": [m.id for m in to_apply],
        "rolled_back": [m.id for m in to_roll_back],
        "current": current,
        "lint_findings": [],
    }


# --- grants --------------------------------------------------------------------------------

MISSING_PRIVILEGES = """
    SELECT wanted.role, wanted.tbl, array_agg(wanted.priv ORDER BY wanted.priv)
    FROM json_to_recordset(%s::json) AS wanted(role text, tbl text, priv text)
    WHERE NOT has_table_privilege(wanted.role, 'public.' || quote_ident(wanted.tbl), wanted.priv)
    GROUP BY wanted.role, wanted.tbl
    ORDER BY 1, 2
"""


def missing_privileges(conn, privileges):
    """[{role, table, privileges}] of what the roles lack."""
    wanted = json.dumps([{"role": p["role"], "tbl": p["table"], "priv": p["privilege"]} for p in privileges])
    with conn.cursor() as cursor:
        cursor.execute(MISSING_PRIVILEGES, (wanted,))
        missing = [{"role": role, "table": table, "privileges": list(privs)}
                   for role, table, privs in cursor.fetchall()]
    conn.rollback()
    return missing


def grant(conn, privileges, check_mode, lock_timeout):
    """Grant what the roles lack (read first, then again under the lock); what was granted."""
    missing = missing_privileges(conn, privileges) if privileges else []
    if not missing or check_mode:
        return missing
    with AdvisoryLock(conn, lock_timeout):
        missing = missing_privileges(conn, privileges)
        with conn.cursor() as cursor:
            for row in missing:
                # The privileges are among the option's choices; the names are quoted.
                cursor.execute(sql.SQL("GRANT {} ON TABLE public.{} TO {}").format(
                    sql.SQL(", ").join(sql.SQL(priv) for priv in row["privileges"]),
                    sql.Identifier(row["table"]), sql.Identifier(row["role"])))
        conn.commit()
    return missing


# --- seed ----------------------------------------------------------------------------------

def seed(conn, path, check_mode):
    """Run the seed file in one transaction (rolled back in check mode); its last row of counts."""
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    try:
        with conn.cursor() as cursor:
            cursor.execute(text)
            if cursor.description is None:
                raise MigrationError(f"{path} must end with a query that returns the counts of the rows it added")
            names = [column.name for column in cursor.description]
            row = cursor.fetchone() or [0] * len(names)
        counts = {name: int(value or 0) for name, value in zip(names, row)}
    except (psycopg2.Error, ValueError, TypeError) as exc:
        conn.rollback()
        detail = (exc.pgerror or str(exc)).strip() if isinstance(exc, psycopg2.Error) else \
            "its last query must return counts"
        raise MigrationError(f"the seed {path} failed and was rolled back (nothing changed): {detail}") from exc
    except MigrationError:
        conn.rollback()
        raise
    if check_mode:
        conn.rollback()
    else:
        conn.commit()
    return counts


def pending_ids(conn, migrations):
    with conn.cursor() as cursor:
        applied = read_applied(cursor)
    conn.rollback()
    verify_applied(migrations, applied)
    return [m.id for m in plan(migrations, applied, "latest")[0]]


# --- status and repair ---------------------------------------------------------------------

def read_records(cursor):
    """{migration_id: {sha256, applied_at, how}} in the order applied."""
    cursor.execute("SELECT to_regclass(%s) IS NOT NULL", (f"public.{RECORD_TABLE}",))
    if not cursor.fetchone()[0]:
        return {}
    cursor.execute(f"SELECT migration_id, sha256, applied_at, coalesce(to_jsonb(r) ->> 'how', 'applied') "
                   f"FROM public.{RECORD_TABLE} r ORDER BY seq")
    return {row[0]: {"sha256": row[1], "applied_at": row[2].isoformat(), "how": row[3]}
            for row in cursor.fetchall()}


def status_of(migrations, records):
    rows = []
    for migration in migrations:
        record = records.get(migration.id)
        if record is None:
            rows.append({"id": migration.id, "state": "pending", "applied_at": None, "how": None,
                         "recorded_sha256": None, "file_sha256": migration.sha256})
            continue
        rows.append({"id": migration.id,
                     "state": "applied" if record["sha256"] == migration.sha256 else "changed",
                     "applied_at": record["applied_at"], "how": record["how"],
                     "recorded_sha256": record["sha256"], "file_sha256": migration.sha256})
    known = {m.id for m in migrations}
    for migration_id, record in records.items():
        if migration_id not in known:
            rows.append({"id": migration_id, "state": "missing", "applied_at": record["applied_at"],
                         "how": record["how"], "recorded_sha256": record["sha256"], "file_sha256": None})
    return rows


def status(conn, migrations):
    with conn.cursor() as cursor:
        records = read_records(cursor)
    conn.rollback()
    return {"status": status_of(migrations, records), "applied": [], "rolled_back": [],
            "current": list(records), "repaired": [], "adopted": []}


def repair(conn, migrations, check_mode, lock_timeout):
    """Record the current checksum of applied migrations whose file changed; keep both."""
    with conn.cursor() as cursor:
        records = read_records(cursor)
    conn.rollback()
    rows = status_of(migrations, records)
    missing = [row["id"] for row in rows if row["state"] == "missing"]
    if missing:
        raise MigrationError(f"recorded as applied but their files are missing: {', '.join(missing)}; "
                             "restore the files (a repair only accepts edited ones)")
    changed = [row for row in rows if row["state"] == "changed"]
    repaired = [{"id": row["id"], "old_sha256": row["recorded_sha256"], "new_sha256": row["file_sha256"]}
                for row in changed]
    if check_mode or not changed:
        return {"status": rows, "repaired": repaired, "applied": [], "rolled_back": [],
                "current": list(records), "adopted": []}
    with AdvisoryLock(conn, lock_timeout):
        with conn.cursor() as cursor:
            cursor.execute(CREATE_REPAIR_TABLE)
            for row in repaired:
                cursor.execute(f"UPDATE public.{RECORD_TABLE} SET sha256 = %s "
                               f"WHERE migration_id = %s AND sha256 = %s",
                               (row["new_sha256"], row["id"], row["old_sha256"]))
                cursor.execute(f"INSERT INTO public.{REPAIR_TABLE} (migration_id, old_sha256, new_sha256) "
                               f"VALUES (%s, %s, %s)", (row["id"], row["old_sha256"], row["new_sha256"]))
        conn.commit()
        with conn.cursor() as cursor:
            records = read_records(cursor)
        conn.rollback()
    return {"status": status_of(migrations, records), "repaired": repaired, "applied": [],
            "rolled_back": [], "current": list(records), "adopted": []}


# --- adopting a database built by the original schema.sql ----------------------------------

TS = "timestamp without time zone"
# The shapes the adoption scripts know, by file: table -> {column: type}; optional columns apart.
KNOWN_SHAPES = {
    "original_schema.sql": {
        "users": ({"uuid": "uuid", "display_name": "text", "handle": "text",
                   "cognito_user_id": "text", "created_at": TS}, {"email": "text"}),
        "activities": ({"uuid": "uuid", "user_uuid": "uuid", "message": "text",
                        "replies_count": "integer", "reposts_count": "integer",
                        "likes_count": "integer", "reply_to_activity_uuid": "integer",
                        "expires_at": TS, "created_at": TS}, {}),
    },
}

# What the current schema rejects, found before anything changes: (problem, query naming rows).
BLOCKERS = [
    ("users without a handle (NULL or blank)",
     "SELECT uuid::text, coalesce(display_name, '(no name)') FROM public.users "
     "WHERE handle IS NULL OR btrim(handle) = ''"),
    ("users without a display name",
     "SELECT uuid::text, coalesce(handle, '(no handle)') FROM public.users WHERE display_name IS NULL"),
    ("users sharing a handle (it must be unique)",
     "SELECT string_agg(uuid::text, ', ' ORDER BY created_at), handle FROM public.users "
     "WHERE handle IS NOT NULL GROUP BY handle HAVING count(*) > 1"),
    ("users sharing a Cognito user id (other than the seed's placeholder 'MOCK')",
     "SELECT string_agg(uuid::text, ', ' ORDER BY created_at), cognito_user_id FROM public.users "
     "WHERE cognito_user_id IS NOT NULL AND cognito_user_id <> 'MOCK' "
     "GROUP BY cognito_user_id HAVING count(*) > 1"),
    ("activities whose user does not exist",
     "SELECT a.uuid::text, a.user_uuid::text FROM public.activities a "
     "WHERE NOT EXISTS (SELECT 1 FROM public.users u WHERE u.uuid = a.user_uuid)"),
    ("activities replying to an integer id (the current schema refers to activities by uuid)",
     "SELECT uuid::text, reply_to_activity_uuid::text FROM public.activities "
     "WHERE reply_to_activity_uuid IS NOT NULL"),
    ("activities whose message is not 1 to 280 characters",
     "SELECT uuid::text, char_length(message)::text || ' characters' FROM public.activities "
     "WHERE char_length(message) NOT BETWEEN 1 AND 280"),
]


def table_columns(cursor, table):
    cursor.execute("SELECT column_name, data_type FROM information_schema.columns "
                   "WHERE table_schema = 'public' AND table_name = %s", (table,))
    return dict(cursor.fetchall())


def matching_script(found):
    for script, shape in KNOWN_SHAPES.items():
        if set(found) != set(shape):
            continue
        if all(found[t] == {**required, **{c: ty for c, ty in optional.items() if c in found[t]}}
               for t, (required, optional) in shape.items()):
            return script
    return None


def adopt(conn, migrations, adopt_dir, owner_role, check_mode, lock_timeout):
    none = {"applied": [], "rolled_back": [], "current": [], "adopted": [], "status": [],
            "repaired": []}
    with conn.cursor() as cursor:
        records = read_records(cursor)
        cursor.execute("SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                       "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p')")
        tables = sorted(row[0] for row in cursor.fetchall())
        if records or not tables:
            conn.rollback()
            return dict(none, current=list(records))
        found = {t: table_columns(cursor, t) for t in tables}
        script = matching_script(found)
        if script is None:
            raise MigrationError(
                "the database has tables but no migration record, and their shape is none that "
                f"can be adopted ({'; '.join(f'{t}: ' + ', '.join(sorted(c)) for t, c in found.items())}); "
                "nothing was changed")
        cursor.execute("SELECT count(*) FROM pg_extension WHERE extname = 'uuid-ossp'")
        if not cursor.fetchone()[0]:
            raise MigrationError("the adopted schema needs the uuid-ossp extension, which is not "
                                 "installed; nothing was changed")
        problems = []
        for problem, query in BLOCKERS:
            cursor.execute(query + " LIMIT 20")
            rows = cursor.fetchall()
            if rows:
                problems.append(f"{problem}: " + "; ".join(f"{a} ({b})" for a, b in rows))
        if problems:
            raise MigrationError(
                "the database was built by the original schema.sql, but these rows cannot be "
                "brought to the current schema without losing or inventing data; fix them and run "
                "again (nothing was changed): " + " | ".join(problems))
    conn.rollback()

    path = os.path.join(adopt_dir, script)
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    header = re.search(r"^-- adopts:(.*)$", text, re.M)
    if not header:
        raise MigrationError(f"{path} lacks its '-- adopts:' line")
    by_id = {m.id: m for m in migrations}
    baseline = header.group(1).split()
    unknown = [m for m in baseline if m not in by_id]
    if unknown:
        raise MigrationError(f"{path} adopts unknown migrations: {', '.join(unknown)}")
    if check_mode:
        return dict(none, adopted=baseline)
    with AdvisoryLock(conn, lock_timeout):
        try:
            with conn.cursor() as cursor:
                # The database too: in PostgreSQL 15 only its owner may create in schema public.
                cursor.execute(sql.SQL("ALTER DATABASE {} OWNER TO {}").format(
                    sql.Identifier(conn.info.dbname), sql.Identifier(owner_role)))
                for table in tables:
                    cursor.execute(sql.SQL("ALTER TABLE public.{} OWNER TO {}").format(
                        sql.Identifier(table), sql.Identifier(owner_role)))
                cursor.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(owner_role)))
                cursor.execute(text)
                cursor.execute(CREATE_RECORD_TABLE)
                for migration_id in baseline:
                    cursor.execute(f"INSERT INTO public.{RECORD_TABLE} (migration_id, sha256, how) "
                                   "VALUES (%s, %s, 'adopted')", (migration_id, by_id[migration_id].sha256))
            conn.commit()
        except psycopg2.Error as exc:
            conn.rollback()
            raise MigrationError(f"adoption failed and was rolled back (nothing changed): "
                                 f"{(exc.pgerror or str(exc)).strip()}") from exc
    return dict(none, adopted=baseline, current=baseline)


# What schema public holds that the owner role does not own: a sequence owned by a column follows
# its table, and extension members stay as they are.
FOREIGN_OBJECTS = """
    SELECT n.nspname, c.relname,
           CASE c.relkind WHEN 'S' THEN 'sequence' WHEN 'v' THEN 'view'
                          WHEN 'm' THEN 'matview' ELSE 'table' END
    FROM pg_class c
    JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm', 'S')
      AND pg_get_userbyid(c.relowner) <> %(owner)s
      AND NOT EXISTS (SELECT 1 FROM pg_depend d
                      WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                        AND d.deptype IN ('a', 'i', 'e'))
    ORDER BY 1, 2
"""
ALTER_OWNER = {"table": "TABLE", "sequence": "SEQUENCE", "view": "VIEW", "matview": "MATERIALIZED VIEW"}


def give_foreign_objects(conn, owner_role, check_mode):
    """Give owner_role what it does not own in schema public (read again, and given, in one
    transaction); what it was given, or would be in check mode."""
    with conn.cursor() as cursor:
        cursor.execute(FOREIGN_OBJECTS, {"owner": owner_role})
        found = cursor.fetchall()
        if found and not check_mode:
            try:
                for schema, name, kind in found:
                    cursor.execute(sql.SQL("ALTER {} {} OWNER TO {}").format(
                        sql.SQL(ALTER_OWNER[kind]), sql.Identifier(schema, name), sql.Identifier(owner_role)))
            except psycopg2.Error as exc:
                conn.rollback()
                raise MigrationError(f"giving {schema}.{name} to {owner_role} failed and nothing was given: "
                                     f"{(exc.pgerror or str(exc)).strip()}") from exc
            conn.commit()
        else:
            conn.rollback()
    return [{"name": f"{schema}.{name}", "type": kind} for schema, name, kind in found]


def connect(params):
    return pg_connect(params, "cruddur-migrations")


def main():
    module = AnsibleModule(
        argument_spec=dict(
            state=dict(type="str", default="latest",
                       choices=["latest", "rolled_back", "status", "repaired", "adopted", "seeded"]),
            migrations_dir=dict(type="path", required=True),
            lock_timeout=dict(type="int", default=120),
            ddl_lock_timeout=dict(type="float", default=5),
            ddl_lock_retries=dict(type="int", default=3),
            lint=dict(type="bool", default=True),
            squawk_config=dict(type="path"),
            statement_timeout=dict(type="int", default=300),
            seed_file=dict(type="path"),
            adopt_dir=dict(type="path"),
            owner_role=dict(type="str"),
            privileges=dict(type="list", elements="dict", default=[], options=dict(
                role=dict(type="str", required=True),
                table=dict(type="str", required=True),
                privilege=dict(type="str", required=True, choices=list(TABLE_PRIVILEGES)),
            )),
            **postgres_argument_spec(),
        ),
        supports_check_mode=True,
        required_if=[("state", "adopted", ["adopt_dir", "owner_role"]), ("state", "seeded", ["seed_file"])],
    )
    require_driver(module)
    if read_migrations is None:
        module.fail_json(msg=missing_required_lib("yoyo-migrations"), exception=YOYO_IMPORT_ERROR)

    params = module.params

    def migrations_or_fail(conn=None):
        try:
            return load_migrations(params["migrations_dir"])
        except MigrationError as exc:
            if conn is not None:
                conn.close()
            module.fail_json(msg=str(exc))

    # The adoption step reads them only in a database that exists (db-setup's, just dropped, does
    # not): reading and ordering them is most of a run that finds nothing to do.
    migrations = None if params["state"] == "adopted" else migrations_or_fail()
    where = pg_where(params)
    lint = None
    if params["lint"] and params["state"] == "latest":
        def lint(pending):
            squawk = module.get_bin_path("squawk", opt_dirs=[os.path.dirname(sys.executable)])
            if not squawk:
                raise MigrationError(
                    "squawk (squawk-cli, in requirements.txt) is needed to lint the pending "
                    "migrations and is not installed; install it, or turn the lint off "
                    "(lint: false, cruddur_db_lint_migrations); nothing was applied")
            return squawk_findings(module.run_command, squawk, params["squawk_config"], pending)
    try:
        conn = connect(params)
    except psycopg2.OperationalError as exc:
        if params["state"] in ("adopted", "status") and "does not exist" in str(exc):
            # Nothing to adopt in a database still to be created; nothing applied in it yet.
            pending = [{"id": m.id, "state": "pending"} for m in migrations or []]
            module.exit_json(changed=False, applied=[], rolled_back=[], current=[], repaired=[], adopted=[],
                             granted=[], foreign_objects=[], seeded={}, lint_findings=[],
                             status=pending if params["state"] == "status" else [])
        if module.check_mode and "does not exist" in str(exc):
            # The database itself is still to be created (by an earlier task, simulated in
            # --check): everything would be applied.
            would = [m.id for m in migrations] if params["state"] == "latest" else []
            try:
                findings = lint(migrations) if lint and would else []
            except MigrationError as lint_error:
                module.fail_json(msg=f"{where}: {lint_error}")
            module.exit_json(changed=bool(would), applied=would, rolled_back=[], current=[],
                             status=[], repaired=[], adopted=[], granted=[], foreign_objects=[], seeded={},
                             lint_findings=findings)
        module.fail_json(msg=f"cannot connect to {where}: {reason(exc)}")

    state = params["state"]
    if migrations is None:
        migrations = migrations_or_fail(conn)
    try:
        if state == "status":
            result = status(conn, migrations)
        elif state == "repaired":
            result = repair(conn, migrations, module.check_mode, params["lock_timeout"])
        elif state == "adopted":
            result = adopt(conn, migrations, params["adopt_dir"], params["owner_role"],
                           module.check_mode, params["lock_timeout"])
            result["foreign_objects"] = give_foreign_objects(conn, params["owner_role"], module.check_mode)
        elif state == "seeded":
            pending = pending_ids(conn, migrations)
            if pending:
                raise MigrationError(f"migrations {', '.join(pending)} are pending: apply them first "
                                     "(db-migrate); nothing was seeded")
            result = dict(applied=[], rolled_back=[], current=[m.id for m in migrations], status=[],
                          repaired=[], adopted=[], granted=[],
                          seeded=seed(conn, params["seed_file"], module.check_mode))
        else:
            result = dict(run(conn, migrations, state, module.check_mode, params["lock_timeout"],
                              params["ddl_lock_timeout"], params["statement_timeout"],
                              ddl_lock_retries=params["ddl_lock_retries"],
                              watch_connection=lambda: pg_connect(params, "cruddur-migrations-watch"),
                              lint=lint),
                          status=[], repaired=[], adopted=[], granted=[])
            # In --check, the tables that pending migrations would create do not exist yet.
            if state == "latest" and not (module.check_mode and result["applied"]):
                result["granted"] = grant(conn, params["privileges"], module.check_mode, params["lock_timeout"])
                if params["seed_file"]:
                    result["seeded"] = seed(conn, params["seed_file"], module.check_mode)
    except MigrationError as exc:
        module.fail_json(msg=f"{where}: {exc}")
    except psycopg2.Error as exc:
        module.fail_json(msg=f"{where}: {reason(exc)}")
    finally:
        conn.close()

    changed = bool(result["applied"] or result["rolled_back"] or result["repaired"] or result["adopted"]
                   or result.get("granted") or result.get("foreign_objects")
                   or any(result.get("seeded", {}).values()))
    module.exit_json(changed=changed, **{"foreign_objects": [], "granted": [], "seeded": {}, "lint_findings": [],
                                         **result})


if __name__ == "__main__":
    main()
