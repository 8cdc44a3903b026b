"""The database connection has one owner: each inventory defines it once. Moving the port and
renaming the database in that one place, then converging, moves everything that connects."""

import json
import shutil
import subprocess
import urllib.request

import pytest

from conftest import REPO, connect, free_port, query, run_playbook

pytestmark = [pytest.mark.usefixtures("converged"), pytest.mark.serial]


def test_one_edit_moves_the_port_and_renames_the_database(tmp_path):
    inventory = tmp_path / "local"
    shutil.copytree(REPO / "inventories" / "local", inventory)
    definition = inventory / "group_vars" / "all" / "main.yml"
    text = definition.read_text()
    port, name = free_port(), "cruddur_moved"
    # The one place: the two lines of cruddur_db_connection.
    assert text.count("  port: 5432\n") == 1 and text.count("  name: cruddur\n") == 1
    definition.write_text(text.replace("  port: 5432\n", f"  port: {port}\n")
                              .replace("  name: cruddur\n", f"  name: {name}\n"))
    try:
        moved = run_playbook("site.yml", "-i", str(inventory))
        assert moved.rc == 0, moved.output[-4000:]
        # The server listens on the new port; the database has the new name and the schema.
        assert query_port(port, name, "SELECT count(*) FROM activities")[0][0] >= 1
        # The API follows: its URL names the new port and database, and it serves from there.
        config = json.loads(subprocess.run(["cat", "/etc/cruddur-api/config.json"], capture_output=True,
                                           text=True, check=True).stdout)
        assert f"@127.0.0.1:{port}/{name}" in config["CONNECTION_URL"]
        feed = json.loads(urllib.request.urlopen("http://127.0.0.1:4567/api/activities/home", timeout=10).read())
        assert "This was imported as seed data!" in [activity["message"] for activity in feed]
        # So does the .env file psql and bin/db-connect read.
        env = (REPO / ".env").read_text()
        assert f"@127.0.0.1:{port}/{name}" in env
    finally:
        restored = run_playbook("site.yml")
        assert restored.rc == 0, restored.output[-4000:]
        admin = connect("postgres")
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()
    assert query("cruddur", "SELECT 1") == [(1,)]
    assert "@127.0.0.1:5432/cruddur" in (REPO / ".env").read_text()


def query_port(port, dbname, sql):
    conn = connect(dbname, port=port)
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            return cur.fetchall()
    finally:
        conn.close()
