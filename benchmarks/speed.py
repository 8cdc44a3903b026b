#!/usr/bin/env python3
"""The speed figures side by side, in one run:

- db-setup (drop, create, migrate, seed) against the same steps in plain psql (benchmarks/db_setup.py);
- a converged site.yml on this machine (nothing to change), RUNS times;
- bin/test's phases, as the last bin/test run recorded them (.cache/bin-test-phases.tsv): the
  suite takes too long to run inside a benchmark, so its own timing is printed with its date.

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

REPO = db_setup.REPO
AIMS = {"db-setup / psql": 5.0, "converged site.yml s": 10.0, "bin/test s": 480.0}


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


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    ansible, shipped, psql, startup, slowest = db_setup.measure(runs)
    site = converged_site(runs, db_setup.ENV)
    site_shipped = converged_site(runs, db_setup.SHIPPED)
    phases = REPO / ".cache" / "bin-test-phases.tsv"

    ratio = statistics.median(ansible) / statistics.median(psql)
    print(f"speed, {runs} runs of each, medians (aims from issue #13 in brackets)")
    print(f"  db-setup.yml                 {statistics.median(ansible):8.2f} s")
    print(f"    modules shipped            {statistics.median(shipped):8.2f} s   (CRUDDUR_IN_PROCESS=0)")
    print(f"  plain psql, same steps       {statistics.median(psql):8.2f} s")
    print(f"  db-setup / psql              {ratio:8.1f} x   [{AIMS['db-setup / psql']:.0f}x]")
    print(f"  ansible-playbook start-up    {statistics.median(startup):8.2f} s   (--list-tasks)")
    print(f"  converged site.yml           {statistics.median(site):8.2f} s   "
          f"[{AIMS['converged site.yml s']:.0f} s]   best {min(site):.2f} s")
    print(f"    modules shipped            {statistics.median(site_shipped):8.2f} s   (CRUDDUR_IN_PROCESS=0)")
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
    print("  slowest db-setup tasks (profile_tasks):")
    for line in slowest:
        print("    " + line)


if __name__ == "__main__":
    main()
