"""moto's server, with its catalogue of AWS managed policies cut to the ones this project attaches.

moto builds an IAM backend for every partition (aws, aws-cn, aws-us-gov and the others) of every
account it sees, and with MOTO_IAM_LOAD_MANAGED_POLICIES each build decodes and instantiates all
of AWS's 1,500-odd managed policies. Its first lookup of an access key builds all the partitions,
and a reset (`POST /moto-api/reset`, before each AWS test) builds them again: about 1.3 s of CPU
per reset, most of what moto did in the suite.

Here moto loads only the managed policies whose ARNs the project names (roles/, collections/,
playbooks/, inventories/). A policy the project names that AWS does not have is not in moto's
catalogue either, so attaching it fails as it would on AWS. Everything else is moto as shipped.

    python bin/moto_server.py -H 127.0.0.1 -p PORT      (moto_server's own arguments)
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SOURCES = ("roles", "collections", "playbooks", "inventories")
MANAGED_ARN = re.compile(r"arn:aws:iam::aws:policy(/[\w+=,.@/-]+)")


def named_policies(repo: Path = REPO) -> set[str]:
    """The managed policies the project's code names, as 'path/name' after 'policy' in the ARN."""
    found = set()
    for top in SOURCES:
        for path in (repo / top).rglob("*"):
            if path.is_file() and path.suffix in (".yml", ".yaml", ".py", ".j2", ".json"):
                found.update(MANAGED_ARN.findall(path.read_text(errors="replace")))
    return found


def catalogue(all_policies: dict, named: set[str]) -> dict:
    """The entries of moto's catalogue (name -> policy) whose path and name the project names."""
    return {name: policy for name, policy in all_policies.items()
            if f"{policy.get('Path', '/')}{name}" in named}


def main() -> None:
    from moto.iam import models

    full = json.loads(models.aws_managed_policies_data)
    models.aws_managed_policies_data = json.dumps(catalogue(full, named_policies()))
    from moto.server import main as serve

    serve(sys.argv[1:])


if __name__ == "__main__":
    main()
