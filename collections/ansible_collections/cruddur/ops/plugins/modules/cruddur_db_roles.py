#!/usr/bin/python
# Copyright: cruddur-ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The application's login roles, their passwords checked the way a client checks them."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: cruddur_db_roles
author: cruddur-ops contributors (@cruddur-ops)
short_description: Login roles whose passwords are verified by logging in
description:
  - Makes each role in I(roles) exist with LOGIN and no other attribute, and with the password
    given for it. Whether a password is current is found out by logging in with it, because only
    a superuser may read stored password hashes (the RDS master user may not), so
    C(community.postgresql.postgresql_user) cannot tell and would reset every password on every
    run there.
  - Optionally makes the administrative login a member of I(member_of) (a non-superuser may only
    give a database to a role it belongs to).
  - One connection as the administrative login (the C(login_*) options) plus one login attempt
    per role. Check mode changes nothing and reports what would change.
options:
  roles:
    description: Role name to password.
    type: dict
    required: true
  member_of:
    description: Roles the administrative login must belong to.
    type: list
    elements: str
    default: []
  db:
    description: Database the logins are tried on (the maintenance database).
    type: str
    default: postgres
extends_documentation_fragment:
  - cruddur.ops.postgres
"""

EXAMPLES = r"""
- name: The application roles
  cruddur_db_roles:
    roles: "{{ passwords }}"
    member_of: [cruddur_owner]
"""

RETURN = r"""
created:
  description: Roles created (or that would be).
  type: list
  elements: str
  returned: always
password_set:
  description: Existing roles whose password was set because a login with it failed.
  type: list
  elements: str
  returned: always
granted:
  description: Roles the administrative login was made a member of.
  type: list
  elements: str
  returned: always
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.cruddur.ops.plugins.module_utils.cruddur_postgres import (
    connect, connect_or_fail, postgres_argument_spec, reason, require_driver, where)

try:
    import psycopg2
    from psycopg2 import sql
except ImportError:
    psycopg2 = None  # require_driver() reports it


def logs_in(params: dict, role: str, password: str) -> bool:
    try:
        conn = connect({**params, "login_user": role, "login_password": password}, "cruddur-db-roles")
    except psycopg2.OperationalError:
        return False
    conn.close()
    return True


def main():
    spec = postgres_argument_spec()
    spec["db"] = dict(type="str", default="postgres")
    module = AnsibleModule(
        argument_spec=dict(
            roles=dict(type="dict", required=True, no_log=True),
            member_of=dict(type="list", elements="str", default=[]),
            **spec,
        ),
        supports_check_mode=True,
    )
    require_driver(module)
    params = module.params
    wanted = {str(name): str(password) for name, password in params["roles"].items()}
    empty = [name for name, password in wanted.items() if not password]
    if empty and not module.check_mode:
        module.fail_json(msg=f"no password for role(s) {', '.join(sorted(empty))}")

    conn = connect_or_fail(module, "cruddur-db-roles")
    conn.autocommit = True
    created, password_set, granted = [], [], []
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT rolname FROM pg_roles WHERE rolname = ANY(%s)", (list(wanted),))
            existing = {row[0] for row in cur.fetchall()}
            for name, password in sorted(wanted.items()):
                if name not in existing:
                    created.append(name)
                    if not module.check_mode:
                        cur.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD %s").format(sql.Identifier(name)),
                                    (password,))
                elif not (password and logs_in(params, name, password)):
                    password_set.append(name)
                    if not module.check_mode:
                        cur.execute(sql.SQL("ALTER ROLE {} LOGIN PASSWORD %s").format(sql.Identifier(name)),
                                    (password,))
            for group in params["member_of"]:
                member = False
                if group in existing:
                    cur.execute("SELECT pg_has_role(current_user, %s, 'MEMBER')", (group,))
                    member = cur.fetchone()[0]
                if not member:
                    granted.append(group)
                    if not module.check_mode:
                        cur.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(group),
                                                                     sql.Identifier(params["login_user"])))
    except psycopg2.Error as exc:
        module.fail_json(msg=f"{where(params)}: {reason(exc)}", created=created, password_set=password_set)
    finally:
        conn.close()
    module.exit_json(changed=bool(created or password_set or granted), created=created,
                     password_set=password_set, granted=granted)


if __name__ == "__main__":
    main()
