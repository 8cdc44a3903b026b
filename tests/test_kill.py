"""Chores killed half-way lose nothing.

Each chore runs as a user runs it (ansible-playbook in a session of its own) and is interrupted at a
random point in one of the ways a chore really dies:

- ``sigkill-group``: SIGKILL to every process of the chore, found by a tag in their environment
  (ansible-playbook's workers start sessions of their own): a closed terminal, a lost SSH session;
- ``sigint-group``: SIGINT to the process group (Ctrl-C), twice if the first does not end it;
- ``sigkill-parent``: SIGKILL to ansible-playbook alone: its workers, the modules and the
  pg_dump/pg_restore they started live on.

Then the invariants are asserted: the live database is exactly as before or exactly as after one of
the chore's steps (a canonical pg_dump compared), no half-written backup is listed, no session or
lock is left, and the next run finishes the work (``changed=0`` on the run after that).

The points are drawn from a seeded generator. CI runs CRUDDUR_KILL_POINTS (default 1) points per
chore and way of dying; a failure names the seed, and ``CRUDDUR_KILL_SEED=<seed>`` replays it.
``CRUDDUR_KILL_POINTS=20`` is the on-demand run.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from conftest import (PG, REPO, SCRATCH_ENV_FILE, VENV_BIN, build_original, connect, drop_database, on_database,
                      query, run_playbook)

SEED = int(os.environ.get("CRUDDUR_KILL_SEED") or random.SystemRandom().randrange(1_000_000))
POINTS = int(os.environ.get("CRUDDUR_KILL_POINTS") or 1)
WAYS = ("sigkill-group", "sigint-group", "sigkill-parent")
MIGRATIONS = REPO / "sql" / "migrations"
print(f"kill tests: seed {SEED}, {POINTS} point(s) per chore and way (replay: CRUDDUR_KILL_SEED={SEED})")

# Two migrations of the kind a real change brings: a transactional one that rewrites every row,
# and a non-transactional index build.
EXTRA_MIGRATIONS = {
    "0006_kill_note.sql": "-- depends: 0005_replies_count\n"
                          "ALTER TABLE public.activities ADD COLUMN kill_note text;\n"
                          "UPDATE public.activities SET kill_note = 'noted ' || uuid;\n",
    "0007_kill_note_index.sql": "-- depends: 0006_kill_note\n-- transactional: false\n"
                                "DROP INDEX CONCURRENTLY IF EXISTS public.activities_kill_note_idx;\n"
                                "CREATE INDEX CONCURRENTLY activities_kill_note_idx "
                                "ON public.activities (kill_note);\n",
}


def seed_note(extra: str = "") -> str:
    return f"(seed {SEED}{extra}; replay with CRUDDUR_KILL_SEED={SEED})"


# --- the database's state -----------------------------------------------------------------------

def state(dbname: str) -> tuple[str, list[str]]:
    """The database as the application sees it: schema and rows (pg_dump, owners and the
    migration record's timestamps aside; pg_dump leaves out INVALID indexes, which no query uses
    and the next run rebuilds), and the migrations recorded, in order."""
    proc = subprocess.run(["pg_dump", "--no-owner", "--no-privileges", "--exclude-table-data=cruddur_schema_migrations",
                           "-h", PG["host"], "-U", PG["user"], dbname],
                          env={**os.environ, "PGPASSWORD": PG["password"]}, capture_output=True, text=True,
                          check=True)
    # A rolled-back migration still used a number of the record's sequence: its value is left out.
    dump = "\n".join(line for line in proc.stdout.splitlines()
                     if not line.startswith(("\\restrict", "\\unrestrict", "-- Dumped"))
                     and not (line.startswith("SELECT pg_catalog.setval(") and "cruddur_schema_migrations" in line))
    recorded = query(dbname, "SELECT coalesce(array_agg(migration_id ORDER BY seq), '{}') FROM "
                             "cruddur_schema_migrations") if query(
        dbname, "SELECT to_regclass('public.cruddur_schema_migrations') IS NOT NULL")[0][0] else [([],)]
    return dump, list(recorded[0][0])


def copy_database(template: str, name: str) -> None:
    admin = connect("postgres")
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    admin.close()


def sessions_on(dbname: str) -> int:
    return query("postgres", "SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (dbname,))[0][0]


def settle(dbname: str, timeout: float = 90) -> None:
    """Wait until no session is left on the database: a killed client's backend ends once its
    statement does."""
    deadline = time.monotonic() + timeout
    while sessions_on(dbname) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert sessions_on(dbname) == 0, f"sessions left on {dbname} {seed_note()}"


# --- running a chore and killing it ------------------------------------------------------------

def of_the_chore(tag: str) -> list[int]:
    """The running processes (zombies aside) that carry the chore's tag in their environment:
    ansible-playbook, its workers (which start sessions of their own), the modules and the tools
    they run, whichever process group or session they are in, and whoever their parent is now."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
            environ = Path(f"/proc/{entry}/environ").read_bytes()
        except OSError:
            continue
        if state != "Z" and f"CRUDDUR_KILL_TAG={tag}".encode() in environ.split(b"\0"):
            found.append(int(entry))
    return found


def run_killed(playbook: str, extra_vars: dict, delay: float, way: str) -> str:
    """Start the chore in a session of its own, interrupt it `delay` seconds in, and wait until
    every process it started has ended. Returns what happened ('finished' when it ended before
    the kill point)."""
    tag = uuid.uuid4().hex
    env = {**os.environ, "ANSIBLE_NOCOLOR": "1", "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
           "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '')}", "CRUDDUR_KILL_TAG": tag}
    command = [str(VENV_BIN / "ansible-playbook"), f"playbooks/{playbook}.yml", "-e", json.dumps(extra_vars)]
    proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        proc.wait(timeout=delay)
        return "finished"
    except subprocess.TimeoutExpired:
        pass
    if way == "sigkill-group":
        # The terminal or SSH session is gone: everything the chore started dies with it. Again
        # until none is left, as a worker may be forking at that very moment.
        quiet_since = time.monotonic()
        while time.monotonic() - quiet_since < 0.5:
            for pid in of_the_chore(tag):
                quiet_since = time.monotonic()
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.02)
    elif way == "sigint-group":
        # Ctrl-C, and again if the first did not end it (as a user does), to the foreground group.
        for _ in range(2):
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout=15)
                break
            except subprocess.TimeoutExpired:
                continue
    else:
        os.kill(proc.pid, signal.SIGKILL)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    deadline = time.monotonic() + 120
    while of_the_chore(tag):  # the workers, modules and tools that live on end by themselves
        assert time.monotonic() < deadline, (
            f"processes of the chore still run 120 s after {way}: "
            f"{[Path(f'/proc/{pid}/cmdline').read_bytes()[:200] for pid in of_the_chore(tag)]} {seed_note()}")
        time.sleep(0.1)
    return f"killed by {way} at {delay:.2f} s"


def kill_points(chore: str, duration: float) -> list[tuple[str, float]]:
    """POINTS kill points for each way of dying, drawn from the seed: (way, seconds into the run)."""
    points = []
    for way in WAYS:
        generator = random.Random(f"{SEED}-{chore}-{way}")
        points += [(way, round(generator.uniform(0.2, duration), 2)) for _ in range(POINTS)]
    return points


DURATIONS: dict[str, float] = {}


def timed_run(playbook: str, extra_vars: dict):
    start = time.monotonic()
    run = run_playbook(f"playbooks/{playbook}.yml", extra_vars=extra_vars)
    return run, time.monotonic() - start


def kill_on_a_copy(playbook: str, extra: dict, template: str, live: str, names: str, way: str, delay: float) -> str:
    """Make `live` a fresh copy of `template`, run the chore on it killed at `delay`, and wait
    until no session is left on any of the test's databases; the note for the assertions."""
    drop_database(live)
    copy_database(template, live)
    what = run_killed(playbook, extra, delay, way)
    for (name,) in query("postgres", "SELECT datname FROM pg_database WHERE datname LIKE %s", (names + "%",)):
        settle(name)
    return seed_note(f", {what}")


# --- fixtures -----------------------------------------------------------------------------------

@pytest.fixture
def names(postgresql):
    """A prefix for this test's databases; every database with it is dropped afterwards."""
    prefix = f"cruddur_kill_{uuid.uuid4().hex[:8]}"
    yield prefix
    for (name,) in query("postgres", "SELECT datname FROM pg_database WHERE datname LIKE %s", (prefix + "%",)):
        drop_database(name)


def setup_database(name: str, activities: int = 2000) -> None:
    run = run_playbook("playbooks/db-setup.yml", extra_vars={**on_database(name),
                                                              "cruddur_db_env_file": SCRATCH_ENV_FILE})
    assert run.rc == 0, run.output[-3000:]
    if activities:
        add_activities(name, activities)


def add_activities(name: str, count: int) -> None:
    query(name, "INSERT INTO users (display_name, handle) VALUES ('Kill Test', 'killtest') ON CONFLICT DO NOTHING")
    query(name, "INSERT INTO activities (user_uuid, message, created_at) "
                "SELECT (SELECT uuid FROM users WHERE handle = 'killtest'), 'row ' || i, "
                "timestamptz '2026-01-01' + i * interval '1 second' FROM generate_series(1, %s) AS i", (count,))


def migrations_with(tmp_path: Path, names_: list[str]) -> Path:
    target = tmp_path / f"migrations-{len(names_)}"
    if not target.exists():
        shutil.copytree(MIGRATIONS, target)
        for name in names_:
            (target / name).write_text(EXTRA_MIGRATIONS[name])
    return target


# --- db-migrate ---------------------------------------------------------------------------------

def assert_killed_migrations_stop_on_a_step(names: str, template: str, steps: list[Path], chore: str) -> None:
    """db-migrate on copies of `template`, killed at the seed's points, with the migrations of
    steps[-1]. Each of `steps` is a migrations directory a run to the end brings the database to:
    the states a killed run may leave are the template's and those. Asserted after each kill: one
    of those states, no session or migration lock left, the next run finishes, the one after
    changes nothing."""
    states = [state(template)]
    for number, directory in enumerate(steps):
        copy_database(template, f"{names}_s{number}")
        run, seconds = timed_run("db-migrate", {**on_database(f"{names}_s{number}"),
                                                "cruddur_db_migrations_dir": str(directory)})
        assert run.rc == 0, run.output[-3000:]
        states.append(state(f"{names}_s{number}"))
    for point, (way, delay) in enumerate(kill_points(chore, seconds * 1.1)):
        target = f"{names}_p{point}"
        copy_database(template, target)
        extra = {**on_database(target), "cruddur_db_migrations_dir": str(steps[-1])}
        what = run_killed("db-migrate", extra, delay, way)
        settle(target)
        note = seed_note(f", {what}")
        assert state(target) in states, f"the database is between states {note}"
        assert query("postgres", "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND database = "
                                 "(SELECT oid FROM pg_database WHERE datname = %s)", (target,)) == [(0,)], note
        finish = run_playbook("playbooks/db-migrate.yml", extra_vars=extra)
        assert finish.rc == 0, (note, finish.output[-3000:])
        assert state(target) == states[-1], note
        again = run_playbook("playbooks/db-migrate.yml", extra_vars=extra)
        assert again.rc == 0 and again.changed() == 0, (note, again.output[-3000:])


def test_a_killed_migration_leaves_the_database_before_or_after_a_migration(names, tmp_path):
    template = f"{names}_template"
    setup_database(template, activities=5000)
    # After 0006, after 0007.
    steps = [migrations_with(tmp_path, ["0006_kill_note.sql"]),
             migrations_with(tmp_path, ["0006_kill_note.sql", "0007_kill_note_index.sql"])]
    assert_killed_migrations_stop_on_a_step(names, template, steps, "db-migrate")


def test_a_killed_adoption_leaves_the_original_or_an_adopted_database(names, tmp_path):
    template = f"{names}_template"
    build_original(template, sql="INSERT INTO public.users (display_name, handle) VALUES ('Kill Test', 'killtest');"
                                 "INSERT INTO public.activities (user_uuid, message, expires_at) "
                                 "SELECT (SELECT uuid FROM public.users WHERE handle = 'killtest'), 'row ' || i, "
                                 "timestamp '2027-01-01' FROM generate_series(1, 5000) AS i")
    # Adoption records 0001-0002 in one transaction; 0003-0005 follow one by one: adopted, then
    # adopted with each later migration.
    ids = sorted(p.name for p in MIGRATIONS.glob("0*.sql") if not p.name.endswith(".rollback.sql"))
    steps = []
    for upto in range(2, len(ids) + 1):
        directory = tmp_path / f"upto-{upto}"
        directory.mkdir()
        for name in ids[:upto]:
            for path in MIGRATIONS.glob(name.replace(".sql", "*")):
                shutil.copy(path, directory / path.name)
        steps.append(directory)
    assert_killed_migrations_stop_on_a_step(names, template, steps, "adoption")


# --- db-backup and db-restore ---------------------------------------------------------------------

def listed_backups(directory: Path, name: str) -> list[Path]:
    """What restore, retention and a user see as backups: <db>-<stamp>.dump."""
    return sorted(p for p in directory.glob(f"{name}-*.dump") if p.name.endswith(".dump"))


def assert_every_listed_backup_is_complete(directory: Path, name: str, note: str) -> None:
    import hashlib
    for dump in listed_backups(directory, name):
        digest = Path(f"{dump}.sha256").read_text().split()[0] if Path(f"{dump}.sha256").exists() else None
        assert digest == hashlib.sha256(dump.read_bytes()).hexdigest(), f"{dump.name} is listed but incomplete {note}"
        manifest = json.loads(Path(f"{dump}.json").read_text())
        assert manifest["sha256"] == digest and "activities" in manifest["tables"], note


def test_a_killed_backup_lists_nothing_half_written_and_the_next_cleans_up(names, tmp_path):
    live = f"{names}_live"
    setup_database(live, activities=5000)
    before = state(live)
    backups = tmp_path / "backups"
    extra = {**on_database(live), "cruddur_db_backup_dir": str(backups), "cruddur_db_backup_keep": 50}
    run, seconds = timed_run("db-backup", extra)
    assert run.rc == 0, run.output[-3000:]
    for way, delay in kill_points("db-backup", seconds * 1.1):
        what = run_killed("db-backup", extra, delay, way)
        settle(live)
        note = seed_note(f", {what}")
        assert state(live) == before, note
        assert_every_listed_backup_is_complete(backups, live, note)
        time.sleep(1.1)  # a backup's name has the second it was taken
        finish = run_playbook("playbooks/db-backup.yml", extra_vars=extra)
        assert finish.rc == 0, (note, finish.output[-3000:])
        assert_every_listed_backup_is_complete(backups, live, note)
        # What the interrupted run left is gone: no partial file, no manifest without its dump.
        left = sorted(p.name for p in backups.iterdir()
                      if ".partial-" in p.name or (p.suffix in (".sha256", ".json")
                                                   and not Path(str(p)[: -len(p.suffix)]).exists()))
        assert left == [], (note, left)


def test_a_killed_restore_leaves_the_live_database_before_or_after_and_the_next_cleans_up(names, tmp_path):
    live = f"{names}_live"
    setup_database(live, activities=5000)
    backups = tmp_path / "backups"
    extra = {**on_database(live), "cruddur_db_backup_dir": str(backups)}
    assert run_playbook("playbooks/db-backup.yml", extra_vars=extra).rc == 0
    backed_up = state(live)
    template = f"{names}_template"
    add_activities(live, 10)  # what the restore takes back
    settle(live)
    admin = connect("postgres")
    with admin.cursor() as cur:
        cur.execute(f'ALTER DATABASE "{live}" RENAME TO "{template}"')
    admin.close()
    before = state(template)
    copy_database(template, live)
    run, seconds = timed_run("db-restore", extra)
    assert run.rc == 0, run.output[-3000:]
    for way, delay in kill_points("db-restore", seconds * 1.1):
        note = kill_on_a_copy("db-restore", extra, template, live, names, way, delay)
        assert state(live) in (before, backed_up), note
        finish = run_playbook("playbooks/db-restore.yml", extra_vars=extra)
        assert finish.rc == 0, (note, finish.output[-3000:])
        assert state(live) == backed_up, note
        left = query("postgres", "SELECT datname FROM pg_database WHERE datname LIKE %s", (f"{live}_restore_%",))
        assert left == [], (note, left)


# --- a full disk, a read-only one --------------------------------------------------------------

@pytest.fixture
def small_filesystem(tmp_path):
    """A directory on a filesystem of its own (tmpfs): 256 KiB, or read-only."""
    mounted = []

    def make(options: str) -> Path:
        target = tmp_path / f"fs-{len(mounted)}"
        target.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)], check=True)
        mounted.append(target)
        return target
    yield make
    for target in mounted:
        subprocess.run(["umount", "-l", str(target)], check=False)


@pytest.mark.parametrize("fault, options, reason", [
    ("full", "size=256k,mode=0700", "No space left on device"),
    ("read-only", "ro,size=1m,mode=0700", "Read-only file system"),
])
def test_a_backup_onto_a_full_or_read_only_disk_fails_clearly_and_leaves_nothing(
        names, small_filesystem, fault, options, reason):
    live = f"{names}_live"
    setup_database(live, activities=50000)
    before = state(live)
    backups = small_filesystem(options)
    run = run_playbook("playbooks/db-backup.yml", extra_vars={**on_database(live),
                                                               "cruddur_db_backup_dir": str(backups)})
    assert run.rc != 0
    said = " ".join(run.output.split())
    assert f"pg_dump of database {live} at 127.0.0.1:5432 failed" in said and reason in said, run.output[-3000:]
    assert sorted(p.name for p in backups.iterdir()) == []  # the partial dump was removed
    assert state(live) == before


# --- db-setup on a target not proven local -------------------------------------------------------

def fresh(dbname: str) -> tuple[str, list, list]:
    """What a fresh db-setup gives, its generated uuids and times aside: the schema, the seed's
    users and activities."""
    proc = subprocess.run(["pg_dump", "--schema-only", "--no-owner", "--no-privileges", "-h", PG["host"],
                           "-U", PG["user"], dbname], env={**os.environ, "PGPASSWORD": PG["password"]},
                          capture_output=True, text=True, check=True)
    schema = "\n".join(line for line in proc.stdout.splitlines()
                       if not line.startswith(("\\restrict", "\\unrestrict", "-- Dumped")))
    return (schema, query(dbname, "SELECT handle, display_name FROM users ORDER BY handle"),
            query(dbname, "SELECT message FROM activities ORDER BY message"))


def test_a_killed_setup_of_a_remote_database_leaves_it_as_before_or_rebuilt_never_gone(names, tmp_path):
    template, live, reference = f"{names}_template", f"{names}_live", f"{names}_ref"
    setup_database(template, activities=5000)
    setup_database(reference, activities=0)
    rebuilt = fresh(reference)
    before = state(template)
    # 0.0.0.0 reaches this machine's server but is not loopback: the guard treats it as remote.
    extra = {**on_database(live, host="0.0.0.0"), "cruddur_db_confirm": live,
             "cruddur_db_backup_dir": str(tmp_path / "backups"), "cruddur_db_env_file": SCRATCH_ENV_FILE}
    copy_database(template, live)
    run, seconds = timed_run("db-setup", extra)
    assert run.rc == 0, run.output[-3000:]
    for way, delay in kill_points("db-setup", seconds * 1.1):
        note = kill_on_a_copy("db-setup", extra, template, live, names, way, delay)
        assert query("postgres", "SELECT count(*) FROM pg_database WHERE datname = %s", (live,)) == [(1,)], \
            f"the live database is gone {note}"
        assert state(live) == before or fresh(live) == rebuilt, f"the database is neither as before nor rebuilt {note}"
        finish = run_playbook("playbooks/db-setup.yml", extra_vars=extra)
        assert finish.rc == 0, (note, finish.output[-3000:])
        assert fresh(live) == rebuilt, note
        left = query("postgres", "SELECT datname FROM pg_database WHERE datname LIKE %s", (f"{live}_setup_%",))
        assert left == [], (note, left)
