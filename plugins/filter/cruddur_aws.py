"""Checks of AWS-side input made on the controller before anything is created."""

from __future__ import annotations

import importlib.util
from pathlib import Path

# The one check of a rule's address lives with the modules (module_utils/cruddur_address.py);
# a filter cannot import the project's module_utils by package name, so it loads the file.
_SPEC = importlib.util.spec_from_file_location(
    "cruddur_address", Path(__file__).resolve().parents[2] / "module_utils" / "cruddur_address.py")
_ADDRESS = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(_ADDRESS)


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
