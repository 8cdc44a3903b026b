#!/usr/bin/env python3
"""Time deleting a share of the activities of a filled database, side by side in one run:

- with the migrations' schema (every foreign key has a supporting index, 0003_reply_to_index);
- the same without the index on reply_to_activity_uuid (the schema before 0003): each deleted
  row makes PostgreSQL scan the table for replies to it (ON DELETE SET NULL);
- the floor: the same delete with the foreign keys' triggers off (session_replication_role =
  replica), which no chore may do but which shows what the delete itself costs.

A throwaway database on the local server is built by the project's migrations, filled with
benchmarks/dataset.py (users, activities, a tenth of them replies), copied for each run, and dropped.
Prints figures; never passes or fails on them.

    .venv/bin/python benchmarks/delete_activities.py [ACTIVITIES] [PERCENT]
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import psycopg2

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "collections"))

from ansible_collections.cruddur.ops.plugins.modules import cruddur_migrations  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dataset import fill  # noqa: E402  (the project's data set)

PG = {"host": "127.0.0.1", "port": 5432, "user": "postgres",
      "password": os.environ.get("CRUDDUR_LOCAL_DB_PASSWORD") or "password"}
TEMPLATE = "cruddur_bench_delete"

DELETE = "DELETE FROM activities WHERE uuid IN (SELECT uuid FROM activities ORDER BY uuid LIMIT %s)"


def connect(dbname: str):
    conn = psycopg2.connect(dbname=dbname, **PG)
    conn.autocommit = True
    return conn


def admin(sql: str) -> None:
    conn = connect("postgres")
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
    finally:
        conn.close()


def build(activities: int) -> None:
    admin(f"DROP DATABASE IF EXISTS {TEMPLATE} WITH (FORCE)")
    admin(f"CREATE DATABASE {TEMPLATE}")
    conn = connect(TEMPLATE)
    conn.autocommit = False
    cruddur_migrations.run(conn, cruddur_migrations.load_migrations(str(REPO / "sql" / "migrations")),
                           "latest", False, 10)
    conn.autocommit = True
    fill(conn, users=max(activities // 20, 1), activities=activities)
    conn.close()


def timed_delete(name: str, count: int, setup: str = "", session: str = "") -> float:
    admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    admin(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE}")
    try:
        conn = connect(name)
        with conn.cursor() as cur:
            if setup:
                cur.execute(setup)
            if session:
                cur.execute(session)
            start = time.perf_counter()
            cur.execute(DELETE, (count,))
            elapsed = time.perf_counter() - start
        conn.close()
        return elapsed
    finally:
        admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def main() -> None:
    activities = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    percent = float(sys.argv[2]) if len(sys.argv) > 2 else 5.0
    count = int(activities * percent / 100)
    start = time.perf_counter()
    build(activities)
    built = time.perf_counter() - start
    try:
        with_index = timed_delete("cruddur_bench_delete_run", count)
        without = timed_delete("cruddur_bench_delete_run", count,
                               setup="DROP INDEX activities_reply_to_activity_uuid_idx")
        floor = timed_delete("cruddur_bench_delete_run", count, session="SET session_replication_role = replica")
    finally:
        admin(f"DROP DATABASE IF EXISTS {TEMPLATE} WITH (FORCE)")
    print(f"delete {count} of {activities} activities ({percent:g} %), database built in {built:.1f} s")
    print(f"  with the migrations' schema (reply index)   {with_index:8.2f} s")
    print(f"  without the reply index (before 0003)        {without:8.2f} s   ({without / with_index:.0f}x)")
    print(f"  foreign-key checks off (the floor)          {floor:8.2f} s")


if __name__ == "__main__":
    main()
