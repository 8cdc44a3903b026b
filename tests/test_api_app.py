"""The Flask app against a real PostgreSQL database created (and dropped) by the fixtures."""

import base64
import json
import sys
import time
import urllib.parse
import uuid
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from conftest import PG, REPO, connect, create_migrated_database, drop_database, query
from issuer import Issuer

sys.path.insert(0, str(REPO / "files" / "api"))
from cruddur_api import create_app  # noqa: E402
from cruddur_api.db import SQL_DIR, load_templates  # noqa: E402
from cruddur_api.release import code_release  # noqa: E402
from cruddur_api.validation import TTL_OFFSETS  # noqa: E402

TEMPLATES = load_templates(SQL_DIR)


@pytest.fixture(scope="module")
def database(postgresql):
    """A fresh database, migrated with the project's migrations and seeded with its seed."""
    name = create_migrated_database("cruddur_app", signed_up=True)
    yield name
    drop_database(name)


@pytest.fixture(scope="module")
def issuer(tmp_path_factory):
    return Issuer(tmp_path_factory.mktemp("issuer"))


@pytest.fixture(scope="module")
def spans():
    return InMemorySpanExporter()


@pytest.fixture(scope="module")
def app(database, spans, issuer):
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    app = create_app({
        "CONNECTION_URL": f"postgresql://{PG['user']}:{PG['password']}@{PG['host']}:{PG['port']}/{database}",
        "DB_POOL_TIMEOUT": 1.0,
        "FEED_PAGE_SIZE": 5,
        "FEED_MAX_PAGE_SIZE": 50,
        "MAX_CONTENT_LENGTH": 2048,
        "TRACER_PROVIDER": provider,
        **issuer.config(),
    })
    yield app
    app.extensions["cruddur_db"].close()


@pytest.fixture
def client(app, issuer):
    client = app.test_client()
    client.issuer = issuer
    return client


def count_activities(database):
    return query(database, "SELECT count(*) FROM activities")[0][0]


def create(client, as_user="bayko", **body):
    """POST /api/activities signed in as the seed user `as_user` (its token's sub is sub-<handle>)."""
    payload = {"message": "hello", "ttl": "1-day", **body}
    return client.post("/api/activities", json={k: v for k, v in payload.items() if v is not ...},
                       headers=client.issuer.bearer(f"sub-{as_user}"))


# --- feed --------------------------------------------------------------------------------

def test_home_returns_the_seed_activity_with_the_seed_fields(client):
    # Other tests (in any order) may have added newer rows: walk the pages to the seed's.
    seed, url = [], "/api/activities/home?limit=50"
    while url and not seed:
        response = client.get(url)
        assert response.status_code == 200
        assert response.mimetype == "application/json"
        seed = [a for a in response.get_json() if a["message"] == "This was imported as seed data!"]
        cursor = response.headers.get("X-Next-Cursor")
        url = cursor and f"/api/activities/home?limit=50&cursor={cursor}"
    assert len(seed) == 1
    assert list(seed[0]) == ["uuid", "display_name", "handle", "message", "replies_count", "reposts_count",
                             "likes_count", "reply_to_activity_uuid", "expires_at", "created_at", "replies"]
    assert seed[0]["replies"] == []
    assert seed[0]["handle"] == "andrewbrown" and seed[0]["display_name"] == "Andrew Brown"
    assert seed[0]["likes_count"] == 0 and seed[0]["reply_to_activity_uuid"] is None


def test_keyset_pages_cover_every_row_once_newest_first(client, database):
    conn = connect(database)
    with conn.cursor() as cur:
        # 12 rows, several sharing a created_at, so the uuid tie-breaker matters.
        cur.execute("""
            INSERT INTO activities (user_uuid, message, created_at)
            SELECT (SELECT uuid FROM users WHERE handle = 'bayko'), 'page ' || i,
                   timestamptz '2030-01-01' + (i / 3) * interval '1 minute'
            FROM generate_series(1, 12) AS i""")
    conn.close()
    expected = [str(r[0]) for r in query(database, """
        SELECT uuid FROM activities ORDER BY created_at DESC, uuid DESC""")]
    seen, url = [], "/api/activities/home?limit=5"
    while url:
        response = client.get(url)
        assert response.status_code == 200
        page = response.get_json()
        assert len(page) <= 5
        seen += [a["uuid"] for a in page]
        next_cursor = response.headers.get("X-Next-Cursor")
        if next_cursor:
            assert response.headers["Link"].endswith('rel="next"')
            url = f"/api/activities/home?limit=5&cursor={next_cursor}"
        else:
            url = None
    assert seen == expected


def test_default_page_size_applies(client):
    assert len(client.get("/api/activities/home").get_json()) <= 5


@pytest.mark.parametrize("limit", ["0", "51", "-1", "ten"])
def test_bad_limit_is_a_400(client, limit):
    response = client.get(f"/api/activities/home?limit={limit}")
    assert response.status_code == 400
    assert "limit must be an integer from 1 to 50" in response.get_json()["message"]


@pytest.mark.parametrize("cursor", ["zzz", "bm90LWEtY3Vyc29y", "MjAyNi0wMS0wMXxub3QtYS11dWlk"])
def test_bad_cursor_is_a_400(client, cursor):
    response = client.get(f"/api/activities/home?cursor={cursor}")
    assert response.status_code == 400
    assert response.get_json()["error"] == "cursor_invalid"


def test_feed_queries_walk_the_index_without_sorting(database):
    conn = connect(database)
    plans = []
    with conn.cursor() as cur:
        # The test table is tiny: ask what the indexes can do, not what is cheapest for 20 rows.
        # With sorting disabled too, a Sort left in the plan means no index gives the order.
        cur.execute("SET enable_seqscan = off; SET enable_bitmapscan = off; SET enable_sort = off")
        for name in ("home", "home_after", "user", "user_after"):
            cur.execute("EXPLAIN " + TEMPLATES[f"activities/{name}"],
                        {"limit": 20, "created_at": "2030-01-01", "uuid": str(uuid.uuid4()), "handle": "bayko"})
            plans.append("\n".join(r[0] for r in cur.fetchall()))
    conn.close()
    for name, plan in zip(("home", "home_after", "user", "user_after"), plans):
        index = "activities_home_idx" if name.startswith("home") else "activities_user_feed_idx"
        page_plan = plan.split("SubPlan")[0]  # the replies' subplan sorts a parent's few replies
        assert index in page_plan, plan
        assert "Sort" not in page_plan, plan


# --- create and read ---------------------------------------------------------------------

@pytest.mark.parametrize("ttl", sorted(TTL_OFFSETS))
def test_create_then_read_back(client, ttl):
    response = create(client, message=f"it's a 'quoted' ünïcode message {ttl}", ttl=ttl)
    assert response.status_code == 200
    body = response.get_json()
    assert body["message"] == f"it's a 'quoted' ünïcode message {ttl}"
    assert body["handle"] == "bayko"
    created = datetime.fromisoformat(body["created_at"])
    expires = datetime.fromisoformat(body["expires_at"])
    assert expires - created == TTL_OFFSETS[ttl]
    assert response.headers["Location"] == f"/api/activities/{body['uuid']}"
    again = client.get(response.headers["Location"])
    assert again.status_code == 200
    assert again.get_json()["message"] == body["message"]


def test_message_of_280_chars_is_accepted(client):
    assert create(client, message="x" * 280).status_code == 200


@pytest.mark.parametrize("body, errors", [
    ({"message": ""}, ["message_blank"]),
    ({"message": "   "}, ["message_blank"]),
    ({"message": ...}, ["message_blank"]),
    ({"message": "x" * 281}, ["message_exceed_max_chars"]),
    ({"message": 42}, ["message_not_string"]),
    ({"ttl": ...}, ["ttl_blank"]),
    ({"ttl": "2-weeks"}, ["ttl_invalid"]),
    ({"ttl": 3600}, ["ttl_invalid"]),
    ({"message": "", "ttl": "forever"}, ["message_blank", "ttl_invalid"]),
])
def test_every_broken_rule_is_reported_and_nothing_written(client, database, body, errors):
    before = count_activities(database)
    response = create(client, **body)
    assert response.status_code == 422
    # A bare array of codes: the list the frontend's form renders.
    assert response.get_json() == errors
    assert count_activities(database) == before


def test_a_valid_token_of_a_user_not_in_the_database_is_a_403(client, database):
    before = count_activities(database)
    response = create(client, as_user="nobody-has-this-identity")
    assert response.status_code == 403
    assert response.get_json() == ["user_not_registered"]
    assert count_activities(database) == before


def test_malformed_json_is_a_400(client, database):
    before = count_activities(database)
    response = client.post("/api/activities", data='{"message": "hi",', content_type="application/json",
                           headers=client.issuer.bearer("sub-bayko"))
    assert response.status_code == 400
    assert response.get_json() == ["body_not_json"]
    assert count_activities(database) == before


@pytest.mark.parametrize("data", ['["a", "list"]', '"text"', "null"])
def test_non_object_json_is_a_400(client, data):
    response = client.post("/api/activities", data=data, content_type="application/json",
                           headers=client.issuer.bearer("sub-bayko"))
    assert response.status_code == 400
    assert response.get_json() == ["body_not_object"]


def test_form_body_is_a_415(client):
    response = client.post("/api/activities", data={"message": "hi"}, headers=client.issuer.bearer("sub-bayko"))
    assert response.status_code == 415
    assert response.get_json() == ["body_not_json"]


def test_oversized_body_is_a_413(client, database):
    before = count_activities(database)
    response = create(client, message="x" * 4096)
    assert response.status_code == 413
    assert response.get_json() == ["request_entity_too_large"]
    assert count_activities(database) == before


def test_unknown_activity_is_a_404(client):
    response = client.get(f"/api/activities/{uuid.uuid4()}")
    assert response.status_code == 404
    assert response.get_json()["error"] == "activity_not_found"
    assert client.get("/api/activities/not-a-uuid").status_code == 404


def test_unknown_route_and_method_are_json(client):
    assert client.get("/api/nope").get_json()["error"] == "not_found"
    response = client.delete("/api/activities/home")
    assert response.status_code == 405
    assert response.get_json() == ["method_not_allowed"]


# --- health, outages, tracing, templates -------------------------------------------------

def test_health_reports_database_and_pool(client):
    response = client.get("/api/health")
    assert response.status_code == 200
    body = response.get_json()
    assert body["status"] == "ok" and body["database"] == "ok"
    assert body["pool"]["pool_max"] == 4 and body["pool"]["pool_size"] >= 1
    # The release the process runs: the digest of the package's files as they are now.
    assert body["release"] == code_release(REPO / "files" / "api" / "cruddur_api")


def test_the_release_digest_follows_every_file_of_the_package(tmp_path):
    import shutil

    package = tmp_path / "cruddur_api"
    shutil.copytree(REPO / "files" / "api" / "cruddur_api", package)
    before = code_release(package)
    assert len(before) == 12 and code_release(package) == before
    (package / "__pycache__").mkdir(exist_ok=True)
    (package / "__pycache__" / "x.pyc").write_bytes(b"cache")
    assert code_release(package) == before  # bytecode caches do not count
    template = package / "sql" / "health.sql"
    template.write_text(template.read_text() + "\n")
    assert code_release(package) != before


def test_database_down_is_a_503_and_the_api_recovers(client, database):
    admin = connect("postgres")
    with admin.cursor() as cur:
        cur.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false')
        cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (database,))
    try:
        before = time.monotonic()
        response = client.get("/api/activities/home")
        assert response.status_code == 503
        assert response.get_json()["error"] == "database_unavailable"
        assert response.headers["Retry-After"] == "1"
        assert time.monotonic() - before < 10
        health = client.get("/api/health")
        assert health.status_code == 503 and health.get_json()["status"] == "unavailable"
        assert create(client).status_code == 503
        assert PG["password"] not in response.get_data(as_text=True)
    finally:
        with admin.cursor() as cur:
            cur.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')
        admin.close()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if client.get("/api/activities/home").status_code == 200:
            break
        time.sleep(0.5)
    assert client.get("/api/activities/home").status_code == 200
    assert client.get("/api/health").status_code == 200


def test_spans_around_the_feed_and_each_query(client, spans):
    spans.clear()
    assert client.get("/api/activities/home").status_code == 200
    finished = {span.name: span for span in spans.get_finished_spans()}
    assert {"home-activities", "sql activities/home"} <= set(finished)
    query_span, feed_span = finished["sql activities/home"], finished["home-activities"]
    assert query_span.parent.span_id == feed_span.context.span_id
    assert query_span.attributes["db.system"] == "postgresql"


def test_templates_are_read_once_at_start(client, monkeypatch):
    def no_reading(*args, **kwargs):
        raise AssertionError("a SQL template was read during a request")

    monkeypatch.setattr(Path, "read_text", no_reading)
    monkeypatch.setattr("builtins.open", no_reading)
    assert client.get("/api/activities/home").status_code == 200
    assert create(client).status_code == 200


# --- hostile input -----------------------------------------------------------------------

def post_raw(client, text):
    return client.post("/api/activities", data=text, content_type="application/json",
                       headers=client.issuer.bearer("sub-bayko"))


@pytest.mark.parametrize("raw, error", [
    ('{"message": "a\\u0000b", "ttl": "1-day"}', "message_invalid_characters"),
    ('{"message": "lone \\ud800", "ttl": "1-day"}', "message_invalid_characters"),
    ('{"message": "hi", "ttl": "1-day\\u0000"}', "ttl_invalid"),
])
def test_unstorable_characters_are_a_422_naming_the_field(client, database, raw, error):
    before = count_activities(database)
    response = post_raw(client, raw)
    assert response.status_code == 422
    assert response.get_json() == [error]
    assert count_activities(database) == before


def test_a_surrogate_pair_is_a_character_like_any_other(client):
    response = post_raw(client, '{"message": "smile \\ud83d\\ude00", "ttl": "1-day"}')
    assert response.status_code == 200
    assert response.get_json()["message"] == "smile \U0001F600"


def raw_cursor(text):
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


SOME_UUID = "0f6a7e5c-2b1d-4c1a-9d2e-3f4a5b6c7d8e"


@pytest.mark.parametrize("text", [
    f"2026-W01-1|{SOME_UUID}",                          # an ISO week date
    f"2026-01-01T00:00:00+00:00|urn:uuid:{SOME_UUID}",  # a uuid URN
    f"2026-01-01T00:00:00+00:00|{{{SOME_UUID}}}",       # a braced uuid
    f"2026-01-01T00:00:00|{SOME_UUID}",                 # no offset
    f"2026-01-01|{SOME_UUID}",                          # a date alone
    f"9999-12-31T23:59:59-10:00|{SOME_UUID}",           # past year 9999 in UTC
    f"0001-01-01T00:00:00+14:00|{SOME_UUID}",           # before year 1 in UTC
    f"2026-01-01T00:00:00+00:00|{SOME_UUID}|extra",
    "2026-01-01T00:00:00+00:00",
])
def test_crafted_cursors_python_parses_are_a_400(client, text):
    response = client.get(f"/api/activities/home?cursor={raw_cursor(text)}")
    assert response.status_code == 400, response.get_data(as_text=True)
    assert response.get_json()["error"] == "cursor_invalid"


@pytest.mark.parametrize("offset", ["+20:00", "-23:59", "+05:30", "+00:00"])
def test_cursor_offsets_are_bound_as_utc_and_never_fail(client, offset):
    response = client.get(f"/api/activities/home?cursor={raw_cursor(f'2030-01-01T00:00:00{offset}|{SOME_UUID}')}")
    assert response.status_code == 200
    assert isinstance(response.get_json(), list)


def test_a_value_the_database_refuses_is_invalid_input_not_a_crash(app):
    from cruddur_api.db import InvalidInput

    db = app.extensions["cruddur_db"]
    with pytest.raises(InvalidInput):
        db.query_object_json("activities/object", {"uuid": "not-a-uuid"})
    with pytest.raises(InvalidInput):
        db.query_value("activities/create", {"message": "a\x00b", "ttl": timedelta(hours=1), "sub": "sub-bayko"})


def test_the_database_refusing_a_value_is_a_400(app, client, monkeypatch):
    from cruddur_api.db import InvalidInput

    def refuse(*args, **kwargs):
        raise InvalidInput("invalid input syntax for type uuid")

    monkeypatch.setattr(app.extensions["cruddur_db"], "query_page", refuse)
    response = client.get("/api/activities/home")
    assert response.status_code == 400
    assert response.get_json()["error"] == "value_refused"


def test_an_activity_has_the_same_json_everywhere(client):
    created = create(client, message="same shape everywhere", as_user="andrewbrown")
    assert created.status_code == 200
    one = client.get(created.headers["Location"])
    feed = client.get("/api/activities/home?limit=50").get_json()
    from_feed = [a for a in feed if a["uuid"] == created.get_json()["uuid"]]
    assert len(from_feed) == 1
    # Same keys in the same order with the same values, and the same bytes for the object.
    assert list(created.get_json().items()) == list(one.get_json().items()) == list(from_feed[0].items())
    assert created.get_data() == one.get_data()
    assert list(from_feed[0]) == ["uuid", "display_name", "handle", "message", "replies_count",
                                  "reposts_count", "likes_count", "reply_to_activity_uuid",
                                  "expires_at", "created_at", "replies"]


def test_405_keeps_allow(client):
    response = client.delete("/api/activities/home")
    assert response.status_code == 405
    assert set(response.headers["Allow"].replace(" ", "").split(",")) >= {"GET", "HEAD", "OPTIONS"}
    assert response.get_json() == ["method_not_allowed"]


def test_no_cors_headers_by_default(client):
    response = client.get("/api/activities/home", headers={"Origin": "https://frontend.example"})
    assert "Access-Control-Allow-Origin" not in response.headers


@pytest.fixture(scope="module")
def cors_client(database, issuer):
    app = create_app({
        **issuer.config(),
        "CONNECTION_URL": f"postgresql://{PG['user']}:{PG['password']}@{PG['host']}:{PG['port']}/{database}",
        "FRONTEND_URL": "https://frontend.example, http://localhost:3000/",
    })
    yield app.test_client()
    app.extensions["cruddur_db"].close()


def test_cors_allows_the_frontend_origin_only(cors_client):
    allowed = cors_client.get("/api/activities/home?limit=1", headers={"Origin": "http://localhost:3000"})
    assert allowed.status_code == 200
    assert allowed.headers["Access-Control-Allow-Origin"] == "http://localhost:3000"
    assert "X-Next-Cursor" in allowed.headers["Access-Control-Expose-Headers"]
    assert "Origin" in allowed.headers["Vary"]
    other = cors_client.get("/api/activities/home?limit=1", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in other.headers


def test_cors_preflight_for_creating_an_activity(cors_client, database):
    before = count_activities(database)
    response = cors_client.options("/api/activities", headers={
        "Origin": "https://frontend.example", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type"})
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == "https://frontend.example"
    assert "POST" in response.headers["Access-Control-Allow-Methods"]
    assert response.headers["Access-Control-Allow-Headers"] == "Authorization, Content-Type"
    assert count_activities(database) == before


def test_only_otel_settings_are_accepted_in_the_otel_environment(database):
    with pytest.raises(RuntimeError, match="LD_PRELOAD"):
        create_app({"CONNECTION_URL": "postgresql://unused@127.0.0.1/none",
                    "OTEL_ENVIRONMENT": {"LD_PRELOAD": "/tmp/x.so"}})


ANY_TEXT = st.text(st.characters(exclude_categories=()), max_size=60)
JSON_VALUE = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), ANY_TEXT,
                       st.lists(ANY_TEXT, max_size=3), st.sampled_from(sorted(TTL_OFFSETS)),
                       st.sampled_from(["bayko", "andrewbrown"]))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.one_of(st.binary(max_size=300), ANY_TEXT.map(lambda t: t.encode("utf-8", "surrogatepass"))))
def test_property_any_bytes_as_a_body_is_never_a_5xx(client, body):
    response = client.post("/api/activities", data=body, content_type="application/json",
                           headers=client.issuer.bearer("sub-bayko"))
    assert response.status_code < 500
    assert isinstance(response.get_json(), list) or response.status_code == 200


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fields=st.dictionaries(st.sampled_from(["message", "ttl", "handle", "other"]), JSON_VALUE))
def test_property_any_json_object_is_a_200_or_a_4xx(client, fields):
    response = client.post("/api/activities", data=json.dumps(fields), content_type="application/json",
                           headers=client.issuer.bearer("sub-bayko"))
    assert response.status_code in (200, 400, 413, 422), response.get_data(as_text=True)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cursor=st.one_of(ANY_TEXT, ANY_TEXT.map(lambda t: raw_cursor(t.encode("utf-8", "surrogatepass")
                                                                       .decode("utf-8", "replace"))),
                        st.builds(lambda d, u: raw_cursor(f"{d.isoformat()}|{u}"),
                                  st.datetimes(timezones=st.timezones()), st.uuids())),
       limit=st.one_of(st.none(), ANY_TEXT, st.integers().map(str)))
def test_property_no_cursor_or_limit_is_a_5xx(client, cursor, limit):
    query = {"cursor": cursor} if limit is None else {"cursor": cursor, "limit": limit}
    # Percent-encoded as a client would send it; a lone surrogate becomes bytes that are not UTF-8.
    raw = urllib.parse.urlencode(query, encoding="utf-8", errors="surrogatepass")
    response = client.get(f"/api/activities/home?{raw}")
    assert response.status_code in (200, 400), response.get_data(as_text=True)
