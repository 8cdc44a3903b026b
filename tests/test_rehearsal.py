"""bin/sandbox rehearse, run as a user runs it: the whole system offline (moto of its own, the
emulated RDS endpoint backed by a local cluster, the deployed handler, the API), then torn down."""

import re
import socket
import subprocess

import pytest

from conftest import REPO

# One rehearsal at a time runs on a machine (it holds a lock): both tests share a worker.
pytestmark = pytest.mark.xdist_group("rehearsal")


def rehearse(**env):
    import os

    return subprocess.run(["bin/sandbox", "rehearse"], cwd=REPO, capture_output=True, text=True, timeout=900,
                          env={**os.environ, **env}, check=False)


def ports_in(output: str) -> list[int]:
    """Every loopback port the rehearsal said it used: the emulator, "RDS", the API."""
    return sorted({int(port) for port in re.findall(r"127\.0\.0\.1:(\d+)", output)})


def listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def clusters() -> str:
    return subprocess.run(["pg_lsclusters", "--no-header"], capture_output=True, text=True, check=True).stdout


# What the original setup's users keep exported (gp env): their psql scripts' URLs, pointing
# elsewhere, and an AWS profile. The rehearsal must not follow any of them.
USER_ENVIRONMENT = {"CONNECTION_URL": "postgresql://postgres:wrong@127.0.0.1:1/elsewhere",
                    "PROD_CONNECTION_URL": "postgresql://root:wrong@127.0.0.1:2/cruddur",
                    "AWS_PROFILE": "cruddur-no-such-profile"}


def test_a_user_who_signs_up_and_signs_in_posts_and_replies_with_their_token():
    run = rehearse(**USER_ENVIRONMENT)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    out = run.stdout
    # Each step is printed with its time.
    assert len(re.findall(r"^\[\d+\] done in \d+\.\d s$", out, re.MULTILINE)) == 10, out
    assert re.search(r"RDS endpoint cruddur-db-instance\.\S+\.rds\.amazonaws\.com:(\d+), PostgreSQL 15", out)
    signed_up = re.search(r"^    (rehearsal\w+) signed up and confirmed \(status CONFIRMED\), sub ([0-9a-f-]{36})$",
                          out, re.MULTILINE)
    assert signed_up, out
    handle, sub = signed_up.groups()
    # The deployed handler wrote the row from the event built from the user's attributes.
    assert re.search(rf"^    users row: [0-9a-f-]{{36}} \| {handle} \| Rehearsal \w+ \| {handle}@example\.com \| {sub}$",
                     out, re.MULTILINE), out
    assert "of the deployed package (sha256 " in out
    # Signed in, the user's access token alone (no handle in the bodies) posts an activity and a
    # reply, which the API attributes to them; the seed adds no mock user outside the local
    # environment, so the activity is the feed's only one, with its reply.
    assert re.search(r"^    InitiateAuth -> access token \(\d+ characters", out, re.MULTILINE), out
    assert "POST /api/activities (Bearer) -> 200" in out and "/reply (Bearer) -> 200, reply" in out
    assert f'GET /api/activities/home: 1 activity; {handle}: "Rehearsed end to end by {handle}"' in out
    assert f'  reply by {handle}: "And replied to, signed in."' in out
    # db-doctor walked every link of the rehearsed system, database included, all green.
    doctor = re.search(r"^    (\d+) links OK, 0 skipped$", out, re.MULTILINE)
    assert doctor and int(doctor.group(1)) >= 17, out
    # Torn down: nothing listens on the ports it used, the cluster and its run directory are gone.
    assert "rehearse: OK, 10 steps" in out and "nothing left running" in out
    assert len(ports_in(out)) == 3
    assert [port for port in ports_in(out) if listening(port)] == []
    assert "cruddur_rehearsal" not in clusters()
    assert not (REPO / ".cache" / "rehearsal" / "run").exists()
    # No connection URL with a password in what it printed.
    assert not re.search(r"postgresql://[^@\s/]*:[^@\s/]*@", out + run.stderr)


def test_a_failed_step_names_the_problem_and_still_tears_down():
    run = rehearse(CRUDDUR_DEV_IP="not-an-address")
    assert run.returncode == 1
    assert "rehearse: FAILED at step 2: aws-site.yml failed" in run.stderr
    assert "not-an-address" in run.stderr
    assert "[teardown] done" in run.stdout
    emulator = re.search(r"moto on http://127\.0\.0\.1:(\d+)", run.stdout)
    assert emulator and not listening(int(emulator.group(1)))
    assert "cruddur_rehearsal" not in clusters()
    assert not (REPO / ".cache" / "rehearsal" / "run").exists()
