"""pytest-testinfra checks of the deployed API: gunicorn under supervisor, answering on 4567."""

import json
import re
import stat
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from conftest import REPO, query, role_password, run_playbook

BASE = "http://127.0.0.1:4567"


def http(method, path, body=None, headers=None):
    status, _, parsed = http_full(method, path, body, headers)
    return status, parsed


def http_full(method, path, body=None, headers=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(BASE + path, data=data, method=method,
                                     headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, json.loads(exc.read())


@pytest.fixture
def activities_made():
    """Activities a test creates through the service; deleted afterwards, so the user's local
    database keeps exactly what it had."""
    made = []
    yield made
    if made:
        query("cruddur", "DELETE FROM activities WHERE uuid = ANY(%s::uuid[])", (made,))


@pytest.fixture(scope="module")
def token(converged):
    """The README's command for a local user's token: playbooks/local-token.yml."""
    run = run_playbook("playbooks/local-token.yml", "-e", "handle=andrewbrown")
    assert run.rc == 0, run.output[-3000:]
    found = re.findall(r"eyJ[\w-]+\.[\w-]+\.[\w-]+", run.output)
    assert len(found) == 1, run.output[-3000:]
    # The user's identity is given once, the issuer's key made once: asking again changes nothing.
    again = run_playbook("playbooks/local-token.yml", "-e", "handle=andrewbrown")
    assert again.rc == 0 and again.changed() == 0, again.output[-3000:]
    return found[0]


def post_activity(made, message, token):
    status, created = http("POST", "/api/activities", {"message": message, "ttl": "3-hours"},
                           {"Authorization": f"Bearer {token}"})
    assert status == 200, created
    made.append(created["uuid"])
    return created


def test_service_runs_under_supervisor(host, converged):
    status = host.run("supervisorctl status cruddur-api")
    assert status.rc == 0, status.stdout
    assert "RUNNING" in status.stdout


def test_gunicorn_workers_run_as_the_service_user(host, converged):
    # This machine's own service: the arbiter supervisor started and its children (the Molecule
    # scenarios' containers run gunicorns of their own, which the host's process table shows too).
    master = gunicorn_master_pid(host)
    arbiter = host.process.get(pid=master)
    workers = [p for p in host.process.filter(ppid=master) if "gunicorn" in p.args]
    assert arbiter.user == "cruddur" and "gunicorn" in arbiter.args
    assert len(workers) == 2 and {p.user for p in workers} == {"cruddur"}


def test_the_master_opens_no_control_socket(host, converged):
    # gunicorn's control socket (gunicornc) is off: supervisor steers the API, and the master would
    # otherwise log an error at every start and reload, unable to create it under the app's home.
    master = gunicorn_master_pid(host)
    log = host.file("/var/log/cruddur-api/error.log").content_string
    assert f"[{master}] [INFO] Listening at: http://127.0.0.1:4567" in log
    assert not [line for line in log.splitlines() if f"[{master}] [ERROR] Control server" in line]
    sockets = host.run("ss -xlpn").stdout
    assert not [line for line in sockets.splitlines() if f"pid={master}," in line]


def test_listens_on_the_configured_address(host, converged):
    assert host.socket("tcp://127.0.0.1:4567").is_listening
    assert not host.socket("tcp://0.0.0.0:4567").is_listening


def test_config_file_is_readable_by_the_service_and_writable_by_root_only(host, converged):
    config = host.file("/etc/cruddur-api/config.json")
    assert config.user == "root" and config.group == "cruddur" and config.mode == 0o640
    assert host.run("su -s /bin/sh cruddur -c 'test -r /etc/cruddur-api/config.json'").rc == 0
    assert host.run("su -s /bin/sh cruddur -c 'test -w /etc/cruddur-api/config.json'").rc != 0
    assert stat.S_IMODE(Path("/etc/cruddur-api").stat().st_mode) == 0o750
    code = host.file("/opt/cruddur-api/app/cruddur_api/db.py")
    assert code.user == "root" and code.mode == 0o644
    assert not host.file("/opt/cruddur-api/app/cruddur_api/__pycache__").exists


def test_home_feed_returns_the_seed_activity(converged):
    status, feed = http("GET", "/api/activities/home?limit=100")
    assert status == 200
    assert "This was imported as seed data!" in [a["message"] for a in feed]


def test_create_and_read_back_through_the_service(converged, activities_made, token):
    created = post_activity(activities_made, "posted through gunicorn", token)
    assert created["handle"] == "andrewbrown"
    status, fetched = http("GET", f"/api/activities/{created['uuid']}")
    assert status == 200 and fetched == created
    status, feed = http("GET", "/api/activities/home")
    assert feed[0] == created


@pytest.mark.parametrize("raw", ['{"message": "a\\u0000b", "ttl": "1-day"}',
                                 '{"message": "lone \\ud800", "ttl": "1-day"}'])
def test_unstorable_characters_are_refused_by_the_service(converged, raw, token):
    before = query("cruddur", "SELECT count(*) FROM activities")[0][0]
    request = urllib.request.Request(BASE + "/api/activities", data=raw.encode(), method="POST",
                                     headers={"Content-Type": "application/json",
                                              "Authorization": f"Bearer {token}"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 422
    assert query("cruddur", "SELECT count(*) FROM activities")[0][0] == before


def test_405_from_the_service_keeps_allow(converged):
    status, headers, body = http_full("DELETE", "/api/activities/home")
    assert status == 405 and "GET" in headers["Allow"]
    assert body == ["method_not_allowed"]


def test_health(converged):
    status, body = http("GET", "/api/health")
    assert status == 200 and body["database"] == "ok"
    # The release it serves: the digest of the deployed package, the same as the project's.
    import sys
    sys.path.insert(0, str(REPO / "files" / "api"))
    from cruddur_api.release import code_release
    assert body["release"] == code_release(REPO / "files" / "api" / "cruddur_api")


def test_pools_that_would_exhaust_the_database_are_refused_before_anything_changes(converged):
    config = Path("/etc/cruddur-api/config.json").read_text()
    run = run_playbook("playbooks/api-deploy.yml", "-vvv", extra_vars={"cruddur_api_pool_max_size": 100})
    assert run.rc != 0
    text = " ".join(run.output.split())
    assert ("Too many connections: the API would hold up to 200 (cruddur-local 200; workers x pool size), plus 0 "
            "expected for others (the Lambda), = 200; the database allows 100 max_connections - 3 "
            "superuser_reserved_connections - 5 kept free (cruddur_api_capacity_reserve) = 92.") in text
    assert "Nothing was changed." in text and run.changed() == 0
    assert Path("/etc/cruddur-api/config.json").read_text() == config
    assert role_password("cruddur_api") not in run.output  # the check's login stays hidden at -vvv


def gunicorn_master_pid(host):
    status = host.run("supervisorctl pid cruddur-api")
    assert status.rc == 0, status.stdout
    return int(status.stdout.strip())


def worker_pids(host, master):
    return {p.pid for p in host.process.filter(ppid=master) if "gunicorn" in p.args}


@pytest.mark.serial
def test_reloads_gracefully_only_when_its_configuration_changes(host, converged, activities_made, token):
    from conftest import run_playbook

    # Rows of its own, so a page size of 1 shows on any database, a fresh one included.
    post_activity(activities_made, "first of two", token)
    post_activity(activities_made, "second of two", token)
    pid = gunicorn_master_pid(host)
    workers = worker_pids(host, pid)
    unchanged = run_playbook("playbooks/api-deploy.yml")
    assert unchanged.rc == 0 and unchanged.changed() == 0, unchanged.output[-3000:]
    assert gunicorn_master_pid(host) == pid and worker_pids(host, pid) == workers

    secret_header = "x-api-key=otel-header-f00dfeed"
    try:
        changed = run_playbook("playbooks/api-deploy.yml", "-e", json.dumps({
            "cruddur_api_feed_page_size": 1,
            "cruddur_api_otel_environment": {"OTEL_EXPORTER_OTLP_HEADERS": secret_header},
            "cruddur_api_frontend_url": "https://frontend.example"}))
        assert changed.rc == 0, changed.output[-3000:]
        # A graceful reload (HUP): the same master, new workers that read the new configuration.
        assert "RUNNING HANDLER [cruddur_api : Reload cruddur-api under supervisor]" in changed.output
        assert "Restart cruddur-api" not in changed.output
        assert gunicorn_master_pid(host) == pid
        deadline = time.monotonic() + 30
        while worker_pids(host, pid) & workers and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not worker_pids(host, pid) & workers
        status, headers, feed = http_full("GET", "/api/activities/home", headers={"Origin": "https://frontend.example"})
        assert status == 200 and len(feed) == 1  # the new configuration is live
        assert headers["Access-Control-Allow-Origin"] == "https://frontend.example"
        # The OTEL header (it may carry an API key) is only in the private config file.
        assert secret_header in host.file("/etc/cruddur-api/config.json").content_string
        assert secret_header not in host.file("/etc/supervisor/conf.d/cruddur-api.conf").content_string
        assert secret_header not in changed.output
    finally:
        restored = run_playbook("playbooks/api-deploy.yml")
    assert restored.rc == 0, restored.output[-3000:]
    status, headers, feed = http_full("GET", "/api/activities/home", headers={"Origin": "https://frontend.example"})
    assert status == 200 and len(feed) > 1
    assert "Access-Control-Allow-Origin" not in headers


@pytest.mark.serial
def test_deployed_code_that_drifted_is_put_back_and_only_it(converged):
    """The deploy reads what is deployed once and ships only what differs (content, mode), in one
    archive; --check names the same files and changes nothing."""
    from conftest import REPO, run_playbook

    app = Path("/opt/cruddur-api/app/cruddur_api")
    edited, loosened, untouched = app / "cors.py", app / "sql" / "health.sql", app / "db.py"
    edited.write_text(edited.read_text() + "# edited by hand\n")
    # World-writable: a drift the deploy must undo, and one the running API survives. (Making it
    # unreadable instead would stop the API at its next worker start, which is not what this tests.)
    loosened.chmod(0o666)
    untouched_before = untouched.stat().st_mtime_ns
    task = "TASK [cruddur_api : install | Unpack it on the host: cruddur_api/cors.py, cruddur_api/sql/health.sql]"
    checked = run_playbook("playbooks/api-deploy.yml", "--check")
    assert checked.rc == 0, checked.output[-3000:]
    assert task in checked.output
    assert edited.read_text().endswith("# edited by hand\n") and stat.S_IMODE(loosened.stat().st_mode) == 0o666
    run = run_playbook("playbooks/api-deploy.yml")
    assert run.rc == 0, run.output[-3000:]
    after_task = run.output.split(task, 1)[1].lstrip("*\n ").splitlines()[0]
    assert after_task == "changed: [cruddur-local]"
    assert edited.read_bytes() == (REPO / "files/api/cruddur_api/cors.py").read_bytes()
    assert stat.S_IMODE(loosened.stat().st_mode) == 0o644
    assert (loosened.stat().st_uid, loosened.stat().st_gid) == (0, 0)
    assert untouched.stat().st_mtime_ns == untouched_before
    assert http("GET", "/api/health")[0] == 200


def test_the_venv_holds_exactly_the_pinned_requirements(host, converged):
    from conftest import REPO

    pinned = {line.strip().lower().replace("_", "-") for line in (REPO / "files/api/requirements.txt").read_text().splitlines()
              if line.strip() and not line.startswith("#")}
    freeze = host.run("/opt/cruddur-api/venv/bin/pip freeze --all --exclude pip")
    assert freeze.rc == 0, freeze.stderr
    installed = {line.strip().lower().replace("_", "-") for line in freeze.stdout.splitlines() if line.strip()}
    assert pinned <= installed
    assert not {name.split("==")[0] for name in installed - pinned} - {"setuptools", "wheel"}


def test_the_api_host_gets_the_local_issuers_public_keys_only(converged, token):
    key_file = REPO / ".secrets" / "local" / "token-issuer.pem"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    config = json.loads(Path("/etc/cruddur-api/config.json").read_text())
    assert config["AUTH_ISSUER"] == "urn:cruddur:local-issuer" and config["AUTH_CLIENT_IDS"] == ["cruddur-local"]
    (jwk,) = config["AUTH_JWKS"]["keys"]
    assert set(jwk) == {"kty", "n", "e", "kid", "alg", "use"}  # no private member ("d", "p", ...)
    # A token of another key with the same claims is refused by the running service.
    import jwt
    from cryptography.hazmat.primitives.asymmetric import rsa

    claims = jwt.decode(token, options={"verify_signature": False})
    forged = jwt.encode(claims, rsa.generate_private_key(public_exponent=65537, key_size=2048),
                        algorithm="RS256", headers={"kid": jwk["kid"]})
    status, body = http("POST", "/api/activities", {"message": "forged", "ttl": "1-day"},
                        {"Authorization": f"Bearer {forged}"})
    assert status == 401 and body == ["token_invalid"]
