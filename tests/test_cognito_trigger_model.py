"""The Cognito trigger module keeps settings it has never heard of: the request it sends is built
from botocore's own model of UpdateUserPool. moto does not model every setting a real pool has
(AcrConfiguration, KeyConfiguration, IssuerConfiguration, DcrConfiguration...), so these tests
use botocore's Stubber with responses shaped like real DescribeUserPool answers; the Stubber
validates every request and response against the same pinned model."""

import copy
from datetime import datetime, timezone

import boto3
import pytest
from botocore.stub import Stubber

from ansible_collections.cruddur.ops.plugins.modules import cruddur_cognito_trigger as trigger_module

POOL_ID = "us-east-1_AbCdEf123"
ARN = "arn:aws:lambda:us-east-1:123456789012:function:cruddur-post-confirmation"

# A described pool with settings beyond the module's old hard-coded list, and read-only fields
# (Status, dates, SchemaAttributes, Domain...) that UpdateUserPool does not take.
DESCRIBED = {
    "Id": POOL_ID,
    "Name": "cruddur",
    "Arn": f"arn:aws:cognito-idp:us-east-1:123456789012:userpool/{POOL_ID}",
    "Status": "Enabled",
    "CreationDate": datetime(2026, 1, 1, tzinfo=timezone.utc),
    "LastModifiedDate": datetime(2026, 1, 2, tzinfo=timezone.utc),
    "Policies": {"PasswordPolicy": {"MinimumLength": 14, "RequireSymbols": True,
                                    "TemporaryPasswordValidityDays": 3},
                 "SignInPolicy": {"AllowedFirstAuthFactors": ["PASSWORD"]}},
    "DeletionProtection": "ACTIVE",
    "LambdaConfig": {"PreSignUp": "arn:aws:lambda:us-east-1:123456789012:function:pre"},
    "SchemaAttributes": [{"Name": "email", "AttributeDataType": "String", "Mutable": True, "Required": True}],
    "AutoVerifiedAttributes": ["email"],
    "UsernameAttributes": ["email"],
    "MfaConfiguration": "OFF",
    "EstimatedNumberOfUsers": 42,
    "UserPoolTags": {"app": "cruddur"},
    "Domain": "cruddur-auth",
    "AdminCreateUserConfig": {"AllowAdminCreateUserOnly": False, "UnusedAccountValidityDays": 7},
    "UserPoolTier": "ESSENTIALS",
    "AcrConfiguration": {"urn:cruddur:acr:strong": {"AcrValue": "strong"}},
    "KeyConfiguration": {"KeyType": "CUSTOMER_MANAGED_KEY",
                         "KmsKeyArn": "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"},
    "IssuerConfiguration": {"Type": "UPDATED"},
    "DcrConfiguration": {"EnableStatus": "Enabled", "OpenDcrEnabled": False, "AllowedScopes": ["openid"]},
}


@pytest.fixture
def stubbed():
    client = boto3.client("cognito-idp", region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    with Stubber(client) as stubber:
        yield client, stubber
        stubber.assert_no_pending_responses()


def test_settings_outside_any_list_are_sent_back_unchanged(stubbed):
    client, stubber = stubbed
    stubber.add_response("describe_user_pool", {"UserPool": copy.deepcopy(DESCRIBED)}, {"UserPoolId": POOL_ID})
    expected = {
        "UserPoolId": POOL_ID,
        "PoolName": "cruddur",
        "Policies": DESCRIBED["Policies"],
        "DeletionProtection": "ACTIVE",
        "LambdaConfig": {**DESCRIBED["LambdaConfig"], "PostConfirmation": ARN},
        "AutoVerifiedAttributes": ["email"],
        "MfaConfiguration": "OFF",
        "UserPoolTags": {"app": "cruddur"},
        # The deprecated field is dropped next to its successor (AWS refuses both at once).
        "AdminCreateUserConfig": {"AllowAdminCreateUserOnly": False},
        "UserPoolTier": "ESSENTIALS",
        "AcrConfiguration": DESCRIBED["AcrConfiguration"],
        "KeyConfiguration": DESCRIBED["KeyConfiguration"],
        "IssuerConfiguration": DESCRIBED["IssuerConfiguration"],
        "DcrConfiguration": DESCRIBED["DcrConfiguration"],
    }
    # The Stubber fails the call unless the request equals `expected` exactly.
    stubber.add_response("update_user_pool", {}, expected)
    changed, before, after, arn = trigger_module.set_trigger(client, POOL_ID, "PostConfirmation", ARN,
                                                             "present", check_mode=False)
    assert changed and after["PostConfirmation"] == ARN and "PostConfirmation" not in before
    assert arn == DESCRIBED["Arn"]


def test_the_request_holds_every_update_member_the_pool_described(stubbed):
    client, _ = stubbed
    input_shape = client.meta.service_model.operation_model("UpdateUserPool").input_shape
    request = trigger_module.update_request(copy.deepcopy(DESCRIBED), {"PostConfirmation": ARN}, input_shape)
    described_and_updatable = {key for key in DESCRIBED if key in input_shape.members}
    assert described_and_updatable - set(request) == set()
    assert set(request) <= set(input_shape.members)
    for read_only in ("Status", "SchemaAttributes", "EstimatedNumberOfUsers", "Domain", "Arn", "UsernameAttributes"):
        assert read_only not in request


def test_nested_members_the_update_does_not_model_are_dropped(stubbed):
    client, _ = stubbed
    input_shape = client.meta.service_model.operation_model("UpdateUserPool").input_shape
    pool = copy.deepcopy(DESCRIBED)
    pool["KeyConfiguration"]["FutureReadOnlyField"] = "x"
    request = trigger_module.update_request(pool, {}, input_shape)
    assert request["KeyConfiguration"] == DESCRIBED["KeyConfiguration"]


def test_already_set_calls_no_update(stubbed):
    client, stubber = stubbed
    pool = copy.deepcopy(DESCRIBED)
    pool["LambdaConfig"]["PostConfirmation"] = ARN
    stubber.add_response("describe_user_pool", {"UserPool": pool}, {"UserPoolId": POOL_ID})
    changed, *_ = trigger_module.set_trigger(client, POOL_ID, "PostConfirmation", ARN, "present", check_mode=False)
    assert changed is False  # and the Stubber saw no update_user_pool call


def test_check_mode_calls_no_update(stubbed):
    client, stubber = stubbed
    stubber.add_response("describe_user_pool", {"UserPool": copy.deepcopy(DESCRIBED)}, {"UserPoolId": POOL_ID})
    changed, _, after, _ = trigger_module.set_trigger(client, POOL_ID, "PostConfirmation", ARN, "present",
                                                      check_mode=True)
    assert changed and after["PostConfirmation"] == ARN
