"""pytest-testinfra checks of the deployed API: gunicorn under supervisor, answering on 4567."""

import json
import stat
import urllib.error
import urllib.request
from pathlib import Path

BASE = "http://127.0.0.1:4567"


def http(method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(BASE + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_service_runs_under_supervisor(host, converged):
    status = host.run("supervisorctl status cruddur-api")
    assert status.rc == 0, status.stdout
    assert "RUNNING" in status.stdout


def test_gunicorn_workers_run_as_the_service_user(host, converged):
    workers = [p for p in host.process.filter(user="cruddur") if "gunicorn" in p.args]
    assert len(workers) == 3  # the arbiter and two workers
    assert not [p for p in host.process.filter(user="root") if "cruddur_api.wsgi" in p.args]


def test_listens_on_the_configured_address(host, converged):
    assert host.socket("tcp://127.0.0.1:4567").is_listening
    assert not host.socket("tcp://0.0.0.0:4567").is_listening


def test_config_file_is_private(host, converged):
    config = host.file("/etc/cruddur-api/config.json")
    assert config.user == "cruddur" and config.mode == 0o600
    assert stat.S_IMODE(Path("/etc/cruddur-api").stat().st_mode) == 0o750
    code = host.file("/opt/cruddur-api/app/cruddur_api/db.py")
    assert code.user == "root" and code.mode == 0o644
    assert not host.file("/opt/cruddur-api/app/cruddur_api/__pycache__").exists


def test_home_feed_returns_the_seed_activity(converged):
    status, feed = http("GET", "/api/activities/home?limit=100")
    assert status == 200
    assert "This was imported as seed data!" in [a["message"] for a in feed]


def test_create_and_read_back_through_the_service(converged):
    status, created = http("POST", "/api/activities",
                           {"message": "posted through gunicorn", "ttl": "3-hours", "handle": "andrewbrown"})
    assert status == 201
    status, fetched = http("GET", f"/api/activities/{created['uuid']}")
    assert status == 200 and fetched["message"] == "posted through gunicorn"
    status, feed = http("GET", "/api/activities/home")
    assert feed[0]["uuid"] == created["uuid"]


def test_health(converged):
    status, body = http("GET", "/api/health")
    assert status == 200 and body["database"] == "ok"


def gunicorn_master_pid(host):
    status = host.run("supervisorctl pid cruddur-api")
    assert status.rc == 0, status.stdout
    return int(status.stdout.strip())


def test_restarts_only_when_its_configuration_changes(host, converged):
    from conftest import run_playbook

    pid = gunicorn_master_pid(host)
    unchanged = run_playbook("playbooks/api-deploy.yml")
    assert unchanged.rc == 0 and unchanged.changed() == 0, unchanged.output[-3000:]
    assert gunicorn_master_pid(host) == pid

    try:
        changed = run_playbook("playbooks/api-deploy.yml", extra_vars={"cruddur_api_feed_page_size": 1})
        assert changed.rc == 0, changed.output[-3000:]
        assert "RUNNING HANDLER [cruddur_api : Restart cruddur-api under supervisor]" in changed.output
        assert gunicorn_master_pid(host) != pid
        status, feed = http("GET", "/api/activities/home")
        assert status == 200 and len(feed) == 1  # the new configuration is live
    finally:
        restored = run_playbook("playbooks/api-deploy.yml")
    assert restored.rc == 0, restored.output[-3000:]
    status, feed = http("GET", "/api/activities/home")
    assert status == 200 and len(feed) > 1


def test_the_venv_holds_exactly_the_pinned_requirements(host, converged):
    from conftest import REPO

    pinned = {line.strip().lower().replace("_", "-") for line in (REPO / "files/api/requirements.txt").read_text().splitlines()
              if line.strip() and not line.startswith("#")}
    freeze = host.run("/opt/cruddur-api/venv/bin/pip freeze --all --exclude pip")
    assert freeze.rc == 0, freeze.stderr
    installed = {line.strip().lower().replace("_", "-") for line in freeze.stdout.splitlines() if line.strip()}
    assert pinned <= installed
    assert not {name.split("==")[0] for name in installed - pinned} - {"setuptools", "wheel"}
