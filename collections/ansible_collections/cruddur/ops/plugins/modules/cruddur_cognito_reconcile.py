#!/usr/bin/python
# Copyright: cruddur-ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Insert the Cognito user pool's confirmed users that are missing from Cruddur's users table."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: cruddur_cognito_reconcile
author: cruddur-ops contributors (@cruddur-ops)
short_description: Heal missed post-confirmation triggers
description:
  - Lists the user pool's users (paginated), keeps the confirmed and enabled ones, and inserts
    those whose C(sub) has no row in C(users), with the same statement the post-confirmation
    Lambda uses (so a user the trigger did record is never touched).
  - Users missing a required attribute are reported in C(skipped_users). A user whose wanted
    handle is taken gets the handler's derived handle and is listed in C(renamed_users). A user
    whose insert fails is reported in C(failed_users) and fails the task; the others are still
    recorded.
  - In check mode it only reads, and reports who would be inserted.
options:
  user_pool_id:
    description: Cognito user pool id.
    type: str
    required: true
  region:
    description: AWS region of the pool.
    type: str
    required: true
  endpoint_url:
    description: Cognito endpoint (for an emulator); omit for AWS.
    type: str
  page_size:
    description: Users per ListUsers call (Cognito allows at most 60).
    type: int
    default: 60
  attributes:
    description: Cognito attribute to users column, the handler's own mapping (its attributes.json);
      the columns must include C(display_name), C(email), C(handle) and C(cognito_user_id).
    type: dict
    required: true
  insert_sql:
    description: The INSERT statement, with C(%(display_name)s), C(%(email)s), C(%(handle)s)
      and C(%(cognito_user_id)s) parameters.
    type: str
    required: true
  db:
    type: str
    required: true
    description: Database name.
extends_documentation_fragment:
  - cruddur.ops.postgres
requirements: [boto3]
"""

EXAMPLES = r"""
- name: Insert confirmed users the trigger missed
  cruddur_cognito_reconcile:
    user_pool_id: us-east-1_Example
    region: us-east-1
    insert_sql: "{{ lookup('file', 'insert_user.sql') }}"
    login_password: "{{ db_password }}"
    db: cruddur
"""

RETURN = r"""
inserted:
  description: The subs inserted (or that would be, in check mode).
  type: list
  elements: str
  returned: always
skipped_users:
  description: Confirmed users left out, with the reason.
  type: list
  elements: dict
  returned: always
renamed_users:
  description: Users whose wanted handle was taken, with the handle they were recorded with
    (C(sub), C(wanted), C(handle), C(message)); the post-confirmation handler's rule.
  type: list
  elements: dict
  returned: always
failed_users:
  description: Users whose insert failed, with the database's reason.
  type: list
  elements: dict
  returned: always
confirmed:
  description: Number of confirmed, enabled users in the pool that have every attribute.
  type: int
  returned: always
"""

import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

try:
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError
except ImportError:
    boto3 = None
    BOTO3_IMPORT_ERROR = traceback.format_exc()
else:
    BOTO3_IMPORT_ERROR = None

from ansible_collections.cruddur.ops.plugins.module_utils.cruddur_postgres import (
    connect_or_fail, postgres_argument_spec, reason, require_driver, where as pg_where)

try:
    import psycopg2
except ImportError:
    psycopg2 = None  # require_driver() reports it


def confirmed_users(client, user_pool_id, page_size):
    """Yield the attribute dicts of the pool's confirmed, enabled users, page by page."""
    paginator = client.get_paginator("list_users")
    for page in paginator.paginate(UserPoolId=user_pool_id, PaginationConfig={"PageSize": page_size}):
        for user in page["Users"]:
            if user.get("UserStatus") == "CONFIRMED" and user.get("Enabled", True):
                attributes = {a["Name"]: a["Value"] for a in user.get("Attributes", [])}
                attributes.setdefault("sub", user.get("Username"))
                yield attributes


def plan(users, mapping):
    """Split users into rows to consider and skipped entries (missing attributes). `mapping` is
    the handler's Cognito attribute -> users column (its attributes.json)."""
    rows, skipped = [], []
    for attributes in users:
        missing = [n for n in mapping if not (attributes.get(n) or "").strip() or "\x00" in attributes[n]]
        if missing:
            skipped.append({"sub": attributes.get("sub"), "reason": f"missing or invalid: {', '.join(missing)}"})
        else:
            rows.append({column: attributes[name] for name, column in mapping.items()})
    return rows, skipped


def existing_subs(conn, subs):
    with conn.cursor() as cursor:
        cursor.execute("SELECT cognito_user_id FROM public.users WHERE cognito_user_id = ANY(%s)", (subs,))
        return {row[0] for row in cursor.fetchall()}


def insert_missing(conn, insert_sql, rows):
    """Insert each row in its own transaction; return (inserted subs, renamed, failures).

    The statement returns the handle it recorded: when the wanted one was taken, it derived
    another (the handler's rule), reported in `renamed`."""
    inserted, renamed, failed = [], [], []
    for row in rows:
        try:
            with conn.cursor() as cursor:
                cursor.execute(insert_sql, row)
                recorded = cursor.fetchone() if cursor.description else None
                count = cursor.rowcount
            conn.commit()
        except psycopg2.Error as exc:
            conn.rollback()
            failed.append({"sub": row["cognito_user_id"], "reason": reason(exc).splitlines()[0]})
            continue
        if count:
            inserted.append(row["cognito_user_id"])
            if recorded and recorded[0] != row["handle"]:
                sub, wanted, handle = row["cognito_user_id"], row["handle"], recorded[0]
                renamed.append({"sub": sub, "wanted": wanted, "handle": handle,
                                "message": f"{sub}: handle {wanted} is taken, recorded as {handle}"})
    return inserted, renamed, failed


def main():
    module = AnsibleModule(
        argument_spec=dict(
            user_pool_id=dict(type="str", required=True),
            region=dict(type="str", required=True),
            endpoint_url=dict(type="str"),
            page_size=dict(type="int", default=60),
            insert_sql=dict(type="str", required=True),
            attributes=dict(type="dict", required=True),
            **postgres_argument_spec(),
        ),
        supports_check_mode=True,
    )
    if boto3 is None:
        module.fail_json(msg=missing_required_lib("boto3"), exception=BOTO3_IMPORT_ERROR)
    require_driver(module)
    p = module.params
    if not 1 <= p["page_size"] <= 60:
        module.fail_json(msg=f"page_size must be from 1 to 60, got {p['page_size']}")

    client = boto3.client("cognito-idp", region_name=p["region"], endpoint_url=p["endpoint_url"])
    try:
        rows, skipped = plan(confirmed_users(client, p["user_pool_id"], p["page_size"]), p["attributes"])
    except (BotoCoreError, ClientError) as exc:
        module.fail_json(msg=f"cannot list the users of pool {p['user_pool_id']}: {exc}")

    where = pg_where(p)
    conn = connect_or_fail(module, "cruddur-cognito-reconcile")
    try:
        present = existing_subs(conn, [row["cognito_user_id"] for row in rows])
        conn.rollback()
        missing = [row for row in rows if row["cognito_user_id"] not in present]
        if module.check_mode:
            inserted, renamed, failed = [row["cognito_user_id"] for row in missing], [], []
        else:
            inserted, renamed, failed = insert_missing(conn, p["insert_sql"], missing)
    except psycopg2.Error as exc:
        module.fail_json(msg=f"{where}: {reason(exc)}")
    finally:
        conn.close()

    result = dict(changed=bool(inserted), inserted=inserted, renamed_users=renamed, skipped_users=skipped,
                  failed_users=failed, confirmed=len(rows))
    if failed:
        module.fail_json(msg=f"{len(failed)} confirmed user(s) could not be recorded; the others were", **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
