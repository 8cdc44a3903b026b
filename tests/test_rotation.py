"""db-rotate-passwords on the converged local stack: every role gets a new password, the old
ones are refused, the API serves throughout (a load loop during the rotation sees no error), and
the Lambda's handler inserts a user with the new sign-up password."""

import copy
import importlib
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from urllib.parse import quote

import psycopg2
import pytest

from conftest import REPO, connect, query, role_password, run_playbook

pytestmark = [pytest.mark.usefixtures("converged"), pytest.mark.serial]

ROLES = ("cruddur_owner", "cruddur_api", "cruddur_signup")
sys.path.insert(0, str(REPO / "files" / "lambda" / "cruddur_post_confirmation"))
handler = importlib.import_module("handler")


class LoadLoop(threading.Thread):
    """Requests to the API, one after another, until stopped (at most 20000, at most 5 minutes)."""

    def __init__(self):
        super().__init__(daemon=True)
        self.stop = threading.Event()
        self.statuses, self.errors = [], []

    def run(self):
        deadline = time.monotonic() + 300
        paths = ("/api/activities/home?limit=5", "/api/health")
        while not self.stop.is_set() and time.monotonic() < deadline and len(self.statuses) < 20000:
            path = paths[len(self.statuses) % 2]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:4567{path}", timeout=10) as response:
                    response.read()
                    self.statuses.append(response.status)
            except urllib.error.HTTPError as exc:
                self.statuses.append(exc.code)
            except OSError as exc:  # refused, reset, timed out
                self.errors.append(repr(exc))


def test_check_mode_says_what_it_would_rotate_and_changes_nothing():
    before = {role: role_password(role) for role in ROLES}
    run = run_playbook("playbooks/db-rotate-passwords.yml", "--check")
    assert run.rc == 0, run.output[-3000:]
    assert "Would rotate the passwords of cruddur_owner, cruddur_api, cruddur_signup" in " ".join(run.output.split())
    assert {role: role_password(role) for role in ROLES} == before
    for role, password in before.items():
        connect("postgres", user=role, password=password).close()


def test_rotation_refuses_the_old_passwords_and_the_api_serves_throughout():
    old = {role: role_password(role) for role in ROLES}
    loop = LoadLoop()
    loop.start()
    try:
        time.sleep(0.5)
        run = run_playbook("playbooks/db-rotate-passwords.yml", "-vvvv")  # api-deploy.yml included
        time.sleep(1)  # requests on the reloaded workers too
    finally:
        loop.stop.set()
        loop.join()
    assert run.rc == 0, run.output[-3000:]
    assert len(loop.statuses) > 50
    assert loop.errors == []
    assert set(loop.statuses) == {200}
    new = {role: role_password(role) for role in ROLES}
    for role in ROLES:
        assert new[role] != old[role]
        with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
            connect("postgres", user=role, password=old[role])
        connect("postgres", user=role, password=new[role]).close()
        assert old[role] not in run.output and new[role] not in run.output
    # The API's sessions now log in with the new password (it serves reads and writes).
    assert query("postgres", "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'cruddur-api'"
                 " AND usename = 'cruddur_api' AND datname = 'cruddur'")[0][0] >= 1
    env = (REPO / ".env").read_text()
    assert f"cruddur_owner:{new['cruddur_owner']}@" in env
    # The Lambda's handler, with the new sign-up password.
    handler._discard_connection()
    sub = str(uuid.uuid4())
    url = f"postgresql://cruddur_signup:{quote(new['cruddur_signup'])}@127.0.0.1:5432/cruddur"
    try:
        import os

        os.environ["CONNECTION_URL"] = url
        event = {"triggerSource": "PostConfirmation_ConfirmSignUp", "request": {"userAttributes": {
            "sub": sub, "name": "Rotated", "email": "r@example.com", "preferred_username": f"rot_{sub[:8]}"}}}
        assert handler.lambda_handler(copy.deepcopy(event), None) == event
        assert query("cruddur", "SELECT count(*) FROM users WHERE cognito_user_id = %s", (sub,)) == [(1,)]
    finally:
        os.environ.pop("CONNECTION_URL", None)
        handler._discard_connection()
        query("cruddur", "DELETE FROM users WHERE cognito_user_id = %s", (sub,))
    # A converge afterwards keeps the new passwords (nothing to change).
    again = run_playbook("site.yml")
    assert again.rc == 0 and again.changed() == 0, again.output[-3000:]
