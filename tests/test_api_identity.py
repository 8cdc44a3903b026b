"""Who writes, and what the frontend reads: tokens, replies, a user's feed, expiry.

The API runs against a real PostgreSQL database and checks real RS256 tokens of a real issuer
(tests/issuer.py: the local stack's issuer with a key of its own). Writes are checked for what
they leave in the database, not only for their status.
"""

import json
import sys
import time
import uuid
from pathlib import Path

import jwt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import PG, REPO, create_migrated_database, drop_database, query
from issuer import CLIENT_ID, ISSUER, Issuer, other_key

sys.path.insert(0, str(REPO / "files" / "api"))
from cruddur_api import create_app  # noqa: E402


@pytest.fixture(scope="module")
def database(postgresql):
    name = create_migrated_database("cruddur_identity", signed_up=True)
    # One more linked user (and sub-nobody, whose row the trigger missed: no row at all).
    query(name, "INSERT INTO users (display_name, handle, cognito_user_id) "
                "VALUES ('Replying Person', 'replier', 'sub-replier')")
    yield name
    drop_database(name)


@pytest.fixture(scope="module")
def issuer(tmp_path_factory):
    return Issuer(tmp_path_factory.mktemp("issuer"))


@pytest.fixture(scope="module")
def app(database, issuer):
    app = create_app({
        "CONNECTION_URL": f"postgresql://{PG['user']}:{PG['password']}@{PG['host']}:{PG['port']}/{database}",
        "FEED_PAGE_SIZE": 3,
        **issuer.config(),
    })
    yield app
    app.extensions["cruddur_db"].close()


@pytest.fixture
def client(app):
    return app.test_client()


def rows(database):
    return query(database, "SELECT count(*) FROM activities")[0][0]


def post(client, headers, body=None, path="/api/activities"):
    return client.post(path, json=body or {"message": "hello", "ttl": "1-day"}, headers=headers)


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


def hs256_with_the_public_key(issuer):
    """The classic confusion attack: HS256 keyed with the RSA public key the JWKS publishes. PyJWT
    refuses to sign with a PEM as an HMAC key, so the token is assembled by hand."""
    import base64
    import hashlib
    import hmac

    from cryptography.hazmat.primitives import serialization

    pem = issuer.key.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).decode().rstrip("=")

    head = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": issuer.jwk["kid"]}).encode())
    body = b64(json.dumps(issuer.claims("sub-bayko")).encode())
    signature = b64(hmac.new(pem, f"{head}.{body}".encode(), hashlib.sha256).digest())
    return f"{head}.{body}.{signature}"


def unsigned(issuer):
    return jwt.encode(issuer.claims("sub-bayko"), None, algorithm="none", headers={"kid": issuer.jwk["kid"]})


BAD_TOKENS = {
    "missing": lambda issuer: {},
    "bearer null": lambda issuer: {"Authorization": "Bearer null"},
    "bearer undefined": lambda issuer: {"Authorization": "Bearer undefined"},
    "another scheme": lambda issuer: {"Authorization": f"Basic {issuer.token('sub-bayko')}"},
    "garbage": lambda issuer: bearer("not.a.jwt"),
    "bad signature": lambda issuer: bearer(issuer.token("sub-bayko", key=other_key())),
    "tampered claims": lambda issuer: bearer(
        issuer.token("sub-bayko").split(".")[0] + "." + jwt.utils.base64url_encode(
            json.dumps(issuer.claims("sub-andrewbrown")).encode()).decode() + "."
        + issuer.token("sub-bayko").split(".")[2]),
    "another pool's issuer": lambda issuer: bearer(issuer.token(
        "sub-bayko", iss="https://cognito-idp.us-east-1.amazonaws.com/us-east-1_other")),
    "an id token": lambda issuer: bearer(issuer.token("sub-bayko", token_use="id", client_id=..., aud=CLIENT_ID)),
    "another app client": lambda issuer: bearer(issuer.token("sub-bayko", client_id="someone-elses-client")),
    "expired": lambda issuer: bearer(issuer.token("sub-bayko", exp=int(time.time()) - 120)),
    "no expiry": lambda issuer: bearer(issuer.token("sub-bayko", exp=...)),
    "unknown key id": lambda issuer: bearer(issuer.token("sub-bayko", headers={"kid": "not-a-key-of-ours"})),
    "alg none": lambda issuer: bearer(unsigned(issuer)),
    "HS256 signed with the public key": lambda issuer: bearer(hs256_with_the_public_key(issuer)),
}


@pytest.mark.parametrize("case", sorted(BAD_TOKENS))
def test_every_bad_token_is_a_401_and_writes_nothing(client, database, issuer, case):
    headers = BAD_TOKENS[case](issuer)
    parent = post(client, issuer.bearer("sub-andrewbrown")).get_json()["uuid"]
    before = rows(database)
    for path in ("/api/activities", f"/api/activities/{parent}/reply"):
        response = post(client, headers, path=path)
        assert response.status_code == 401, (case, response.get_data(as_text=True))
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        codes = response.get_json()
        assert isinstance(codes, list) and len(codes) == 1 and codes[0].startswith("token_"), codes
    assert rows(database) == before
    assert query(database, "SELECT replies_count FROM activities WHERE uuid = %s", (parent,))[0][0] == 0


def test_an_expired_token_says_so_and_a_missing_one_asks_to_sign_in(client, issuer):
    expired = post(client, bearer(issuer.token("sub-bayko", exp=int(time.time()) - 120)))
    assert expired.get_json() == ["token_expired"]
    assert 'error="invalid_token"' in expired.headers["WWW-Authenticate"]
    missing = post(client, {})
    assert missing.get_json() == ["token_missing"]
    assert "error=" not in missing.headers["WWW-Authenticate"]


def test_a_token_just_past_expiry_is_within_the_leeway(client, issuer):
    response = post(client, bearer(issuer.token("sub-bayko", exp=int(time.time()) - 5)))
    assert response.status_code == 200


def test_the_week_4_form_without_a_token_is_a_401(client, database):
    """The bootcamp's week-4 frontend posted without a token, as one fixed user: refused."""
    before = rows(database)
    response = client.post("/api/activities", json={"message": "week 4", "ttl": "7-days"},
                           headers={"Accept": "application/json"})
    assert response.status_code == 401
    assert rows(database) == before


FIELDS_THAT_CLAIM_AN_AUTHOR = st.fixed_dictionaries(
    {"message": st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=40)
     .filter(str.strip), "ttl": st.sampled_from(["1-hour", "1-day", "30-days"])},
    optional={"handle": st.sampled_from(["andrewbrown", "bayko", "replier", "nobody"]),
              "user_uuid": st.uuids().map(str),
              "cognito_user_id": st.sampled_from(["sub-andrewbrown", "sub-bayko", "sub-replier"]),
              "display_name": st.text(max_size=10)})


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=FIELDS_THAT_CLAIM_AN_AUTHOR, author=st.sampled_from(["bayko", "replier"]))
def test_property_a_post_is_always_the_token_users(client, database, issuer, body, author):
    response = post(client, issuer.bearer(f"sub-{author}"), body)
    assert response.status_code == 200, response.get_data(as_text=True)
    created = response.get_json()
    assert created["handle"] == author
    stored = query(database, "SELECT users.handle FROM activities JOIN users ON users.uuid = activities.user_uuid "
                             "WHERE activities.uuid = %s", (created["uuid"],))
    assert stored == [(author,)]


# --- replies -----------------------------------------------------------------------------

def test_a_reply_is_stored_counted_and_shown_with_its_activity(client, database, issuer):
    parent = post(client, issuer.bearer("sub-andrewbrown"), {"message": "ask me", "ttl": "3-days"}).get_json()
    first = post(client, issuer.bearer("sub-replier"), {"message": "first"}, f"/api/activities/{parent['uuid']}/reply")
    second = post(client, issuer.bearer("sub-bayko"), {"message": "second"}, f"/api/activities/{parent['uuid']}/reply")
    assert first.status_code == second.status_code == 200
    reply = second.get_json()
    assert reply["reply_to_activity_uuid"] == parent["uuid"]
    assert reply["handle"] == "bayko" and reply["message"] == "second"
    # A reply lives as long as the activity it answers.
    assert reply["expires_at"] == parent["expires_at"]
    assert second.headers["Location"] == f"/api/activities/{reply['uuid']}"
    assert query(database, "SELECT replies_count, reply_to_activity_uuid FROM activities WHERE uuid = %s",
                 (parent["uuid"],)) == [(2, None)]

    shown = client.get(f"/api/activities/{parent['uuid']}").get_json()
    assert shown["replies_count"] == 2
    assert [r["message"] for r in shown["replies"]] == ["second", "first"]  # newest first
    # Each reply has the activity's fields, without replies of its own.
    assert list(shown["replies"][0]) == [key for key in shown if key != "replies"]

    # The feeds list activities, not replies; the activity carries its replies there too.
    feed = walk(client, "/api/activities/home")
    assert reply["uuid"] not in [a["uuid"] for a in feed]
    in_feed = [a for a in feed if a["uuid"] == parent["uuid"]]
    assert in_feed and in_feed[0]["replies"] == shown["replies"]


def test_replies_to_a_missing_or_expired_activity(client, database, issuer):
    before = rows(database)
    missing = post(client, issuer.bearer("sub-bayko"), {"message": "hello?"}, f"/api/activities/{uuid.uuid4()}/reply")
    assert missing.status_code == 404 and missing.get_json() == ["activity_not_found"]
    expired = query(database, """
        INSERT INTO activities (user_uuid, message, expires_at, created_at)
        SELECT uuid, 'gone', now() - interval '1 minute', now() - interval '1 hour' FROM users WHERE handle = 'bayko'
        RETURNING uuid""")[0][0]
    late = post(client, issuer.bearer("sub-replier"), {"message": "too late"}, f"/api/activities/{expired}/reply")
    assert late.status_code == 422 and late.get_json() == ["activity_expired"]
    blank = post(client, issuer.bearer("sub-replier"), {"message": " "}, f"/api/activities/{expired}/reply")
    assert blank.status_code == 422 and blank.get_json() == ["message_blank"]
    unregistered = post(client, issuer.bearer("sub-nobody"), {"message": "hi"}, f"/api/activities/{expired}/reply")
    assert unregistered.status_code == 403 and unregistered.get_json() == ["user_not_registered"]
    assert rows(database) == before + 1  # the expired activity this test inserted, no reply
    assert query(database, "SELECT replies_count FROM activities WHERE uuid = %s", (expired,)) == [(0,)]


def test_a_reply_to_an_activity_deleted_while_it_is_written_is_404(client, database, issuer):
    """The purge (or a user's removal) may delete the activity between the reply's read of it and
    its foreign key's check: that is 'activity_not_found', not a 500. A trigger of the test's own
    deletes the parent at exactly that point."""
    parent = query(database, """
        INSERT INTO activities (user_uuid, message, expires_at)
        SELECT uuid, 'about to be purged', now() + interval '1 hour' FROM users WHERE handle = 'bayko'
        RETURNING uuid""")[0][0]
    query(database, """
        CREATE FUNCTION test_delete_parent() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          IF NEW.message = 'racing the purge' THEN
            DELETE FROM activities WHERE uuid = NEW.reply_to_activity_uuid;
          END IF;
          RETURN NEW;
        END $$;
        CREATE TRIGGER test_delete_parent BEFORE INSERT ON activities
          FOR EACH ROW EXECUTE FUNCTION test_delete_parent();""")
    try:
        before = rows(database)
        raced = post(client, issuer.bearer("sub-bayko"), {"message": "racing the purge"},
                     f"/api/activities/{parent}/reply")
        assert raced.status_code == 404 and raced.get_json() == ["activity_not_found"], raced.get_data(as_text=True)
        assert rows(database) == before  # the parent is still there: its delete was rolled back with the reply
    finally:
        query(database, "DROP TRIGGER test_delete_parent ON activities; DROP FUNCTION test_delete_parent()")


def test_concurrent_replies_are_each_counted(app, database, issuer):
    from concurrent.futures import ThreadPoolExecutor

    client = app.test_client()
    parent = post(client, issuer.bearer("sub-andrewbrown")).get_json()["uuid"]

    def reply(i):
        return post(app.test_client(), issuer.bearer("sub-replier"), {"message": f"r{i}"},
                    f"/api/activities/{parent}/reply").status_code

    with ThreadPoolExecutor(4) as pool:
        assert set(pool.map(reply, range(12))) == {200}
    assert query(database, "SELECT replies_count, (SELECT count(*) FROM activities WHERE reply_to_activity_uuid = %s) "
                           "FROM activities WHERE uuid = %s", (parent, parent)) == [(12, 12)]


# --- a user's feed, expiry ---------------------------------------------------------------

def walk(client, url):
    items = []
    while url:
        response = client.get(url)
        assert response.status_code == 200, response.get_data(as_text=True)
        items += response.get_json()
        cursor = response.headers.get("X-Next-Cursor")
        url = cursor and response.headers["Link"].split(">")[0].lstrip("<")
    return items


def test_a_users_feed_pages_through_their_activities_only(client, database, issuer):
    for i in range(5):
        assert post(client, issuer.bearer("sub-replier"), {"message": f"mine {i}", "ttl": "1-hour"}).status_code == 200
    expected = [str(r[0]) for r in query(database, """
        SELECT activities.uuid FROM activities JOIN users ON users.uuid = activities.user_uuid
        WHERE users.handle = 'replier' AND reply_to_activity_uuid IS NULL AND expires_at > now()
        ORDER BY activities.created_at DESC, activities.uuid DESC""")]
    first = client.get("/api/activities/@replier")
    assert len(first.get_json()) == 3 and "cursor=" in first.headers["Link"] and "@replier" in first.headers["Link"]
    items = walk(client, "/api/activities/@replier")
    assert [a["uuid"] for a in items] == expected
    assert {a["handle"] for a in items} == {"replier"}


def test_an_unknown_handle_is_a_404_and_a_quiet_user_an_empty_feed(client, database):
    response = client.get("/api/activities/@nobody-has-this-handle")
    assert response.status_code == 404
    assert response.get_json()["error"] == "user_not_found"
    query(database, "INSERT INTO users (display_name, handle) VALUES ('Quiet', 'quiet') ON CONFLICT DO NOTHING")
    quiet = client.get("/api/activities/@quiet")
    assert quiet.status_code == 200 and quiet.get_json() == []


def test_expired_activities_are_served_nowhere(client, database):
    expired = str(query(database, """
        INSERT INTO activities (user_uuid, message, expires_at, created_at)
        SELECT uuid, 'expired one', now() - interval '1 second', now() FROM users WHERE handle = 'andrewbrown'
        RETURNING uuid""")[0][0])
    assert expired not in [a["uuid"] for a in walk(client, "/api/activities/home")]
    assert expired not in [a["uuid"] for a in walk(client, "/api/activities/@andrewbrown")]
    assert client.get(f"/api/activities/{expired}").status_code == 404


# --- the key set -------------------------------------------------------------------------

def test_the_key_set_is_read_once_not_per_request(app, client, issuer):
    key_set = app.extensions["cruddur_auth"].key_set
    for _ in range(20):
        assert post(client, issuer.bearer("sub-bayko")).status_code == 200
    reads = key_set.reads
    assert reads == 1
    # Made-up key ids do not make a read each: at most one per refresh interval.
    for i in range(20):
        assert post(client, bearer(issuer.token("sub-bayko", headers={"kid": f"made-up-{i}"}))).status_code == 401
    assert key_set.reads <= reads + 1


def test_a_rotated_key_is_picked_up_on_its_first_token(database, tmp_path):
    issuer = Issuer(tmp_path)
    app = create_app({
        "CONNECTION_URL": f"postgresql://{PG['user']}:{PG['password']}@{PG['host']}:{PG['port']}/{database}",
        **issuer.config()})
    try:
        client = app.test_client()
        assert post(client, issuer.bearer("sub-bayko")).status_code == 200
        # The issuer rotates: a new key, published beside the old one.
        (tmp_path / "next").mkdir()
        rotated = Issuer(tmp_path / "next")
        issuer.jwks_path.write_text(json.dumps({"keys": [issuer.jwk, rotated.jwk]}))
        app.extensions["cruddur_auth"].key_set._read_at -= 3600  # the refresh interval has passed
        token = jwt.encode(rotated.claims("sub-bayko"), rotated.key, algorithm="RS256",
                           headers={"kid": rotated.jwk["kid"]})
        assert post(client, bearer(token)).status_code == 200
        assert app.extensions["cruddur_auth"].key_set.reads == 2
    finally:
        app.extensions["cruddur_db"].close()


def test_the_api_refuses_to_start_without_an_issuer(database):
    url = f"postgresql://{PG['user']}:{PG['password']}@{PG['host']}:{PG['port']}/{database}"
    with pytest.raises(RuntimeError, match="AUTH_ISSUER"):
        create_app({"CONNECTION_URL": url})
    with pytest.raises(RuntimeError, match="AUTH_CLIENT_IDS"):
        create_app({"CONNECTION_URL": url, "AUTH_ISSUER": ISSUER, "AUTH_JWKS": "/nonexistent"})


# --- the inventories' issuers ------------------------------------------------------------

@pytest.mark.parametrize("inventory, env, issuer, jwks", [
    ("prod", {"CRUDDUR_USER_POOL_ID": "us-east-1_Pool1", "CRUDDUR_USER_POOL_CLIENT_IDS": "client-a,client-b",
              "AWS_DEFAULT_REGION": "us-east-1"},
     "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_Pool1",
     "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_Pool1/.well-known/jwks.json"),
    ("sandbox", {"CRUDDUR_SANDBOX_USER_POOL_ID": "us-east-1_Pool1", "CRUDDUR_SANDBOX_CLIENT_IDS": "client-a,client-b",
                 "CRUDDUR_SANDBOX_ENDPOINT": "http://127.0.0.1:5999"},
     "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_Pool1",
     "http://127.0.0.1:5999/us-east-1_Pool1/.well-known/jwks.json"),
])
def test_prod_and_sandbox_hand_the_api_their_user_pool(tmp_path, inventory, env, issuer, jwks):
    """The playbooks' wiring (playbooks/group_vars/all.yml) with each inventory: the issuer is the
    pool's, its key set the pool's (the emulator's in the sandbox), the app clients the inventory's."""
    import os
    import shutil
    import subprocess

    (tmp_path / "group_vars").mkdir()
    shutil.copy(REPO / "playbooks" / "group_vars" / "all.yml", tmp_path / "group_vars" / "all.yml")
    (tmp_path / "show.yml").write_text(
        "- hosts: aws\n  gather_facts: false\n  tasks:\n    - ansible.builtin.debug:\n"
        "        msg: \"{{ {'issuer': cruddur_api_auth_issuer, 'jwks': cruddur_api_auth_jwks,"
        " 'clients': cruddur_api_auth_client_ids} | to_json }}\"\n")
    user_env = {key: value for key, value in os.environ.items() if not key.startswith(("AWS_", "CRUDDUR_"))}
    playbook = Path(sys.executable).parent / "ansible-playbook"
    run = subprocess.run([str(playbook), "-i", str(REPO / "inventories" / inventory), str(tmp_path / "show.yml")],
                         capture_output=True, text=True, check=False,
                         env={**user_env, **env, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
                              "ANSIBLE_STDOUT_CALLBACK": "json"})
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    result = json.loads(run.stdout)["plays"][0]["tasks"][0]["hosts"]
    (shown,) = [json.loads(host["msg"]) for host in result.values()]
    assert shown == {"issuer": issuer, "jwks": jwks, "clients": ["client-a", "client-b"]}
