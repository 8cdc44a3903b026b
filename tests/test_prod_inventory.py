"""The prod inventory itself, run as a user runs it, against moto's server on loopback through
botocore's standard AWS_ENDPOINT_URL (the inventory untouched, no sandbox-only variable), and a
real PostgreSQL standing in for the RDS endpoint where a database is needed (rds_standin)."""

import re
import secrets
import shutil
import subprocess
import urllib.request

import boto3
import pytest

from aws_recorded import Front
from conftest import AWS_ENV, make_tls, run_playbook

PROD = ("-i", "inventories/prod")
ROLES = ("cruddur_owner", "cruddur_api", "cruddur_signup")


@pytest.fixture
def aws_front(moto_endpoint):
    """moto, reset, behind the front that answers what moto gets wrong as AWS does (recorded
    engine versions, the parameter catalogue): the prod inventory takes the same path as on AWS."""
    urllib.request.urlopen(urllib.request.Request(f"{moto_endpoint}/moto-api/reset", method="POST"),
                           timeout=10).read()
    front = Front(moto_endpoint)
    yield front
    front.close()


@pytest.fixture
def aws(aws_front):
    return aws_front.endpoint


# What moto cannot report back: Performance Insights (README, "What differs on the emulator").
UNREPORTED = ["cruddur_rds : instance | The RDS instance"]


def ssm_value(aws, name):
    client = boto3.client("ssm", endpoint_url=aws, region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    return client.get_parameter(Name=name, WithDecryption=True)["Parameter"]["Value"]


def prod_env(aws, standin=None):
    """What a prod user has: AWS credentials and region; here the endpoint too. No password."""
    env = {**AWS_ENV, "AWS_ENDPOINT_URL": aws, "CRUDDUR_PROD_DB_PASSWORD": "", "CRUDDUR_USER_POOL_ID": ""}
    if standin is not None:
        # The stand-in's certificate comes from the tests' own CA: it takes the RDS bundle's place.
        env.update(CRUDDUR_PROD_DB_HOST="127.0.0.1", CRUDDUR_PROD_DB_PORT=str(standin.port),
                   CRUDDUR_PROD_DB_CA_BUNDLE=str(standin.ca))
    return env


def changed_tasks(output):
    """Names of the tasks that reported a change."""
    names, task = [], None
    for line in output.splitlines():
        if line.startswith("TASK ["):
            task = line[len("TASK ["):line.rindex("]")]
        elif line.startswith("changed:") and task not in names:
            names.append(task)
    return names


def test_aws_rds_without_a_password_generates_one_converges_and_refuses_teardown(aws):
    first = run_playbook("playbooks/aws-rds.yml", *PROD, "-vvvv", env=prod_env(aws))
    assert first.rc == 0, first.output[-4000:]
    master = ssm_value(aws, "/cruddur/rds/master-password")
    assert len(master) == 32
    second = run_playbook("playbooks/aws-rds.yml", *PROD, "-vvvv", env=prod_env(aws))
    assert second.rc == 0, second.output[-4000:]
    assert changed_tasks(second.output) == UNREPORTED
    assert ssm_value(aws, "/cruddur/rds/master-password") == master  # never overwritten
    for run in (first, second):
        assert master not in run.output
    # The same instance: teardown refuses it without the confirmation, and it stays as it was.
    refused = run_playbook("playbooks/aws-teardown.yml", *PROD, env=prod_env(aws))
    assert refused.rc != 0 and refused.changed() == 0, refused.output[-3000:]
    assert "Refusing to delete RDS instance cruddur-db-instance" in " ".join(refused.output.split())
    rds = boto3.client("rds", endpoint_url=aws, region_name="us-east-1",
                       aws_access_key_id="testing", aws_secret_access_key="testing")
    (instance,) = rds.describe_db_instances()["DBInstances"]
    assert instance["DBInstanceStatus"] == "available" and instance["DeletionProtection"]


def test_prod_chores_read_the_generated_passwords_by_themselves(aws, rds_standin, tmp_path):
    prepare_master(aws, rds_standin)
    master = ssm_value(aws, "/cruddur/rds/master-password")
    rds_standin.sql("DROP DATABASE IF EXISTS cruddur WITH (FORCE)")
    env, env_file = prod_env(aws, rds_standin), tmp_path / "prod.env"
    extra = {"cruddur_db_env_file": str(env_file)}
    runs = [run_playbook(f"playbooks/{name}.yml", *PROD, "-vvvv", env=env, extra_vars=extra)
            for name in ("db-create", "db-migrate", "db-seed")]
    assert all(run.rc == 0 for run in runs), [run.output[-3000:] for run in runs]
    again = [run_playbook(f"playbooks/{name}.yml", *PROD, env=env, extra_vars=extra)
             for name in ("db-create", "db-migrate", "db-seed")]
    assert [run.changed() for run in again] == [0, 0, 0], [changed_tasks(run.output) for run in again]

    generated = {role: ssm_value(aws, f"/cruddur/db/{role}") for role in ROLES}
    for run in runs + again:
        for secret in (master, *generated.values()):
            assert secret not in run.output
    # The roles: logins, none of them a superuser; the owner owns the database and its tables.
    assert rds_standin.sql("SELECT string_agg(rolname || ':' || rolsuper || rolcreaterole || rolcreatedb, ',' "
                           "ORDER BY rolname) FROM pg_roles WHERE rolname LIKE 'cruddur\\_%'") == \
        "cruddur_api:falsefalsefalse,cruddur_owner:falsefalsefalse,cruddur_signup:falsefalsefalse"
    owners = rds_standin.sql("SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = 'public'"
                             " UNION SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'cruddur'")
    assert owners == "cruddur_owner"
    # The URL file: the owner's login, TLS that verifies the server, mode 0600.
    line = next(line for line in env_file.read_text().splitlines() if line.startswith("PROD_CONNECTION_URL="))
    assert line == (f"PROD_CONNECTION_URL=postgresql://cruddur_owner:{generated['cruddur_owner']}"
                    f"@127.0.0.1:{rds_standin.port}/cruddur?sslmode=verify-full&sslrootcert={rds_standin.ca}")
    assert env_file.stat().st_mode & 0o777 == 0o600
    # Each role logs in with its generated password, over TLS.
    for role, password in generated.items():
        conn = rds_standin.connect("cruddur", role, password)
        with conn.cursor() as cur:
            cur.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            assert cur.fetchone() == (True,)
        conn.close()


def test_prod_without_any_password_source_names_the_problem(aws, rds_standin):
    # No vault, no environment variable, and nothing in SSM yet (aws-rds.yml never ran).
    run = run_playbook("playbooks/db-create.yml", *PROD, env=prod_env(aws, rds_standin))
    assert run.rc != 0
    assert "the password master-password is not in /cruddur/rds/master-password" in run.output
    assert "Traceback" not in run.output


def prepare_master(aws, standin, instance: bool = False):
    """The master user on the stand-in, with the password kept in SSM as aws-rds.yml keeps it.
    With `instance`, aws-rds.yml itself makes the instance and the password (the rotation sets
    the new one on the instance); otherwise, for chores that only read it, the parameter is put
    there directly, unless a run already made it (aws-rds.yml's own generation is tested above)."""
    if instance:
        assert run_playbook("playbooks/aws-rds.yml", *PROD, env=prod_env(aws)).rc == 0
    else:
        ssm = boto3.client("ssm", endpoint_url=aws, region_name="us-east-1",
                           aws_access_key_id="testing", aws_secret_access_key="testing")
        if not ssm.get_parameters(Names=["/cruddur/rds/master-password"])["Parameters"]:
            ssm.put_parameter(Name="/cruddur/rds/master-password", Type="SecureString",
                              Value=secrets.token_urlsafe(24)[:32])
    standin.sql(f"""
        DO $$ BEGIN
          IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'cruddurroot') THEN
            CREATE ROLE cruddurroot LOGIN CREATEDB CREATEROLE;
          END IF;
        END $$;
        ALTER ROLE cruddurroot PASSWORD '{ssm_value(aws, "/cruddur/rds/master-password")}';""")


def test_a_server_certificate_from_another_ca_is_refused(aws, rds_standin, tmp_path):
    prepare_master(aws, rds_standin)
    other = make_tls(tmp_path / "other", "some other CA")
    env = {**prod_env(aws, rds_standin), "CRUDDUR_PROD_DB_CA_BUNDLE": str(other["ca"])}
    run = run_playbook("playbooks/db-sessions.yml", *PROD, env=env)
    assert run.rc != 0
    assert "certificate verify failed" in run.output
    verified = run_playbook("playbooks/db-sessions.yml", *PROD, env=prod_env(aws, rds_standin))
    assert verified.rc == 0, verified.output[-3000:]


def test_a_missing_ca_bundle_is_named_before_anything_connects(aws, rds_standin, tmp_path):
    prepare_master(aws, rds_standin)
    env = {**prod_env(aws, rds_standin), "CRUDDUR_PROD_DB_CA_BUNDLE": str(tmp_path / "absent.pem")}
    run = run_playbook("playbooks/db-migrate.yml", *PROD, env=env)
    assert run.rc != 0
    text = " ".join(run.output.split())
    assert f"verifies the server against {tmp_path / 'absent.pem'}, which does not exist" in text
    assert "truststore.pki.rds.amazonaws.com" in text


def test_rotation_on_prod_gives_the_master_and_every_role_a_new_password(aws, rds_standin, tmp_path):
    prepare_master(aws, rds_standin, instance=True)
    env, extra = prod_env(aws, rds_standin), {"cruddur_db_env_file": str(tmp_path / "prod.env")}
    rds_standin.sql("DROP DATABASE IF EXISTS cruddur WITH (FORCE)")
    assert run_playbook("playbooks/db-create.yml", *PROD, env=env, extra_vars=extra).rc == 0
    old_master = ssm_value(aws, "/cruddur/rds/master-password")
    old = {role: ssm_value(aws, f"/cruddur/db/{role}") for role in ROLES}

    check = run_playbook("playbooks/db-rotate-passwords.yml", *PROD, "--check", env=env, extra_vars=extra)
    assert check.rc == 0, check.output[-3000:]
    text = " ".join(check.output.split())
    assert "Would rotate the master password of cruddur-db-instance" in text
    assert "Would rotate the passwords of cruddur_owner, cruddur_api, cruddur_signup" in text
    assert ssm_value(aws, "/cruddur/rds/master-password") == old_master

    # The master first (on AWS the instance takes it; the stand-in is told, as RDS would be).
    master = run_playbook("playbooks/db-rotate-passwords.yml", *PROD, "--limit", "aws", "-vvvv", env=env,
                          extra_vars=extra)
    assert master.rc == 0, master.output[-3000:]
    new_master = ssm_value(aws, "/cruddur/rds/master-password")
    assert new_master != old_master
    assert "force_update_password" in master.output  # the instance task really sent it
    rds_standin.sql(f"ALTER ROLE cruddurroot PASSWORD '{new_master}'")
    roles = run_playbook("playbooks/db-rotate-passwords.yml", *PROD, "--limit", "cruddur_db", "-vvvv", env=env,
                         extra_vars=extra)
    assert roles.rc == 0, roles.output[-3000:]
    new = {role: ssm_value(aws, f"/cruddur/db/{role}") for role in ROLES}
    for role in ROLES:
        assert new[role] != old[role]
        rds_standin.connect("cruddur", role, new[role]).close()
        with pytest.raises(Exception, match="password authentication failed"):
            rds_standin.connect("cruddur", role, old[role])
    for run in (master, roles):
        for secret in (old_master, new_master, *old.values(), *new.values()):
            assert secret not in run.output


# --- nothing lost on prod ---------------------------------------------------------------------

def standin_dump(standin) -> str:
    """pg_dump (schema and data) of the stand-in's cruddur database, as its superuser."""
    proc = subprocess.run(["su", "postgres", "-c", f"pg_dump -p {standin.port} --no-owner cruddur"],
                          capture_output=True, text=True, check=True)
    return "\n".join(line for line in proc.stdout.splitlines()
                     if not line.startswith(("\\restrict", "\\unrestrict", "-- Dumped")))


def test_destructive_chores_on_prod_refuse_without_confirmation_then_back_up_first(aws, rds_standin, tmp_path):
    prepare_master(aws, rds_standin)
    rds_standin.sql("DROP DATABASE IF EXISTS cruddur WITH (FORCE)")
    env = prod_env(aws, rds_standin)
    extra = {"cruddur_db_env_file": str(tmp_path / "prod.env"), "cruddur_db_backup_dir": str(tmp_path / "backups")}
    migrate = run_playbook("playbooks/db-migrate.yml", *PROD, env=env, extra_vars=extra)
    assert migrate.rc == 0, migrate.output[-3000:]
    # Seed data stays local: the prod inventory writes none unless asked.
    seed = run_playbook("playbooks/db-seed.yml", *PROD, env=env, extra_vars=extra)
    assert seed.rc == 0 and seed.changed() == 0 and "Not seeding cruddur" in seed.output
    rds_standin.sql("\\c cruddur\nINSERT INTO users (display_name, handle, cognito_user_id) "
                    "VALUES ('Signed Up', 'signedup', 'sub-1');")
    before = standin_dump(rds_standin)

    # A refusal writes nothing, not even a password the store does not have yet: the chores that
    # read (or generate) the roles' passwords do so only after their guard. (A backup to restore
    # is there, so that db-restore gets as far as its guard.)
    ssm = boto3.client("ssm", endpoint_url=aws, region_name="us-east-1",
                       aws_access_key_id="testing", aws_secret_access_key="testing")
    kept = ssm.get_parameters_by_path(Path="/cruddur/db/", WithDecryption=True)["Parameters"]
    assert len(kept) == 3, kept  # the owner's and the two application roles'
    ssm.delete_parameters(Names=[p["Name"] for p in kept])
    (tmp_path / "backups").mkdir()
    (tmp_path / "backups" / "cruddur-20260101000000.dump").write_bytes(b"")
    for playbook in ("db-setup", "db-rollback", "db-restore"):
        refused = run_playbook(f"playbooks/{playbook}.yml", *PROD, env=env, extra_vars=extra)
        assert refused.rc != 0 and refused.changed() == 0, (playbook, refused.output[-3000:])
        assert "the prod inventory is never treated as local" in " ".join(refused.output.split()), playbook
        assert ssm.get_parameters_by_path(Path="/cruddur/db/")["Parameters"] == [], playbook
    # The chores that log in as roles they do not make (db-status, which only reads, among them)
    # never generate a password: one generated there would match no role. They name the missing
    # one and what makes it.
    for playbook in ("db-status", "db-seed", "db-repair"):
        run = run_playbook(f"playbooks/{playbook}.yml", *PROD, env=env, extra_vars=extra)
        assert run.rc != 0 and run.changed() == 0, (playbook, run.output[-3000:])
        text = " ".join(run.output.split())
        assert "/cruddur/db/cruddur_owner" in text and "made by db-create" in text, (playbook, text[-2000:])
    assert ssm.get_parameters_by_path(Path="/cruddur/db/")["Parameters"] == []
    for p in kept:
        ssm.put_parameter(Name=p["Name"], Value=p["Value"], Type=p["Type"])
    shutil.rmtree(tmp_path / "backups")

    # The endpoint is on this machine, but the prod inventory is never treated as local.
    for playbook in ("db-drop", "db-setup", "db-rollback", "db-restore"):
        run = run_playbook(f"playbooks/{playbook}.yml", *PROD, env=env, extra_vars=extra)
        assert run.rc != 0 and run.changed() == 0, (playbook, run.output[-3000:])
        text = " ".join(run.output.split())
        if playbook != "db-restore":  # db-restore first says there is no backup to restore
            assert ("database cruddur (activities: 0 rows, users: 1 row; migrations applied: 0001_uuid_ossp, "
                    "0002_users_activities, 0003_reply_to_index, 0004_feed_indexes, 0005_replies_count)") in text
            assert "the prod inventory is never treated as local" in text
            assert "-e cruddur_db_confirm=cruddur" in text
    assert standin_dump(rds_standin) == before
    assert not (tmp_path / "backups").exists()

    dropped = run_playbook("playbooks/db-drop.yml", *PROD, env=env,
                           extra_vars={**extra, "cruddur_db_confirm": "cruddur"})
    assert dropped.rc == 0, dropped.output[-3000:]
    assert rds_standin.sql("SELECT count(*) FROM pg_database WHERE datname = 'cruddur'") == "0"
    (dump,) = (tmp_path / "backups").glob("cruddur-*.dump")
    assert dump.stat().st_mode & 0o777 == 0o600
    restored = run_playbook("playbooks/db-restore.yml", *PROD, env=env, extra_vars=extra)
    assert restored.rc == 0, restored.output[-3000:]
    assert standin_dump(rds_standin) == before


def test_prod_aws_site_runs_as_documented_and_the_lambda_verifies_the_database(aws, rds_standin, tmp_path):
    # The README's first prod run: the whole AWS side, no password given anywhere.
    cognito = boto3.client("cognito-idp", endpoint_url=aws, region_name="us-east-1",
                           aws_access_key_id="testing", aws_secret_access_key="testing")
    pool = cognito.create_user_pool(PoolName="cruddur-prod-test")["UserPool"]["Id"]
    # The developer's address is given: nothing here may ask the internet for it.
    env = {**prod_env(aws), "CRUDDUR_USER_POOL_ID": pool, "CRUDDUR_PROD_DB_CA_BUNDLE": str(rds_standin.ca),
           "CRUDDUR_DEV_IP": "203.0.113.10"}
    # (the package is built in the test's own directory: parallel tests never share a build)
    build = {"cruddur_lambda_build_dir": str(tmp_path / "build")}
    first = run_playbook("playbooks/aws-site.yml", *PROD, "-vvvv", env=env, extra_vars=build)
    assert first.rc == 0, first.output[-4000:]
    assert ssm_value(aws, "/cruddur/rds/master-password") not in first.output
    function = boto3.client("lambda", endpoint_url=aws, region_name="us-east-1", aws_access_key_id="testing",
                            aws_secret_access_key="testing").get_function(
        FunctionName="cruddur-post-confirmation")["Configuration"]
    url = function["Environment"]["Variables"]["CONNECTION_URL"]
    assert url.startswith("postgresql://cruddur_signup@") and "password" not in url.lower()
    assert url.endswith("?sslmode=verify-full&sslrootcert=/var/task/cruddur-db-ca.pem")
    second = run_playbook("playbooks/aws-site.yml", *PROD, env=env, extra_vars=build)
    assert second.rc == 0, second.output[-4000:]
    assert changed_tasks(second.output) == UNREPORTED


def test_rds_gets_an_offered_major_its_parameter_group_and_no_paid_extended_support(aws_front):
    aws = aws_front.endpoint
    result = run_playbook("playbooks/aws-rds.yml", *PROD, env=prod_env(aws))
    assert result.rc == 0, result.output[-4000:]
    rds = boto3.client("rds", endpoint_url=aws, region_name="us-east-1", aws_access_key_id="testing",
                       aws_secret_access_key="testing")
    db = rds.describe_db_instances(DBInstanceIdentifier="cruddur-db-instance")["DBInstances"][0]
    local_major = subprocess.run(["pg_lsclusters", "--no-header"], capture_output=True, text=True,
                                 check=True).stdout.split()[0]
    assert db["EngineVersion"] == local_major  # the major alone: RDS picks the minor
    assert db["AutoMinorVersionUpgrade"] is True
    assert db["CACertificateIdentifier"] == "rds-ca-rsa2048-g1"
    assert [g["DBParameterGroupName"] for g in db["DBParameterGroups"]] == [f"cruddur-postgres{local_major}"]
    values = {p["ParameterName"]: p.get("ParameterValue")
              for p in rds.describe_db_parameters(DBParameterGroupName=f"cruddur-postgres{local_major}")["Parameters"]}
    assert values == {"rds.force_ssl": "1", "log_min_duration_statement": "500"}
    lifecycle = [form for action, form in aws_front.requests if action == "ModifyDBInstance"
                 and "EngineLifecycleSupport" in form]
    assert lifecycle and lifecycle[-1]["EngineLifecycleSupport"] == "open-source-rds-extended-support-disabled"


def test_a_version_rds_does_not_offer_fails_before_anything_is_created(aws_front):
    aws = aws_front.endpoint
    result = run_playbook("playbooks/aws-rds.yml", *PROD, "-e", "cruddur_rds_engine_version=14.6",
                          env=prod_env(aws))
    assert result.rc != 0
    assert "RDS does not offer PostgreSQL 14.6 in us-east-1" in result.output
    assert "Offered majors: 13, 14, 15, 16, 17" in result.output
    assert "14.x versions: 14.15, 14.17, 14.18" in result.output
    assert aws_front.actions[0] == "DescribeDBEngineVersions"
    assert not [a for a in aws_front.actions if a.startswith(("Create", "Modify", "Authorize", "Put"))]


def test_a_major_rds_does_not_offer_is_named_with_the_offered_ones(aws_front):
    aws_front.versions_xml = aws_front.versions_xml.replace(b"<MajorEngineVersion>15<", b"<MajorEngineVersion>X<")
    result = run_playbook("playbooks/aws-rds.yml", *PROD, "-e", "cruddur_rds_engine_version=15",
                          env=prod_env(aws_front.endpoint))
    assert result.rc != 0
    assert "RDS does not offer PostgreSQL 15 in us-east-1" in result.output
    assert "15.x versions: none" in result.output
    assert not [a for a in aws_front.actions if a.startswith(("Create", "Modify", "Authorize", "Put"))]


DOCTOR_LINE = re.compile(r"^\s+(OK|FAIL|SKIP)\s+(roles \S+|\S+)\s+(.*)$", re.M)


def test_db_doctor_on_prod_is_green_after_the_first_run_and_names_a_stale_master_password(aws, rds_standin, tmp_path):
    cognito = boto3.client("cognito-idp", endpoint_url=aws, region_name="us-east-1",
                           aws_access_key_id="testing", aws_secret_access_key="testing")
    pool = cognito.create_user_pool(PoolName="cruddur-prod-doctor")["UserPool"]["Id"]
    # The AWS side as the README's first run makes it; the database chores (and the doctor's
    # database links) reach the stand-in that plays the instance's part.
    aws_env = {**prod_env(aws), "CRUDDUR_USER_POOL_ID": pool, "CRUDDUR_DEV_IP": "203.0.113.10",
               "CRUDDUR_PROD_DB_CA_BUNDLE": str(rds_standin.ca)}
    env = {**prod_env(aws, rds_standin), "CRUDDUR_USER_POOL_ID": pool, "CRUDDUR_DEV_IP": "203.0.113.10"}
    extra = {"cruddur_db_env_file": str(tmp_path / "prod.env"), "cruddur_lambda_build_dir": str(tmp_path / "build")}
    site = run_playbook("playbooks/aws-site.yml", *PROD, env=aws_env, extra_vars=extra)
    assert site.rc == 0, site.output[-3000:]
    prepare_master(aws, rds_standin)  # the master password aws-site.yml generated, on the stand-in
    for playbook in ("db-create", "db-migrate"):
        run = run_playbook(f"playbooks/{playbook}.yml", *PROD, env=env, extra_vars=extra)
        assert run.rc == 0, run.output[-3000:]
    doctor = run_playbook("playbooks/db-doctor.yml", *PROD, "-vvvv", env=env)
    links = {link: (status, text) for status, link, text in DOCTOR_LINE.findall(doctor.output)}
    assert doctor.rc == 0, doctor.output[-3000:]
    assert {link: status for link, (status, _) in links.items()} == dict.fromkeys(
        ["resolve", "tcp", "tls", "login", "database", "migrations", "roles cruddur_owner", "roles cruddur_api",
         "roles cruddur_signup", "instance", "dev-rule", "lambda-network", "lambda-role", "lambda-db-host",
         "lambda-credentials", "cognito-permission", "cognito-trigger"], "OK")
    assert f"verified against {rds_standin.ca} (verify-full" in links["tls"][1]
    assert links["login"][1] == "cruddurroot accepted (secret from SSM /cruddur/rds/master-password)"
    secrets = [ssm_value(aws, "/cruddur/rds/master-password")] + [ssm_value(aws, f"/cruddur/db/{r}") for r in ROLES]
    assert not [secret for secret in secrets if secret in doctor.output]
    # The master password changed behind the inventory's back: that link fails, naming where the
    # secret came from, and the ones that need it are skipped; the AWS links are still reported.
    rds_standin.sql("ALTER ROLE cruddurroot PASSWORD 'changed-by-hand'")
    stale = run_playbook("playbooks/db-doctor.yml", *PROD, env=env)
    links = {link: (status, text) for status, link, text in DOCTOR_LINE.findall(stale.output)}
    assert stale.rc != 0
    status, text = links["login"]
    assert status == "FAIL" and "cruddurroot refused (secret from SSM /cruddur/rds/master-password)" in text
    assert "fix: export CRUDDUR_PROD_DB_PASSWORD=<the master password>, or let ansible-playbook" \
           " -i inventories/prod playbooks/db-rotate-passwords.yml set a new one" in text
    assert links["database"] == ("SKIP", "needs login")
    assert links["roles cruddur_api"][0] == "OK"  # the roles' own secrets still log in
    assert links["cognito-trigger"][0] == "OK"
