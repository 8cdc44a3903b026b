"""The offline AWS sandbox: moto in server mode on loopback, configured so that Lambda and
Batch never use Docker (nothing is ever pulled), with a Cognito user pool to wire the trigger to.

    bin/sandbox start      start moto (if not running) and create the sandbox user pool
    bin/sandbox stop       stop it
    bin/sandbox run ARGS   start, then ansible-playbook -i inventories/sandbox ARGS
                           (default: playbooks/aws-site.yml)
    bin/sandbox rehearse   the whole system offline, on an emulator of its own, then torn down:
                           a user signs up and their activity reaches the feed (bin/rehearsal.py)
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
STATE = REPO / ".cache" / "sandbox"
HOST = "127.0.0.1"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
               "AWS_DEFAULT_REGION": "us-east-1"}
POOL_NAME = "cruddur-sandbox"
# What the original setup's users keep exported (gp env): the connection URLs of their psql
# scripts and the AWS account they work in. The emulator's world never follows them.
USER_SETTINGS = ("CONNECTION_URL", "PROD_CONNECTION_URL", "AWS_PROFILE", "AWS_DEFAULT_PROFILE",
                 "AWS_SESSION_TOKEN", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def start_moto(port: int, log_path: Path | None = None) -> subprocess.Popen:
    """Start moto's server on HOST:port (bin/moto_server.py: the managed policies the project
    attaches, not all of AWS's) and configure it for offline use before anything exists."""
    env = {**os.environ, **CREDENTIALS, "DOCKER_HOST": "unix:///nonexistent/docker.sock",
           "MOTO_IAM_LOAD_MANAGED_POLICIES": "true",
           # the EC2 backend of each region would load moto's AMI catalogue: nothing here runs instances
           "MOTO_EC2_LOAD_DEFAULT_AMIS": "false"}
    output = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115 (lives with moto)
    proc = subprocess.Popen([sys.executable, str(REPO / "bin" / "moto_server.py"), "-H", HOST, "-p", str(port)],
                            env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
    endpoint = f"http://{HOST}:{port}"
    body = json.dumps({"lambda": {"use_docker": False}, "batch": {"use_docker": False}}).encode()
    deadline = time.monotonic() + 30
    while True:
        try:
            request = urllib.request.Request(f"{endpoint}/moto-api/config", data=body, method="POST",
                                             headers={"Content-Type": "application/json"})
            urllib.request.urlopen(request, timeout=2).read()
            return proc
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise RuntimeError(f"moto_server did not start on {endpoint}") from None
            time.sleep(0.2)


def ensure_user_pool(endpoint: str) -> str:
    import boto3

    client = boto3.client("cognito-idp", endpoint_url=endpoint, region_name=CREDENTIALS["AWS_DEFAULT_REGION"],
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    for pool in client.list_user_pools(MaxResults=60)["UserPools"]:
        if pool["Name"] == POOL_NAME:
            return pool["Id"]
    return client.create_user_pool(
        PoolName=POOL_NAME,
        Policies={"PasswordPolicy": {"MinimumLength": 12, "RequireSymbols": True}},
        AutoVerifiedAttributes=["email"],
        EmailVerificationSubject="Your Cruddur verification code",
        UserPoolTags={"app": "cruddur"},
    )["UserPool"]["Id"]


def running_endpoint() -> str | None:
    try:
        pid = int((STATE / "moto.pid").read_text())
        port = int((STATE / "moto.port").read_text())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return f"http://{HOST}:{port}"


def openssl(*args) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def ensure_tls() -> Path:
    """The sandbox's own CA and a server certificate it signed for 127.0.0.1 and localhost (made
    once, kept under .cache/sandbox/tls): the sandbox's connections verify against it, as prod's
    verify against the RDS bundle. Returns the CA's path."""
    tls = STATE / "tls"
    ca = tls / "ca.crt"
    if ca.exists():
        return ca
    tls.mkdir(parents=True, exist_ok=True)
    tls.chmod(0o700)
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(tls / "ca.key"),
            "-out", str(ca) + ".partial", "-days", "3650", "-subj", "/CN=cruddur sandbox CA")
    sign_server_certificate(tls, ["IP:127.0.0.1", "DNS:localhost"], ca=Path(str(ca) + ".partial"), days=3650)
    os.replace(str(ca) + ".partial", ca)
    return ca


def sign_server_certificate(directory: Path, names: list[str], ca: Path | None = None, days: int = 2) -> None:
    """server.key and server.crt in `directory`, for `names` ("DNS:..." / "IP:..."), signed by the
    sandbox CA (or `ca`, its key beside it as ca.key)."""
    ca = ca or ensure_tls()
    ca_key = ca.parent / "ca.key"
    directory.mkdir(parents=True, exist_ok=True)
    common_name = names[0].split(":", 1)[1]
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(directory / "server.key"),
            "-out", str(directory / "server.csr"), "-subj", f"/CN={common_name}")
    (directory / "server.ext").write_text(f"subjectAltName={','.join(names)}\n")
    openssl("x509", "-req", "-in", str(directory / "server.csr"), "-CA", str(ca), "-CAkey", str(ca_key),
            "-CAcreateserial", "-out", str(directory / "server.crt"), "-days", str(days),
            "-extfile", str(directory / "server.ext"))


def start() -> dict:
    ensure_tls()
    endpoint = running_endpoint()
    if endpoint is None:
        STATE.mkdir(parents=True, exist_ok=True)
        port = int(os.environ.get("CRUDDUR_SANDBOX_PORT") or free_port())
        proc = start_moto(port, STATE / "moto.log")
        (STATE / "moto.pid").write_text(str(proc.pid))
        (STATE / "moto.port").write_text(str(port))
        endpoint = f"http://{HOST}:{port}"
    pool = ensure_user_pool(endpoint)
    (STATE / "user_pool_id").write_text(pool)
    return {**CREDENTIALS, "CRUDDUR_SANDBOX_ENDPOINT": endpoint, "CRUDDUR_SANDBOX_USER_POOL_ID": pool}


def stop() -> None:
    try:
        pid = int((STATE / "moto.pid").read_text())
        os.killpg(pid, signal.SIGTERM)
    except (OSError, ValueError):
        pass
    for name in ("moto.pid", "moto.port", "user_pool_id"):
        (STATE / name).unlink(missing_ok=True)


def main(argv: list[str]) -> int:
    # Neither this process (its boto3 clients) nor anything it starts follows the user's settings.
    for name in USER_SETTINGS:
        os.environ.pop(name, None)
    command = argv[0] if argv else "run"
    if command == "stop":
        stop()
        return 0
    if command == "rehearse":
        import rehearsal

        return rehearsal.main(argv[1:])
    env = start()
    if command == "start":
        for key in ("CRUDDUR_SANDBOX_ENDPOINT", "CRUDDUR_SANDBOX_USER_POOL_ID"):
            print(f"export {key}={env[key]}")
        return 0
    if command != "run":
        print(__doc__, file=sys.stderr)
        return 2
    args = argv[1:] or ["playbooks/aws-site.yml"]
    venv_bin = Path(sys.executable).parent
    full_env = {**os.environ, **env, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
                "PATH": f"{venv_bin}:{os.environ.get('PATH', '')}"}
    return subprocess.call([str(venv_bin / "ansible-playbook"), "-i", "inventories/sandbox", *args],
                           cwd=REPO, env=full_env)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
