#!/usr/bin/python
# Copyright: cruddur-ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What a destructive chore is about to touch: is the server this machine's, and what is in it."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: cruddur_db_target
author: cruddur-ops contributors (@cruddur-ops)
short_description: Prove whether a PostgreSQL server is local, and count what a database holds
description:
  - Read-only. Answers the two questions a destructive chore (drop, setup, rollback, restore)
    must ask before it touches anything - is this server on this machine, and what would be
    lost.
  - "Local is proven, not declared: the host must be a loopback address (every address it
    resolves to) or a socket directory of this machine, and the server process that answers
    this very session must be running here: the session's backend PID (C(pg_backend_pid())) is
    looked up in this machine's C(/proc); its command line names the session's user and
    database, and its parent is a postgres server process. A tunnel on loopback to another
    machine's server fails that check, because the backend runs on the other machine."
  - Connects to I(maintenance_db) (the target database may not exist), then, when the target
    exists, to it to count the rows of its tables (exactly, in one snapshot) and read the
    applied migrations.
  - "With I(action), it is also the guard of the chore that names it: it fails, having changed
    nothing, unless the target is local (proven here, and labelled C(local) by the inventory's
    I(environment): a prod inventory is never treated as local, even when its endpoint is on
    this machine), or I(confirm) equals the database's name, or the server answered and the
    database does not exist. The refusal names what is at stake and how to go ahead."
options:
  db:
    description: The database a chore would change or destroy.
    type: str
    required: true
  maintenance_db:
    description: Database to connect to for the server checks.
    type: str
    default: postgres
  environment:
    description: The inventory's label of the database (C(local), C(prod), C(sandbox)); only a
      C(local) one is treated as local, and only when proven.
    type: str
    default: local
  action:
    description: What the guarded chore would do to the database, in words (C(drop),
      C(roll back the last migration of)); given, the module refuses as described above.
    type: str
  confirm:
    description: The confirmation given; the database's name lets a chore go ahead on a target
      that is not local.
    type: str
    default: ""
  backup_dir:
    description: Where the guarded chore backs up a target that is not local (named in the
      refusal).
    type: str
    default: ""
extends_documentation_fragment:
  - cruddur.ops.postgres
notes:
  - A server that cannot be reached is reported (C(reachable=false)), not failed on, so the
    caller decides; it is never proven local.
"""

EXAMPLES = r"""
- name: What would be dropped
  cruddur_db_target:
    db: cruddur
  register: target
"""

RETURN = r"""
local:
  description: Whether the server was proven to run on this machine.
  type: bool
  returned: always
why:
  description: How locality was proven, or why it was not.
  type: str
  returned: always
reachable:
  description: Whether the server accepted the administrative login.
  type: bool
  returned: always
exists:
  description: Whether the database exists.
  type: bool
  returned: always
tables:
  description: Row count of each table in the public schema (one snapshot).
  type: dict
  returned: always
migrations:
  description: Migrations recorded as applied, in order.
  type: list
  elements: str
  returned: always
summary:
  description: One line naming what the database holds.
  type: str
  returned: always
local_target:
  description: What the guard treats as local - proven here (I(local)) and labelled C(local)
    by the inventory.
  type: bool
  returned: always
local_target_why:
  description: Why the target is or is not treated as local (I(why), or the inventory's label).
  type: str
  returned: always
msg:
  description: With I(action), the verdict - a local or a confirmed target, or the refusal.
  type: str
  returned: when action is given
"""

import ipaddress
import os
import socket
import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.cruddur.ops.plugins.module_utils.cruddur_postgres import (
    applied_migrations, connect as pg_connect, postgres_argument_spec, reason, require_driver,
    table_row_counts, where as pg_where)

try:
    import psycopg2
except ImportError:
    psycopg2 = None  # require_driver() reports it


def host_is_loopback(host: str, port: int) -> tuple[bool, str]:
    """Whether every address `host` names is a loopback address or a socket of this machine."""
    if host.startswith("/"):
        path = os.path.join(host, f".s.PGSQL.{port}")
        if os.path.exists(path):
            return True, f"socket {path} exists on this machine"
        return False, f"socket {path} does not exist on this machine"
    given = [address.strip() for address in os.environ.get("PGHOSTADDR", "").split(",") if address.strip()]
    if given:  # libpq connects to these without looking the name up
        addresses = sorted(set(given))
        host = f"{host} (PGHOSTADDR)"
    else:
        try:
            infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
        except socket.gaierror as exc:
            return False, f"{host} does not resolve ({exc.strerror})"
        addresses = sorted({info[4][0] for info in infos})
    others = [a for a in addresses if not ipaddress.ip_address(a.split("%")[0]).is_loopback]
    if others:
        return False, f"{host} resolves to {', '.join(others)}, which is not loopback"
    return True, f"{host} resolves only to loopback ({', '.join(addresses)})"


def read_proc(pid: int, name: str) -> bytes | None:
    try:
        with open(f"/proc/{pid}/{name}", "rb") as handle:
            return handle.read()
    except OSError:
        return None


def backend_is_here(backend_pid: int, user: str, db: str) -> tuple[bool, str]:
    """Whether the process serving this session runs on this machine (see DOCUMENTATION)."""
    cmdline = read_proc(backend_pid, "cmdline")
    # PostgreSQL rewrites its process title in place (update_process_title): a read at that
    # moment may see an empty command line. Read again before judging.
    for _attempt in range(10):
        if cmdline != b"":
            break
        time.sleep(0.02)
        cmdline = read_proc(backend_pid, "cmdline")
    status = read_proc(backend_pid, "status")
    if cmdline is None or status is None:
        return False, (f"the server's session process (PID {backend_pid}) is not on this machine: "
                       "the port leads elsewhere (a tunnel or a forwarded port)")
    title = cmdline.replace(b"\0", b" ").decode("utf-8", "replace")
    if not (title.startswith("postgres:") and f" {user} " in f" {title} "
            and f" {db} " in f" {title} "):
        return False, (f"PID {backend_pid} on this machine is not this session's server process "
                       f"({title.strip()[:60]!r}): the port leads elsewhere")
    ppid = next((int(line.split()[1]) for line in status.decode().splitlines()
                 if line.startswith("PPid:")), 0)
    parent = (read_proc(ppid, "cmdline") or b"").split(b"\0")[0]
    if not os.path.basename(parent.decode("utf-8", "replace")).startswith("postgres"):
        return False, f"PID {backend_pid}'s parent ({ppid}) is not a PostgreSQL server"
    return True, f"the session's server process (PID {backend_pid}, parent {ppid}) runs here"


def inspect_database(params) -> tuple[dict, list]:
    """Row counts of the public tables (one snapshot) and the applied migrations."""
    conn = pg_connect(params, "cruddur-target")
    try:
        conn.set_session(readonly=True, isolation_level="REPEATABLE READ")
        with conn.cursor() as cursor:
            tables = table_row_counts(cursor)
            migrations = applied_migrations(cursor, tables)
        conn.rollback()
        return tables, migrations
    finally:
        conn.close()


def summarise(db: str, exists: bool, tables: dict, migrations: list) -> str:
    if not exists:
        return f"database {db} does not exist"
    if not tables:
        return f"database {db} (no tables)"
    counts = ", ".join(f"{name}: {rows} row{'' if rows == 1 else 's'}"
                       for name, rows in tables.items() if not name.startswith("cruddur_schema_"))
    state = f"; migrations applied: {', '.join(migrations)}" if migrations else ""
    return f"database {db} ({counts}{state})"


def verdict(params: dict, result: dict) -> tuple[bool, str]:
    """The guard's answer (with `action`): whether the chore may go ahead, and why in one line."""
    db, target = params["db"], result["summary"]
    if result["local_target"] or params["confirm"] == db or (result["reachable"] and not result["exists"]):
        kind = "Local target" if result["local_target"] else "Confirmed target"
        return True, f"{kind}: {target} ({result['local_target_why']})"
    return False, (f"Refusing to {params['action']} {target} at {params['login_host']}:{params['login_port']}: "
                   f"it is not proven to be this machine's server ({result['local_target_why']}). Nothing "
                   f"was changed. To go ahead, run again with -e cruddur_db_confirm={db} (a verified "
                   f"backup is taken first, into {params['backup_dir']}).")


def finish(module, result: dict):
    """Exit with the result, judged by the guard when the task names an action."""
    params = module.params
    result["local_target"] = result["local"] and params["environment"] == "local"
    result["local_target_why"] = (result["why"] if params["environment"] == "local" else
                                  f"the {params['environment']} inventory is never treated as local")
    if params["action"]:
        allowed, result["msg"] = verdict(params, result)
        if not allowed:
            module.fail_json(**result)
    module.exit_json(**result)


def main():
    spec = postgres_argument_spec()
    spec.update(maintenance_db=dict(type="str", default="postgres"),
                environment=dict(type="str", default="local"), action=dict(type="str"),
                confirm=dict(type="str", default=""), backup_dir=dict(type="str", default=""))
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    require_driver(module)
    params = module.params
    result = dict(changed=False, local=False, reachable=False, exists=False, tables={},
                  migrations=[], why="")

    loopback, why = host_is_loopback(params["login_host"], params["login_port"])
    admin = dict(params, db=params["maintenance_db"])
    try:
        conn = pg_connect(admin, "cruddur-target")
    except psycopg2.OperationalError as exc:
        result["why"] = why if not loopback else f"{why}, but the server did not answer"
        result["error"] = f"cannot connect to {pg_where(admin)}: {reason(exc)}"
        result["summary"] = (f"database {params['db']} on {params['login_host']}:"
                             f"{params['login_port']} (server not reachable)")
        finish(module, result)
    try:
        with conn.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid(), current_user, "
                           "EXISTS (SELECT 1 FROM pg_database WHERE datname = %s)",
                           (params["db"],))
            backend_pid, user, exists = cursor.fetchone()
        conn.rollback()
        # While the session is open: once it is closed its server process exits, and a read of
        # /proc then finds it gone (or a zombie with an empty command line).
        if loopback:
            here, how = backend_is_here(backend_pid, user, params["maintenance_db"])
    except psycopg2.Error as exc:
        module.fail_json(msg=f"{pg_where(admin)}: {reason(exc)}")
    finally:
        conn.close()
    result.update(reachable=True, exists=exists)
    if loopback:
        result["local"] = here
        result["why"] = f"{why}, and {how}" if here else f"{why}, but {how}"
    else:
        result["why"] = why

    if exists:
        try:
            result["tables"], result["migrations"] = inspect_database(params)
        except psycopg2.Error as exc:
            module.fail_json(msg=f"{pg_where(params)}: {reason(exc)}")
    result["summary"] = summarise(params["db"], exists, result["tables"], result["migrations"])
    finish(module, result)


if __name__ == "__main__":
    main()
