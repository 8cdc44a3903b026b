#!/usr/bin/python
# Copyright: cruddur-ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Keep exactly one described ingress rule of a security group pointing at one address."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: cruddur_sg_address_rule
author: cruddur-ops contributors (@cruddur-ops)
short_description: One described ingress rule, exactly one address
description:
  - Finds the group's ingress rules for I(protocol)/I(port) whose description is
    I(description), and makes them exactly one rule for I(cidr) - an existing rule is modified in
    place (its id is kept), extra ones are revoked, a missing one is added. Rules with another
    description, port or protocol are never touched.
  - Refuses C(0.0.0.0/0), C(::/0) and any prefix wider than one address unless I(force_wide).
    A refused call changes nothing.
  - Supports check mode and diff.
options:
  group_id:
    description: The security group.
    type: str
    required: true
  cidr:
    description: The address, as C(a.b.c.d), C(a.b.c.d/32), or an IPv6 address or /128.
    type: str
    required: true
  port:
    description: TCP/UDP port of the rule.
    type: int
    default: 5432
  protocol:
    description: IP protocol.
    type: str
    default: tcp
  description:
    description: Description that identifies the rule.
    type: str
    default: GITPOD
  force_wide:
    description: Allow a prefix wider than one address.
    type: bool
    default: false
extends_documentation_fragment:
  - amazon.aws.common.modules
  - amazon.aws.region.modules
  - amazon.aws.boto3
"""

EXAMPLES = r"""
- name: Let this workspace reach the database
  cruddur_sg_address_rule:
    group_id: sg-0123456789abcdef0
    cidr: 203.0.113.7/32
"""

RETURN = r"""
cidr:
  description: The rule's address after the run.
  type: str
  returned: always
rule_id:
  description: Id of the rule (absent in check mode when it would be created).
  type: str
  returned: when it exists
"""

from ansible_collections.amazon.aws.plugins.module_utils.modules import AnsibleAWSModule

from ansible_collections.cruddur.ops.plugins.module_utils.cruddur_address import WideCidr, normalize

try:
    import botocore
except ImportError:
    pass  # AnsibleAWSModule reports a missing botocore


def rule_cidr(rule):
    return rule.get("CidrIpv4") or rule.get("CidrIpv6")


def matching_rules(rules, protocol, port, description):
    return sorted(
        (
            r for r in rules
            if not r.get("IsEgress")
            and r.get("IpProtocol") == protocol
            and r.get("FromPort") == port
            and r.get("ToPort") == port
            and r.get("Description") == description
            and rule_cidr(r)
        ),
        key=lambda r: r["SecurityGroupRuleId"],
    )


def rule_body(cidr, protocol, port, description):
    body = {"IpProtocol": protocol, "FromPort": port, "ToPort": port, "Description": description}
    body["CidrIpv6" if ":" in cidr else "CidrIpv4"] = cidr
    return body


def main():
    module = AnsibleAWSModule(
        argument_spec=dict(
            group_id=dict(type="str", required=True),
            cidr=dict(type="str", required=True),
            port=dict(type="int", default=5432),
            protocol=dict(type="str", default="tcp"),
            description=dict(type="str", default="GITPOD"),
            force_wide=dict(type="bool", default=False),
        ),
        supports_check_mode=True,
    )
    p = module.params
    try:
        cidr = normalize(p["cidr"], p["force_wide"])
    except WideCidr as exc:
        module.fail_json(msg=str(exc))

    ec2 = module.client("ec2")
    try:
        rules = ec2.describe_security_group_rules(
            Filters=[{"Name": "group-id", "Values": [p["group_id"]]}])["SecurityGroupRules"]
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
        module.fail_json_aws(exc, msg=f"cannot read the rules of security group {p['group_id']}")

    found = matching_rules(rules, p["protocol"], p["port"], p["description"])
    keep = next((r for r in found if rule_cidr(r) == cidr), None)
    if keep is None and found and (":" in cidr) == (":" in rule_cidr(found[0])):
        keep = found[0]  # modify this one in place, as the original script did
    extra = [r for r in found if r is not keep]
    before = [rule_cidr(r) for r in found]
    changed = bool(extra) or keep is None or rule_cidr(keep) != cidr
    rule_id = keep["SecurityGroupRuleId"] if keep else None

    if changed and not module.check_mode:
        body = rule_body(cidr, p["protocol"], p["port"], p["description"])
        try:
            if keep is None:
                created = ec2.authorize_security_group_ingress(GroupId=p["group_id"], IpPermissions=[{
                    "IpProtocol": p["protocol"], "FromPort": p["port"], "ToPort": p["port"],
                    **({"Ipv6Ranges": [{"CidrIpv6": cidr, "Description": p["description"]}]} if ":" in cidr
                       else {"IpRanges": [{"CidrIp": cidr, "Description": p["description"]}]}),
                }])
                rule_id = created["SecurityGroupRules"][0]["SecurityGroupRuleId"]
            elif rule_cidr(keep) != cidr:
                ec2.modify_security_group_rules(GroupId=p["group_id"], SecurityGroupRules=[
                    {"SecurityGroupRuleId": rule_id, "SecurityGroupRule": body}])
            if extra:
                ec2.revoke_security_group_ingress(
                    GroupId=p["group_id"], SecurityGroupRuleIds=[r["SecurityGroupRuleId"] for r in extra])
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
            module.fail_json_aws(exc, msg=f"cannot update security group {p['group_id']}")

    result = dict(changed=changed, cidr=cidr,
                  diff={"before": {"cidrs": before}, "after": {"cidrs": [cidr]}})
    if rule_id:
        result["rule_id"] = rule_id
    module.exit_json(**result)


if __name__ == "__main__":
    main()
