#!/usr/bin/env python3
"""The chores at the large size, each beside the plain tool, and the API while they run.

Builds a throwaway database (cruddur_bench_large) with the project's own db-setup and fills it
with benchmarks/dataset.py (100,000 users and 2,000,000 activities unless told otherwise), then
prints, in one run:

- db-backup.yml against plain `pg_dump -Fc` of the same database;
- db-restore.yml (checksum, restore into a new database, verification, swap) against plain
  `createdb` + `pg_restore` into a new database;
- the adoption of a database built by the original schema.sql at the same size (db-migrate);
- deleting 5 % of the activities (the foreign keys' checks on) beside the same delete with them
  off (the floor), each in a transaction that is rolled back;
- the API (a real gunicorn, the deployed settings) under a steady load of feed reads and
  signed-in posts: p50, p99 and errors with no chore running, during a migration (an ALTER that
  needs an ACCESS EXCLUSIVE lock, and an index built CONCURRENTLY), during a migration that a long
  transaction blocks, during the adoption, and during db-purge-expired.

Every database it made is dropped at the end. Prints figures; never passes or fails on them.

    .venv/bin/python benchmarks/large.py [ACTIVITIES] [USERS]
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import psycopg2

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
sys.path.insert(0, str(REPO / "collections"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from ansible_collections.cruddur.ops.plugins.modules import cruddur_local_issuer as issuer  # noqa: E402

from dataset import fill  # noqa: E402

PASSWORD = os.environ.get("CRUDDUR_LOCAL_DB_PASSWORD") or "password"
PG = {"host": "127.0.0.1", "port": 5432, "user": "postgres", "password": PASSWORD}
DB = "cruddur_bench_large"
ORIGINAL_DB = "cruddur_bench_large_original"
PLAIN_DB = "cruddur_bench_large_plain"
PORT = 4598
CLIENTS = 6
WORK = Path(tempfile.mkdtemp(prefix="cruddur-large-"))
# Only what this run asks for: nothing a user keeps exported (CONNECTION_URL, PG*) steers it.
ENV = {"PATH": f"{VENV_BIN}:{os.environ['PATH']}", "HOME": os.environ.get("HOME", "/root"),
       "LANG": "C.UTF-8", "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"}
PG_ENV = {**ENV, "PGPASSWORD": PASSWORD, "PGHOST": "127.0.0.1", "PGUSER": "postgres"}


def connect(dbname: str):
    conn = psycopg2.connect(dbname=dbname, **PG)
    conn.autocommit = True
    return conn


def sql(dbname: str, statement: str, params=None):
    conn = connect(dbname)
    try:
        with conn.cursor() as cur:
            cur.execute(statement, params)
            return cur.fetchall() if cur.description else None
    finally:
        conn.close()


def drop(*names: str) -> None:
    for name in names:
        sql("postgres", f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def playbook(name: str, dbname: str, **extra) -> float:
    connection = {"host": "127.0.0.1", "port": 5432, "name": dbname, "sslmode": "prefer", "sslrootcert": ""}
    command = [str(VENV_BIN / "ansible-playbook"), f"playbooks/{name}.yml", "-e",
               json.dumps({"cruddur_db_connection": connection, "cruddur_db_env_file": str(WORK / "env"),
                           "cruddur_db_backup_dir": str(WORK / "backups"), **extra})]
    start = time.perf_counter()
    run = subprocess.run(command, cwd=REPO, env=ENV, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    if run.returncode != 0:
        raise SystemExit(f"{name} failed:\n{run.stdout[-3000:]}")
    return elapsed


def timed(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, env=PG_ENV, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def size_of(dbname: str) -> str:
    return sql("postgres", "SELECT pg_size_pretty(pg_database_size(%s))", (dbname,))[0][0]


# --- the API under load -------------------------------------------------------------------------

class Load(threading.Thread):
    """CLIENTS keep-alive clients: four feed reads to one signed-in post, each request's end time,
    latency and whether it failed (a status other than 200, or no answer)."""

    def __init__(self, tokens: list[str]):
        super().__init__(daemon=True)
        self.tokens = tokens
        self.samples: list[tuple[float, float, bool]] = []
        self.stop = threading.Event()
        self.lock = threading.Lock()

    def client(self, number: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", PORT, timeout=30)
        headers = {"Authorization": f"Bearer {self.tokens[number % len(self.tokens)]}",
                   "Content-Type": "application/json"}
        body = json.dumps({"message": "posted during a chore", "ttl": "1-hour"})
        count = 0
        while not self.stop.is_set():
            start = time.perf_counter()
            failed = False
            try:
                if count % 5 == 4:
                    conn.request("POST", "/api/activities", body, headers)
                else:
                    conn.request("GET", "/api/activities/home")
                response = conn.getresponse()
                response.read()
                failed = response.status != 200
            except (OSError, http.client.HTTPException):
                failed = True
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", PORT, timeout=30)
            end = time.perf_counter()
            with self.lock:
                self.samples.append((end, end - start, failed))
            count += 1

    def run(self) -> None:
        threads = [threading.Thread(target=self.client, args=(n,), daemon=True) for n in range(CLIENTS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    def window(self, start: float, end: float) -> str:
        with self.lock:
            mine = [s for s in self.samples if start <= s[0] <= end]
        if not mine:
            return "no request ended in the window"
        latencies = sorted(s[1] for s in mine)
        p99 = latencies[max(0, int(len(latencies) * 0.99) - 1)]
        errors = sum(1 for s in mine if s[2])
        return (f"{len(mine) / (end - start):7.0f} req/s   p50 {statistics.median(latencies) * 1000:7.1f} ms   "
                f"p99 {p99 * 1000:8.1f} ms   errors {errors}")


def start_api() -> subprocess.Popen:
    key, _ = issuer.load_or_create(str(WORK / "issuer.pem"), check_mode=False)
    jwk = issuer.public_jwk(key)
    conf = WORK / "gunicorn.conf.py"
    conf.write_text(f'bind = "127.0.0.1:{PORT}"\nworkers = 2\nworker_class = "gthread"\nthreads = 4\n'
                    'accesslog = None\nerrorlog = "-"\nloglevel = "warning"\n')
    api_password = (REPO / ".secrets" / "local" / "cruddur_api").read_text().strip()
    (WORK / "config.json").write_text(json.dumps({
        "CONNECTION_URL": f"postgresql://cruddur_api:{api_password}@127.0.0.1:5432/{DB}",
        "AUTH_ISSUER": issuer.ISSUER, "AUTH_JWKS": {"keys": [jwk]}, "AUTH_CLIENT_IDS": [issuer.CLIENT_ID]}))
    env = {**ENV, "CRUDDUR_API_CONFIG": str(WORK / "config.json"), "PYTHONDONTWRITEBYTECODE": "1"}
    proc = subprocess.Popen([str(VENV_BIN / "gunicorn"), "--config", str(conf), "cruddur_api.wsgi:app"],
                            cwd=REPO / "files" / "api", env=env, start_new_session=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{PORT}/api/health", timeout=2) as response:
                if response.status == 200:
                    subs = [row[0] for row in sql(DB, "SELECT cognito_user_id FROM users WHERE cognito_user_id IS NOT NULL "
                                                   "ORDER BY handle LIMIT 20")]
                    return proc, [issuer.mint(key, jwk, sub, 7200) for sub in subs]
        except OSError:
            time.sleep(0.3)
    proc.kill()
    raise SystemExit("gunicorn did not become healthy")


def during(load: Load, label: str, action) -> float:
    start = time.perf_counter()
    action()
    end = time.perf_counter()
    print(f"  {label:<46} {end - start:6.1f} s   {load.window(start, end)}")
    return end - start


# --- the chores ---------------------------------------------------------------------------------

def build(activities: int, users: int) -> float:
    drop(DB)
    playbook("db-setup", DB)
    return fill(connect(DB), users=users, activities=activities)


def build_original(activities: int, users: int) -> float:
    """The original schema.sql, at the same size (its own types: timestamps without zone)."""
    drop(ORIGINAL_DB)
    sql("postgres", f'CREATE DATABASE "{ORIGINAL_DB}"')
    start = time.perf_counter()
    conn = connect(ORIGINAL_DB)
    with conn.cursor() as cur:
        cur.execute((REPO / "tests" / "fixtures" / "original" / "schema.sql").read_text())
        cur.execute("INSERT INTO public.users (uuid, display_name, handle, cognito_user_id, created_at) "
                    "SELECT md5('user-' || n)::uuid, 'User ' || n, 'user' || n, md5('sub-' || n)::uuid::text, "
                    "now() - interval '1 year' FROM generate_series(1, %s) AS n", (users,))
        cur.execute("INSERT INTO public.activities (user_uuid, message, expires_at, created_at) "
                    "SELECT md5('user-' || (1 + n %% %s))::uuid, left('original post ' || n, 280), "
                    "now() + interval '7 days', now() - n * interval '1 second' "
                    "FROM generate_series(1, %s) AS n", (users, activities))
        cur.execute("VACUUM ANALYZE")
    conn.close()
    return time.perf_counter() - start


def delete_share(percent: float, floor: bool) -> float:
    conn = connect(DB)
    conn.autocommit = False
    try:
        with conn.cursor() as cur:
            if floor:
                cur.execute("SET LOCAL session_replication_role = replica")
            cur.execute("SELECT count(*) FROM activities")
            count = int(cur.fetchone()[0] * percent / 100)
            start = time.perf_counter()
            cur.execute("DELETE FROM activities WHERE uuid IN (SELECT uuid FROM activities ORDER BY uuid LIMIT %s)",
                        (count,))
            elapsed = time.perf_counter() - start
        conn.rollback()
    finally:
        conn.close()
    return elapsed


def hold_activities(seconds: float) -> threading.Thread:
    """A long transaction that read activities (an API request left open, a report): an ALTER
    must wait for it."""
    def hold():
        conn = connect(DB)
        conn.autocommit = False
        with conn.cursor() as cur:
            cur.execute("SET application_name = 'long-report'")
            cur.execute("SELECT count(*) FROM activities WHERE created_at > now() - interval '1 hour'")
            time.sleep(seconds)
        conn.rollback()
        conn.close()
    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    time.sleep(0.5)
    return thread


def main() -> None:
    activities = int(sys.argv[1]) if len(sys.argv) > 1 else 2_000_000
    users = int(sys.argv[2]) if len(sys.argv) > 2 else max(activities // 20, 1)
    api = None
    try:
        print(f"large size: {users:,} users, {activities:,} activities")
        built = build(activities, users)
        print(f"  data set made (benchmarks/dataset.py)        {built:6.1f} s   database {size_of(DB)}")

        print("backup and restore, each beside the plain tool:")
        plain_dump = WORK / "plain.dump"
        ours = playbook("db-backup", DB)
        plain = timed(["pg_dump", "-Fc", "-f", str(plain_dump), DB])
        print(f"  db-backup.yml (counts, dump, check, sha256) {ours:7.1f} s")
        print(f"  pg_dump -Fc                                  {plain:6.1f} s   "
              f"ratio {ours / plain:.2f}x [1.25x]   dump {plain_dump.stat().st_size / 2**20:.0f} MiB")
        backup = sorted((WORK / "backups").glob(f"{DB}-*.dump"))[-1]
        ours = playbook("db-restore", DB, cruddur_db_restore_file=str(backup))
        drop(PLAIN_DB)
        plain = timed(["createdb", PLAIN_DB]) + timed(["pg_restore", "-d", PLAIN_DB, str(plain_dump)])
        print(f"  db-restore.yml (verify, restore, swap)       {ours:6.1f} s")
        print(f"  createdb + pg_restore into a new database    {plain:6.1f} s   ratio {ours / plain:.2f}x [1.5x]")
        kept = [row[0] for row in sql("postgres", "SELECT datname FROM pg_database WHERE datname LIKE %s",
                                      (f"{DB}_before_%",))]
        drop(PLAIN_DB, *kept)

        print("deleting 5 % of the activities (rolled back):")
        with_checks = delete_share(5, floor=False)
        floor = delete_share(5, floor=True)
        print(f"  foreign keys checked (every key indexed)     {with_checks:6.1f} s")
        print(f"  foreign-key checks off (the floor)           {floor:6.1f} s")

        original = build_original(activities, users)
        print(f"original schema.sql database made             {original:6.1f} s   {size_of(ORIGINAL_DB)}")

        print(f"the API under load ({CLIENTS} clients, 4 feed reads to 1 signed-in post), by window:")
        api, tokens = start_api()
        load = Load(tokens)
        load.start()
        during(load, "no chore (baseline)", lambda: time.sleep(20))
        migrations = WORK / "migrations"
        shutil.copytree(REPO / "sql" / "migrations", migrations)
        (migrations / "0006_bench_note.sql").write_text(
            "-- depends: 0005_replies_count\nALTER TABLE public.activities ADD COLUMN bench_note text;\n")
        (migrations / "0007_bench_note_index.sql").write_text(
            "-- depends: 0006_bench_note\n-- transactional: false\n"
            "DROP INDEX CONCURRENTLY IF EXISTS public.activities_bench_note_idx;\n"
            "CREATE INDEX CONCURRENTLY activities_bench_note_idx ON public.activities (bench_note);\n")
        during(load, "db-migrate (ALTER, then CREATE INDEX CONC.)",
               lambda: playbook("db-migrate", DB, cruddur_db_migrations_dir=str(migrations)))
        during(load, "no chore", lambda: time.sleep(10))
        (migrations / "0008_bench_note_default.sql").write_text(
            "-- depends: 0007_bench_note_index\n"
            "ALTER TABLE public.activities ALTER COLUMN bench_note SET DEFAULT 'noted';\n")

        def blocked_migration():
            holder = hold_activities(4)
            playbook("db-migrate", DB, cruddur_db_migrations_dir=str(migrations))
            holder.join()
        during(load, "db-migrate blocked 4 s by a long transaction", blocked_migration)
        during(load, "adoption of the original (another database)",
               lambda: playbook("db-migrate", ORIGINAL_DB))
        during(load, "db-purge-expired", lambda: playbook("db-purge-expired", DB))
        during(load, "no chore", lambda: time.sleep(10))
        load.stop.set()
        load.join()
        errors = sum(1 for s in load.samples if s[2])
        print(f"  all windows: {len(load.samples):,} requests, {errors} errors")
    finally:
        if api is not None:
            os.killpg(api.pid, signal.SIGTERM)
            api.wait(timeout=30)
        kept = [row[0] for row in sql("postgres", "SELECT datname FROM pg_database WHERE datname LIKE %s",
                                      (f"{DB}%",))]
        drop(DB, ORIGINAL_DB, PLAIN_DB, *kept)
        shutil.rmtree(WORK, ignore_errors=True)


if __name__ == "__main__":
    main()
