"""db-doctor's AWS links on the sandbox: green on a converged account (and the same in --check);
then each link broken on purpose, one test each, sees exactly that link fail with its fix while
every other link is still reported OK; each test puts its link back. The account lives in an
emulator of this module's own, so no other test resets it meanwhile."""

from __future__ import annotations

import json
import re

import boto3
import pytest

from conftest import AWS_ENV, make_tls, run_playbook, start_moto

# One converged account (its own moto) serves the module: its tests run on one worker, so the
# account is made once, not once per worker that happens to get one of them.
pytestmark = pytest.mark.xdist_group("doctor-aws")

LINE = re.compile(r"^\s+(OK|FAIL|SKIP)\s+(\S+)\s+(.*)$", re.M)
AWS_LINKS = ["instance", "dev-rule", "lambda-network", "lambda-role", "lambda-db-host", "lambda-credentials",
             "cognito-permission", "cognito-trigger"]
FUNCTION, ROLE = "cruddur-post-confirmation", "cruddur-post-confirmation-role"
VPC_POLICY = "arn:aws:iam::aws:policy/service-role/AWSLambdaVPCAccessExecutionRole"


class Account:
    def __init__(self, endpoint, pool, ca, build):
        self.endpoint, self.pool, self.ca, self.build = endpoint, pool, ca, build

    def client(self, service):
        return boto3.client(service, endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id="testing", aws_secret_access_key="testing")

    def env(self, **more):
        return {**AWS_ENV, "CRUDDUR_SANDBOX_ENDPOINT": self.endpoint, "CRUDDUR_SANDBOX_USER_POOL_ID": self.pool,
                "CRUDDUR_SANDBOX_CA_BUNDLE": str(self.ca), **more}

    def doctor(self, *args, **env):
        run = run_playbook("playbooks/db-doctor.yml", "-i", "inventories/sandbox", *args, env=self.env(**env))
        return run, {link: (status, text) for status, link, text in LINE.findall(run.output)}


@pytest.fixture(scope="module")
def account(tmp_path_factory):
    proc, endpoint = start_moto()
    try:
        work = tmp_path_factory.mktemp("doctor-aws")
        ca = make_tls(work / "tls", "cruddur doctor test CA")["ca"]
        pool = boto3.client("cognito-idp", endpoint_url=endpoint, region_name="us-east-1",
                            aws_access_key_id="testing", aws_secret_access_key="testing").create_user_pool(
            PoolName="cruddur-doctor")["UserPool"]["Id"]
        acc = Account(endpoint, pool, ca, work / "build")
        site = run_playbook("playbooks/aws-site.yml", "-i", "inventories/sandbox", env=acc.env(),
                            extra_vars={"cruddur_lambda_build_dir": str(acc.build)})
        assert site.rc == 0, site.output[-3000:]
        yield acc
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def only_failure(links: dict, link: str) -> str:
    """The failing link's text, after checking every other AWS link is still reported OK."""
    assert list(links) == AWS_LINKS
    assert {name: status for name, (status, _) in links.items() if name != link} == \
        dict.fromkeys([name for name in AWS_LINKS if name != link], "OK")
    status, text = links[link]
    assert status == "FAIL", text
    return text


def test_green_on_a_converged_sandbox_and_the_same_in_check_mode(account):
    run, links = account.doctor()
    assert run.rc == 0, run.output[-3000:]
    assert {name: status for name, (status, _) in links.items()} == dict.fromkeys(AWS_LINKS, "OK")
    assert "the emulator has no database behind its RDS endpoint" in run.output
    check, check_links = account.doctor("--check")
    assert check.rc == 0 and check.changed() == 0
    assert check_links == links


def test_another_address_fails_the_rule_naming_the_one_it_admits(account):
    run, links = account.doctor(CRUDDUR_DEV_IP="198.51.100.23")
    assert run.rc != 0
    text = only_failure(links, "dev-rule")
    assert "no rule on port 5432 admits 198.51.100.23; it admits 203.0.113.10/32 instead" in text
    assert "fix: ansible-playbook -i inventories/sandbox playbooks/aws-dev-access.yml" in text


def test_a_revoked_rule_fails_the_rule(account):
    ec2 = account.client("ec2")
    (group,) = ec2.describe_security_groups(Filters=[{"Name": "group-name", "Values": ["cruddur-db-sg"]}])["SecurityGroups"]
    rule = {"IpProtocol": "tcp", "FromPort": 5432, "ToPort": 5432,
            "IpRanges": [{"CidrIp": "203.0.113.10/32", "Description": "GITPOD"}]}
    ec2.revoke_security_group_ingress(GroupId=group["GroupId"], IpPermissions=[rule])
    try:
        run, links = account.doctor()
    finally:
        ec2.authorize_security_group_ingress(GroupId=group["GroupId"], IpPermissions=[rule])
    assert run.rc != 0
    assert "no rule on port 5432 admits 203.0.113.10; it admits no address instead" in only_failure(links, "dev-rule")


def test_the_lambda_in_a_group_the_database_does_not_admit(account):
    ec2, lam = account.client("ec2"), account.client("lambda")
    config = lam.get_function(FunctionName=FUNCTION)["Configuration"]["VpcConfig"]
    vpc = ec2.describe_subnets(SubnetIds=config["SubnetIds"])["Subnets"][0]["VpcId"]
    stray = ec2.create_security_group(GroupName="cruddur-doctor-stray", Description="not admitted", VpcId=vpc)["GroupId"]
    lam.update_function_configuration(FunctionName=FUNCTION, VpcConfig={"SubnetIds": config["SubnetIds"],
                                                                        "SecurityGroupIds": [stray]})
    try:
        run, links = account.doctor()
    finally:
        lam.update_function_configuration(FunctionName=FUNCTION, VpcConfig={
            "SubnetIds": config["SubnetIds"], "SecurityGroupIds": config["SecurityGroupIds"]})
        ec2.delete_security_group(GroupId=stray)
    assert run.rc != 0
    text = only_failure(links, "lambda-network")
    assert f"the function's groups {stray} are not admitted on port 5432" in text
    assert "fix: ansible-playbook -i inventories/sandbox playbooks/aws-site.yml" in text


def test_a_role_without_network_interface_permission(account):
    iam = account.client("iam")
    iam.detach_role_policy(RoleName=ROLE, PolicyArn=VPC_POLICY)
    try:
        run, links = account.doctor()
    finally:
        iam.attach_role_policy(RoleName=ROLE, PolicyArn=VPC_POLICY)
    assert run.rc != 0
    assert f"{ROLE} may not create network interfaces" in only_failure(links, "lambda-role")


def test_a_lambda_pointing_at_an_old_database_host(account):
    lam = account.client("lambda")
    variables = lam.get_function(FunctionName=FUNCTION)["Configuration"]["Environment"]["Variables"]
    old = {**variables, "CONNECTION_URL": "postgresql://cruddur_signup@old-db.example.invalid:5432/cruddur"}
    lam.update_function_configuration(FunctionName=FUNCTION, Environment={"Variables": old})
    try:
        run, links = account.doctor()
    finally:
        lam.update_function_configuration(FunctionName=FUNCTION, Environment={"Variables": variables})
    assert run.rc != 0
    text = only_failure(links, "lambda-db-host")
    assert "CONNECTION_URL names old-db.example.invalid:5432, the instance is at cruddur-db-instance." in text


def test_a_missing_password_parameter_fails_the_credentials(account):
    ssm = account.client("ssm")
    kept = ssm.get_parameter(Name="/cruddur/db/cruddur_signup", WithDecryption=True)["Parameter"]["Value"]
    ssm.delete_parameter(Name="/cruddur/db/cruddur_signup")
    try:
        run, links = account.doctor()
    finally:
        ssm.put_parameter(Name="/cruddur/db/cruddur_signup", Value=kept, Type="SecureString")
    assert run.rc != 0
    assert "/cruddur/db/cruddur_signup, where it reads its password, does not exist" in \
        only_failure(links, "lambda-credentials")
    assert kept not in run.output


def test_a_removed_invoke_permission(account):
    lam = account.client("lambda")
    (statement,) = [s for s in json.loads(lam.get_policy(FunctionName=FUNCTION)["Policy"])["Statement"]
                    if s["Principal"].get("Service") == "cognito-idp.amazonaws.com"]
    lam.remove_permission(FunctionName=FUNCTION, StatementId=statement["Sid"])
    try:
        run, links = account.doctor()
    finally:
        lam.add_permission(FunctionName=FUNCTION, StatementId=statement["Sid"], Action="lambda:InvokeFunction",
                           Principal="cognito-idp.amazonaws.com",
                           SourceArn=statement["Condition"]["ArnLike"]["AWS:SourceArn"])
    assert run.rc != 0
    assert f"no permission lets {account.pool} invoke {FUNCTION}" in only_failure(links, "cognito-permission")


def test_a_removed_trigger(account):
    idp = account.client("cognito-idp")
    wired = idp.describe_user_pool(UserPoolId=account.pool)["UserPool"]["LambdaConfig"]
    idp.update_user_pool(UserPoolId=account.pool, LambdaConfig={k: v for k, v in wired.items() if k != "PostConfirmation"})
    try:
        run, links = account.doctor()
    finally:
        idp.update_user_pool(UserPoolId=account.pool, LambdaConfig=wired)
    assert run.rc != 0
    text = only_failure(links, "cognito-trigger")
    assert "PostConfirmation points at nothing" in text
    assert "fix: ansible-playbook -i inventories/sandbox playbooks/aws-site.yml" in text


def test_a_stopped_instance(account):
    rds = account.client("rds")
    rds.stop_db_instance(DBInstanceIdentifier="cruddur-db-instance")
    try:
        run, links = account.doctor()
    finally:
        rds.start_db_instance(DBInstanceIdentifier="cruddur-db-instance")
    assert run.rc != 0
    assert "cruddur-db-instance is stopped, not available" in only_failure(links, "instance")
