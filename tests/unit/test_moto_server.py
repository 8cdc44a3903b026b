"""bin/moto_server.py: moto's catalogue of AWS managed policies holds the ones the project names,
as AWS has them, and no others."""

import json

import moto_server
from moto.iam.aws_managed_policies import aws_managed_policies_data

VPC_ACCESS = "/service-role/AWSLambdaVPCAccessExecutionRole"


def test_the_policies_the_project_names_are_found_in_its_code():
    named = moto_server.named_policies()
    assert VPC_ACCESS in named  # the Lambda role's (roles/cruddur_lambda)
    assert all(name.startswith("/") for name in named)


def test_names_are_read_from_the_project_trees_only(tmp_path):
    (tmp_path / "roles" / "r" / "tasks").mkdir(parents=True)
    (tmp_path / "roles" / "r" / "tasks" / "main.yml").write_text(
        "managed_policies:\n  - arn:aws:iam::aws:policy/ReadOnlyAccess\n"
        "  - arn:aws:iam::123456789012:policy/not-managed\n")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "x.json").write_text('"arn:aws:iam::aws:policy/AdministratorAccess"')
    assert moto_server.named_policies(tmp_path) == {"/ReadOnlyAccess"}


def test_the_catalogue_keeps_what_is_named_and_exists_and_nothing_else():
    full = json.loads(aws_managed_policies_data)
    kept = moto_server.catalogue(full, {VPC_ACCESS, "/service-role/AWSLambdaVPCAccessExecutionRoleTypo",
                                        "/AWSLambdaVPCAccessExecutionRole"})  # a real name on the wrong path
    assert list(kept) == ["AWSLambdaVPCAccessExecutionRole"]
    assert kept["AWSLambdaVPCAccessExecutionRole"] == full["AWSLambdaVPCAccessExecutionRole"]
    assert len(full) > 1000
