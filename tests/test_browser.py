"""The API meets a real browser on another origin: headless Chromium (Debian's, driven by
Playwright) loads tests/browser/frontend.html, which calls the API as the Cruddur frontend does.

The API is the project's code under gunicorn against a real, migrated PostgreSQL database, with
the frontend's origin in FRONTEND_URL and the tests' token issuer. Nothing is routed or stubbed in
the browser: Playwright's request routing would answer CORS preflights itself, so the browser's
own CORS checks decide, and their errors would show in the console.
"""

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import PG, REPO, create_migrated_database, drop_database, query
from issuer import Issuer

import sandbox  # noqa: E402  (bin/ is on pytest's pythonpath)

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]
SEED_MESSAGE = "This was imported as seed data!"


@pytest.fixture(scope="module")
def database(postgresql):
    name = create_migrated_database("cruddur_browser", signed_up=True)
    yield name
    drop_database(name)


def wait_for(url: str, proc: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not start") from None
            time.sleep(0.2)


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def stack(database, tmp_path_factory):
    """The page's server on one origin, the API under gunicorn on another."""
    work = tmp_path_factory.mktemp("browser")
    issuer = Issuer(work)
    page_port, api_port = sandbox.free_port(), sandbox.free_port()
    page_origin = f"http://localhost:{page_port}"
    config = work / "api.json"
    config.write_text(json.dumps({
        "CONNECTION_URL": f"postgresql://{PG['user']}@{PG['host']}:{PG['port']}/{database}",
        "FRONTEND_URL": page_origin, **issuer.config()}))
    env = {key: value for key, value in os.environ.items() if key not in sandbox.USER_SETTINGS}
    api = subprocess.Popen(
        [str(Path(sys.executable).parent / "gunicorn"), "--bind", f"127.0.0.1:{api_port}", "--workers", "2",
         "--worker-class", "gthread", "--threads", "4", "cruddur_api.wsgi:app"],
        cwd=REPO / "files" / "api", env={**env, "CRUDDUR_API_CONFIG": str(config), "PGPASSWORD": PG["password"],
                                         "PYTHONDONTWRITEBYTECODE": "1"},
        stdout=subprocess.DEVNULL, stderr=open(work / "api.log", "wb"))  # noqa: SIM115
    # The page on 127.0.0.1 and 127.0.0.2 (both loopback): localhost is the allowed origin,
    # 127.0.0.2 one the API does not know.
    pages = [subprocess.Popen([sys.executable, "-m", "http.server", "--bind", address, str(page_port),
                               "--directory", str(REPO / "tests" / "browser")],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for address in ("127.0.0.1", "127.0.0.2")]
    try:
        wait_for(f"http://127.0.0.1:{api_port}/api/health", api, "the API")
        for page, address in zip(pages, ("127.0.0.1", "127.0.0.2")):
            wait_for(f"http://{address}:{page_port}/frontend.html", page, "the page's server")
        yield {"issuer": issuer, "page": f"{page_origin}/frontend.html?api=http://127.0.0.1:{api_port}",
               "foreign_page": f"http://127.0.0.2:{page_port}/frontend.html?api=http://127.0.0.1:{api_port}"}
    finally:
        for proc in (api, *pages):
            stop(proc)


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.fail("Debian's chromium is not installed (bin/test installs it: apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def open_page(browser, url):
    context = browser.new_context()
    page = context.new_page()
    console = []
    page.on("console", lambda message: console.append(f"{message.type}: {message.text}"))
    page.on("pageerror", lambda error: console.append(f"pageerror: {error}"))
    page.goto(url)
    return context, page, console


def feed_status(page):
    page.wait_for_function("document.getElementById('status').textContent !== 'loading'", timeout=15000)
    return page.text_content("#status")


def test_the_frontend_reads_posts_and_replies_from_another_origin(browser, stack, database):
    context, page, console = open_page(browser, stack["page"])
    try:
        # Signed out: the feed still renders (the request carries `Bearer null`).
        assert feed_status(page).startswith("feed "), console
        assert SEED_MESSAGE in page.inner_text("#feed")

        # Signed out, a post is refused; the form lists the code it got back, nothing is written.
        before = query(database, "SELECT count(*) FROM activities")
        page.fill("#message", "posted while signed out")
        page.click("#crud")
        page.wait_for_selector("#errors li")
        assert page.inner_text("#errors") == "token_missing"
        assert query(database, "SELECT count(*) FROM activities") == before

        # Signed in (the frontend keeps the access token in localStorage), the feed renders again.
        page.evaluate("token => localStorage.setItem('access_token', token)", stack["issuer"].token("sub-bayko"))
        page.reload()
        assert feed_status(page).startswith("feed "), console

        # A post appears on top of the feed, under the token's user.
        page.fill("#message", "posted from a real browser")
        page.select_option("#ttl", "3-hours")
        page.click("#crud")
        first = page.wait_for_selector("#feed > .activity:first-child .message:text('posted from a real browser')")
        assert first is not None
        top = page.query_selector("#feed > .activity:first-child")
        assert top.query_selector(".handle").inner_text() == "@bayko"
        assert page.inner_text("#errors") == ""
        uuid = top.get_attribute("data-uuid")

        # A reply appears under it; after a reload, the feed serves it with the activity.
        assert page.evaluate("uuid => reply(uuid, 'replied from a real browser')", uuid) is True
        page.wait_for_selector(f".activity[data-uuid='{uuid}'] > .replies .message:text('replied from a real browser')")
        page.reload()
        assert feed_status(page).startswith("feed ")
        served = page.query_selector(f".activity[data-uuid='{uuid}']")
        assert served.query_selector(".counts").inner_text() == "replies 1"
        assert served.query_selector(".replies .handle").inner_text() == "@bayko"
        assert query(database, "SELECT count(*) FROM activities WHERE reply_to_activity_uuid = %s", (uuid,)) == [(1,)]

        # A rule the API enforces comes back as the list the form renders.
        page.fill("#message", " ")
        page.click("#crud")
        page.wait_for_selector("#errors li")
        assert page.inner_text("#errors") == "message_blank"
    finally:
        context.close()
    # The browser reported no CORS error, and nothing else went wrong on the page. (The signed-out
    # post's 401 and the blank message's 422 are logged as failed loads, as in any browser.)
    unexpected = [line for line in console
                  if "CORS" in line or "Access-Control" in line or line.startswith("pageerror")
                  or ("Failed to load resource" in line and " 401 " not in line and " 422 " not in line)]
    assert unexpected == [], console


def test_an_origin_the_api_does_not_know_is_blocked_by_the_browser(browser, stack):
    """The check above is not blind: the same page from an origin FRONTEND_URL does not list gets
    no feed, and the browser says why."""
    context, page, console = open_page(browser, stack["foreign_page"])
    try:
        assert feed_status(page).startswith("failed:")
    finally:
        context.close()
    assert any("CORS" in line or "Access-Control-Allow-Origin" in line for line in console), console
