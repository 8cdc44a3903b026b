#!/usr/bin/python
# Copyright: cruddur-ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Verified pg_dump backups of the Cruddur database, and their restore into a new database."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: cruddur_db_backup
author: cruddur-ops contributors (@cruddur-ops)
short_description: Take a verified custom-format pg_dump, or restore one into an empty database
description:
  - "C(state=dumped): C(pg_dump --format=custom) of I(db) into I(backup_dir) as
    C(<db>-<UTC timestamp>.dump), mode 0600, with C(.sha256) (sha256sum format) and C(.json)
    (a manifest) beside it. The row counts in the manifest are taken in the very snapshot the dump
    is taken from (C(pg_export_snapshot), C(pg_dump --snapshot)), so a restore can be verified
    exactly while the application keeps writing. The dump is checked with C(pg_restore --list)
    (every table's data must be in it) before the module reports success; a dump that fails the
    check is removed. Then only the last I(keep) backups of I(db) are kept."
  - "A backup appears under its final name only once complete: the dump, its C(.sha256) and its
    manifest are written as C(.partial-<pid>) files, the two small files are renamed first and the
    dump last, so a run killed at any point leaves nothing that is listed, restored or counted by
    retention. The next backup removes what such a run left (partial files of processes that are
    gone, and a C(.sha256) or C(.json) without its dump)."
  - "C(state=restored): checks I(file) against its C(.sha256), restores it with
    C(pg_restore --jobs --exit-on-error) into I(db), which must exist and be new and empty (the
    caller drops it unless it is verified), runs C(ANALYZE) (a restore leaves no statistics),
    and verifies the result: the migrations table is there and every table has the row count
    the manifest recorded. A restore that fails verification fails the module; the caller drops the
    new database."
  - The password goes to the tools through their environment, never on a command line.
  - Check mode runs nothing and says what would be done.
options:
  state:
    description: C(dumped) takes a backup; C(restored) restores one into I(db).
    type: str
    choices: [dumped, restored]
    default: dumped
  db:
    description: Database to dump, or the empty database to restore into.
    type: str
    required: true
  backup_dir:
    description: Directory of the backups (created mode 0700).
    type: path
  keep:
    description: How many backups of I(db) to keep (0 keeps all).
    type: int
    default: 7
  file:
    description: The dump to restore (C(state=restored)).
    type: path
  name:
    description: Database name the backup files are named after (default I(db)).
    type: str
  jobs:
    description: Parallel jobs of C(pg_restore) (C(state=restored)); the default is the number
      of CPUs, at most 4.
    type: int
extends_documentation_fragment:
  - cruddur.ops.postgres
requirements: [pg_dump and pg_restore of the server's major version or newer]
"""

EXAMPLES = r"""
- name: Back up before dropping
  cruddur_db_backup:
    db: cruddur
    backup_dir: /srv/backups
    keep: 7
"""

RETURN = r"""
file:
  description: The backup taken (or that would be), or the one restored.
  type: str
  returned: always
sha256:
  description: SHA-256 of the dump.
  type: str
  returned: when a dump was taken or restored
tables:
  description: Row count of each table in the snapshot dumped (or restored).
  type: dict
  returned: when a dump was taken or restored
removed:
  description: Older backups removed by the retention rule.
  type: list
  elements: str
  returned: always
cleaned:
  description: What interrupted backups of I(name) had left in I(backup_dir) and this run removed
    (a C(.partial-<pid>) file whose process is gone, a C(.sha256) or C(.json) without its dump),
    or would remove in check mode.
  type: list
  elements: str
  returned: always
"""

import datetime
import glob
import hashlib
import json
import os
import re
import threading

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.cruddur.ops.plugins.module_utils.cruddur_postgres import (
    RECORD_TABLE, applied_migrations, connect as pg_connect, postgres_argument_spec, reason,
    require_driver, table_row_counts, where as pg_where)

try:
    import psycopg2
except ImportError:
    psycopg2 = None  # require_driver() reports it


class BackupError(Exception):
    """What went wrong, in words the user can act on."""


def tool_environment(params: dict) -> dict:
    env = {"PGPASSWORD": params["login_password"] or "", "PGSSLMODE": params["ssl_mode"],
           "PGCONNECT_TIMEOUT": str(params["connect_timeout"]), "PGAPPNAME": "cruddur-backup"}
    if params.get("ca_cert"):
        env["PGSSLROOTCERT"] = params["ca_cert"]
    return env


def connection_args(params: dict, db: str) -> list:
    return ["--host", params["login_host"], "--port", str(params["login_port"]),
            "--username", params["login_user"], "--dbname", db, "--no-password"]


def sha256_of(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def run_tool(module, argv, env, what):
    rc, out, err = module.run_command(argv, environ_update=env)
    if rc != 0:
        raise BackupError(f"{what} failed (exit {rc}): {(err or out).strip()}")
    return out


def listed_tables(module, pg_restore, path) -> set:
    """Tables whose data the dump holds, from pg_restore --list (which also proves it reads)."""
    out = run_tool(module, [pg_restore, "--list", path], {}, f"pg_restore --list {path}")
    return {m.group(1) for m in re.finditer(r"TABLE DATA public (\S+) ", out)}


def backups_of(directory: str, name: str) -> list:
    pattern = os.path.join(glob.escape(directory), f"{glob.escape(name)}-*.dump")
    found = [p for p in glob.glob(pattern)
             if re.fullmatch(re.escape(name) + r"-\d{8}T\d{6}Z\.dump", os.path.basename(p))]
    return sorted(found)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def leftovers(directory: str, name: str) -> list:
    """What interrupted backups of `name` left: partial files whose process is gone, and
    sidecars (.sha256, .json) of a dump that never got its final name."""
    if not os.path.isdir(directory):
        return []
    stem = re.escape(name) + r"-\d{8}T\d{6}Z\.dump"
    found = []
    for entry in sorted(os.listdir(directory)):
        partial = re.fullmatch(f"{stem}(?:\\.sha256|\\.json)?\\.partial-(\\d+)", entry)
        if partial and not alive(int(partial.group(1))):
            found.append(os.path.join(directory, entry))
            continue
        sidecar = re.fullmatch(f"({stem})\\.(?:sha256|json)", entry)
        if sidecar:
            dump_path = os.path.join(directory, sidecar.group(1))
            writing = any(re.fullmatch(re.escape(sidecar.group(1)) + r"\.partial-(\d+)", other)
                          and alive(int(other.rsplit("-", 1)[1])) for other in os.listdir(directory))
            if not os.path.exists(dump_path) and not writing:
                found.append(os.path.join(directory, entry))
    return found


def write_atomically(path: str, text: str) -> None:
    """Write text to path through a .partial-<pid> file renamed into place (mode 0600)."""
    partial = f"{path}.partial-{os.getpid()}"
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(partial, path)


def retain(directory: str, name: str, keep: int, check_mode: bool, adding: int = 0) -> list:
    """Remove (or, in check mode, name) all but the newest `keep` backups, counting `adding`
    backups about to be taken."""
    if keep <= 0:
        return []
    found = backups_of(directory, name)
    old = found[:max(0, len(found) + adding - keep)]
    if not check_mode:
        for path in old:
            for victim in (path, path + ".sha256", path + ".json"):
                if os.path.exists(victim):
                    os.unlink(victim)
    return old


def dump(module, params) -> dict:
    directory, name = params["backup_dir"], params["name"] or params["db"]
    if not directory:
        raise BackupError("backup_dir is required to take a backup")
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    path = os.path.join(directory, f"{name}-{stamp}.dump")
    cleaned = leftovers(directory, name)
    if module.check_mode:
        would_remove = retain(directory, name, params["keep"], True, adding=1) if os.path.isdir(directory) else []
        return dict(changed=True, file=path, removed=would_remove, cleaned=cleaned,
                    msg=f"would dump {pg_where(params)} to {path}")
    for victim in cleaned:
        if os.path.exists(victim):
            os.unlink(victim)
    pg_dump = module.get_bin_path("pg_dump", required=True)
    pg_restore = module.get_bin_path("pg_restore", required=True)
    os.makedirs(directory, mode=0o700, exist_ok=True)

    conn = pg_connect(params, "cruddur-backup")
    try:
        conn.set_session(isolation_level="REPEATABLE READ", readonly=True)
        with conn.cursor() as cursor:
            cursor.execute("SELECT pg_export_snapshot(), current_setting('server_version')")
            snapshot, server_version = cursor.fetchone()
            partial = f"{path}.partial-{os.getpid()}"
            old_umask = os.umask(0o077)
            try:
                # pg_dump reads the snapshot while this session counts the rows in it (a thread):
                # the data is read twice, but at the same time, so the counts add little.
                counted = {}

                def count():
                    try:
                        counted["tables"] = table_row_counts(cursor)
                        counted["migrations"] = applied_migrations(cursor, counted["tables"])
                    except psycopg2.Error as exc:
                        counted["error"] = exc
                counter = threading.Thread(target=count)
                counter.start()
                try:
                    run_tool(module, [pg_dump, "--format=custom", f"--snapshot={snapshot}",
                                      f"--file={partial}"] + connection_args(params, params["db"]),
                             tool_environment(params), f"pg_dump of {pg_where(params)}")
                finally:
                    counter.join()
                if "error" in counted:
                    raise counted["error"]
                tables, migrations = counted["tables"], counted["migrations"]
            except BackupError:
                if os.path.exists(partial):
                    os.unlink(partial)
                raise
            finally:
                os.umask(old_umask)
        conn.rollback()
    finally:
        conn.close()

    try:
        missing = set(tables) - listed_tables(module, pg_restore, partial)
        if missing:
            raise BackupError(f"the dump lacks the data of {', '.join(sorted(missing))}")
    except BackupError:
        os.unlink(partial)
        raise
    os.chmod(partial, 0o600)
    digest = sha256_of(partial)
    manifest = dict(database=params["db"], taken_at=stamp, server_version=server_version,
                    host=params["login_host"], port=params["login_port"], tables=tables,
                    migrations=migrations, sha256=digest, format="custom")
    # The sidecars first, the dump last: only a complete backup has a name that is listed.
    write_atomically(path + ".sha256", f"{digest}  {os.path.basename(path)}\n")
    write_atomically(path + ".json", json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    with open(partial, "rb") as handle:
        os.fsync(handle.fileno())
    os.rename(partial, path)
    removed = retain(directory, name, params["keep"], False)
    return dict(changed=True, file=path, sha256=digest, tables=tables, migrations=migrations,
                removed=removed, cleaned=cleaned, size=os.path.getsize(path))


def read_manifest(path: str) -> dict:
    for suffix in (".sha256", ".json"):
        if not os.path.exists(path + suffix):
            raise BackupError(f"{path}{suffix} is missing: cannot verify the backup")
    with open(path + ".sha256", encoding="utf-8") as handle:
        expected = handle.read().split()[0]
    actual = sha256_of(path)
    if actual != expected:
        raise BackupError(f"{path} does not match its .sha256 (expected {expected}, found "
                          f"{actual}): the file is damaged or was changed")
    with open(path + ".json", encoding="utf-8") as handle:
        manifest = json.load(handle)
    manifest["sha256"] = actual
    return manifest


def restore(module, params) -> dict:
    path = params["file"]
    if not path or not os.path.isfile(path):
        raise BackupError(f"backup file {path} does not exist")
    manifest = read_manifest(path)
    pg_restore = module.get_bin_path("pg_restore", required=True)
    listed_tables(module, pg_restore, path)
    if module.check_mode:
        return dict(changed=True, file=path, sha256=manifest["sha256"], tables=manifest["tables"],
                    removed=[], msg=f"would restore {path} into {pg_where(params)}")
    conn = pg_connect(params, "cruddur-restore")
    try:
        with conn.cursor() as cursor:
            if table_row_counts(cursor):
                raise BackupError(f"{pg_where(params)} is not empty: restore only into a new database")
        conn.rollback()
        # Parallel jobs, not one transaction: the database is new, and the caller drops it unless
        # it is verified and swapped in.
        jobs = params["jobs"] or min(os.cpu_count() or 1, 4)
        run_tool(module, [pg_restore, f"--jobs={jobs}", "--exit-on-error", "--no-owner",
                          path] + connection_args(params, params["db"]),
                 tool_environment(params), f"pg_restore of {path} into {pg_where(params)}")
        conn.autocommit = True
        with conn.cursor() as cursor:
            # pg_restore leaves no statistics: the planner would guess until autovacuum came by.
            cursor.execute("ANALYZE")
            tables = table_row_counts(cursor)
    finally:
        conn.close()
    if RECORD_TABLE not in tables and manifest.get("migrations"):
        raise BackupError(f"the restored database has no {RECORD_TABLE} table")
    if tables != manifest["tables"]:
        raise BackupError(f"row counts after the restore {tables} differ from the backup's "
                          f"{manifest['tables']}")
    return dict(changed=True, file=path, sha256=manifest["sha256"], tables=tables, removed=[],
                migrations=manifest.get("migrations", []))


def main():
    spec = postgres_argument_spec()
    spec.update(state=dict(type="str", default="dumped", choices=["dumped", "restored"]),
                backup_dir=dict(type="path"), keep=dict(type="int", default=7),
                file=dict(type="path"), name=dict(type="str"),
                jobs=dict(type="int"))
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True,
                           required_if=[("state", "restored", ["file"])])
    require_driver(module)
    try:
        result = dump(module, module.params) if module.params["state"] == "dumped" \
            else restore(module, module.params)
    except BackupError as exc:
        module.fail_json(msg=str(exc))
    except psycopg2.Error as exc:
        module.fail_json(msg=f"{pg_where(module.params)}: {reason(exc)}")
    module.exit_json(**result)


if __name__ == "__main__":
    main()
