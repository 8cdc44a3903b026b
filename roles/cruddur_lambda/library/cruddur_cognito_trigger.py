#!/usr/bin/python
"""Set or remove one Lambda trigger of a Cognito user pool without resetting anything else."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: cruddur_cognito_trigger
short_description: Manage one Lambda trigger of a Cognito user pool
description:
  - C(UpdateUserPool) resets every setting it is not given, so this module describes the pool,
    merges the one trigger into its C(LambdaConfig), and sends every updatable setting back as
    it was.
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

# The settings UpdateUserPool accepts; each one missing from a call is reset by AWS.
UPDATABLE = (
    "Policies",
    "DeletionProtection",
    "LambdaConfig",
    "AutoVerifiedAttributes",
    "SmsVerificationMessage",
    "EmailVerificationMessage",
    "EmailVerificationSubject",
    "VerificationMessageTemplate",
    "SmsAuthenticationMessage",
    "UserAttributeUpdateSettings",
    "MfaConfiguration",
    "DeviceConfiguration",
    "EmailConfiguration",
    "SmsConfiguration",
    "UserPoolTags",
    "AdminCreateUserConfig",
    "UserPoolAddOns",
    "AccountRecoverySetting",
    "PoolName",
    "UserPoolTier",
)


def desired_lambda_config(current, trigger, lambda_arn, state):
    wanted = dict(current)
    if state == "present":
        wanted[trigger] = lambda_arn
    else:
        wanted.pop(trigger, None)
    return wanted


def update_request(pool, lambda_config):
    """Every updatable setting of the described pool, with the new LambdaConfig."""
    request = {"UserPoolId": pool["Id"]}
    for key in UPDATABLE:
        if key in pool:
            request[key] = pool[key]
    # The deprecated UnusedAccountValidityDays is refused next to its successor,
    # PasswordPolicy.TemporaryPasswordValidityDays; send it back only when it stands alone.
    admin = request.get("AdminCreateUserConfig")
    password_policy = request.get("Policies", {}).get("PasswordPolicy", {})
    if admin and "TemporaryPasswordValidityDays" in password_policy:
        request["AdminCreateUserConfig"] = {k: v for k, v in admin.items() if k != "UnusedAccountValidityDays"}
    request["LambdaConfig"] = lambda_config
    return request


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
        pool = client.describe_user_pool(UserPoolId=pool_id)["UserPool"]
    except is_boto3_error_code("ResourceNotFoundException"):
        module.fail_json(msg=f"user pool {pool_id} does not exist")
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:  # pylint: disable=duplicate-except
        module.fail_json_aws(exc, msg=f"cannot describe user pool {pool_id}")

    current = pool.get("LambdaConfig", {})
    wanted = desired_lambda_config(current, module.params["trigger"], module.params["lambda_arn"],
                                   module.params["state"])
    changed = wanted != current
    if changed and not module.check_mode:
        try:
            client.update_user_pool(**update_request(pool, wanted))
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
            module.fail_json_aws(exc, msg=f"cannot update user pool {pool_id}")
    module.exit_json(
        changed=changed,
        lambda_config=wanted,
        user_pool_arn=pool.get("Arn", ""),
        diff={"before": {"LambdaConfig": current}, "after": {"LambdaConfig": wanted}},
    )


if __name__ == "__main__":
    main()
