#!/usr/bin/env python3
"""Time `db-setup` (drop, create, migrate, seed) against the same work done with plain psql.

Both run against the local PostgreSQL on a throwaway database (cruddur_bench_setup), RUNS times
each, interleaved; prints the median and best of each, their ratio, and where the playbook's seconds go
(ansible-playbook start-up, and the slowest tasks from the profile_tasks callback).

    .venv/bin/python benchmarks/db_setup.py [RUNS]
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
DB = "cruddur_bench_setup"
PASSWORD = os.environ.get("CRUDDUR_LOCAL_DB_PASSWORD") or "password"
ENV = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1",
       "PGPASSWORD": PASSWORD, "PATH": f"{VENV_BIN}:{os.environ['PATH']}"}
PSQL = ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-U", "postgres"]


def timed(commands: list[list[str]], env=ENV) -> float:
    start = time.perf_counter()
    for command in commands:
        subprocess.run(command, cwd=REPO, env=env, check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE)
    return time.perf_counter() - start


def playbook(*extra: str) -> list[str]:
    connection = {"host": "127.0.0.1", "port": 5432, "name": DB, "sslmode": "prefer", "sslrootcert": ""}
    return [str(VENV_BIN / "ansible-playbook"), "playbooks/db-setup.yml",
            "-e", json.dumps({"cruddur_db_connection": connection, "cruddur_db_env_file": "/tmp/cruddur-bench.env"}),
            *extra]


def plain_psql() -> list[list[str]]:
    """What the original shell scripts did, done correctly: one psql per step."""
    migrations = sorted(p for p in (REPO / "sql/migrations").glob("*.sql") if not p.name.endswith(".rollback.sql"))
    return [
        PSQL + ["-d", "postgres", "-c", f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)"],
        PSQL + ["-d", "postgres", "-c", f"CREATE DATABASE {DB}"],
        # A migration marked `-- transactional: false` (CREATE INDEX CONCURRENTLY) cannot run in one.
        *[PSQL + ["-d", DB, *([] if "-- transactional: false" in m.read_text() else ["-1"]), "-f", str(m)]
          for m in migrations],
        PSQL + ["-d", DB, "-f", str(REPO / "sql/seed/seed.sql")],
    ]


def measure(runs: int) -> tuple[list[float], list[float], list[float], list[str]]:
    """db-setup and plain psql RUNS times each,
    ansible-playbook's start-up, and the slowest tasks of one profiled run; the throwaway
    database is dropped afterwards."""
    timed([playbook()])  # warm caches once
    # Interleaved, the order rotating each round: what a run leaves behind (the WAL and dirty
    # pages of a dropped and created database, a warm or cold CPU cache) falls on each kind of run
    # alike. Run one kind after another and the last kind pays for the others.
    kinds = {"ansible": ([playbook()], ENV), "psql": (plain_psql(), ENV)}
    times: dict[str, list[float]] = {kind: [] for kind in kinds}
    order = list(kinds)
    for round_ in range(runs):
        for kind in order[round_ % 2:] + order[:round_ % 2]:
            commands, env = kinds[kind]
            times[kind].append(timed(commands, env))
    ansible, psql = times["ansible"], times["psql"]
    startup = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([str(VENV_BIN / "ansible-playbook"), "playbooks/db-setup.yml", "--list-tasks"],
                       cwd=REPO, env=ENV, check=True, stdout=subprocess.DEVNULL)
        startup.append(time.perf_counter() - start)
    profile = subprocess.run(playbook(), cwd=REPO, capture_output=True, text=True, check=True,
                             env={**ENV, "ANSIBLE_CALLBACKS_ENABLED": "ansible.posix.profile_tasks",
                                  "PROFILE_TASKS_TASK_OUTPUT_LIMIT": "8"})
    slowest = [line.strip() for line in profile.stdout.splitlines() if re.search(r"-{3,} \d+\.\d+s$", line)][:8]
    subprocess.run(PSQL + ["-d", "postgres", "-c", f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)"],
                   env=ENV, check=True, stdout=subprocess.DEVNULL)
    return ansible, psql, startup, slowest


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    ansible, psql, startup, slowest = measure(runs)
    med_a, med_p = statistics.median(ansible), statistics.median(psql)
    print(f"db-setup benchmark, {runs} runs each, database {DB}")
    print(f"  ansible-playbook db-setup.yml : median {med_a:.3f} s   best {min(ansible):.3f} s")
    print(f"  plain psql (same steps)       : median {med_p:.3f} s   best {min(psql):.3f} s")
    print(f"  ratio (median)                : {med_a / med_p:.1f}x   best against best {min(ansible) / min(psql):.1f}x")
    print(f"  of which ansible-playbook start-up and parsing (--list-tasks): "
          f"median {statistics.median(startup):.3f} s")
    print("  slowest tasks (profile_tasks):")
    for line in slowest:
        print("    " + line)


if __name__ == "__main__":
    main()
