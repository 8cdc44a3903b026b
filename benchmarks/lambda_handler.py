#!/usr/bin/env python3
"""Invocations per second of the post-confirmation handler against the local PostgreSQL,
beside a connect-per-invocation handler as the original one was written (connect, insert,
commit, close on every call; bound parameters here, to compare only the connection handling).

    .venv/bin/python benchmarks/lambda_handler.py [INVOCATIONS]
"""

from __future__ import annotations

import os
import sys
import time
import uuid
from pathlib import Path

import psycopg2

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "files" / "lambda" / "cruddur_post_confirmation"))
sys.path.insert(0, str(REPO / "tests"))
import handler  # noqa: E402
from conftest import PG, create_migrated_database, drop_database  # noqa: E402


def event() -> dict:
    sub = str(uuid.uuid4())
    return {"triggerSource": "PostConfirmation_ConfirmSignUp", "request": {"userAttributes": {
        "sub": sub, "name": "Bench User", "email": "bench@example.com", "preferred_username": f"u{sub}"}},
        "response": {}}


def connect_per_invocation(event: dict, context) -> dict:
    """The original handler's shape: a new connection for every invocation."""
    user = event["request"]["userAttributes"]
    conn = psycopg2.connect(os.environ["CONNECTION_URL"])
    try:
        cur = conn.cursor()
        cur.execute(handler.INSERT_USER, {"display_name": user["name"], "email": user["email"],
                                          "handle": user["preferred_username"], "cognito_user_id": user["sub"]})
        conn.commit()
        cur.close()
    finally:
        conn.close()
    return event


def rate(function, count: int) -> float:
    events = [event() for _ in range(count)]
    start = time.perf_counter()
    for item in events:
        function(item, None)
    return count / (time.perf_counter() - start)


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    database = create_migrated_database("cruddur_bench_lambda", seed=False)
    os.environ["CONNECTION_URL"] = (f"postgresql://{PG['user']}:{PG['password']}@{PG['host']}:{PG['port']}"
                                    f"/{database}")
    try:
        rate(handler.lambda_handler, 50)  # warm up
        reused = rate(handler.lambda_handler, count)
        fresh = rate(connect_per_invocation, count // 4)
    finally:
        handler._discard_connection()
        drop_database(database)
    print(f"post-confirmation handler, local PostgreSQL (scram-sha-256 over TCP), {count} invocations")
    print(f"  reused connection (this handler)   : {reused:8.0f} invocations/s")
    print(f"  connect per invocation (original)  : {fresh:8.0f} invocations/s")
    print(f"  ratio                              : {reused / fresh:8.1f}x")


if __name__ == "__main__":
    main()
