"""The AWS plays and the project's AWS modules against moto's server on loopback (offline)."""

import importlib
import json
import secrets
import urllib.request
import zipfile
from pathlib import Path

import boto3
import pytest

from conftest import AWS_ENV, REPO, call_module, make_tls, run_playbook


def client(endpoint, service):
    return boto3.client(service, endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id="testing", aws_secret_access_key="testing")


@pytest.fixture
def aws(moto_endpoint):
    """A clean emulator for each test (state reset, offline configuration kept)."""
    urllib.request.urlopen(urllib.request.Request(f"{moto_endpoint}/moto-api/reset", method="POST"),
                           timeout=10).read()
    return moto_endpoint


@pytest.fixture
def pool(aws):
    return client(aws, "cognito-idp").create_user_pool(
        PoolName="cruddur-test",
        Policies={"PasswordPolicy": {"MinimumLength": 14}},
        AutoVerifiedAttributes=["email"],
        LambdaConfig={"PreSignUp": "arn:aws:lambda:us-east-1:123456789012:function:pre"},
        UserPoolTags={"team": "cruddur"},
    )["UserPool"]["Id"]


def sandbox_ca() -> Path:
    """The sandbox's CA (bin/sandbox makes one under .cache/sandbox/tls; the tests their own)."""
    from filelock import FileLock

    directory = REPO / ".cache" / "test-sandbox-tls"
    directory.parent.mkdir(exist_ok=True)
    with FileLock(str(directory.parent / "test-sandbox-tls.lock")):  # parallel workers make it once
        if not (directory / "ca.crt").exists():
            make_tls(directory, "cruddur sandbox test CA")
    return directory / "ca.crt"


def sandbox(aws, pool_id, playbook, *args, tmp_path, **extra_vars):
    env = {**AWS_ENV, "CRUDDUR_SANDBOX_ENDPOINT": aws, "CRUDDUR_SANDBOX_USER_POOL_ID": pool_id,
           "CRUDDUR_SANDBOX_CA_BUNDLE": str(sandbox_ca())}
    return run_playbook(playbook, "-i", "inventories/sandbox", *args, env=env,
                        extra_vars={"cruddur_rds_env_file": tmp_path / "sandbox.env",
                                    # the test's own: parallel tests never share a build
                                    "cruddur_lambda_build_dir": tmp_path / "build", **extra_vars})


def module(aws, name, args, *flags):
    """Call one of the collection's modules in this process against the emulator; its result."""
    code = importlib.import_module(f"ansible_collections.cruddur.ops.plugins.modules.{name}")
    credentials = {"access_key": AWS_ENV["AWS_ACCESS_KEY_ID"], "secret_key": AWS_ENV["AWS_SECRET_ACCESS_KEY"]}
    return call_module(code, {"region": "us-east-1", "endpoint_url": aws, **credentials, **args},
                       check="--check" in flags, diff="--diff" in flags)


# --- the Cognito trigger module ------------------------------------------------------------

ARN = "arn:aws:lambda:us-east-1:123456789012:function:cruddur-post-confirmation"


def describe(aws, pool_id):
    pool = client(aws, "cognito-idp").describe_user_pool(UserPoolId=pool_id)["UserPool"]
    return {k: v for k, v in pool.items() if k not in ("LastModifiedDate", "LambdaConfig")}, pool["LambdaConfig"]


def test_trigger_is_merged_and_nothing_else_changes(aws, pool):
    settings_before, _ = describe(aws, pool)
    result = module(aws, "cruddur_cognito_trigger", {"user_pool_id": pool, "lambda_arn": ARN})
    assert result["changed"] is True
    settings_after, lambda_config = describe(aws, pool)
    assert lambda_config == {"PreSignUp": "arn:aws:lambda:us-east-1:123456789012:function:pre",
                             "PostConfirmation": ARN}
    assert settings_after == settings_before
    assert module(aws, "cruddur_cognito_trigger", {"user_pool_id": pool, "lambda_arn": ARN})["changed"] is False


def test_trigger_check_mode_and_diff_change_nothing(aws, pool):
    result = module(aws, "cruddur_cognito_trigger", {"user_pool_id": pool, "lambda_arn": ARN}, "--check", "--diff")
    assert result["changed"] is True
    assert result["diff"]["after"]["LambdaConfig"]["PostConfirmation"] == ARN
    assert "PostConfirmation" not in result["diff"]["before"]["LambdaConfig"]
    assert "PostConfirmation" not in describe(aws, pool)[1]


def test_trigger_absent_removes_only_that_trigger(aws, pool):
    module(aws, "cruddur_cognito_trigger", {"user_pool_id": pool, "lambda_arn": ARN})
    result = module(aws, "cruddur_cognito_trigger", {"user_pool_id": pool, "state": "absent"})
    assert result["changed"] is True
    assert describe(aws, pool)[1] == {"PreSignUp": "arn:aws:lambda:us-east-1:123456789012:function:pre"}


def test_trigger_on_an_unknown_pool_is_named(aws):
    result = module(aws, "cruddur_cognito_trigger", {"user_pool_id": "us-east-1_nope", "lambda_arn": ARN})
    assert result.get("failed") is True
    assert "user pool us-east-1_nope does not exist" in result["msg"]


# --- the developer-address rule module -----------------------------------------------------

@pytest.fixture
def group(aws):
    ec2 = client(aws, "ec2")
    vpc = ec2.describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}])["Vpcs"][0]["VpcId"]
    group_id = ec2.create_security_group(GroupName="db", Description="db", VpcId=vpc)["GroupId"]
    ec2.authorize_security_group_ingress(GroupId=group_id, IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "192.0.2.1/32", "Description": "ssh"}]},
        {"IpProtocol": "tcp", "FromPort": 5432, "ToPort": 5432,
         "IpRanges": [{"CidrIp": "192.0.2.2/32", "Description": "office"}]},
    ])
    return group_id


def ingress(aws, group_id):
    rules = client(aws, "ec2").describe_security_group_rules(
        Filters=[{"Name": "group-id", "Values": [group_id]}])["SecurityGroupRules"]
    return sorted((r["FromPort"], r.get("CidrIpv4") or r.get("CidrIpv6") or r.get("ReferencedGroupInfo", {}).get("GroupId", ""),
                   r.get("Description") or "", r["SecurityGroupRuleId"])
                  for r in rules if not r["IsEgress"])


def developer(aws, group_id):
    return [(cidr, rule_id) for port, cidr, desc, rule_id in ingress(aws, group_id) if desc == "GITPOD"]


def test_one_rule_that_follows_the_address(aws, group):
    others = [r for r in ingress(aws, group)]
    first = module(aws, "cruddur_sg_address_rule", {"group_id": group, "cidr": "203.0.113.7"})
    assert first["changed"] is True and first["cidr"] == "203.0.113.7/32"
    assert module(aws, "cruddur_sg_address_rule", {"group_id": group, "cidr": "203.0.113.7/32"})["changed"] is False
    (cidr, rule_id), = developer(aws, group)
    moved = module(aws, "cruddur_sg_address_rule", {"group_id": group, "cidr": "198.51.100.4"}, "--diff")
    assert moved["changed"] is True
    assert moved["diff"] == {"before": {"cidrs": ["203.0.113.7/32"]}, "after": {"cidrs": ["198.51.100.4/32"]}}
    assert developer(aws, group) == [("198.51.100.4/32", rule_id)]  # modified in place, nothing accumulates
    assert [r for r in ingress(aws, group) if r[2] != "GITPOD"] == others


def test_duplicated_rules_collapse_to_one(aws, group):
    client(aws, "ec2").authorize_security_group_ingress(GroupId=group, IpPermissions=[{
        "IpProtocol": "tcp", "FromPort": 5432, "ToPort": 5432,
        "IpRanges": [{"CidrIp": "203.0.113.1/32", "Description": "GITPOD"},
                     {"CidrIp": "203.0.113.2/32", "Description": "GITPOD"}]}])
    module(aws, "cruddur_sg_address_rule", {"group_id": group, "cidr": "203.0.113.2"})
    assert [cidr for cidr, _ in developer(aws, group)] == ["203.0.113.2/32"]


@pytest.mark.parametrize("cidr", ["0.0.0.0/0", "::/0", "203.0.113.0/24", "2001:db8::/64", "not-an-ip"])
def test_wide_or_bad_cidrs_are_refused_and_change_nothing(aws, group, cidr):
    module(aws, "cruddur_sg_address_rule", {"group_id": group, "cidr": "203.0.113.7"})
    before = ingress(aws, group)
    result = module(aws, "cruddur_sg_address_rule", {"group_id": group, "cidr": cidr})
    assert result.get("failed") is True
    assert "refusing" in result["msg"] or "is not an IP address" in result["msg"]
    assert ingress(aws, group) == before


def test_a_wide_prefix_only_when_forced(aws, group):
    result = module(aws, "cruddur_sg_address_rule", {"group_id": group, "cidr": "203.0.113.0/24", "force_wide": True})
    assert result["changed"] is True
    assert [cidr for cidr, _ in developer(aws, group)] == ["203.0.113.0/24"]


def test_ipv6_address(aws, group):
    module(aws, "cruddur_sg_address_rule", {"group_id": group, "cidr": "2001:db8::7"})
    assert [cidr for cidr, _ in developer(aws, group)] == ["2001:db8::7/128"]


def test_check_mode_changes_nothing(aws, group):
    before = ingress(aws, group)
    result = module(aws, "cruddur_sg_address_rule", {"group_id": group, "cidr": "203.0.113.7"}, "--check")
    assert result["changed"] is True
    assert ingress(aws, group) == before


# --- the plays -----------------------------------------------------------------------------

def test_refused_wide_cidr_through_the_playbook(aws, pool, tmp_path):
    assert sandbox(aws, pool, "playbooks/aws-rds.yml", tmp_path=tmp_path).rc == 0
    assert sandbox(aws, pool, "playbooks/aws-dev-access.yml", tmp_path=tmp_path).rc == 0
    group_id = client(aws, "ec2").describe_security_groups(
        Filters=[{"Name": "group-name", "Values": ["cruddur-db-sg"]}])["SecurityGroups"][0]["GroupId"]
    before = ingress(aws, group_id)
    refused = sandbox(aws, pool, "playbooks/aws-dev-access.yml", tmp_path=tmp_path,
                      cruddur_dev_access_ip="0.0.0.0/0")
    assert refused.rc != 0
    assert "refusing 0.0.0.0/0 (every address on the internet)" in refused.output
    assert ingress(aws, group_id) == before


def test_a_bad_developer_address_stops_aws_site_before_anything_is_created(aws, pool, tmp_path):
    run = sandbox(aws, pool, "playbooks/aws-site.yml", tmp_path=tmp_path, cruddur_dev_access_ip="not-an-address")
    assert run.rc != 0
    assert ("cruddur_dev_access_ip (CRUDDUR_DEV_IP): 'not-an-address' is not an IP address or CIDR: "
            "'not-an-address' does not appear to be an IPv4 or IPv6 network. Nothing was created.") in \
        " ".join(run.output.split())
    assert run.changed() == 0
    assert client(aws, "rds").describe_db_instances()["DBInstances"] == []
    wide = sandbox(aws, pool, "playbooks/aws-site.yml", tmp_path=tmp_path, cruddur_dev_access_ip="0.0.0.0/0")
    assert wide.rc != 0 and "refusing 0.0.0.0/0 (every address on the internet)" in wide.output
    assert wide.changed() == 0


def test_no_secret_in_verbose_output_and_teardown_keeps_a_final_snapshot(aws, pool, tmp_path):
    given = f"Given{secrets.token_hex(10)}"
    # Given as a vars file, as a user would (ansible-playbook echoes its command line at -vvvv).
    vars_file = tmp_path / "given.json"
    vars_file.write_text(json.dumps({"cruddur_rds_master_password": given}))
    runs = [sandbox(aws, pool, "playbooks/aws-site.yml", "-vvvv", "-e", f"@{vars_file}", tmp_path=tmp_path)]
    # Confirmed, but not without a final snapshot: the instance goes and its snapshot stays.
    runs.append(sandbox(aws, pool, "playbooks/aws-teardown.yml", "-vvvv", tmp_path=tmp_path,
                        cruddur_rds_confirm_teardown="cruddur-db-instance"))
    # Again without a given password: one is generated and kept in SSM.
    runs.append(sandbox(aws, pool, "playbooks/aws-site.yml", "-vvvv", tmp_path=tmp_path))
    ssm = client(aws, "ssm")
    generated = ssm.get_parameter(Name="/cruddur/rds/master-password", WithDecryption=True)["Parameter"]["Value"]
    signup = ssm.get_parameter(Name="/cruddur/db/cruddur_signup", WithDecryption=True)["Parameter"]["Value"]
    assert all(run.rc == 0 for run in runs), [run.output[-2000:] for run in runs]
    for run in runs:
        assert given not in run.output
        assert generated not in run.output
        assert signup not in run.output
    (snapshot,) = client(aws, "rds").describe_db_snapshots(SnapshotType="manual")["DBSnapshots"]
    assert snapshot["DBSnapshotIdentifier"].startswith("cruddur-db-instance-final-")
    assert f"Final snapshot kept: {snapshot['DBSnapshotIdentifier']}" in runs[1].output
    # The master password stays with the snapshot it opens.
    assert "/cruddur/rds/master-password" in [p["Name"] for p in ssm.describe_parameters()["Parameters"]]
    function = client(aws, "lambda").get_function(FunctionName="cruddur-post-confirmation")["Configuration"]
    variables = function["Environment"]["Variables"]
    address = client(aws, "rds").describe_db_instances()["DBInstances"][0]["Endpoint"]["Address"]
    # The function logs in as the sign-up role, never as the master user, and its environment
    # holds no password: it reads the sign-up role's from SSM at cold start. It verifies the
    # server's certificate and name against the CA bundle packaged with it.
    assert variables == {"CONNECTION_URL": f"postgresql://cruddur_signup@{address}:5432/cruddur"
                                           "?sslmode=verify-full&sslrootcert=/var/task/cruddur-db-ca.pem",
                         "DB_PASSWORD_PARAMETER": "/cruddur/db/cruddur_signup"}
    with zipfile.ZipFile(tmp_path / "build" / "cruddur-post-confirmation.zip") as package:
        assert package.read("cruddur-db-ca.pem") == sandbox_ca().read_bytes()


def test_the_emulator_holds_the_managed_policies_the_project_names_and_no_others(aws):
    # bin/moto_server.py: moto's IAM catalogue cut to these (a reset then costs moto no IAM rebuild)
    import moto_server

    listed = client(aws, "iam").list_policies(Scope="AWS", MaxItems=1000)["Policies"]
    assert {p["Arn"] for p in listed} == {f"arn:aws:iam::aws:policy{name}" for name in moto_server.named_policies()}
    assert {p["Arn"] for p in listed} >= {"arn:aws:iam::aws:policy/service-role/AWSLambdaVPCAccessExecutionRole"}


def role_policies(aws):
    iam = client(aws, "iam")
    role = "cruddur-post-confirmation-role"
    trust = iam.get_role(RoleName=role)["Role"]["AssumeRolePolicyDocument"]
    attached = [p["PolicyArn"] for p in iam.list_attached_role_policies(RoleName=role)["AttachedPolicies"]]
    return trust, attached, iam.list_role_policies(RoleName=role)["PolicyNames"]


def the_function_reaches_ssm_through_an_endpoint_in_its_vpc(aws):
    ec2 = client(aws, "ec2")
    function = client(aws, "lambda").get_function(FunctionName="cruddur-post-confirmation")["Configuration"]
    (endpoint,) = ec2.describe_vpc_endpoints(
        Filters=[{"Name": "service-name", "Values": ["com.amazonaws.us-east-1.ssm"]}])["VpcEndpoints"]
    subnet_group = client(aws, "rds").describe_db_subnet_groups(DBSubnetGroupName="cruddur-db-subnets")
    assert endpoint["VpcId"] == subnet_group["DBSubnetGroups"][0]["VpcId"]  # the function's (and the database's) VPC
    assert endpoint["VpcEndpointType"] == "Interface"
    assert set(endpoint["SubnetIds"]) <= set(function["VpcConfig"]["SubnetIds"])
    (group,) = ec2.describe_security_groups(GroupIds=[g["GroupId"] for g in endpoint["Groups"]])["SecurityGroups"]
    (rule,) = group["IpPermissions"]
    assert (rule["FromPort"], rule["ToPort"]) == (443, 443)
    assert [pair["GroupId"] for pair in rule["UserIdGroupPairs"]] == function["VpcConfig"]["SecurityGroupIds"]
    assert rule["IpRanges"] == []


# Both confirmations: delete the instance, and without a final snapshot.
GONE_FOR_GOOD = dict(cruddur_rds_confirm_teardown="cruddur-db-instance",
                     cruddur_rds_confirm_no_final_snapshot="cruddur-db-instance")


def test_one_account_from_check_mode_to_converged_to_teardown(aws, pool, tmp_path):
    """One account's whole life, one converge for every check of it: --check on an empty account
    creates nothing; the converged account has the Lambda role it should (an earlier deployment's
    inline policy removed) and reaches SSM in its VPC; --check on it reports nothing; teardown
    refuses without its confirmation, then removes everything in order, and a second teardown
    changes nothing."""
    # A role left by an earlier deployment, with the original console's inline policy on "*".
    iam = client(aws, "iam")
    iam.create_role(RoleName="cruddur-post-confirmation-role", AssumeRolePolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"},
                                                "Action": "sts:AssumeRole"}]}))
    iam.put_role_policy(RoleName="cruddur-post-confirmation-role", PolicyName="cruddur-lambda-network-interfaces",
                        PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [{
                            "Effect": "Allow", "Action": ["ec2:AttachNetworkInterface", "ec2:DescribeInstances"],
                            "Resource": "*"}]}))
    empty = sandbox(aws, pool, "playbooks/aws-site.yml", "--check", tmp_path=tmp_path)
    assert empty.rc == 0 and empty.changed() > 0, empty.output[-3000:]
    assert client(aws, "rds").describe_db_instances()["DBInstances"] == []
    assert client(aws, "lambda").list_functions()["Functions"] == []

    run = sandbox(aws, pool, "playbooks/aws-site.yml", tmp_path=tmp_path)
    assert run.rc == 0, run.output[-3000:]
    trust, attached, inline = role_policies(aws)
    assert trust["Statement"] == [{"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"},
                                   "Action": "sts:AssumeRole"}]
    assert attached == ["arn:aws:iam::aws:policy/service-role/AWSLambdaVPCAccessExecutionRole"]
    # Beside it, one inline policy: read the one parameter that holds its database password.
    assert inline == ["cruddur-read-db-password"]
    document = iam.get_role_policy(RoleName="cruddur-post-confirmation-role",
                                   PolicyName="cruddur-read-db-password")["PolicyDocument"]
    document = json.loads(document) if isinstance(document, str) else document
    assert document["Statement"] == [{"Effect": "Allow", "Action": "ssm:GetParameter",
                                      "Resource": "arn:aws:ssm:us-east-1:123456789012:parameter/cruddur/db/cruddur_signup"}]
    the_function_reaches_ssm_through_an_endpoint_in_its_vpc(aws)
    rds = client(aws, "rds")
    (instance,) = rds.describe_db_instances()["DBInstances"]
    # Safer than the original command: automated backups and deletion protection.
    assert (instance["BackupRetentionPeriod"], instance["DeletionProtection"]) == (7, True)

    converged = sandbox(aws, pool, "playbooks/aws-site.yml", "--check", tmp_path=tmp_path)
    assert converged.rc == 0 and converged.changed() == 0, [line for line in converged.output.splitlines()
                                                            if line.startswith(("TASK", "changed"))]
    teardown = sandbox(aws, pool, "playbooks/aws-teardown.yml", "--check", tmp_path=tmp_path, **GONE_FOR_GOOD)
    assert teardown.rc == 0 and teardown.changed() > 0, teardown.output[-3000:]
    assert len(rds.describe_db_instances()["DBInstances"]) == 1
    assert len(client(aws, "lambda").list_functions()["Functions"]) == 1

    for confirm in ({}, {"cruddur_rds_confirm_teardown": "cruddur"}):
        refused = sandbox(aws, pool, "playbooks/aws-teardown.yml", tmp_path=tmp_path, **confirm)
        assert refused.rc != 0 and refused.changed() == 0, refused.output[-3000:]
        assert "Refusing to delete RDS instance cruddur-db-instance" in refused.output
        assert "-e cruddur_rds_confirm_teardown=cruddur-db-instance" in refused.output
    old_switch = sandbox(aws, pool, "playbooks/aws-teardown.yml", tmp_path=tmp_path,
                         cruddur_rds_confirm_teardown="cruddur-db-instance", cruddur_rds_skip_final_snapshot=True)
    assert old_switch.rc != 0 and "cruddur_rds_confirm_no_final_snapshot" in old_switch.output
    assert len(rds.describe_db_instances()["DBInstances"]) == 1
    assert len(client(aws, "lambda").list_functions()["Functions"]) == 1  # nothing before the guard

    down = sandbox(aws, pool, "playbooks/aws-teardown.yml", tmp_path=tmp_path, **GONE_FOR_GOOD)
    assert down.rc == 0, down.output[-3000:]
    assert rds.describe_db_instances()["DBInstances"] == []
    assert rds.describe_db_snapshots(SnapshotType="manual")["DBSnapshots"] == []
    assert client(aws, "lambda").list_functions()["Functions"] == []
    assert "PostConfirmation" not in client(aws, "cognito-idp").describe_user_pool(
        UserPoolId=pool)["UserPool"]["LambdaConfig"]
    roles = [r["RoleName"] for r in iam.list_roles()["Roles"]]
    assert "cruddur-post-confirmation-role" not in roles
    groups = client(aws, "ec2").describe_security_groups(
        Filters=[{"Name": "group-name", "Values": ["cruddur-db-sg", "cruddur-ssm-endpoint-sg"]}])["SecurityGroups"]
    assert groups == []
    endpoints = client(aws, "ec2").describe_vpc_endpoints()["VpcEndpoints"]
    assert [e for e in endpoints if e["State"] not in ("deleted", "deleting")] == []
    again = sandbox(aws, pool, "playbooks/aws-teardown.yml", tmp_path=tmp_path)  # nothing left to confirm
    assert again.rc == 0 and again.changed() == 0, again.output[-3000:]
