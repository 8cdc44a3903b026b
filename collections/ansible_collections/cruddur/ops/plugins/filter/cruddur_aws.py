"""Checks of AWS-side input made on the controller before anything is created."""

from __future__ import annotations

# The one check of a rule's address lives with the modules (collection cruddur.ops).
from ansible_collections.cruddur.ops.plugins.module_utils import cruddur_address as _ADDRESS


def cruddur_cidr_problem(cidr, force_wide=False) -> str:
    """'' when the developer rule may name `cidr` (empty: looked up later), else why not."""
    if cidr is None or str(cidr).strip() == "":
        return ""
    try:
        _ADDRESS.normalize(cidr, bool(force_wide))
    except _ADDRESS.WideCidr as exc:
        return str(exc)
    return ""


class FilterModule:
    def filters(self):
        return {"cruddur_cidr_problem": cruddur_cidr_problem}
