"""Shared helpers: run playbooks and parse their recap, reach the real PostgreSQL, make
throwaway databases. Everything runs against the real services on this machine."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import psycopg2
import pytest

# Never leave bytecode caches in files/: the API role copies that tree to the target.
sys.dont_write_bytecode = True

REPO = Path(__file__).resolve().parent.parent
# What the original setup's users keep exported (bin/sandbox.py's USER_SETTINGS: the psql
# scripts' URLs, an AWS profile) never reaches a test, nor anything a test starts: the tests run
# what the user runs, never where the user's shell points. (The rehearsal's test exports them to
# its run on purpose, to show it does not follow them.)
import sandbox  # noqa: E402  (bin/ is on pytest's pythonpath)

for _name in sandbox.USER_SETTINGS:
    os.environ.pop(_name, None)
VENV_BIN = Path(sys.executable).parent
# Env file for runs on throwaway databases (keeps the repository's .env untouched).
SCRATCH_ENV_FILE = f"/tmp/cruddur-tests-{os.getpid()}.env"
PASSWORD = os.environ.get("CRUDDUR_LOCAL_DB_PASSWORD") or "password"
PG = {"host": "127.0.0.1", "port": 5432, "user": "postgres", "password": PASSWORD}
# The local inventory's database definition (inventories/local/group_vars/all/main.yml).
LOCAL_CONNECTION = {"host": "127.0.0.1", "port": 5432, "name": "cruddur", "sslmode": "prefer", "sslrootcert": ""}


def on_database(name: str, **connection) -> dict:
    """Extra vars that point the playbooks at another database of the local server."""
    return {"cruddur_db_connection": {**LOCAL_CONNECTION, "name": name, **connection}}


def role_password(role: str, environment: str = "local") -> str:
    """A role's generated password, from the local secrets' store."""
    return (REPO / ".secrets" / environment / role).read_text().strip()
def server_config_dir() -> Path:
    """The local cluster's configuration directory, from the postgresql_server role's own
    variables: the distribution's vars file names the version (as the role's include_vars picks
    it), the defaults the cluster, vars/main.yml the path pattern."""
    import yaml

    role = REPO / "roles" / "postgresql_server"
    release = dict(line.split("=", 1) for line in Path("/etc/os-release").read_text().splitlines() if "=" in line)
    distribution = {"debian": "Debian", "ubuntu": "Ubuntu"}[release["ID"].strip('"')]
    major = release["VERSION_ID"].strip('"').split(".")[0]
    version = yaml.safe_load((role / "vars" / f"{distribution}-{major}.yml").read_text())["__postgresql_server_version"]
    cluster = yaml.safe_load((role / "defaults" / "main.yml").read_text())["postgresql_server_cluster"]
    pattern = yaml.safe_load((role / "vars" / "main.yml").read_text())["__postgresql_server_config_dir"]
    return Path(pattern.replace("{{ __postgresql_server_version }}", str(version))
                       .replace("{{ postgresql_server_cluster }}", cluster))


RECAP_LINE = re.compile(r"^(?P<host>\S+)\s+:\s+(?P<counts>(?:\w+=\d+\s*)+)$", re.M)


@dataclass
class PlaybookRun:
    rc: int
    output: str
    recap: dict[str, dict[str, int]]

    def changed(self) -> int:
        return sum(counts["changed"] for counts in self.recap.values())

    def failed(self) -> int:
        return sum(counts["failed"] + counts["unreachable"] for counts in self.recap.values())


def parse_recap(output: str) -> dict[str, dict[str, int]]:
    tail = output.split("PLAY RECAP", 1)[-1]
    recap = {}
    for match in RECAP_LINE.finditer(tail):
        counts = dict(pair.split("=") for pair in match.group("counts").split())
        recap[match.group("host")] = {k: int(v) for k, v in counts.items()}
    return recap


def run_playbook(playbook: str, *args: str, extra_vars: dict | None = None, env: dict | None = None,
                 timeout: int = 600) -> PlaybookRun:
    cmd = [str(VENV_BIN / "ansible-playbook"), playbook, *args]
    if extra_vars:
        cmd += ["-e", json.dumps(extra_vars, default=str)]
    full_env = {**os.environ, "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0",
                "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
                "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '')}", **(env or {})}
    proc = subprocess.run(cmd, cwd=REPO, env=full_env, capture_output=True, text=True,
                          timeout=timeout, check=False)
    output = proc.stdout + proc.stderr
    return PlaybookRun(proc.returncode, output, parse_recap(output))


def connect(dbname: str = "cruddur", **overrides):
    conn = psycopg2.connect(dbname=dbname, **{**PG, **overrides})
    conn.autocommit = True
    return conn


def query(dbname: str, sql: str, params=None) -> list[tuple]:
    conn = connect(dbname)
    try:
        with conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall() if cur.description else []
    finally:
        conn.close()


def drop_database(name: str) -> None:
    conn = connect("postgres")
    try:
        with conn.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        conn.close()


# One test run may be several pytest processes: the serial phase and, after it, the xdist workers
# of the parallel phase (bin/run-pytest). They share one id, so what the whole run needs once
# (converging the stack, starting PostgreSQL) is done once, by whichever process gets there first.
RUN_ID = os.environ.get("CRUDDUR_TEST_RUN") or os.environ.get("PYTEST_XDIST_TESTRUNUID") or str(os.getpid())
SHARED_DIR = Path("/tmp") / f"cruddur-tests-{RUN_ID}"


def once_per_run(name: str, make) -> PlaybookRun:
    """make() once for the whole test run, under a lock; later callers get the recorded result.
    A failed result is not recorded: the next caller tries again (and fails the same way)."""
    from filelock import FileLock

    SHARED_DIR.mkdir(mode=0o700, exist_ok=True)
    record = SHARED_DIR / f"{name}.json"
    with FileLock(str(SHARED_DIR / f"{name}.lock")):
        if record.exists():
            return PlaybookRun(**json.loads(record.read_text()))
        run = make()
        if run.rc == 0:
            record.write_text(json.dumps({"rc": run.rc, "output": run.output, "recap": run.recap}))
        return run


@pytest.fixture(scope="session")
def converged() -> PlaybookRun:
    """The README's main job: site.yml on the default inventory, for the tests that check the
    deployed stack (and only those: unit and emulator tests never converge anything)."""
    run = once_per_run("converged", lambda: run_playbook("site.yml"))
    assert run.rc == 0, run.output[-4000:]
    return run


@pytest.fixture(scope="session")
def postgresql() -> None:
    """A running PostgreSQL on 127.0.0.1:5432 for the tests that make databases of their own:
    only the server's playbook, not the whole stack."""
    run = once_per_run("postgresql", lambda: run_playbook("playbooks/postgresql-server.yml"))
    assert run.rc == 0, run.output[-4000:]


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):
    """On an xdist worker with --dist loadgroup, every test marked xdist_group must carry its
    group in its id (that is how the scheduler keeps a group on one worker). A pytest/xdist pair
    that drops it (pytest 9.2 with xdist 3.8 did) would run a group's tests concurrently unseen.
    Then the AWS tests are put first (below)."""
    if hasattr(config, "workerinput") and getattr(config.option, "loadgroup", False):
        lost = [item.nodeid for item in items
                if item.get_closest_marker("xdist_group") and "@" not in item.nodeid]
        if lost:
            raise pytest.UsageError(f"--dist loadgroup ignored xdist_group (e.g. {lost[0]}): the pinned "
                                    "pytest and pytest-xdist do not work together")
        # The scheduler hands out the groups largest first, then single tests in this order. The
        # tests that run AWS plays against moto are the longest single ones (10-45 s): they go
        # first, so that the short ones fill the end and no worker is left alone with a long
        # test while the other idles. The random order (pytest-randomly, already applied) stays
        # within each part; every worker computes the same order.
        items.sort(key=lambda item: "moto_endpoint" not in item.fixturenames)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    """With CRUDDUR_TEST_TIMELINE set (bin/test sets it), each test's start and end (setup to
    teardown) and its worker are appended there: benchmarks/speed.py reads where each worker
    spent the end of the parallel phase."""
    timeline = os.environ.get("CRUDDUR_TEST_TIMELINE")
    if not timeline:
        yield
        return
    import time

    start = time.time()
    yield
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    with open(timeline, "a") as out:
        out.write(f"{worker}\t{start:.2f}\t{time.time():.2f}\t{item.nodeid}\n")


def pytest_unconfigure(config):
    # The last process of a run removes the shared records: the parallel phase, or a plain run.
    if not hasattr(config, "workerinput") and os.environ.get("CRUDDUR_TEST_PHASE", "last") == "last":
        shutil.rmtree(SHARED_DIR, ignore_errors=True)


@pytest.fixture
def scratch_db_name(postgresql):
    """A database name for one test, dropped afterwards whatever happened."""
    name = f"cruddur_test_{uuid.uuid4().hex[:10]}"
    yield name
    drop_database(name)


def call_module(module, args: dict, check: bool = False, diff: bool = False) -> dict:
    """Run one of the collection's modules in this process, as Ansible would hand it `args`
    (ansible.module_utils.testing.patch_module_args): its result, with `failed` on fail_json."""
    import contextlib
    import io

    from ansible.module_utils.testing import patch_module_args

    out = io.StringIO()
    with patch_module_args({**args, "_ansible_check_mode": check, "_ansible_diff": diff}), \
            contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        module.main()
    return json.loads(out.getvalue().strip().splitlines()[-1])


def forbid_lookup(monkeypatch, socket_module, name: str) -> None:
    """Make looking `name` up through `socket_module` fail the test (numeric addresses still
    resolve, as they never leave the machine)."""
    real_getaddrinfo = socket_module.getaddrinfo

    def no_lookup(host, *args, **kwargs):
        assert host != name, f"looked {name} up"
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket_module, "getaddrinfo", no_lookup)


def load_migrations_module():
    """The project's migration module (collection cruddur.ops), imported for fixtures."""
    from ansible_collections.cruddur.ops.plugins.modules import cruddur_migrations

    return cruddur_migrations


def build_original(name: str, *scripts: str, sql: str = "") -> None:
    """A database built the way the original scripts built it: tests/fixtures/original's
    schema.sql and seed.sql (then `scripts` from there, then `sql`)."""
    admin = connect("postgres")
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    admin.close()
    conn = connect(name)
    with conn.cursor() as cur:
        for script in ("schema.sql", "seed.sql", *scripts):
            cur.execute((REPO / "tests" / "fixtures" / "original" / script).read_text())
        if sql:
            cur.execute(sql)
    conn.close()


def create_migrated_database(prefix: str, seed: bool = True, signed_up: bool = False) -> str:
    """A new database with the project's migrations applied (and the seed rows, if asked). With
    `signed_up`, the seed's users are linked to identities `sub-<handle>`, as the post-confirmation
    trigger links a user to the pool: a token with that `sub` writes as them."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = connect("postgres")
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    admin.close()
    migrations = load_migrations_module()
    conn = connect(name)
    conn.autocommit = False
    migrations.run(conn, migrations.load_migrations(str(REPO / "sql" / "migrations")), "latest", False, 10)
    conn.autocommit = True
    if seed:
        with conn.cursor() as cur:
            cur.execute((REPO / "sql" / "seed" / "seed.sql").read_text())
            if signed_up:
                cur.execute("UPDATE users SET cognito_user_id = 'sub-' || handle")
    conn.close()
    return name


AWS_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


def start_moto():
    """moto in server mode on a free loopback port, started as the sandbox starts it (offline, the
    project's managed policies): returns the process and its endpoint."""
    import sandbox

    port = sandbox.free_port()
    return sandbox.start_moto(port), f"http://{sandbox.HOST}:{port}"


@pytest.fixture(scope="session")
def moto_endpoint():
    """One moto server per test process (reset by the tests that need a clean account)."""
    proc, endpoint = start_moto()
    yield endpoint
    proc.terminate()
    proc.wait(timeout=10)


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def make_tls(directory: Path, ca_name: str = "cruddur test CA") -> dict[str, Path]:
    """A CA of the tests' own and a server certificate it signed for 127.0.0.1 and localhost."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca_crt = directory / "ca.key", directory / "ca.crt"
    key, csr, crt, ext = (directory / n for n in ("server.key", "server.csr", "server.crt", "server.ext"))

    def openssl(*args):
        subprocess.run(["openssl", *args], check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key), "-out", str(ca_crt),
            "-days", "2", "-subj", f"/CN={ca_name}")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr), "-subj", "/CN=127.0.0.1")
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl("x509", "-req", "-in", str(csr), "-CA", str(ca_crt), "-CAkey", str(ca_key), "-CAcreateserial",
            "-out", str(crt), "-days", "2", "-extfile", str(ext))
    return {"ca": ca_crt, "cert": crt, "key": key}


@dataclass
class StandIn:
    """A PostgreSQL cluster standing in for an RDS endpoint."""
    version: str
    name: str
    port: int
    ca: Path

    def sql(self, statement: str) -> str:
        """Run SQL as the cluster's superuser (peer login over its socket)."""
        proc = subprocess.run(["su", "postgres", "-c", f"psql -p {self.port} -X -q -At -v ON_ERROR_STOP=1"],
                              input=statement, capture_output=True, text=True, check=False)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout.strip()

    def connect(self, dbname: str, user: str, password: str, **kwargs):
        conn = psycopg2.connect(host="127.0.0.1", port=self.port, dbname=dbname, user=user, password=password,
                                **{"sslmode": "require", **kwargs})
        conn.autocommit = True
        return conn


@pytest.fixture(scope="session")
def rds_standin(postgresql, tmp_path_factory):
    """A real PostgreSQL standing in for the RDS endpoint where the prod inventory needs a
    database: a cluster of its own (the local server's major version) on a free loopback port,
    TLS on with a certificate from a CA the tests make, password logins over TCP. The local
    server's database, roles and passwords are never touched. Dropped at the end."""
    version = subprocess.run(["pg_lsclusters", "--no-header"], capture_output=True, text=True,
                             check=True).stdout.split()[0]
    name, port = f"rds_standin_{os.getpid()}", free_port()
    tls = make_tls(tmp_path_factory.mktemp("standin-tls"))
    subprocess.run(["pg_createcluster", version, name, "-p", str(port)], check=True, capture_output=True)
    confdir = Path(f"/etc/postgresql/{version}/{name}")
    try:
        for source, target in ((tls["cert"], "server.crt"), (tls["key"], "server.key")):
            (confdir / target).write_bytes(source.read_bytes())
            shutil.chown(confdir / target, "postgres", "postgres")
            (confdir / target).chmod(0o600)
        (confdir / "conf.d" / "standin.conf").write_text(
            f"listen_addresses = '127.0.0.1'\nssl = on\n"
            f"ssl_cert_file = '{confdir}/server.crt'\nssl_key_file = '{confdir}/server.key'\n")
        subprocess.run(["pg_ctlcluster", version, name, "start"], check=True, capture_output=True)
        yield StandIn(version, name, port, tls["ca"])
    finally:
        subprocess.run(["pg_dropcluster", "--stop", version, name], check=False, capture_output=True)
