#!/usr/bin/python
# Copyright: cruddur-ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The AWS links between this machine, the post-confirmation Lambda and the RDS instance."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: cruddur_aws_doctor
author: cruddur-ops contributors (@cruddur-ops)
short_description: Diagnose the AWS side of the way to the Cruddur database, link by link
description:
  - Reads, and never changes, what the AWS APIs tell about each link and reports it as C(ok),
    C(fail) (with the cause and the command that fixes it) or C(skip) (saying why) - the RDS
    instance is available and publicly reachable as configured; a rule on the database port
    admits this machine's current address (and which addresses it admits instead); the Lambda
    runs in the database's VPC in a security group the database's group admits; its role may
    create network interfaces; its configured database host is the instance's endpoint; the
    password parameter it reads exists; Cognito may invoke it; the user pool's PostConfirmation
    trigger points at it.
  - Runs the same in check mode.
options:
  db_instance_identifier:
    description: The RDS instance.
    type: str
    required: true
  publicly_accessible:
    description: Whether the instance is meant to be reachable from the internet.
    type: bool
    default: true
  db_port:
    description: The database port, when the instance does not report one.
    type: int
    default: 5432
  address:
    description: This machine's current public address (empty when not known).
    type: str
    default: ""
  function_name:
    description: The post-confirmation function.
    type: str
    required: true
  user_pool_id:
    description: The Cognito user pool (empty when none is configured).
    type: str
    default: ""
  trigger:
    description: The pool's trigger that should point at the function.
    type: str
    default: PostConfirmation
  fixes:
    description: Link name (before any space) to the command that fixes it in this inventory.
    type: dict
    default: {}
extends_documentation_fragment:
  - amazon.aws.common.modules
  - amazon.aws.region.modules
  - amazon.aws.boto3
"""

EXAMPLES = r"""
- name: Walk every AWS link of the prod inventory
  cruddur.ops.cruddur_aws_doctor:
    region: us-east-1
    db_instance_identifier: cruddur-db-instance
    address: 203.0.113.7
    function_name: cruddur-post-confirmation
    user_pool_id: us-east-1_Example
  register: aws_links

- name: Print one line per link
  ansible.builtin.debug:
    msg: "{{ aws_links.links | map('cruddur.ops.cruddur_doctor_line') | join('\\n') }}"
"""

RETURN = r"""
links:
  description: One entry per link, in order (link, status, detail, fix).
  type: list
  elements: dict
  returned: always
failed_links:
  description: The names of the links that failed.
  type: list
  elements: str
  returned: always
"""

import ipaddress
import json
from urllib.parse import urlsplit

from ansible_collections.amazon.aws.plugins.module_utils.modules import AnsibleAWSModule

from ansible_collections.cruddur.ops.plugins.module_utils.cruddur_doctor import Report

try:
    import botocore
except ImportError:
    pass  # AnsibleAWSModule reports a missing botocore

VPC_ACCESS_POLICY = "arn:aws:iam::aws:policy/service-role/AWSLambdaVPCAccessExecutionRole"


def rules_on_port(group: dict, port: int) -> list[dict]:
    return [rule for rule in group.get("IpPermissions", [])
            if rule.get("IpProtocol") == "-1"
            or (rule.get("FromPort", 0) <= port <= rule.get("ToPort", 65535) and rule.get("IpProtocol") in ("tcp", "6"))]


def admits_address(rules: list[dict], address: str) -> tuple[bool, list[str]]:
    ip = ipaddress.ip_address(address)
    cidrs = [r["CidrIp"] for rule in rules for r in rule.get("IpRanges", [])] + \
            [r["CidrIpv6"] for rule in rules for r in rule.get("Ipv6Ranges", [])]
    return any(ip in ipaddress.ip_network(cidr, strict=False) for cidr in cidrs), cidrs


def statements(document) -> list[dict]:
    document = json.loads(document) if isinstance(document, str) else document
    found = document.get("Statement", [])
    return found if isinstance(found, list) else [found]


def allows(statement: dict, action: str) -> bool:
    actions = statement.get("Action", [])
    actions = actions if isinstance(actions, list) else [actions]
    return statement.get("Effect") == "Allow" and any(
        a == "*" or a == action or (a.endswith("*") and action.startswith(a[:-1])) for a in actions)


def outside(ec2, subnet_ids: list, instance: dict) -> list[str]:
    """The VPCs of the function's subnets other than the database's (read from the subnets: the
    function's own VpcId field is not reported alike everywhere)."""
    db_vpc = (instance.get("DBSubnetGroup") or {}).get("VpcId")
    vpcs = {subnet["VpcId"] for subnet in ec2.describe_subnets(SubnetIds=subnet_ids)["Subnets"]}
    return sorted(vpcs - {db_vpc}) if db_vpc else []


def walk(module, clients) -> Report:
    p = module.params
    report = Report(p["fixes"])
    rds, ec2, lam, iam, ssm, idp = clients
    port = p["db_port"]

    # The instance.
    try:
        instance = rds.describe_db_instances(DBInstanceIdentifier=p["db_instance_identifier"])["DBInstances"][0]
    except rds.exceptions.DBInstanceNotFoundFault:
        instance = None
        report.add("instance", "fail", f"RDS instance {p['db_instance_identifier']} does not exist")
    db_groups = []
    if instance:
        # The rules that matter are those on the port the instance listens on.
        port = (instance.get("Endpoint") or {}).get("Port") or port
        status, public = instance.get("DBInstanceStatus"), instance.get("PubliclyAccessible")
        if status != "available":
            report.add("instance", "fail", f"{p['db_instance_identifier']} is {status}, not available",
                       "wait until it is available (aws rds wait db-instance-available), or look at its events")
        elif bool(public) != p["publicly_accessible"]:
            report.add("instance", "fail", f"{p['db_instance_identifier']} is "
                       f"{'publicly accessible' if public else 'not publicly accessible'}, configured otherwise")
        else:
            endpoint = instance.get("Endpoint") or {}
            report.add("instance", "ok", f"{p['db_instance_identifier']} available at "
                       f"{endpoint.get('Address')}:{endpoint.get('Port')}"
                       f"{', publicly accessible' if public else ', private'}")
        group_ids = [g["VpcSecurityGroupId"] for g in instance.get("VpcSecurityGroups", [])]
        if group_ids:
            db_groups = ec2.describe_security_groups(GroupIds=group_ids)["SecurityGroups"]
    rules = [rule for group in db_groups for rule in rules_on_port(group, port)]

    # This machine's address.
    if not instance:
        report.add("dev-rule", "skip", "needs instance")
    elif not p["address"]:
        report.add("dev-rule", "skip", "this machine's current address is not known (set CRUDDUR_DEV_IP)")
    else:
        ok, cidrs = admits_address(rules, p["address"])
        if ok:
            report.add("dev-rule", "ok", f"a rule on port {port} admits {p['address']}")
        else:
            report.add("dev-rule", "fail", f"no rule on port {port} admits {p['address']}; it admits "
                       f"{', '.join(cidrs) or 'no address'} instead")

    # The function.
    try:
        function = lam.get_function(FunctionName=p["function_name"])["Configuration"]
    except lam.exceptions.ResourceNotFoundException:
        function = None
        report.add("lambda-network", "fail", f"function {p['function_name']} does not exist")
    if function:
        vpc = function.get("VpcConfig") or {}
        lambda_groups = vpc.get("SecurityGroupIds") or []
        admitted = {pair["GroupId"] for rule in rules for pair in rule.get("UserIdGroupPairs", [])}
        if not instance:
            report.add("lambda-network", "skip", "needs instance")
        elif not vpc.get("SubnetIds"):
            report.add("lambda-network", "fail", f"{p['function_name']} runs outside any VPC: it cannot reach the database")
        elif outside(ec2, vpc["SubnetIds"], instance):
            report.add("lambda-network", "fail", f"{p['function_name']} runs in subnets of "
                       f"{', '.join(outside(ec2, vpc['SubnetIds'], instance))}, the database in "
                       f"{instance['DBSubnetGroup']['VpcId']}")
        elif not admitted & set(lambda_groups):
            report.add("lambda-network", "fail", f"the function's groups {', '.join(lambda_groups) or '(none)'} are not "
                       f"admitted on port {port} by the database's "
                       f"{', '.join(g['GroupId'] for g in db_groups)} (it admits groups "
                       f"{', '.join(sorted(admitted)) or 'none'})")
        else:
            report.add("lambda-network", "ok", f"in {len(vpc['SubnetIds'])} subnet(s) of the database's VPC, group "
                       f"{', '.join(sorted(admitted & set(lambda_groups)))} admitted on port {port}")

        # Its role may create network interfaces.
        role_name = function["Role"].rsplit("/", 1)[-1]
        try:
            attached = [a["PolicyArn"] for a in iam.list_attached_role_policies(RoleName=role_name)["AttachedPolicies"]]
            inline = [iam.get_role_policy(RoleName=role_name, PolicyName=name)["PolicyDocument"]
                      for name in iam.list_role_policies(RoleName=role_name)["PolicyNames"]]
        except iam.exceptions.NoSuchEntityException:
            report.add("lambda-role", "fail", f"the function's role {role_name} does not exist")
        else:
            if VPC_ACCESS_POLICY in attached or any(allows(s, "ec2:CreateNetworkInterface")
                                                    for doc in inline for s in statements(doc)):
                report.add("lambda-role", "ok", f"{role_name} may create network interfaces")
            else:
                report.add("lambda-role", "fail", f"{role_name} may not create network interfaces "
                           f"(neither AWSLambdaVPCAccessExecutionRole nor an inline ec2:CreateNetworkInterface)")

        # Its configured database host, and the parameter its password comes from.
        variables = (function.get("Environment") or {}).get("Variables") or {}
        url = urlsplit(variables.get("CONNECTION_URL", ""))
        endpoint = (instance or {}).get("Endpoint") or {}
        if not instance:
            report.add("lambda-db-host", "skip", "needs instance")
        elif (url.hostname, url.port or 5432) == (endpoint.get("Address"), endpoint.get("Port")):
            report.add("lambda-db-host", "ok", f"CONNECTION_URL names {url.hostname}:{url.port or 5432}, the instance's endpoint")
        else:
            report.add("lambda-db-host", "fail", f"CONNECTION_URL names {url.hostname or '(no host)'}:{url.port or 5432}, "
                       f"the instance is at {endpoint.get('Address')}:{endpoint.get('Port')}")
        parameter = variables.get("DB_PASSWORD_PARAMETER", "")
        if not parameter:
            report.add("lambda-credentials", "fail", "the function names no DB_PASSWORD_PARAMETER")
        else:
            try:
                ssm.get_parameter(Name=parameter)  # not decrypted: that it exists is the link
                report.add("lambda-credentials", "ok", f"reads its password from {parameter} (exists), "
                           f"as {url.username or '(no user)'}")
            except ssm.exceptions.ParameterNotFound:
                report.add("lambda-credentials", "fail", f"{parameter}, where it reads its password, does not exist")
    else:
        for link in ("lambda-role", "lambda-db-host", "lambda-credentials", "cognito-permission", "cognito-trigger"):
            report.add(link, "skip", "needs lambda-network (the function)")
        return report

    # Cognito.
    if not p["user_pool_id"]:
        for link in ("cognito-permission", "cognito-trigger"):
            report.add(link, "skip", "no user pool configured (CRUDDUR_USER_POOL_ID)")
        return report
    try:
        pool = idp.describe_user_pool(UserPoolId=p["user_pool_id"])["UserPool"]
    except idp.exceptions.ResourceNotFoundException:
        report.add("cognito-permission", "skip", "needs the user pool")
        report.add("cognito-trigger", "fail", f"user pool {p['user_pool_id']} does not exist")
        return report
    try:
        policy = statements(lam.get_policy(FunctionName=p["function_name"])["Policy"])
    except lam.exceptions.ResourceNotFoundException:
        policy = []
    invokers = [s for s in policy if (s.get("Principal") or {}).get("Service") == "cognito-idp.amazonaws.com"
                and allows(s, "lambda:InvokeFunction")]
    sources = [((s.get("Condition") or {}).get("ArnLike") or {}).get("AWS:SourceArn") for s in invokers]
    if pool["Arn"] in sources:
        report.add("cognito-permission", "ok", f"Cognito may invoke it for {p['user_pool_id']}")
    else:
        report.add("cognito-permission", "fail", f"no permission lets {p['user_pool_id']} invoke "
                   f"{p['function_name']} (Cognito's call is refused)")
    wired = (pool.get("LambdaConfig") or {}).get(p["trigger"])
    if wired == function["FunctionArn"]:
        report.add("cognito-trigger", "ok", f"{p['trigger']} points at {p['function_name']}")
    else:
        report.add("cognito-trigger", "fail", f"{p['trigger']} points at {wired or 'nothing'}")
    return report


def main():
    module = AnsibleAWSModule(
        argument_spec=dict(
            db_instance_identifier=dict(type="str", required=True),
            publicly_accessible=dict(type="bool", default=True),
            db_port=dict(type="int", default=5432),
            address=dict(type="str", default=""),
            function_name=dict(type="str", required=True),
            user_pool_id=dict(type="str", default=""),
            trigger=dict(type="str", default="PostConfirmation"),
            fixes=dict(type="dict", default={}),
        ),
        supports_check_mode=True,
    )
    clients = [module.client(name) for name in ("rds", "ec2", "lambda", "iam", "ssm", "cognito-idp")]
    try:
        report = walk(module, clients)
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
        module.fail_json_aws(exc, msg="cannot read the AWS side")
    module.exit_json(**report.result())


if __name__ == "__main__":
    main()
