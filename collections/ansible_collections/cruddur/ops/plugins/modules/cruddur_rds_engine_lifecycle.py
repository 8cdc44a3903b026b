#!/usr/bin/python
# Copyright: cruddur-ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Keep an RDS instance's engine lifecycle support setting (RDS Extended Support) as asked."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: cruddur_rds_engine_lifecycle
author: cruddur-ops contributors (@cruddur-ops)
short_description: The engine lifecycle support setting of an RDS instance
description:
  - RDS enrols every new instance in paid Extended Support
    (C(open-source-rds-extended-support)) unless told otherwise - once the major version reaches
    the end of standard support the instance keeps running and is billed per vCPU-hour.
    C(open-source-rds-extended-support-disabled) makes RDS upgrade it instead.
  - amazon.aws.rds_instance has no option for it, so this module reads the instance and sends
    C(ModifyDBInstance) with C(EngineLifecycleSupport) only when the setting differs.
  - Supports check mode and diff.
options:
  db_instance_identifier:
    description: The instance.
    type: str
    required: true
    aliases: [id]
  engine_lifecycle_support:
    description: The setting wanted.
    type: str
    required: true
    choices: [open-source-rds-extended-support, open-source-rds-extended-support-disabled]
extends_documentation_fragment:
  - amazon.aws.common.modules
  - amazon.aws.region.modules
  - amazon.aws.boto3
"""

EXAMPLES = r"""
- name: No paid extended support
  cruddur_rds_engine_lifecycle:
    id: cruddur-db-instance
    engine_lifecycle_support: open-source-rds-extended-support-disabled
"""

RETURN = r"""
engine_lifecycle_support:
  description: The setting after the run (in check mode, the one that would be set).
  type: str
  returned: always
"""

from ansible_collections.amazon.aws.plugins.module_utils.modules import AnsibleAWSModule

try:
    import botocore
except ImportError:
    pass  # AnsibleAWSModule reports a missing botocore


def main():
    module = AnsibleAWSModule(
        argument_spec=dict(
            db_instance_identifier=dict(type="str", required=True, aliases=["id"]),
            engine_lifecycle_support=dict(type="str", required=True, choices=[
                "open-source-rds-extended-support", "open-source-rds-extended-support-disabled"]),
        ),
        supports_check_mode=True,
    )
    instance_id = module.params["db_instance_identifier"]
    wanted = module.params["engine_lifecycle_support"]
    rds = module.client("rds")
    try:
        instance = rds.describe_db_instances(DBInstanceIdentifier=instance_id)["DBInstances"][0]
    except rds.exceptions.DBInstanceNotFoundFault as exc:
        if not module.check_mode:
            module.fail_json_aws(exc, msg=f"RDS instance {instance_id} does not exist")
        # --check before the instance exists: creating it would be followed by this setting.
        instance = {}
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
        module.fail_json_aws(exc, msg=f"cannot read RDS instance {instance_id}")
    current = instance.get("EngineLifecycleSupport")
    changed = current != wanted
    if changed and not module.check_mode:
        try:
            rds.modify_db_instance(DBInstanceIdentifier=instance_id, EngineLifecycleSupport=wanted,
                                   ApplyImmediately=True)
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
            module.fail_json_aws(exc, msg=f"cannot set the engine lifecycle support of {instance_id}")
    module.exit_json(changed=changed, engine_lifecycle_support=wanted,
                     diff={"before": {"engine_lifecycle_support": current},
                           "after": {"engine_lifecycle_support": wanted}})


if __name__ == "__main__":
    main()
