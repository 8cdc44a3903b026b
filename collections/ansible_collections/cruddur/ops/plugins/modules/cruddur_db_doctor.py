#!/usr/bin/python
# Copyright: cruddur-ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Walk every link from this machine to the Cruddur database and say which one is broken."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: cruddur_db_doctor
author: cruddur-ops contributors (@cruddur-ops)
short_description: Diagnose the path from this machine to the Cruddur database, link by link
description:
  - Walks, in order, the links a connection needs and reports each one as C(ok), C(fail) (with
    the cause and the command that fixes it) or C(skip) (with why) - the endpoint resolves, TCP
    connects, TLS is offered and (for C(verify-ca)/C(verify-full)) the certificate verifies
    against the CA bundle, the administrative login is accepted (and where its secret came from), the
    database exists, its migrations are current, and each of the owner and application roles
    logs in with its kept password.
  - A link that cannot be checked because an earlier one failed is reported C(skip), naming it.
  - Changes nothing; runs the same in check mode. Never fails by itself on a broken link - the
    caller decides (the playbook fails after printing every line).
options:
  connection:
    description: The inventory's C(cruddur_db_connection) (host, port, name, sslmode, sslrootcert).
    type: dict
    required: true
  admin_user:
    description: The administrative login's user.
    type: str
    required: true
  admin_password:
    description: Its password (empty when none was found).
    type: str
    default: ""
  admin_source:
    description: Where the administrative password came from, for the report.
    type: str
    default: the inventory
  roles:
    description: Role name to its kept password (empty when it could not be read).
    type: dict
    default: {}
  role_sources:
    description: Role name to where its password is kept, for the report.
    type: dict
    default: {}
  maintenance_db:
    description: The database the administrative login connects to first.
    type: str
    default: postgres
  migrations_dir:
    description: The project's migrations; their ids are compared with those recorded as applied.
    type: path
    required: true
  fixes:
    description: >-
      Link name to the command that fixes it in this inventory (the playbook knows the inventory,
      this module does not) - resolve, tcp, tls, login, database, migrations, roles.
    type: dict
    default: {}
  timeout:
    description: Seconds for each network step.
    type: int
    default: 5
"""

EXAMPLES = r"""
- name: Walk every link from here to the database
  cruddur.ops.cruddur_db_doctor:
    connection: {host: 127.0.0.1, port: 5432, name: cruddur, sslmode: prefer, sslrootcert: ""}
    admin_user: postgres
    admin_password: "{{ admin_password }}"
    roles: {cruddur_owner: "{{ owner_password }}", cruddur_app: "{{ app_password }}"}
    migrations_dir: "{{ playbook_dir }}/../sql/migrations"
  register: db_links
  no_log: true
"""

RETURN = r"""
links:
  description: One entry per link, in order.
  type: list
  elements: dict
  returned: always
  contains:
    link: {description: The link's name, type: str}
    status: {description: "ok, fail or skip", type: str}
    detail: {description: What was found, type: str}
    fix: {description: "The command that fixes it (fail only)", type: str}
failed_links:
  description: The names of the links that failed.
  type: list
  elements: str
  returned: always
"""

import os
import socket
import ssl
import struct

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.cruddur.ops.plugins.module_utils.cruddur_doctor import Report
from ansible_collections.cruddur.ops.plugins.module_utils.cruddur_postgres import RECORD_TABLE, psycopg2, reason, require_driver

SSL_REQUEST = struct.pack("!II", 8, 80877103)  # PostgreSQL's SSLRequest message
VERIFYING = ("verify-ca", "verify-full")
TLS_REQUIRED = ("require",) + VERIFYING


def tls_link(report: Report, address, port: int, connection: dict, timeout: int) -> bool:
    """Ask for TLS as libpq does (SSLRequest), then, when the sslmode verifies, complete the
    handshake against the CA bundle (and the host name, for verify-full)."""
    mode = connection.get("sslmode") or "prefer"
    host = connection["host"]
    with socket.create_connection((address, port), timeout=timeout) as raw:
        raw.sendall(SSL_REQUEST)
        answer = raw.recv(1)
        if answer != b"S":
            if mode in TLS_REQUIRED:
                return report.fail("tls", f"the server does not offer TLS (sslmode {mode} needs it)")
            return report.ok("tls", f"not offered by the server; sslmode {mode} does not need it")
        if mode not in VERIFYING:
            return report.ok("tls", f"offered; sslmode {mode} does not verify the certificate")
        bundle = connection.get("sslrootcert") or ""
        if not bundle or not os.path.exists(bundle):
            return report.fail("tls", f"sslmode {mode} verifies against {bundle or '(no sslrootcert)'}, "
                                      "which does not exist")
        context = ssl.create_default_context(cafile=bundle)
        context.check_hostname = mode == "verify-full"
        try:
            with context.wrap_socket(raw, server_hostname=host if mode == "verify-full" else None) as tls:
                subject = dict(pair[0] for pair in tls.getpeercert().get("subject", ()))
        except ssl.SSLCertVerificationError as exc:
            return report.fail("tls", f"the server's certificate does not verify against {bundle}: "
                                      f"{exc.verify_message or exc}")
        except (ssl.SSLError, OSError) as exc:
            return report.fail("tls", f"TLS handshake failed: {exc}")
        return report.ok("tls", f"offered and verified against {bundle} ({mode}; "
                                f"certificate for {subject.get('commonName', '?')})")


def login(connection: dict, user: str, password: str, dbname: str, timeout: int):
    kwargs = dict(host=connection["host"], port=int(connection["port"]), user=user, password=password,
                  dbname=dbname, sslmode=connection.get("sslmode") or "prefer", connect_timeout=timeout,
                  application_name="cruddur-db-doctor")
    if connection.get("sslrootcert"):
        kwargs["sslrootcert"] = connection["sslrootcert"]
    conn = psycopg2.connect(**kwargs)
    conn.autocommit = True
    return conn


def migration_ids(directory: str) -> list[str]:
    return sorted(name[:-4] for name in os.listdir(directory)
                  if name.endswith(".sql") and not name.endswith(".rollback.sql"))


def walk(params: dict) -> Report:
    connection, timeout = params["connection"], params["timeout"]
    report = Report(params["fixes"] or {})
    host, port, dbname = connection["host"], int(connection["port"]), connection["name"]

    # 1. The endpoint resolves; libpq's PGHOSTADDR (the offline rehearsal sets it) gives the
    # address without a lookup, and every client connects there.
    given = [address.strip() for address in os.environ.get("PGHOSTADDR", "").split(",") if address.strip()]
    if given:
        addresses = given
        report.ok("resolve", f"{host} is {', '.join(given)} (PGHOSTADDR; no lookup)")
    else:
        try:
            addresses = sorted({info[4][0] for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)})
        except socket.gaierror as exc:
            report.fail("resolve", f"{host} does not resolve: {exc.strerror}")
            addresses = []
        else:
            report.ok("resolve", f"{host} is {', '.join(addresses)}")

    # 2. TCP connects (to the first address that answers).
    reached = None
    if addresses:
        errors = []
        for address in addresses:
            try:
                socket.create_connection((address, port), timeout=timeout).close()
                reached = address
                break
            except socket.timeout:
                errors.append(f"{address}:{port} timed out after {timeout} s (a firewall or security group drops it)")
            except OSError as exc:
                errors.append(f"{address}:{port} {exc.strerror or exc} (nothing listens there)")
        if reached:
            report.ok("tcp", f"connected to {reached}:{port}")
        else:
            report.fail("tcp", "; ".join(errors))
    else:
        report.skip("tcp", "needs resolve")

    # 3. TLS.
    tls_ok = False
    if reached:
        try:
            tls_ok = tls_link(report, reached, port, connection, timeout)
        except OSError as exc:
            report.fail("tls", f"the TLS request failed: {exc}")
    else:
        report.skip("tls", "needs tcp")

    # 4. The administrative password; 5. the database; 6. its migrations.
    admin = {"user": params["admin_user"], "password": params["admin_password"]}
    source = params["admin_source"]
    admin_conn = None
    if not tls_ok:
        report.skip("login", "needs tls")
    elif not admin.get("password"):
        report.fail("login", f"no secret for {admin.get('user')}: none in {source}")
    else:
        try:
            admin_conn = login(connection, admin["user"], admin["password"], params["maintenance_db"], timeout)
            report.ok("login", f"{admin['user']} accepted (secret from {source})")
        except psycopg2.OperationalError as exc:
            report.fail("login", f"{admin['user']} refused (secret from {source}): {reason(exc)}")
    exists = False
    known_missing = False  # only the administrative login can tell
    if admin_conn is None:
        report.skip("database", "needs login")
    else:
        with admin_conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,))
            exists = cur.fetchone() is not None
        admin_conn.close()
        if exists:
            report.ok("database", f"{dbname} exists")
        else:
            known_missing = True
            report.fail("database", f"{dbname} does not exist")
    if not exists:
        report.skip("migrations", "needs database")
    else:
        try:
            conn = login(connection, admin["user"], admin["password"], dbname, timeout)
            with conn.cursor() as cur:
                cur.execute("SELECT to_regclass(%s) IS NOT NULL", (f"public.{RECORD_TABLE}",))
                applied = []
                if cur.fetchone()[0]:
                    cur.execute(f"SELECT migration_id FROM public.{RECORD_TABLE} ORDER BY seq")
                    applied = [row[0] for row in cur.fetchall()]
            conn.close()
            pending = [m for m in migration_ids(params["migrations_dir"]) if m not in applied]
            if pending:
                report.fail("migrations", f"{len(pending)} pending: {', '.join(pending)}")
            else:
                report.ok("migrations", f"current ({len(applied)} applied, last {applied[-1] if applied else '-'})")
        except psycopg2.Error as exc:
            report.fail("migrations", f"cannot read them: {reason(exc)}")

    # 7. Each role logs in with its kept password (whether or not the administrative login worked:
    # the roles' secrets are kept apart from it).
    sources = params["role_sources"] or {}
    for role, password in (params["roles"] or {}).items():
        link = f"roles {role}"
        where = sources.get(role, "its store")
        if not tls_ok:
            report.skip(link, "needs tls")
        elif known_missing:
            report.skip(link, "needs database")
        elif not password:
            report.fail(link, f"no kept secret for {role} (looked in {where})")
        else:
            try:
                login(connection, role, password, dbname, timeout).close()
                report.ok(link, f"logs in (secret from {where})")
            except psycopg2.OperationalError as exc:
                report.fail(link, f"refused with its kept secret (from {where}): {reason(exc)}")
    return report


def main():
    module = AnsibleModule(
        argument_spec=dict(
            connection=dict(type="dict", required=True),
            admin_user=dict(type="str", required=True),
            admin_password=dict(type="str", default="", no_log=True),
            admin_source=dict(type="str", default="the inventory"),
            roles=dict(type="dict", default={}, no_log=True),
            role_sources=dict(type="dict", default={}),
            maintenance_db=dict(type="str", default="postgres"),
            migrations_dir=dict(type="path", required=True),
            fixes=dict(type="dict", default={}),
            timeout=dict(type="int", default=5),
        ),
        supports_check_mode=True,
    )
    require_driver(module)
    for key in ("host", "port", "name"):
        if not module.params["connection"].get(key):
            module.fail_json(msg=f"connection needs {key} (cruddur_db_connection)")
    report = walk(module.params)
    module.exit_json(**report.result())


if __name__ == "__main__":
    main()
