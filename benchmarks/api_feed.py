#!/usr/bin/env python3
"""The API's throughput and latency at 1k, 100k and 1M activities, beside pgbench's ceiling:
the anonymous home feed, and signed-in posts (each checks its access token).

For each size it fills a throwaway database (cruddur_bench_feed) to that many activities,
starts a real gunicorn (the deployed configuration: gthread, 2 workers x 4 threads, pool of 4)
on 127.0.0.1:4599, loads GET /api/activities/home for DURATION seconds with CONCURRENCY
keep-alive clients (wrk when installed, else a Python client), then POST /api/activities with
a bearer token (the local issuer's, RS256; the key set is read once, not per request), and
runs pgbench with the same SQL the API sends for each (prepared, same concurrency). Only
loopback is used.

    .venv/bin/python benchmarks/api_feed.py [DURATION_SECONDS] [SIZES...]
"""

from __future__ import annotations

import http.client
import json
import os
import re
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

REPO = Path(__file__).resolve().parent.parent
API_DIR = REPO / "files" / "api"
VENV_BIN = Path(sys.executable).parent
DB = "cruddur_bench_feed"
PASSWORD = os.environ.get("CRUDDUR_LOCAL_DB_PASSWORD") or "password"
PORT = 4599
CONCURRENCY = 8
LAST_SPREAD: list[int] = []
ENV = {**os.environ, "PGPASSWORD": PASSWORD, "PGOPTIONS": "-c client_min_messages=warning"}
PSQL = ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-U", "postgres"]
sys.path.insert(0, str(API_DIR))
from cruddur_api.db import SQL_DIR, WRAP_PAGE, load_templates  # noqa: E402  (the API's own SQL)

sys.path.insert(0, str(REPO / "collections"))
# The local stack's token issuer: a key of its own for the run, its key set in the API's config.
from ansible_collections.cruddur.ops.plugins.modules import cruddur_local_issuer as issuer  # noqa: E402

WORK = Path(tempfile.mkdtemp(prefix="cruddur-bench-"))
KEY, _ = issuer.load_or_create(str(WORK / "issuer.pem"), check_mode=False)
JWK = issuer.public_jwk(KEY)


def psql(db: str, sql: str) -> str:
    return subprocess.run(PSQL + ["-d", db, "-tAc", sql], env=ENV, check=True,
                          capture_output=True, text=True).stdout.strip()


def prepare_database() -> None:
    psql("postgres", f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
    psql("postgres", f"CREATE DATABASE {DB}")
    for migration in sorted((REPO / "sql/migrations").glob("*.sql")):
        if not migration.name.endswith(".rollback.sql"):
            # One transaction each, but for those that build indexes CONCURRENTLY.
            single = [] if "-- transactional: false" in migration.read_text() else ["-1"]
            subprocess.run(PSQL + ["-d", DB, *single, "-f", str(migration)], env=ENV, check=True)
    subprocess.run(PSQL + ["-d", DB, "-f", str(REPO / "sql/seed/seed.sql")], env=ENV, check=True,
                   stdout=subprocess.DEVNULL)
    # The seed's users as the post-confirmation trigger would have linked them.
    psql(DB, "UPDATE users SET cognito_user_id = 'bench-' || handle")


def fill_to(size: int) -> float:
    start = time.perf_counter()
    have = int(psql(DB, "SELECT count(*) FROM activities"))
    if size > have:
        psql(DB, f"""
            INSERT INTO activities (user_uuid, message, created_at, expires_at)
            SELECT u.uuid, 'benchmark activity ' || i,
                   now() - i * interval '1 second', now() + interval '7 days'
            FROM generate_series({have + 1}, {size}) AS i
            CROSS JOIN LATERAL (SELECT uuid FROM users ORDER BY handle LIMIT 1 OFFSET i % 2) AS u""")
        psql(DB, "VACUUM ANALYZE activities")
    return time.perf_counter() - start


def start_api() -> subprocess.Popen:
    conf = Path(tempfile.mkdtemp()) / "gunicorn.conf.py"
    conf.write_text(f'bind = "127.0.0.1:{PORT}"\nworkers = 2\nworker_class = "gthread"\nthreads = 4\n'
                    'accesslog = None\nerrorlog = "-"\nloglevel = "warning"\n')
    config = conf.with_name("config.json")
    config.write_text(json.dumps({
        "CONNECTION_URL": f"postgresql://postgres@127.0.0.1:5432/{DB}",
        "AUTH_ISSUER": issuer.ISSUER, "AUTH_JWKS": {"keys": [JWK]}, "AUTH_CLIENT_IDS": [issuer.CLIENT_ID]}))
    env = {**os.environ, "CRUDDUR_API_CONFIG": str(config), "PGPASSWORD": PASSWORD, "PYTHONDONTWRITEBYTECODE": "1"}
    for key in [k for k in env if k.startswith("OTEL_") or k in ("CONNECTION_URL", "PROD_CONNECTION_URL")]:
        del env[key]
    proc = subprocess.Popen([str(VENV_BIN / "gunicorn"), "--config", str(conf), "cruddur_api.wsgi:app"],
                            cwd=API_DIR, env=env, start_new_session=True)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{PORT}/api/health", timeout=2) as r:
                if r.status == 200:
                    return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("gunicorn did not become healthy")


def stop_api(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=30)


def connections_per_worker() -> list[int]:
    """How the clients' keep-alive connections are spread over gunicorn's workers right now.
    A connection stays with the worker that accepted it, so an uneven spread (6/2 with 8
    clients and 2 workers) caps the run at what the busier worker's threads can do."""
    out = subprocess.run(["ss", "-Htnp", "state", "established", f"( sport = :{PORT} )"],
                         capture_output=True, text=True, check=False).stdout
    counts: dict[str, int] = {}
    for pid in re.findall(r"pid=(\d+)", out):
        counts[pid] = counts.get(pid, 0) + 1
    return sorted(counts.values(), reverse=True)


def load_python(duration: float, post: bool = False) -> tuple[float, float, float]:
    """GET the home feed, or (post) POST an activity signed in as a seed user, from CONCURRENCY
    keep-alive clients; each client is one signed-in user with one token, as a browser is."""
    latencies: list[float] = []
    lock = threading.Lock()
    stop_at = time.monotonic() + duration

    def client(number: int):
        conn = http.client.HTTPConnection("127.0.0.1", PORT, timeout=10)
        handle = ("andrewbrown", "bayko")[number % 2]
        token = issuer.mint(KEY, JWK, f"bench-{handle}", 3600)
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        body = json.dumps({"message": f"benchmark post by {handle}", "ttl": "1-hour"})
        mine = []
        while time.monotonic() < stop_at:
            start = time.perf_counter()
            if post:
                conn.request("POST", "/api/activities", body, headers)
            else:
                conn.request("GET", "/api/activities/home")
            response = conn.getresponse()
            response.read()
            if response.status != 200:
                raise SystemExit(f"{'create' if post else 'home feed'} answered {response.status}")
            mine.append(time.perf_counter() - start)
        conn.close()
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=client, args=(number,)) for number in range(CONCURRENCY)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    time.sleep(min(0.5, duration / 4))
    global LAST_SPREAD
    LAST_SPREAD = connections_per_worker()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    latencies.sort()
    p99 = latencies[int(len(latencies) * 0.99) - 1]
    return len(latencies) / elapsed, statistics.median(latencies) * 1000, p99 * 1000


def load_wrk(duration: float) -> tuple[float, float, float]:
    global LAST_SPREAD
    proc = subprocess.Popen(["wrk", "-t2", f"-c{CONCURRENCY}", f"-d{int(duration)}s", "--latency",
                             f"http://127.0.0.1:{PORT}/api/activities/home"], stdout=subprocess.PIPE, text=True)
    time.sleep(min(1.0, duration / 4))
    LAST_SPREAD = connections_per_worker()
    out = proc.communicate()[0]
    if proc.returncode != 0:
        raise SystemExit(f"wrk failed ({proc.returncode})")
    if re.search(r"Non-2xx or 3xx responses", out):
        raise SystemExit(out)

    def ms(label):
        value, unit = re.search(rf"^\s+{label}\s+([\d.]+)(us|ms|s)$", out, re.M).groups()
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    return rps, ms("50%"), ms("99%")


def pgbench(duration: float, post: bool = False) -> float:
    """The SQL the API sends for the feed page, or (post) for a create, fragments included."""
    templates = load_templates(SQL_DIR)
    if post:
        script = (templates["activities/create"].replace("%(message)s", "'benchmark post'")
                  .replace("%(ttl)s", "'1 hour'").replace("%(sub)s", "'bench-bayko'")) + ";\n"
    else:
        script = WRAP_PAGE.format(template=templates["activities/home"]).replace("%(limit)s", "20") + ";\n"
    # pgbench scripts are one statement per line
    script = " ".join(line.split("--")[0].strip() for line in script.splitlines()) + "\n"
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as handle:
        handle.write(script)
    out = subprocess.run(["pgbench", "-n", "-h", "127.0.0.1", "-U", "postgres", "-M", "prepared",
                          f"-c{CONCURRENCY}", "-j2", f"-T{int(duration)}", "-f", handle.name, DB],
                         env=ENV, check=True, capture_output=True, text=True).stdout
    return float(re.search(r"tps = ([\d.]+)", out).group(1))


def main() -> None:
    duration = float(sys.argv[1]) if len(sys.argv) > 1 else 10
    sizes = [int(s) for s in sys.argv[2:]] or [1_000, 100_000, 1_000_000]
    loader = load_wrk if shutil.which("wrk") else load_python
    print(f"home feed benchmark: {CONCURRENCY} keep-alive clients, {duration:.0f}s per size, "
          f"load from {'wrk' if loader is load_wrk else 'a Python client (install wrk for a lighter one)'}")
    print(f"{'activities':>11} {'request':>18} {'fill s':>7} {'API req/s':>10} {'p50 ms':>8} {'p99 ms':>8} "
          f"{'pgbench tps':>12} {'API/pgbench':>12}  conns/worker")
    print("conns/worker: how the keep-alive connections were spread over gunicorn's workers. A")
    print("connection stays with the worker that accepted it; all 8 on one worker halves req/s on 2 cores.")
    prepare_database()
    try:
        for size in sizes:
            fill = fill_to(size)
            api = start_api()
            try:
                load_python(1)  # warm the pools and the prepared statements
                feed = loader(duration), "/".join(str(n) for n in LAST_SPREAD) or "?"
                create = load_python(duration, post=True), "/".join(str(n) for n in LAST_SPREAD) or "?"
            finally:
                stop_api(api)
            for label, ((rps, p50, p99), spread), post in (("GET home (anon)", feed, False),
                                                             ("POST create (JWT)", create, True)):
                tps = pgbench(duration, post)
                print(f"{size:>11,} {label:>18} {fill:>7.1f} {rps:>10.0f} {p50:>8.2f} {p99:>8.2f} {tps:>12.0f} "
                      f"{rps / tps:>12.2f}  {spread}")
            # The posts are the benchmark's own: the next size starts from the feed's rows.
            psql(DB, "DELETE FROM activities WHERE message = 'benchmark post' OR message LIKE 'benchmark post by %'")
    finally:
        psql("postgres", f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
        shutil.rmtree(WORK, ignore_errors=True)


if __name__ == "__main__":
    main()
