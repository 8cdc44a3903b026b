"""Molecule verification of the AWS side on the emulator, with boto3."""

import json
import os
import subprocess
import sys
from pathlib import Path

import boto3
import pytest

PROJECT = Path(os.environ.get("MOLECULE_PROJECT_DIRECTORY", Path(__file__).resolve().parents[3]))
STATE = PROJECT / ".cache" / "sandbox"
ENDPOINT = f"http://127.0.0.1:{(STATE / 'moto.port').read_text().strip()}"
POOL_ID = (STATE / "user_pool_id").read_text().strip()


def client(service):
    return boto3.client(service, endpoint_url=ENDPOINT, region_name="us-east-1",
                        aws_access_key_id="testing", aws_secret_access_key="testing")


@pytest.fixture(scope="module")
def db():
    return client("rds").describe_db_instances(DBInstanceIdentifier="cruddur-db-instance")["DBInstances"][0]


@pytest.fixture(scope="module")
def group_id():
    groups = client("ec2").describe_security_groups(
        Filters=[{"Name": "group-name", "Values": ["cruddur-db-sg"]}])["SecurityGroups"]
    assert len(groups) == 1
    return groups[0]["GroupId"]


def gitpod_rules(group_id):
    rules = client("ec2").describe_security_group_rules(
        Filters=[{"Name": "group-id", "Values": [group_id]}])["SecurityGroupRules"]
    return [r for r in rules if not r["IsEgress"] and r.get("FromPort") == 5432 and r.get("Description") == "GITPOD"]


def test_rds_matches_the_original_command_line_but_for_the_safer_defaults(db, group_id):
    assert db["Engine"] == "postgres"
    # Departure (README): the local server's major version, RDS picking the minor, instead of
    # the retired 14.6; the extended-support setting the module sets after creation.
    local_major = subprocess.run(["pg_lsclusters", "--no-header"], capture_output=True, text=True,
                                 check=True).stdout.split()[0]
    assert db["EngineVersion"] == local_major
    assert db["AutoMinorVersionUpgrade"] is True
    assert db["CACertificateIdentifier"] == "rds-ca-rsa2048-g1"
    assert db["EngineLifecycleSupport"] == "open-source-rds-extended-support-disabled"
    assert db["DBInstanceClass"] == "db.t3.micro"
    assert db["AllocatedStorage"] == 20
    assert db["StorageType"] == "gp2"
    assert db["AvailabilityZone"] == "us-east-1a"
    assert db["MultiAZ"] is False
    # Departures from the original (README): 7 days of automated backups, deletion protection.
    assert db["BackupRetentionPeriod"] == 7
    assert db["Endpoint"]["Port"] == 5432
    assert db["DBName"] == "cruddur"
    assert db["MasterUsername"] == "cruddurroot"
    assert db["PubliclyAccessible"] is True
    assert db["StorageEncrypted"] is True
    assert db["DeletionProtection"] is True
    assert db["DBSubnetGroup"]["DBSubnetGroupName"] == "cruddur-db-subnets"
    assert [g["VpcSecurityGroupId"] for g in db["VpcSecurityGroups"]] == [group_id]
    # Performance Insights (enabled, 7 days) is sent at creation; moto does not report it back.


def test_master_password_is_a_generated_secure_string():
    parameter = client("ssm").get_parameter(Name="/cruddur/rds/master-password", WithDecryption=True)["Parameter"]
    assert parameter["Type"] == "SecureString"
    assert len(parameter["Value"]) == 32


def test_exactly_one_developer_rule_and_it_follows_the_address(group_id):
    assert [r["CidrIpv4"] for r in gitpod_rules(group_id)] == ["203.0.113.10/32"]
    rule_id = gitpod_rules(group_id)[0]["SecurityGroupRuleId"]
    run = subprocess.run(
        [str(PROJECT / ".venv/bin/ansible-playbook"), "-i", "inventories/sandbox", "playbooks/aws-dev-access.yml",
         "-e", "cruddur_dev_access_ip=198.51.100.23"],
        cwd=PROJECT, capture_output=True, text=True, check=False,
        env={**os.environ, "ANSIBLE_CONFIG": str(PROJECT / "ansible.cfg")})
    assert run.returncode == 0, run.stdout[-2000:]
    rules = gitpod_rules(group_id)
    assert [(r["SecurityGroupRuleId"], r["CidrIpv4"]) for r in rules] == [(rule_id, "198.51.100.23/32")]


def test_lambda_runtime_role_vpc_and_environment(db, group_id):
    function = client("lambda").get_function(FunctionName="cruddur-post-confirmation")["Configuration"]
    assert function["Runtime"] == "python3.12"
    assert function["Handler"] == "handler.lambda_handler"
    assert function["Role"].endswith(":role/cruddur-post-confirmation-role")
    assert function["VpcConfig"]["SecurityGroupIds"] == [group_id]
    subnets = client("rds").describe_db_subnet_groups(DBSubnetGroupName="cruddur-db-subnets")
    expected = sorted(s["SubnetIdentifier"] for s in subnets["DBSubnetGroups"][0]["Subnets"])
    assert sorted(function["VpcConfig"]["SubnetIds"]) == expected
    # The sign-up role (insert and read users only), never the master user; no password in the
    # environment: the function reads it from SSM at cold start.
    assert function["Environment"]["Variables"] == {
        # TLS that verifies, against the sandbox's CA packaged with the function.
        "CONNECTION_URL": f"postgresql://cruddur_signup@{db['Endpoint']['Address']}:5432/cruddur"
                          "?sslmode=verify-full&sslrootcert=/var/task/cruddur-db-ca.pem",
        "DB_PASSWORD_PARAMETER": "/cruddur/db/cruddur_signup"}


def test_role_trust_and_policies():
    iam = client("iam")
    role = iam.get_role(RoleName="cruddur-post-confirmation-role")["Role"]
    statement = role["AssumeRolePolicyDocument"]["Statement"][0]
    assert statement["Principal"] == {"Service": "lambda.amazonaws.com"}
    attached = iam.list_attached_role_policies(RoleName="cruddur-post-confirmation-role")["AttachedPolicies"]
    # The managed VPC access policy, and inline only the read of its one password parameter.
    assert [p["PolicyArn"] for p in attached] == [
        "arn:aws:iam::aws:policy/service-role/AWSLambdaVPCAccessExecutionRole"]
    assert iam.list_role_policies(RoleName="cruddur-post-confirmation-role")["PolicyNames"] == [
        "cruddur-read-db-password"]


def test_only_the_user_pool_may_invoke():
    policy = json.loads(client("lambda").get_policy(FunctionName="cruddur-post-confirmation")["Policy"])
    (statement,) = policy["Statement"]
    assert statement["Principal"] == {"Service": "cognito-idp.amazonaws.com"}
    assert statement["Action"] == "lambda:InvokeFunction"
    pool_arn = client("cognito-idp").describe_user_pool(UserPoolId=POOL_ID)["UserPool"]["Arn"]
    assert statement["Condition"]["ArnLike"]["AWS:SourceArn"] == pool_arn


def test_trigger_set_and_other_pool_settings_unchanged():
    pool = client("cognito-idp").describe_user_pool(UserPoolId=POOL_ID)["UserPool"]
    function_arn = client("lambda").get_function(
        FunctionName="cruddur-post-confirmation")["Configuration"]["FunctionArn"]
    assert pool["LambdaConfig"] == {"PostConfirmation": function_arn}
    # What bin/sandbox created the pool with:
    assert pool["Policies"]["PasswordPolicy"]["MinimumLength"] == 12
    assert pool["Policies"]["PasswordPolicy"]["RequireSymbols"] is True
    assert pool["AutoVerifiedAttributes"] == ["email"]
    assert pool["EmailVerificationSubject"] == "Your Cruddur verification code"
    assert pool["UserPoolTags"] == {"app": "cruddur"}
