"""The post-confirmation handler, invoked with real Cognito PostConfirmation event shapes against
a real PostgreSQL database created by the fixture."""

import copy
import importlib
import logging
import sys
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
def database():
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


def test_an_event_without_attributes_is_a_clear_error(url):
    with pytest.raises(handler.InvalidEvent, match="no request.userAttributes"):
        handler.lambda_handler({"request": {}}, None)


def test_a_nul_character_is_a_clear_error(database, url):
    with pytest.raises(handler.InvalidEvent, match="NUL character: name"):
        handler.lambda_handler(event(name="bad\x00name"), None)


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
        with pytest.raises(psycopg2.OperationalError):
            handler.lambda_handler(incoming, None)
    assert query(database, "SELECT count(*) FROM users") == before
    assert f"could not record sub={sub}" in caplog.text
    assert secret not in caplog.text and "postgresql://" not in caplog.text
    handler._discard_connection()


def test_a_handle_taken_by_another_user_fails_visibly(database, url, caplog):
    with pytest.raises(psycopg2.IntegrityError):
        handler.lambda_handler(event(preferred_username="andrewbrown"), None)
    assert "could not record sub=" in caplog.text


text = st.text(alphabet=st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)),
               min_size=1, max_size=300).filter(lambda s: s.strip())


@settings(max_examples=75, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=text, email=text, handle=text, sub=text)
def test_arbitrary_text_is_stored_verbatim_and_nothing_else_changes(database, url, name, email, handle, sub):
    snapshot = "SELECT count(*), md5(string_agg(u::text, ',' ORDER BY uuid)) FROM users u"
    before = query(database, snapshot)
    try:
        handler.lambda_handler(event(name=name, email=email, preferred_username=handle, sub=sub), None)
        assert user(database, sub) == [(name, email, handle, sub)]
        assert query(database, "SELECT count(*) FROM users")[0][0] == before[0][0] + 1
    finally:
        query(database, "DELETE FROM users WHERE cognito_user_id = %s", (sub,))
    assert query(database, snapshot) == before
