"""cognito-reconcile heals users the trigger missed: the real module against moto's Cognito and a
real PostgreSQL database."""

import hashlib
import sys
import uuid

import boto3
import pytest

from conftest import (AWS_ENV, PG, REPO, SCRATCH_ENV_FILE, drop_database, on_database, query, role_password,
                      run_playbook)

# The chores on the local server share its cluster-wide roles (created, altered, granted to the
# administrator): they run one after another on one worker, beside the other tests (bin/run-pytest).
pytestmark = pytest.mark.xdist_group("local-chores")

sys.path.insert(0, str(REPO / "files" / "lambda" / "cruddur_post_confirmation"))
import handler  # noqa: E402


@pytest.fixture
def database(postgresql):
    """A database made by the project's own db-setup: roles, grants and seed as in production,
    so the chore's sign-up role has exactly its privileges."""
    name = f"cruddur_reconcile_{uuid.uuid4().hex[:10]}"
    setup = run_playbook("playbooks/db-setup.yml", extra_vars={**on_database(name),
                                                               "cruddur_db_env_file": SCRATCH_ENV_FILE})
    assert setup.rc == 0, setup.output[-3000:]
    yield name
    drop_database(name)


@pytest.fixture
def cognito(moto_endpoint):
    return boto3.client("cognito-idp", endpoint_url=moto_endpoint, region_name="us-east-1",
                        aws_access_key_id="testing", aws_secret_access_key="testing")


def add_user(cognito, pool, username, confirmed=True, **attributes):
    attrs = {"name": f"Name {username}", "email": f"{username}@example.com", "preferred_username": username,
             **attributes}
    cognito.admin_create_user(UserPoolId=pool, Username=username, MessageAction="SUPPRESS",
                              UserAttributes=[{"Name": k, "Value": v} for k, v in attrs.items() if v is not None])
    if confirmed:
        cognito.admin_set_user_password(UserPoolId=pool, Username=username, Password="Passw0rd!long", Permanent=True)
    user = cognito.admin_get_user(UserPoolId=pool, Username=username)
    return {a["Name"]: a["Value"] for a in user["UserAttributes"]}


def reconcile(endpoint, pool, database, *args):
    return run_playbook("playbooks/cognito-reconcile.yml", *args, env=AWS_ENV, extra_vars={
        "cruddur_lambda_user_pool_id": pool, "cruddur_aws_endpoint_url": endpoint,
        **on_database(database)})


def test_missing_confirmed_users_are_inserted_once(moto_endpoint, cognito, database, monkeypatch):
    pool = cognito.create_user_pool(PoolName=f"cruddur-{uuid.uuid4().hex[:6]}")["UserPool"]["Id"]
    confirmed = [add_user(cognito, pool, f"user{i:02d}") for i in range(65)]  # more than one page
    for i in range(3):
        add_user(cognito, pool, f"pending{i}", confirmed=False)
    incomplete = add_user(cognito, pool, "nohandle", preferred_username=None)
    # The trigger worked for the first ten.
    monkeypatch.setenv("CONNECTION_URL", f"postgresql://cruddur_signup:{role_password('cruddur_signup')}"
                                         f"@{PG['host']}:{PG['port']}/{database}")
    handler._discard_connection()
    for attrs in confirmed[:10]:
        handler.lambda_handler({"triggerSource": "PostConfirmation_ConfirmSignUp",
                                "request": {"userAttributes": attrs}}, None)
    handler._discard_connection()
    count = "SELECT count(*) FROM users WHERE cognito_user_id IS NOT NULL"

    check = reconcile(moto_endpoint, pool, database, "--check")
    assert check.rc == 0 and check.changed() == 1, check.output[-3000:]
    assert "Would insert 55 of 65 confirmed users" in check.output
    assert query(database, count) == [(10,)]

    run = reconcile(moto_endpoint, pool, database, "-vvvv")
    assert run.rc == 0 and run.changed() == 1, run.output[-3000:]
    assert f"Skipped: {incomplete['sub']}" in run.output
    assert role_password("cruddur_signup") not in run.output
    rows = query(database, "SELECT display_name, email, handle, cognito_user_id FROM users"
                           " WHERE cognito_user_id IS NOT NULL ORDER BY handle")
    assert rows == [(a["name"], a["email"], a["preferred_username"], a["sub"]) for a in confirmed]

    again = reconcile(moto_endpoint, pool, database)
    assert again.rc == 0 and again.changed() == 0, again.output[-3000:]
    assert query(database, count) == [(65,)]


def test_a_taken_handle_gets_the_handlers_derived_handle(moto_endpoint, cognito, database):
    pool = cognito.create_user_pool(PoolName=f"cruddur-{uuid.uuid4().hex[:6]}")["UserPool"]["Id"]
    good = add_user(cognito, pool, "fresh")
    clash = add_user(cognito, pool, "clash", preferred_username="andrewbrown")  # a seed user's handle
    derived = "andrewbrown_" + hashlib.md5(clash["sub"].encode()).hexdigest()[:8]
    run = reconcile(moto_endpoint, pool, database)
    assert run.rc == 0 and run.changed() == 1, run.output[-3000:]
    assert f"{clash['sub']}: handle andrewbrown is taken, recorded as {derived}" in " ".join(run.output.split()), run.output
    assert query(database, "SELECT handle FROM users WHERE cognito_user_id = %s", (good["sub"],)) == [("fresh",)]
    assert query(database, "SELECT handle FROM users WHERE cognito_user_id = %s", (clash["sub"],)) == [(derived,)]
    again = reconcile(moto_endpoint, pool, database)
    assert again.rc == 0 and again.changed() == 0, again.output[-3000:]
    assert query(database, "SELECT count(*) FROM users WHERE cognito_user_id = %s", (clash["sub"],)) == [(1,)]


def test_an_unknown_pool_is_named(moto_endpoint, database):
    run = reconcile(moto_endpoint, "us-east-1_doesnotexist", database)
    assert run.rc != 0
    assert "cannot list the users of pool us-east-1_doesnotexist" in run.output
