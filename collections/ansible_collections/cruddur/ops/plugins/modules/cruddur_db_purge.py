#!/usr/bin/python
# Copyright: cruddur-ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Expired activities removed in bounded batches, each its own short transaction."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: cruddur_db_purge
author: cruddur-ops contributors (@cruddur-ops)
short_description: Delete the activities past their expires_at, in bounded batches
description:
  - An activity lives for its C(ttl); the API stops serving it at C(expires_at). This module
    removes those rows, a batch of at most I(batch_size) at a time, oldest expiry first, each
    batch its own short transaction. No lock is held between batches, so the API keeps posting
    and reading; rows another session has locked are skipped (C(SKIP LOCKED)) and left for the
    next run.
  - Each batch finds its rows through C(activities_expires_at_idx) (migration 0004) and the
    replies they leave through the reply index (migration 0003), so its cost follows the batch,
    not the table.
  - Killed half-way, it has deleted whole batches only; the next run deletes the rest.
  - Idempotent - a run that finds nothing expired reports no change. In check mode it deletes
    nothing and reports how many rows it would delete.
  - Needs a login that may delete activities (the schema's owner).
options:
  db:
    description: The database whose expired activities go.
    type: str
    required: true
  batch_size:
    description: Most rows one batch (one transaction) deletes.
    type: int
    default: 5000
  max_batches:
    description: Stop after this many batches (0 - until none is expired); the rest waits for the next run.
    type: int
    default: 0
  lock_timeout:
    description: Seconds a batch waits for a lock before it gives up (then the run fails; the batches before it stay deleted).
    type: int
    default: 5
extends_documentation_fragment:
  - cruddur.ops.postgres
"""

EXAMPLES = r"""
- name: Remove the expired activities
  cruddur.ops.cruddur_db_purge:
    db: cruddur
    batch_size: 5000
  register: purge
"""

RETURN = r"""
expired:
  description: Rows past their expires_at when the run began (what check mode would delete).
  type: int
  returned: always
deleted:
  description: Rows deleted (0 in check mode).
  type: int
  returned: always
batches:
  description: Batches (transactions) that deleted rows.
  type: int
  returned: always
seconds:
  description: How long the run took.
  type: float
  returned: always
"""

import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.cruddur.ops.plugins.module_utils.cruddur_postgres import (
    connect_or_fail, postgres_argument_spec, reason, require_driver, where)

try:
    import psycopg2
except ImportError:
    psycopg2 = None  # require_driver() reports it

COUNT = "SELECT count(*) FROM public.activities WHERE expires_at <= statement_timestamp()"
# One batch: the oldest expiries first, through activities_expires_at_idx; rows locked by another
# session (a reply being written to one of them) are skipped, not waited for.
DELETE_BATCH = """
DELETE FROM public.activities
WHERE uuid IN (
  SELECT uuid FROM public.activities
  WHERE expires_at <= statement_timestamp()
  ORDER BY expires_at
  LIMIT %(limit)s
  FOR UPDATE SKIP LOCKED
)"""


def purge(conn, batch_size, max_batches, lock_timeout, check_mode):
    """(expired, deleted, batches)."""
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("SET lock_timeout = %s", (f"{lock_timeout}s",))
        cur.execute(COUNT)
        expired = cur.fetchone()[0]
        if check_mode or expired == 0:
            return expired, 0, 0
        deleted = batches = 0
        while not max_batches or batches < max_batches:
            # Autocommit: each DELETE is its own transaction, over when it returns.
            cur.execute(DELETE_BATCH, {"limit": batch_size})
            if cur.rowcount == 0:
                break
            deleted += cur.rowcount
            batches += 1
            if cur.rowcount < batch_size:
                break
        return expired, deleted, batches


def main():
    spec = postgres_argument_spec()
    spec.update(
        batch_size=dict(type="int", default=5000),
        max_batches=dict(type="int", default=0),
        lock_timeout=dict(type="int", default=5),
    )
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    params = module.params
    if params["batch_size"] < 1:
        module.fail_json(msg=f"batch_size must be at least 1, not {params['batch_size']}")
    if params["max_batches"] < 0 or params["lock_timeout"] < 0:
        module.fail_json(msg="max_batches and lock_timeout cannot be negative")
    require_driver(module)
    conn = connect_or_fail(module, "cruddur-db-purge")
    started = time.monotonic()
    try:
        expired, deleted, batches = purge(conn, params["batch_size"], params["max_batches"],
                                          params["lock_timeout"], module.check_mode)
    except psycopg2.Error as exc:
        module.fail_json(msg=f"purging expired activities in {where(params)} failed: {reason(exc)}. "
                             "The batches before it are deleted; run it again for the rest.")
    finally:
        conn.close()
    module.exit_json(changed=deleted > 0 or (module.check_mode and expired > 0), expired=expired,
                     deleted=deleted, batches=batches, seconds=round(time.monotonic() - started, 3))


if __name__ == "__main__":
    main()
