"""Rolling deploys through HAProxy (Molecule's rolling scenario, after converge and idempotence):
a load loop through the load balancer runs during each deploy, bounded in count and time, on
loopback only."""

import collections
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import testinfra

REPO = Path(os.environ.get("MOLECULE_PROJECT_DIRECTORY", Path(__file__).resolve().parents[3]))
INVENTORY = os.environ.get("CRUDDUR_ROLLING_INVENTORY", str(REPO / "molecule" / "rolling" / "inventory"))
LB = "http://127.0.0.1:4570"
API_PORTS = {"cruddur-api-1": 4571, "cruddur-api-2": 4572}
SOCKET = "/run/haproxy/admin.sock"


class LoadLoop:
    """Two clients asking the feed and /api/health through the load balancer, one request after
    another each (`pause` seconds apart), until stopped, at most `max_requests` in all and
    `max_seconds`. `bounded` tells whether a bound ended it before it was stopped. 50 ms apart
    (at most 20 requests a second each, several hundred in a deploy) keeps requests in flight
    through every drain; closer requests only add CPU, taken from the tests running beside it
    (5 ms apart, the scenario's verify used 124 s of CPU; 20 ms, 94 s)."""

    def __init__(self, max_requests: int = 100000, max_seconds: float = 300, pause: float = 0.05):
        self.pause, self.bounded = pause, False
        self.max_requests, self.deadline = max_requests, time.monotonic() + max_seconds
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.sent = 0
        self.statuses: collections.Counter = collections.Counter()
        self.errors: list[str] = []
        self.releases: collections.Counter = collections.Counter()
        self.threads = [threading.Thread(target=self.client, args=(path,), daemon=True)
                        for path in ("/api/activities/home", "/api/health")]

    def __enter__(self):
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc):
        self.stopping.set()
        for thread in self.threads:
            thread.join(timeout=30)

    def client(self, path: str):
        while not self.stopping.is_set():
            with self.lock:
                if self.sent >= self.max_requests or time.monotonic() > self.deadline:
                    self.bounded = True
                    return
                self.sent += 1
            time.sleep(self.pause)
            try:
                with urllib.request.urlopen(LB + path, timeout=10) as response:
                    status, body = response.status, response.read()
            except urllib.error.HTTPError as exc:
                status, body = exc.code, b""
            except OSError as exc:
                with self.lock:
                    self.errors.append(f"{path}: {exc!r}")
                continue
            with self.lock:
                self.statuses[status] += 1
                if path == "/api/health" and status == 200:
                    self.releases[json.loads(body)["release"]] += 1

    def failures(self) -> dict:
        return {"non_2xx": {s: n for s, n in self.statuses.items() if not 200 <= s < 300},
                "connection_errors": self.errors[:5], "count": len(self.errors)}


def health(port: int) -> dict:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=5) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return {"status": exc.code}
    except OSError as exc:
        return {"status": repr(exc)}


def lb_states() -> dict[str, str]:
    """Each API server's status in HAProxy's backend (show stat on the runtime socket)."""
    lb = testinfra.get_host("docker://cruddur-molecule-lb")
    script = ("import socket; s = socket.socket(socket.AF_UNIX); s.connect('%s'); s.sendall(b'show stat\\n');"
              "print(b''.join(iter(lambda: s.recv(65536), b'')).decode())" % SOCKET)
    output = lb.check_output(f'python3 -c "{script}"')
    rows = [line.split(",") for line in output.splitlines() if line.startswith("cruddur_api,")]
    return {row[1]: row[17] for row in rows if row[1] in API_PORTS}


def code_release(package: Path) -> str:
    return subprocess.run(["python3", str(package / "release.py"), str(package)], capture_output=True,
                          text=True, check=True).stdout.strip()


def build(tmp_path: Path, name: str, change) -> tuple[Path, str]:
    """A copy of the API's source with `change` applied to its package; its release digest."""
    source = tmp_path / name
    shutil.copytree(REPO / "files" / "api", source, ignore=shutil.ignore_patterns("__pycache__"))
    change(source / "cruddur_api")
    return source, code_release(source / "cruddur_api")


def deploy(source: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "ANSIBLE_FORCE_COLOR": "0"}
    return subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), "-i", INVENTORY,
                           "playbooks/api-deploy.yml", "-e", f"cruddur_api_source_dir={source}", *args],
                          cwd=REPO, env=env, capture_output=True, text=True, check=False, timeout=600)


def results(output: str, task: str) -> list[str]:
    """The first result word (ok, changed, skipping, failed) after each header of the task."""
    words, waiting = [], False
    for line in output.splitlines():
        if line.startswith("TASK ["):
            waiting = task in line
        elif waiting and line.split(":")[0] in ("ok", "changed", "skipping", "failed", "fatal"):
            words.append(line.split(":")[0])
            waiting = False
    return words


def recap(output: str) -> dict[str, str]:
    return {line.split()[0]: line for line in output.split("PLAY RECAP")[-1].splitlines() if " : ok=" in line}


def all_in_service(within: float = 20):
    """Every API server UP at HAProxy. "UP 1/2" (one failed check, still serving) is a moment
    on a busy machine: wait for it to settle, for at most `within` seconds."""
    deadline = time.monotonic() + within
    while (states := lb_states()) != {host: "UP" for host in API_PORTS}:
        assert time.monotonic() < deadline, states
        assert all(state.startswith("UP") for state in states.values()), states
        time.sleep(0.5)


def test_a_deploy_that_changes_the_code_drops_no_request(tmp_path):
    all_in_service()
    before = {host: health(port)["release"] for host, port in API_PORTS.items()}
    source, new = build(tmp_path, "next", lambda pkg: (pkg / "release_note.txt").write_text(f"{time.time()}\n"))
    assert new not in before.values()
    with LoadLoop() as load:
        time.sleep(1)  # the loop is under way before the first host leaves
        run = deploy(source)
        time.sleep(1)
    assert run.returncode == 0, run.stdout[-4000:]
    # Host by host, one batch each: each one left the load balancer, then came back.
    assert results(run.stdout, "Take the host out of the load balancers") == ["changed"] * len(API_PORTS)
    assert results(run.stdout, "Put the host back into the load balancers") == ["changed"] * len(API_PORTS)
    assert not load.bounded and load.sent > 50 and load.failures() == {"non_2xx": {}, "connection_errors": [], "count": 0}, \
        load.failures()
    # The old release and the new one both served during the roll; afterwards, only the new one.
    assert new in load.releases and set(before.values()) & set(load.releases), load.releases
    assert {host: health(port)["release"] for host, port in API_PORTS.items()} == \
        {host: new for host in API_PORTS}
    all_in_service()
    # (A deploy that changes nothing drains no host: the scenario's idempotence step shows it.)


def test_a_build_failing_its_health_check_stops_after_the_first_host(tmp_path):
    all_in_service()
    serving = {host: health(port)["release"] for host, port in API_PORTS.items()}

    def break_health(pkg: Path):
        # The app starts, but its health query fails: /api/health answers 500.
        (pkg / "sql" / "health.sql").write_text("SELECT no_such_column FROM no_such_table\n")

    broken, _ = build(tmp_path, "broken", break_health)
    with LoadLoop() as load:
        time.sleep(1)
        run = deploy(broken, "-e", "cruddur_api_health_timeout=10")
        time.sleep(2)
    assert run.returncode != 0
    text = " ".join(run.stdout.split())
    assert "cruddur-api-1: the API did not answer http://127.0.0.1:4571/api/health with 200" in text, text[-3000:]
    assert "It stays out of the load balancers (cruddur-lb)" in text
    # The rollout stopped at the first host: the second was never touched and serves what it did.
    deploy_plays = run.stdout.split("PLAY RECAP")[0].split("PLAY [Deploy the Cruddur API]")[1:]
    assert len(deploy_plays) == 1 and "[cruddur-api-2" not in deploy_plays[0]
    states = lb_states()
    assert states["cruddur-api-1"] == "MAINT" and states["cruddur-api-2"].startswith("UP"), states
    assert health(API_PORTS["cruddur-api-2"])["release"] == serving["cruddur-api-2"]
    assert not load.bounded and load.sent > 20 and load.failures() == {"non_2xx": {}, "connection_errors": [], "count": 0}, \
        load.failures()

    # The fix: a good build rolls out and puts the first host back.
    fixed, release = build(tmp_path, "fixed", lambda pkg: (pkg / "release_note.txt").write_text("fixed\n"))
    run = deploy(fixed)
    assert run.returncode == 0, run.stdout[-4000:]
    all_in_service()
    assert {health(port)["release"] for port in API_PORTS.values()} == {release}
