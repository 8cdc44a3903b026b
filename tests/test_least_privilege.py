"""Each component logs in with the weakest role that does its job, on the converged local stack:
the API as cruddur_api (read the feed, post activities), the Lambda and the reconcile chore as
cruddur_signup (insert and read users), migrations as the owner. None is a superuser."""

import importlib
import sys
import uuid

import psycopg2
import pytest

from conftest import LOCAL_CONNECTION, REPO, connect, query, role_password

pytestmark = pytest.mark.usefixtures("converged")

sys.path.insert(0, str(REPO / "files" / "lambda" / "cruddur_post_confirmation"))
handler = importlib.import_module("handler")


def login(role):
    return connect("cruddur", user=role, password=role_password(role))


def refused(role, statement, params=None):
    conn = login(role)
    try:
        with conn.cursor() as cur:
            with pytest.raises(psycopg2.errors.InsufficientPrivilege):
                cur.execute(statement, params)
    finally:
        conn.close()


def test_the_apis_sessions_are_its_own_role_and_not_superuser():
    import urllib.request

    urllib.request.urlopen("http://127.0.0.1:4567/api/health", timeout=10).read()
    # The deployed API's sessions are those on its database: the app tests run their own API
    # (as postgres, on scratch databases) beside this one, with the same application name.
    rows = query("postgres", """
        SELECT DISTINCT a.usename, r.rolsuper FROM pg_stat_activity a JOIN pg_roles r ON r.rolname = a.usename
        WHERE a.application_name = 'cruddur-api' AND a.datname = %s""", (LOCAL_CONNECTION["name"],))
    assert rows == [("cruddur_api", False)]


@pytest.mark.parametrize("statement", [
    "DROP TABLE activities",
    "ALTER TABLE activities ADD COLUMN x int",
    "TRUNCATE activities",
    "DELETE FROM activities",
    "UPDATE activities SET likes_count = 1",
    "INSERT INTO users (display_name, handle) VALUES ('x', 'x')",
    "UPDATE users SET display_name = 'x'",
    "SELECT * FROM cruddur_schema_migrations",
    "CREATE TABLE api_scratch (id int)",
    "SELECT rolpassword FROM pg_authid",
])
def test_the_api_role_cannot_change_the_schema_or_touch_what_it_does_not_use(statement):
    refused("cruddur_api", statement)


def test_the_api_role_can_do_what_the_api_does():
    conn = login("cruddur_api")
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM activities JOIN users ON users.uuid = activities.user_uuid")
            cur.execute("BEGIN")
            cur.execute("INSERT INTO activities (user_uuid, message) SELECT uuid, 'role check' FROM users"
                        " WHERE handle = 'andrewbrown' RETURNING uuid")
            assert cur.rowcount == 1
            cur.execute("ROLLBACK")
    finally:
        conn.close()


@pytest.mark.parametrize("statement", [
    "SELECT * FROM activities",
    "INSERT INTO activities (user_uuid, message) SELECT uuid, 'x' FROM users LIMIT 1",
    "UPDATE users SET display_name = 'x'",
    "DELETE FROM users",
    "DROP TABLE users",
    "SELECT * FROM cruddur_schema_migrations",
])
def test_the_signup_role_can_insert_a_user_and_nothing_else(statement):
    refused("cruddur_signup", statement)


def test_the_lambda_inserts_as_the_signup_role(monkeypatch):
    from urllib.parse import quote

    url = f"postgresql://cruddur_signup:{quote(role_password('cruddur_signup'))}@127.0.0.1:5432/cruddur"
    monkeypatch.setenv("CONNECTION_URL", url)
    handler._discard_connection()
    sub = str(uuid.uuid4())
    event = {"triggerSource": "PostConfirmation_ConfirmSignUp", "request": {"userAttributes": {
        "sub": sub, "name": "Least Privilege", "email": "lp@example.com", "preferred_username": f"lp_{sub[:8]}"}}}
    try:
        handler.lambda_handler(event, None)
        # This handler's own session (the handler tests run theirs as postgres on scratch databases).
        session = query("postgres", """
            SELECT a.usename, r.rolsuper FROM pg_stat_activity a JOIN pg_roles r ON r.rolname = a.usename
            WHERE a.application_name = 'cruddur-post-confirmation' AND a.pid = %s""",
                        (handler._connection.info.backend_pid,))
        assert session == [("cruddur_signup", False)]
        assert query("cruddur", "SELECT handle FROM users WHERE cognito_user_id = %s", (sub,)) == [(f"lp_{sub[:8]}",)]
    finally:
        handler._discard_connection()
        query("cruddur", "DELETE FROM users WHERE cognito_user_id = %s", (sub,))


def test_migrations_ran_as_the_owner():
    owners = query("cruddur", "SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = 'public'")
    assert owners == [("cruddur_owner",)]
    assert query("postgres", "SELECT rolsuper, rolcreaterole, rolcreatedb FROM pg_roles"
                             " WHERE rolname = 'cruddur_owner'") == [(False, False, False)]
