"""The post-confirmation handler, invoked with real Cognito PostConfirmation event shapes against
a real PostgreSQL database created by the fixture."""

import copy
import hashlib
import importlib
import logging
import socket
import sys
import time
import uuid

import psycopg2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import PG, REPO, connect, create_migrated_database, drop_database, query

sys.path.insert(0, str(REPO / "files" / "lambda" / "cruddur_post_confirmation"))
handler = importlib.import_module("handler")


def event(**attributes):
    """A PostConfirmation_ConfirmSignUp event as Cognito sends it."""
    sub = attributes.pop("sub", str(uuid.uuid4()))
    unique = uuid.uuid4().hex[:8]
    user_attributes = {
        "sub": sub,
        "email_verified": "true",
        "cognito:user_status": "CONFIRMED",
        "name": "Ada Lovelace",
        "preferred_username": f"ada_{unique}",
        "email": "ada@example.com",
        **attributes,
    }
    return {
        "version": "1",
        "region": "us-east-1",
        "userPoolId": "us-east-1_Example",
        "userName": sub,
        "callerContext": {"awsSdkVersion": "aws-sdk-unknown-unknown", "clientId": "4example0client"},
        "triggerSource": "PostConfirmation_ConfirmSignUp",
        "request": {"userAttributes": {k: v for k, v in user_attributes.items() if v is not None}},
        "response": {},
    }


@pytest.fixture(scope="module")
def database(postgresql):
    name = create_migrated_database("cruddur_lambda")
    yield name
    drop_database(name)


@pytest.fixture
def url(database, monkeypatch):
    value = f"postgresql://{PG['user']}:{PG['password']}@{PG['host']}:{PG['port']}/{database}"
    monkeypatch.setenv("CONNECTION_URL", value)
    handler._discard_connection()
    yield value
    handler._discard_connection()


def user(database, sub):
    return query(database, "SELECT display_name, email, handle, cognito_user_id FROM users"
                           " WHERE cognito_user_id = %s", (sub,))


def test_inserts_the_confirmed_user_and_returns_the_event(database, url):
    incoming = event(name="Grace O'Hopper", email="grace@example.com", preferred_username="grace")
    sent = copy.deepcopy(incoming)
    returned = handler.lambda_handler(incoming, None)
    assert returned == sent
    sub = sent["request"]["userAttributes"]["sub"]
    assert user(database, sub) == [("Grace O'Hopper", "grace@example.com", "grace", sub)]


def test_a_retried_invocation_adds_no_row(database, url):
    incoming = event()
    sub = incoming["request"]["userAttributes"]["sub"]
    handler.lambda_handler(incoming, None)
    handler.lambda_handler(copy.deepcopy(incoming), None)
    assert len(user(database, sub)) == 1


@pytest.mark.parametrize("attribute", ["name", "email", "preferred_username", "sub"])
@pytest.mark.parametrize("value", [None, "", "   "])
def test_a_missing_attribute_is_a_clear_error_and_inserts_nothing(database, url, caplog, attribute, value):
    before = query(database, "SELECT count(*) FROM users")
    with pytest.raises(handler.InvalidEvent, match=f"missing required user attribute\\(s\\): {attribute}"):
        handler.lambda_handler(event(**{attribute: value}), None)
    assert query(database, "SELECT count(*) FROM users") == before
    assert "post-confirmation rejected" in caplog.text


@pytest.mark.parametrize("malformed, reason", [
    (None, "the event is not an object"),
    (["PostConfirmation_ConfirmSignUp"], "the event is not an object"),
    ({"triggerSource": "PostConfirmation_ConfirmSignUp"}, "request is not an object"),
    ({"triggerSource": "PostConfirmation_ConfirmSignUp", "request": "text"}, "request is not an object"),
    ({"triggerSource": "PostConfirmation_ConfirmSignUp", "request": []}, "request is not an object"),
    ({"triggerSource": "PostConfirmation_ConfirmSignUp", "request": {}}, "userAttributes is missing"),
    ({"triggerSource": "PostConfirmation_ConfirmSignUp", "request": {"userAttributes": ["a"]}},
     "userAttributes is missing or not an object"),
])
def test_a_malformed_event_raises_one_clear_error(database, url, malformed, reason):
    before = query(database, "SELECT count(*) FROM users")
    with pytest.raises(handler.InvalidEvent, match=reason):
        handler.lambda_handler(malformed, None)
    assert query(database, "SELECT count(*) FROM users") == before


def test_an_event_without_a_trigger_source_is_malformed(database, url):
    incoming = event()
    del incoming["triggerSource"]
    with pytest.raises(handler.InvalidEvent, match="no triggerSource"):
        handler.lambda_handler(incoming, None)
    assert user(database, incoming["request"]["userAttributes"]["sub"]) == []


@pytest.mark.parametrize("value, attribute", [("bad\x00name", "name"), ("lone \ud800", "name"),
                                              ("x\udfff", "preferred_username")])
def test_unstorable_characters_are_a_clear_error(database, url, value, attribute):
    with pytest.raises(handler.InvalidEvent, match=f"cannot be stored: {attribute}"):
        handler.lambda_handler(event(**{attribute: value}), None)


@pytest.mark.parametrize("source", ["PostConfirmation_ConfirmForgotPassword", "PreSignUp_SignUp", ""])
def test_other_trigger_sources_leave_the_table_alone(database, url, source):
    incoming = event()
    incoming["triggerSource"] = source
    sent = copy.deepcopy(incoming)
    snapshot = "SELECT count(*), md5(string_agg(u::text, ',' ORDER BY uuid)) FROM users u"
    before = query(database, snapshot)
    assert handler.lambda_handler(incoming, None) == sent
    assert query(database, snapshot) == before


def test_the_connection_is_reused_across_warm_invocations(database, url):
    handler.lambda_handler(event(), None)
    first = handler._connection
    pid = first.get_backend_pid()
    handler.lambda_handler(event(), None)
    assert handler._connection is first and first.get_backend_pid() == pid


def test_a_connection_gone_bad_is_reopened(database, url):
    handler.lambda_handler(event(), None)
    old_pid = handler._connection.get_backend_pid()
    admin = connect("postgres")
    with admin.cursor() as cur:
        cur.execute("SELECT pg_terminate_backend(%s)", (old_pid,))
    admin.close()
    incoming = event()
    handler.lambda_handler(incoming, None)
    assert handler._connection.get_backend_pid() != old_pid
    assert len(user(database, incoming["request"]["userAttributes"]["sub"])) == 1


def test_database_down_raises_logs_the_sub_and_no_secret(database, monkeypatch, caplog):
    secret = "s3cret-" + uuid.uuid4().hex
    # Nothing listens on 127.0.0.1:9 (discard): the connection is refused at once.
    monkeypatch.setenv("CONNECTION_URL", f"postgresql://postgres:{secret}@127.0.0.1:9/{database}")
    handler._discard_connection()
    incoming = event()
    sub = incoming["request"]["userAttributes"]["sub"]
    before = query(database, "SELECT count(*) FROM users")
    with caplog.at_level(logging.INFO, logger="cruddur.post_confirmation"):
        with pytest.raises(handler.SignUpNotRecorded) as failure:
            handler.lambda_handler(incoming, None)
    assert query(database, "SELECT count(*) FROM users") == before
    assert f"could not record sub={sub}" in caplog.text
    assert secret not in caplog.text and "postgresql://" not in caplog.text
    # What Cognito shows the person signing up: generic, no host, user or driver detail.
    assert str(failure.value) == handler.GENERIC_FAILURE
    assert failure.value.__cause__ is None and failure.value.__suppress_context__
    for detail in ("127.0.0.1", "postgres", database, "psycopg2", "connection", secret):
        assert detail not in str(failure.value)
    handler._discard_connection()


def test_a_database_error_shows_no_constraint_or_table_to_the_client(database, url, caplog):
    admin = connect(database)
    with admin.cursor() as cur:
        cur.execute("ALTER TABLE users ADD CONSTRAINT users_email_probe CHECK (email <> 'refused@example.com')")
    try:
        incoming = event(email="refused@example.com")
        with pytest.raises(handler.SignUpNotRecorded) as failure:
            handler.lambda_handler(incoming, None)
    finally:
        with admin.cursor() as cur:
            cur.execute("ALTER TABLE users DROP CONSTRAINT users_email_probe")
        admin.close()
    assert str(failure.value) == handler.GENERIC_FAILURE
    assert "users_email_probe" in caplog.text  # the details are in the log, for the operator
    assert user(database, incoming["request"]["userAttributes"]["sub"]) == []


def test_a_taken_handle_gives_one_row_with_a_deterministic_handle(database, url, caplog):
    incoming = event(preferred_username="andrewbrown")
    sub = incoming["request"]["userAttributes"]["sub"]
    derived = "andrewbrown_" + hashlib.md5(sub.encode()).hexdigest()[:8]
    assert handler.lambda_handler(incoming, None) == incoming
    assert user(database, sub) == [("Ada Lovelace", "ada@example.com", derived, sub)]
    assert f"handle 'andrewbrown' is taken; recorded as '{derived}'" in caplog.text
    # A retry gives the same single row, and the original owner keeps the handle.
    handler.lambda_handler(copy.deepcopy(incoming), None)
    assert user(database, sub) == [("Ada Lovelace", "ada@example.com", derived, sub)]
    assert query(database, "SELECT cognito_user_id FROM users WHERE handle = 'andrewbrown'") == [(None,)]


def test_the_same_wanted_handle_for_two_users_gives_two_rows(database, url):
    handle = f"twin_{uuid.uuid4().hex[:6]}"
    first, second = event(preferred_username=handle), event(preferred_username=handle)
    handler.lambda_handler(first, None)
    handler.lambda_handler(second, None)
    handles = [user(database, e["request"]["userAttributes"]["sub"])[0][2] for e in (first, second)]
    assert handles[0] == handle and handles[1].startswith(handle + "_") and len(set(handles)) == 2


def test_a_server_that_never_answers_fails_within_cognitos_wait(database, monkeypatch):
    # A loopback socket that accepts TCP connections and never speaks PostgreSQL.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    port = silent.getsockname()[1]
    monkeypatch.setenv("CONNECTION_URL", f"postgresql://postgres:x@127.0.0.1:{port}/{database}")
    handler._discard_connection()
    started = time.monotonic()
    try:
        with pytest.raises(handler.SignUpNotRecorded):
            handler.lambda_handler(event(), None)
    finally:
        silent.close()
        handler._discard_connection()
    # Cognito gives a trigger 5 seconds; the handler's budget is below that, retry included.
    assert time.monotonic() - started < 5.0


text = st.text(alphabet=st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)),
               min_size=1, max_size=300).filter(lambda s: s.strip())


@settings(max_examples=75, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=text, email=text, handle=text, sub=text)
def test_arbitrary_text_is_stored_verbatim_and_nothing_else_changes(database, url, name, email, handle, sub):
    snapshot = "SELECT count(*), md5(string_agg(u::text, ',' ORDER BY uuid)) FROM users u"
    before = query(database, snapshot)
    taken = query(database, "SELECT 1 FROM users WHERE handle = %s", (handle,))
    expected = handle + "_" + hashlib.md5(sub.encode()).hexdigest()[:8] if taken else handle
    try:
        handler.lambda_handler(event(name=name, email=email, preferred_username=handle, sub=sub), None)
        assert user(database, sub) == [(name, email, expected, sub)]
        assert query(database, "SELECT count(*) FROM users")[0][0] == before[0][0] + 1
    finally:
        query(database, "DELETE FROM users WHERE cognito_user_id = %s", (sub,))
    assert query(database, snapshot) == before


def test_the_password_comes_from_ssm_at_cold_start_and_again_after_a_rotation(database, moto_endpoint, monkeypatch):
    import boto3

    role, first, second = f"signup_{uuid.uuid4().hex[:8]}", uuid.uuid4().hex, uuid.uuid4().hex
    parameter = f"/cruddur/test/{role}"
    admin = connect(database)
    with admin.cursor() as cur:
        cur.execute(f"CREATE ROLE {role} LOGIN PASSWORD %s", (first,))
        cur.execute(f"GRANT SELECT, INSERT ON users TO {role}")
    ssm = boto3.client("ssm", endpoint_url=moto_endpoint, region_name="us-east-1",
                       aws_access_key_id="testing", aws_secret_access_key="testing")
    ssm.put_parameter(Name=parameter, Value=first, Type="SecureString", Overwrite=True)
    for name, value in {"AWS_ENDPOINT_URL": moto_endpoint, "AWS_ACCESS_KEY_ID": "testing",
                        "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
                        # As deployed: no password in the environment, only where to read it.
                        "CONNECTION_URL": f"postgresql://{role}@{PG['host']}:{PG['port']}/{database}",
                        "DB_PASSWORD_PARAMETER": parameter}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(handler, "_password", None)
    monkeypatch.setattr(handler, "_ssm", None)
    # The emulator shares two cores with the rest of the suite and can take over a second to
    # answer; the production timeout is not what this test is about.
    monkeypatch.setattr(handler, "SSM_TIMEOUT", 10)
    handler._discard_connection()
    try:
        one = event()
        handler.lambda_handler(one, None)
        assert len(user(database, one["request"]["userAttributes"]["sub"])) == 1
        assert handler._connection.info.user == role
        # The password is rotated (database and SSM) and the warm container's session ends.
        with admin.cursor() as cur:
            cur.execute(f"ALTER ROLE {role} PASSWORD %s", (second,))
            cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (role,))
        ssm.put_parameter(Name=parameter, Value=second, Type="SecureString", Overwrite=True)
        two = event()
        handler.lambda_handler(two, None)  # the old password is refused once, then re-read
        assert len(user(database, two["request"]["userAttributes"]["sub"])) == 1
        assert handler._password == second
    finally:
        handler._discard_connection()
        with admin.cursor() as cur:
            cur.execute(f"DROP OWNED BY {role}")
            cur.execute(f"DROP ROLE {role}")
        admin.close()


def test_ssm_unreachable_is_the_generic_error(database, monkeypatch, caplog):
    # Nothing listens on 127.0.0.1:9: the SSM call fails at once.
    for name, value in {"AWS_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_ACCESS_KEY_ID": "testing",
                        "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
                        "CONNECTION_URL": f"postgresql://nobody@{PG['host']}:{PG['port']}/{database}",
                        "DB_PASSWORD_PARAMETER": "/cruddur/test/missing"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(handler, "_password", None)
    monkeypatch.setattr(handler, "_ssm", None)
    handler._discard_connection()
    started = time.monotonic()
    with pytest.raises(handler.SignUpNotRecorded) as failure:
        handler.lambda_handler(event(), None)
    assert str(failure.value) == handler.GENERIC_FAILURE
    assert "could not record sub=" in caplog.text
    assert time.monotonic() - started < 5.0
