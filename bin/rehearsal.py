"""The offline rehearsal of the whole system (bin/sandbox rehearse): what the sandbox cannot show
alone, since moto's RDS has no database behind it.

1. an emulator of its own (moto on a free loopback port) with the sandbox user pool;
2. playbooks/aws-site.yml on the sandbox inventory: RDS, the developer rule, the Lambda, the trigger;
3. the emulated RDS endpoint backed by a real PostgreSQL cluster of the instance's major version
   on another loopback port: TLS with a certificate for the endpoint's name from the sandbox CA,
   password logins over TLS only (as rds.force_ssl), the master user RDS would have made;
4. db-create, db-migrate and db-seed on that "RDS" (-i inventories/sandbox -i inventories/rehearsal);
5. the API (gunicorn, the project's code) on a free loopback port, as the cruddur_api role;
6. a user signs up in the emulated Cognito pool and is confirmed;
7. the PostConfirmation event, built from that user's attributes, is delivered to the deployed
   handler: the package whose sha256 the emulated function reports, its environment, its handler;
8. the user signs in (InitiateAuth) and gets the pool's access token;
9. with that token, an activity and a reply to it are posted through the API, which checks the
   token against the pool's JWKS; the feed shows both under the user's handle;
10. db-doctor on it all: every database and AWS link green.
Everything is torn down at the end (also after a failure): the API, the cluster, the emulator.

Nothing leaves the machine: the endpoint's name is never looked up. libpq's PGHOSTADDR gives its
address (127.0.0.1) to every client, which still verifies the certificate against the name.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zipfile
from contextlib import ExitStack
from pathlib import Path

import sandbox
# The project's one URL renderer (the cruddur.ops.cruddur_pg_url filter).
from ansible_collections.cruddur.ops.plugins.filter.cruddur_db import cruddur_pg_url as pg_url

REPO = sandbox.REPO
STATE = REPO / ".cache" / "rehearsal"
CLUSTER = "cruddur_rehearsal"
HOST = sandbox.HOST
REGION = sandbox.CREDENTIALS["AWS_DEFAULT_REGION"]
# The handler runs here with this machine's Python: the package's own psycopg2 build is for the
# Lambda runtime, so the rehearsal leaves it out and uses the project's (the same driver).
DRIVER_DIRS = ("psycopg2", "psycopg2_binary")


class RehearsalFailed(RuntimeError):
    pass


def client(service: str, endpoint: str):
    import boto3

    return boto3.client(service, endpoint_url=endpoint, region_name=REGION,
                        aws_access_key_id="testing", aws_secret_access_key="testing")


class Steps:
    """Prints each step as it ends, with its time; a failed step ends the rehearsal."""

    def __init__(self):
        self.number = 0
        self.started = time.monotonic()

    def run(self, title: str, action) -> None:
        """Run `action`, which returns the lines that tell what it did."""
        self.number += 1
        print(f"[{self.number}] {title} ...", flush=True)
        began = time.monotonic()
        detail = action()
        print(f"[{self.number}] done in {time.monotonic() - began:.1f} s", flush=True)
        for line in detail:
            print(f"    {line}", flush=True)

    def total(self) -> float:
        return time.monotonic() - self.started


def run_quiet(argv: list[str], what: str, **kwargs) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, **kwargs)
    if proc.returncode != 0:
        raise RehearsalFailed(f"{what} failed (exit {proc.returncode}):\n{(proc.stdout + proc.stderr)[-4000:]}")
    return proc.stdout


class Rehearsal:
    def __init__(self, stack: ExitStack):
        self.stack = stack
        self.run_dir = STATE / "run"
        self.venv_bin = Path(sys.executable).parent
        self.db_port = sandbox.free_port()
        self.api_port = sandbox.free_port()
        self.endpoint = ""
        self.pool_id = ""
        self.address = ""
        self.version = ""

    # -- the pieces --------------------------------------------------------------------------

    def env(self) -> dict:
        """What every client gets: the emulator, and the endpoint's address without a lookup."""
        return {**os.environ, **sandbox.CREDENTIALS, "AWS_ENDPOINT_URL": self.endpoint,
                "CRUDDUR_SANDBOX_ENDPOINT": self.endpoint, "CRUDDUR_SANDBOX_USER_POOL_ID": self.pool_id,
                "CRUDDUR_SANDBOX_DB_HOST": self.address, "CRUDDUR_SANDBOX_DB_PORT": str(self.db_port),
                "CRUDDUR_SANDBOX_CA_BUNDLE": str(sandbox.ensure_tls()),
                "PGHOSTADDR": HOST, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
                "PATH": f"{self.venv_bin}:{os.environ.get('PATH', '')}"}

    def playbook(self, name: str, *inventories: str, output: bool = False) -> str:
        argv = [str(self.venv_bin / "ansible-playbook")]
        for inventory in inventories:
            argv += ["-i", inventory]
        argv += [f"playbooks/{name}", "-e", json.dumps({
            "cruddur_lambda_build_dir": str(STATE / "build"),
            "cruddur_db_env_file": str(self.run_dir / "sandbox.env"),
            "cruddur_db_backup_dir": str(self.run_dir / "backups")})]
        text = run_quiet(argv, name, cwd=REPO, env=self.env())
        if output:
            return text
        recap = [line for line in text.splitlines() if " : ok=" in line]
        return "; ".join(" ".join(line.split()) for line in recap)

    def start_emulator(self):
        proc = sandbox.start_moto(sandbox.free_port(), self.run_dir / "moto.log")
        self.stack.callback(stop_group, proc, "the emulator")
        self.endpoint = f"http://{HOST}:{proc.args[-1]}"
        self.pool_id = sandbox.ensure_user_pool(self.endpoint)
        # The frontend's app client: the API accepts the access tokens issued for it.
        app = client("cognito-idp", self.endpoint).create_user_pool_client(
            UserPoolId=self.pool_id, ClientName="cruddur-rehearsal",
            ExplicitAuthFlows=["ALLOW_USER_PASSWORD_AUTH", "ALLOW_REFRESH_TOKEN_AUTH"])
        self.client_id = app["UserPoolClient"]["ClientId"]
        return [f"moto on {self.endpoint}, user pool {self.pool_id}, app client {self.client_id}"]

    def aws_site(self):
        recap = self.playbook("aws-site.yml", "inventories/sandbox")
        instance = client("rds", self.endpoint).describe_db_instances()["DBInstances"][0]
        self.address = instance["Endpoint"]["Address"]
        self.version = instance["EngineVersion"].split(".")[0]
        self.instance = instance
        return [recap, f"RDS endpoint {self.address}:{instance['Endpoint']['Port']},"
                             f" PostgreSQL {instance['EngineVersion']}"]

    def back_the_endpoint(self):
        """The cluster behind the endpoint: the instance's major version, its port, TLS with a
        certificate for the endpoint's name, and the master user with the password RDS was given."""
        if not Path(f"/usr/lib/postgresql/{self.version}/bin/postgres").exists():
            raise RehearsalFailed(f"the emulated instance runs PostgreSQL {self.version}, which is not installed "
                                  f"here: bin/up installs the local server (its major is the RDS default)")
        if os.geteuid() != 0:
            raise RehearsalFailed("backing the endpoint needs pg_createcluster, which runs as root")
        drop_cluster(self.version)  # one a killed rehearsal left behind
        tls = self.run_dir / "tls"
        sandbox.sign_server_certificate(tls, [f"DNS:{self.address}", f"IP:{HOST}"])
        run_quiet(["pg_createcluster", self.version, CLUSTER, "-p", str(self.db_port)], "pg_createcluster")
        self.stack.callback(drop_cluster, self.version)
        confdir = Path(f"/etc/postgresql/{self.version}/{CLUSTER}")
        for name in ("server.crt", "server.key"):
            shutil.copyfile(tls / name, confdir / name)
            shutil.chown(confdir / name, "postgres", "postgres")
            (confdir / name).chmod(0o600)
        (confdir / "conf.d" / "rehearsal.conf").write_text(
            f"listen_addresses = '{HOST}'\nssl = on\nssl_cert_file = '{confdir}/server.crt'\n"
            f"ssl_key_file = '{confdir}/server.key'\n")
        # As rds.force_ssl: password logins over TLS only; the superuser only over the socket.
        (confdir / "pg_hba.conf").write_text(
            "local all postgres peer\n"
            f"hostssl all all {HOST}/32 scram-sha-256\n")
        run_quiet(["pg_ctlcluster", self.version, CLUSTER, "start"], "starting the cluster")
        master = self.instance["MasterUsername"]
        password = client("ssm", self.endpoint).get_parameter(
            Name="/cruddur/rds/master-password", WithDecryption=True)["Parameter"]["Value"]
        literal = "'" + password.replace("'", "''") + "'"
        superuser_sql(self.db_port, f'CREATE ROLE "{master}" LOGIN CREATEDB CREATEROLE PASSWORD {literal};')
        return [f"PostgreSQL {self.version} cluster {CLUSTER} on {HOST}:{self.db_port}, certificate for "
                      f"{self.address} from the sandbox CA, master user {master}"]

    def database(self):
        recaps = [self.playbook(name, "inventories/sandbox", "inventories/rehearsal")
                  for name in ("db-create.yml", "db-migrate.yml", "db-seed.yml")]
        migrations = superuser_sql(self.db_port, "SELECT count(*) FROM cruddur_schema_migrations", "cruddur")
        return [*recaps, f"{migrations} migrations applied on \"RDS\""]

    def api(self):
        """gunicorn serving the project's API against "RDS", as the cruddur_api role: the api role's
        login (its password from SSM, in the process environment only), TLS verified."""
        password = client("ssm", self.endpoint).get_parameter(
            Name="/cruddur/db/cruddur_api", WithDecryption=True)["Parameter"]["Value"]
        ca = sandbox.ensure_tls()
        config = self.run_dir / "api.json"
        config.write_text(json.dumps({
            # No password in it: gunicorn gets it in its environment (PGPASSWORD) only.
            "CONNECTION_URL": pg_url({"host": self.address, "port": self.db_port, "name": "cruddur",
                                      "sslmode": "verify-full", "sslrootcert": str(ca)}, "cruddur_api", ""),
            "DB_POOL_MIN_SIZE": 1, "DB_POOL_MAX_SIZE": 4,
            # The pool's tokens, as the sandbox inventory wires them: its issuer, its JWKS as the
            # emulator serves it, the frontend's app client.
            "AUTH_ISSUER": f"https://cognito-idp.{REGION}.amazonaws.com/{self.pool_id}",
            "AUTH_JWKS": f"{self.endpoint}/{self.pool_id}/.well-known/jwks.json",
            "AUTH_CLIENT_IDS": [self.client_id]}))
        log = open(self.run_dir / "api.log", "ab")  # noqa: SIM115 (lives with gunicorn)
        self.stack.callback(log.close)
        proc = subprocess.Popen(
            [str(self.venv_bin / "gunicorn"), "--bind", f"{HOST}:{self.api_port}", "--workers", "2",
             "--worker-class", "gthread", "--threads", "4", "cruddur_api.wsgi:app"],
            cwd=REPO / "files" / "api", env={**self.env(), "CRUDDUR_API_CONFIG": str(config),
                                             "PGPASSWORD": password, "PYTHONDONTWRITEBYTECODE": "1"},
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.stack.callback(stop_group, proc, "the API")
        deadline = time.monotonic() + 30
        while True:
            try:
                health = json.loads(self.http("GET", "/api/health"))
                break
            except (OSError, ValueError) as exc:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RehearsalFailed(f"the API did not become healthy ({exc}); see {self.run_dir}/api.log") \
                        from None
                time.sleep(0.2)
        return [f"gunicorn on http://{HOST}:{self.api_port}, health: {health['status']}"]

    def http(self, method: str, path: str, body: dict | None = None, token: str | None = None) -> str:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        request = urllib.request.Request(
            f"http://{HOST}:{self.api_port}{path}", method=method,
            data=json.dumps(body).encode() if body is not None else None, headers=headers)
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.read().decode()

    def sign_up(self):
        cognito = client("cognito-idp", self.endpoint)
        suffix = base64.b32encode(os.urandom(5)).decode().lower()
        self.handle = f"rehearsal{suffix}"
        self.password = f"Rehearse-{suffix}-2026!"
        cognito.sign_up(ClientId=self.client_id, Username=self.handle, Password=self.password,
                        UserAttributes=[{"Name": "email", "Value": f"{self.handle}@example.com"},
                                        {"Name": "name", "Value": f"Rehearsal {suffix.upper()}"},
                                        {"Name": "preferred_username", "Value": self.handle}])
        cognito.admin_confirm_sign_up(UserPoolId=self.pool_id, Username=self.handle)
        user = cognito.admin_get_user(UserPoolId=self.pool_id, Username=self.handle)
        self.attributes = {item["Name"]: item["Value"] for item in user["UserAttributes"]}
        return [f"{self.handle} signed up and confirmed (status {user['UserStatus']}), "
                      f"sub {self.attributes['sub']}"]

    def deliver(self):
        """The PostConfirmation event Cognito sends for that user, handed to the handler that the
        pool's trigger names, from the package the emulated function reports by its sha256."""
        cognito, functions = client("cognito-idp", self.endpoint), client("lambda", self.endpoint)
        pool = cognito.describe_user_pool(UserPoolId=self.pool_id)["UserPool"]
        arn = pool.get("LambdaConfig", {}).get("PostConfirmation")
        if not arn:
            raise RehearsalFailed("the pool's PostConfirmation trigger is not wired")
        function = functions.get_function_configuration(FunctionName=arn)
        package = STATE / "build" / "cruddur-post-confirmation.zip"
        digest = base64.b64encode(hashlib.sha256(package.read_bytes()).digest()).decode()
        if digest != function["CodeSha256"]:
            raise RehearsalFailed(f"{package} is not the deployed code ({digest} != {function['CodeSha256']})")
        task = self.run_dir / "task"
        with zipfile.ZipFile(package) as archive:
            for member in archive.namelist():
                if member.split("/")[0].split("-")[0] not in DRIVER_DIRS:
                    archive.extract(member, task)
        module, handler = function["Handler"].rsplit(".", 1)
        event = {
            "version": "1", "region": REGION, "userPoolId": self.pool_id, "userName": self.handle,
            "callerContext": {"awsSdkVersion": "aws-sdk-unknown-unknown", "clientId": self.client_id},
            "triggerSource": "PostConfirmation_ConfirmSignUp",
            "request": {"userAttributes": {**self.attributes, "cognito:user_status": "CONFIRMED"}},
            "response": {},
        }
        variables = function.get("Environment", {}).get("Variables", {})
        # The package is at /var/task on Lambda; here at the extracted copy.
        variables = {key: value.replace("/var/task/", f"{task}/") for key, value in variables.items()}
        runner = ("import importlib, json, sys\n"
                  f"sys.path.insert(0, {str(task)!r})\n"
                  f"handler = getattr(importlib.import_module({module!r}), {handler!r})\n"
                  "print(json.dumps(handler(json.load(sys.stdin), None)))\n")
        env = {**self.env(), **variables, "LAMBDA_TASK_ROOT": str(task), "AWS_LAMBDA_FUNCTION_NAME":
               function["FunctionName"], "PYTHONDONTWRITEBYTECODE": "1"}
        proc = subprocess.run([sys.executable, "-c", runner], input=json.dumps(event), capture_output=True,
                              text=True, env=env, check=False, timeout=30)
        if proc.returncode != 0:
            raise RehearsalFailed(f"the handler failed:\n{proc.stderr[-3000:]}")
        returned = json.loads(proc.stdout.strip().splitlines()[-1])
        if returned != event:
            raise RehearsalFailed("the handler did not return the event unchanged, as Cognito expects")
        row = superuser_sql(self.db_port, "SELECT concat_ws(' | ', uuid, handle, display_name, email, "
                            f"cognito_user_id) FROM users WHERE cognito_user_id = '{self.attributes['sub']}'",
                            "cruddur")
        if not row:
            raise RehearsalFailed("the handler returned, but the user is not in the users table")
        return [f"trigger {arn} -> {function['Handler']} of the deployed package (sha256 {digest})",
                      f"users row: {row}"]

    def sign_in(self):
        """As the frontend's Amplify does: InitiateAuth with the user's password, for its access token."""
        result = client("cognito-idp", self.endpoint).initiate_auth(
            ClientId=self.client_id, AuthFlow="USER_PASSWORD_AUTH",
            AuthParameters={"USERNAME": self.handle, "PASSWORD": self.password})["AuthenticationResult"]
        self.token = result["AccessToken"]
        return [f"InitiateAuth -> access token ({len(self.token)} characters, expires in {result['ExpiresIn']} s)"]

    def post_and_read(self):
        """An activity and a reply, each with the access token alone: no handle in either body."""
        message = f"Rehearsed end to end by {self.handle}"
        created = json.loads(self.http("POST", "/api/activities", {"message": message, "ttl": "1-day"}, self.token))
        reply = json.loads(self.http("POST", f"/api/activities/{created['uuid']}/reply",
                                     {"message": "And replied to, signed in."}, self.token))
        feed = json.loads(self.http("GET", "/api/activities/home"))
        mine = [item for item in feed if item.get("uuid") == created["uuid"]]
        if not mine:
            raise RehearsalFailed(f"activity {created['uuid']} is not in the feed")
        shown = mine[0]
        if shown["handle"] != self.handle or [r["uuid"] for r in shown["replies"]] != [reply["uuid"]] \
                or shown["replies"][0]["handle"] != self.handle:
            raise RehearsalFailed(f"the feed does not show the post and its reply under {self.handle}: {shown}")
        return [f"POST /api/activities (Bearer) -> 200, activity {created['uuid']}",
                f"POST /api/activities/{created['uuid']}/reply (Bearer) -> 200, reply {reply['uuid']}",
                f"GET /api/activities/home: {len(feed)} activit{'y' if len(feed) == 1 else 'ies'}; "
                f"{shown['handle']}: \"{shown['message']}\" (expires {shown['expires_at']}), "
                f"{shown['replies_count']} reply",
                f"  reply by {shown['replies'][0]['handle']}: \"{shown['replies'][0]['message']}\""]


    def doctor(self):
        """db-doctor on the rehearsed system: every database and AWS link, with a database behind."""
        text = self.playbook("db-doctor.yml", "inventories/sandbox", "inventories/rehearsal", output=True)
        links = re.findall(r"^ *(OK|FAIL|SKIP)  +(roles \S+|\S+) +(.*)$", text, re.MULTILINE)
        verdicts = [verdict for verdict, _, _ in links]
        if not links or "FAIL" in verdicts:
            raise RehearsalFailed(f"db-doctor is not green:\n{text[-3000:]}")
        return [f"{verdicts.count('OK')} links OK, {verdicts.count('SKIP')} skipped"] + \
            [f"{verdict} {name}: {why}" for verdict, name, why in links if verdict == "SKIP"]


# -- helpers -----------------------------------------------------------------------------------

def superuser_sql(port: int, sql: str, database: str = "postgres") -> str:
    """SQL as the cluster's superuser over its socket (peer); the statement goes on stdin."""
    proc = subprocess.run(["runuser", "-u", "postgres", "--", "psql", "-p", str(port), "-d", database,
                           "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1"],
                          input=sql, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RehearsalFailed(f"psql on the rehearsal cluster failed: {proc.stderr.strip()}")
    return proc.stdout.strip()


def drop_cluster(version: str) -> None:
    if Path(f"/etc/postgresql/{version}/{CLUSTER}").exists():
        subprocess.run(["pg_dropcluster", "--stop", version, CLUSTER], capture_output=True, check=False)


def stop_group(proc: subprocess.Popen, what: str) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        except ProcessLookupError:
            pass


def main(argv: list[str]) -> int:
    if argv:
        print("usage: bin/sandbox rehearse", file=sys.stderr)
        return 2
    # Stopped (Ctrl-C or SIGTERM) midway, it still tears down what it started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    STATE.mkdir(parents=True, exist_ok=True)
    lock = open(STATE / "lock", "w")  # noqa: SIM115 (held for the run)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print("rehearse: another rehearsal is running on this machine", file=sys.stderr)
        return 1
    run_dir = STATE / "run"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(mode=0o700)
    steps = Steps()
    failed = None
    with ExitStack() as stack:
        stack.callback(shutil.rmtree, run_dir, True)
        rehearsal = Rehearsal(stack)
        try:
            steps.run("Start an emulator of its own", rehearsal.start_emulator)
            steps.run("aws-site.yml on the sandbox inventory", rehearsal.aws_site)
            steps.run("Back the RDS endpoint with a local PostgreSQL", rehearsal.back_the_endpoint)
            steps.run("db-create, db-migrate, db-seed on \"RDS\"", rehearsal.database)
            steps.run("Start the API against \"RDS\"", rehearsal.api)
            steps.run("Sign a user up in the Cognito pool", rehearsal.sign_up)
            steps.run("Deliver PostConfirmation to the deployed handler", rehearsal.deliver)
            steps.run("Sign in to the pool", rehearsal.sign_in)
            steps.run("Post an activity and a reply with the access token, read the feed",
                      rehearsal.post_and_read)
            steps.run("db-doctor on the rehearsed system", rehearsal.doctor)
        except (RehearsalFailed, subprocess.SubprocessError, OSError, urllib.error.URLError) as exc:
            failed = exc
        began = time.monotonic()
        print("[teardown] the API, the cluster, the emulator ...", flush=True)
    print(f"[teardown] done in {time.monotonic() - began:.1f} s", flush=True)
    if failed is not None:
        print(f"rehearse: FAILED at step {steps.number}: {failed}", file=sys.stderr)
        return 1
    print(f"rehearse: OK, {steps.number} steps in {steps.total():.1f} s; nothing left running")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
