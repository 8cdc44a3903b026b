#!/usr/bin/python
# Copyright: cruddur-ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Set or remove one Lambda trigger of a Cognito user pool without resetting anything else."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: cruddur_cognito_trigger
author: cruddur-ops contributors (@cruddur-ops)
short_description: Manage one Lambda trigger of a Cognito user pool
description:
  - C(UpdateUserPool) resets every setting it is not given, so this module describes the pool,
    merges the one trigger into its C(LambdaConfig), and sends back every described setting that
    botocore's model of C(UpdateUserPool) accepts, as it was (settings added to Cognito after this
    module was written included).
  - Changes nothing (and calls no update) when the trigger already points at I(lambda_arn).
  - Supports check mode and diff (the pool's LambdaConfig before and after).
options:
  user_pool_id:
    description: The user pool.
    type: str
    required: true
  trigger:
    description: LambdaConfig key of the trigger.
    type: str
    default: PostConfirmation
  lambda_arn:
    description: ARN of the function; required with I(state=present).
    type: str
  state:
    description: C(present) sets the trigger, C(absent) removes it.
    type: str
    choices: [present, absent]
    default: present
extends_documentation_fragment:
  - amazon.aws.common.modules
  - amazon.aws.region.modules
  - amazon.aws.boto3
"""

EXAMPLES = r"""
- name: Send confirmed sign-ups to the Lambda
  cruddur_cognito_trigger:
    user_pool_id: us-east-1_Example
    lambda_arn: "{{ function.configuration.function_arn }}"
"""

RETURN = r"""
lambda_config:
  description: The pool's LambdaConfig after the run (or as it would be, in check mode).
  type: dict
  returned: always
user_pool_arn:
  description: ARN of the pool.
  type: str
  returned: always
"""

from ansible_collections.amazon.aws.plugins.module_utils.botocore import is_boto3_error_code
from ansible_collections.amazon.aws.plugins.module_utils.modules import AnsibleAWSModule

try:
    import botocore
except ImportError:
    pass  # AnsibleAWSModule reports a missing botocore


def model_filter(value, shape):
    """`value` reduced to what `shape` (a botocore shape) models: structure members the shape
    lacks are dropped, recursively through lists and maps; scalars are kept as they are."""
    if shape.type_name == "structure" and isinstance(value, dict):
        return {key: model_filter(item, shape.members[key]) for key, item in value.items() if key in shape.members}
    if shape.type_name == "list" and isinstance(value, list):
        return [model_filter(item, shape.member) for item in value]
    if shape.type_name == "map" and isinstance(value, dict):
        return {key: model_filter(item, shape.value) for key, item in value.items()}
    return value


def desired_lambda_config(current, trigger, lambda_arn, state):
    wanted = dict(current)
    if state == "present":
        wanted[trigger] = lambda_arn
    else:
        wanted.pop(trigger, None)
    return wanted


def update_request(pool, lambda_config, input_shape):
    """Every setting of the described pool that UpdateUserPool accepts (read from botocore's own
    model of the call, so a setting this module has never heard of is sent back, not reset),
    with the new LambdaConfig."""
    request = model_filter(pool, input_shape)
    request["UserPoolId"] = pool["Id"]
    # DescribeUserPool calls the name Name; UpdateUserPool calls it PoolName.
    if "PoolName" in input_shape.members and "Name" in pool:
        request["PoolName"] = pool["Name"]
    # The deprecated UnusedAccountValidityDays is refused next to its successor,
    # PasswordPolicy.TemporaryPasswordValidityDays; send it back only when it stands alone.
    admin = request.get("AdminCreateUserConfig")
    password_policy = request.get("Policies", {}).get("PasswordPolicy", {})
    if admin and "TemporaryPasswordValidityDays" in password_policy:
        request["AdminCreateUserConfig"] = {k: v for k, v in admin.items() if k != "UnusedAccountValidityDays"}
    request["LambdaConfig"] = lambda_config
    return request


def set_trigger(client, pool_id, trigger, lambda_arn, state, check_mode):
    """Describe the pool, merge the trigger, update when it differs. Returns (changed, before,
    after, pool ARN). Raises botocore errors as they come."""
    pool = client.describe_user_pool(UserPoolId=pool_id)["UserPool"]
    current = pool.get("LambdaConfig", {})
    wanted = desired_lambda_config(current, trigger, lambda_arn, state)
    changed = wanted != current
    if changed and not check_mode:
        input_shape = client.meta.service_model.operation_model("UpdateUserPool").input_shape
        client.update_user_pool(**update_request(pool, wanted, input_shape))
    return changed, current, wanted, pool.get("Arn", "")


def main():
    module = AnsibleAWSModule(
        argument_spec=dict(
            user_pool_id=dict(type="str", required=True),
            trigger=dict(type="str", default="PostConfirmation"),
            lambda_arn=dict(type="str"),
            state=dict(type="str", choices=["present", "absent"], default="present"),
        ),
        required_if=[("state", "present", ["lambda_arn"])],
        supports_check_mode=True,
    )
    client = module.client("cognito-idp")
    pool_id = module.params["user_pool_id"]
    try:
        changed, current, wanted, arn = set_trigger(
            client, pool_id, module.params["trigger"], module.params["lambda_arn"], module.params["state"],
            module.check_mode)
    except is_boto3_error_code("ResourceNotFoundException"):
        module.fail_json(msg=f"user pool {pool_id} does not exist")
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:  # pylint: disable=duplicate-except
        module.fail_json_aws(exc, msg=f"cannot read or update user pool {pool_id}")
    module.exit_json(
        changed=changed,
        lambda_config=wanted,
        user_pool_arn=arn,
        diff={"before": {"LambdaConfig": current}, "after": {"LambdaConfig": wanted}},
    )


if __name__ == "__main__":
    main()
