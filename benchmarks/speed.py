#!/usr/bin/env python3
"""The speed figures side by side, in one run:

- db-setup (drop, create, migrate, seed) against the same steps in plain psql (benchmarks/db_setup.py);
- a converged site.yml on this machine (nothing to change), RUNS times;
- bin/test's phases, as the last bin/test run recorded them (.cache/bin-test-phases.tsv): the
  suite takes too long to run inside a benchmark, so its own timing is printed with its date;
  and how its parallel phase ended (.cache/test-timeline.tsv): a worker that runs out of tests
  early leaves a core idle.

Prints figures, never passes or fails on them.

    .venv/bin/python benchmarks/speed.py [RUNS]
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import db_setup  # noqa: E402  (the db-setup and psql measurement)
from ansible.release import __version__ as ansible_version  # noqa: E402

REPO = db_setup.REPO
# The aims of issue #28, with plain ansible-core.
AIMS = {"db-setup / psql": 10.0, "converged site.yml s": 12.0, "bin/test s": 900.0}


def converged_site(runs: int, env: dict) -> list[float]:
    command = [str(db_setup.VENV_BIN / "ansible-playbook"), "site.yml"]
    first = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, check=False)
    if first.returncode != 0:
        sys.exit("site.yml failed; converge this machine first (bin/up):\n" + first.stdout[-2000:])
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(command, cwd=REPO, env=env, check=True, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    return times


def print_tail(timeline: Path) -> None:
    """How the last bin/test run's parallel phase ended: when each xdist worker ran out of tests,
    and the last tests of the one that finished last."""
    rows = [line.split("\t", 3) for line in timeline.read_text().splitlines() if line.count("\t") == 3]
    tests = [(worker, float(start), float(end), nodeid) for worker, start, end, nodeid in rows
             if worker.startswith("gw")]
    if not tests:
        return
    end = max(t[2] for t in tests)
    print("  parallel phase, its end (last bin/test run, .cache/test-timeline.tsv):")
    for worker in sorted({t[0] for t in tests}):
        mine = [t for t in tests if t[0] == worker]
        busy = sum(t[2] - t[1] for t in mine)
        idle = end - max(t[2] for t in mine)
        print(f"    {worker}: {len(mine)} tests, busy {busy:6.0f} s, out of tests {idle:5.0f} s before the end")
    last_worker = max(tests, key=lambda t: t[2])[0]
    for worker, start, stop, nodeid in sorted(t for t in tests if t[0] == last_worker)[-8:]:
        print(f"      {worker} {stop - start:6.1f} s  ends {stop - end:+6.1f} s  {nodeid}")


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    ansible, psql, startup, slowest = db_setup.measure(runs)
    site = converged_site(runs, db_setup.ENV)
    phases = REPO / ".cache" / "bin-test-phases.tsv"

    ratio = statistics.median(ansible) / statistics.median(psql)
    print(f"speed, {runs} runs of each, medians, plain ansible-core {ansible_version} (aims in brackets)")
    print(f"  db-setup.yml                 {statistics.median(ansible):8.2f} s   best {min(ansible):.2f} s")
    print(f"  plain psql, same steps       {statistics.median(psql):8.2f} s   best {min(psql):.2f} s")
    print(f"  db-setup / psql              {ratio:8.1f} x   [{AIMS['db-setup / psql']:.0f}x]   "
          f"best against best {min(ansible) / min(psql):.1f} x")
    print(f"  ansible-playbook start-up    {statistics.median(startup):8.2f} s   (--list-tasks)")
    print(f"  converged site.yml           {statistics.median(site):8.2f} s   "
          f"[{AIMS['converged site.yml s']:.0f} s]   best {min(site):.2f} s")
    if phases.exists():
        rows = [line.split("\t") for line in phases.read_text().splitlines() if "\t" in line]
        finished = dict(rows).get("finished", "?")
        print(f"  bin/test phases (last run, finished {finished}):")
        for name, seconds in rows:
            if name == "finished":
                continue
            aim = f"   [{AIMS['bin/test s']:.0f} s]" if name == "total" else ""
            print(f"    {name:<66} {int(seconds):6d} s{aim}")
    else:
        print("  bin/test phases: no record yet (run bin/test once)")
    timeline = REPO / ".cache" / "test-timeline.tsv"
    if timeline.exists() and timeline.stat().st_size:
        print_tail(timeline)
    print("  slowest db-setup tasks (profile_tasks):")
    for line in slowest:
        print("    " + line)


if __name__ == "__main__":
    main()
