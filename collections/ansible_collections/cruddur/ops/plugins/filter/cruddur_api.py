"""What the API role compares on the controller."""

from __future__ import annotations

import hashlib
import re


def _name(requirement: str) -> str:
    """A distribution's name as pip compares names (PEP 503), without extras or a version."""
    return re.sub(r"[-_.]+", "-", re.split(r"[\[=<>!~; ]", requirement.strip(), maxsplit=1)[0]).lower()


def cruddur_unmet_pins(pins, installed) -> list:
    """The "name==version" pins that `installed` (distribution name -> version, or None for no
    virtualenv) does not satisfy exactly; every pin when there is nothing installed."""
    if not installed:
        return list(pins)
    installed = {_name(name): version for name, version in installed.items()}
    unmet = []
    for pin in pins:
        name, _sep, version = pin.partition("==")
        if not version or installed.get(_name(name)) != version.strip():
            unmet.append(pin)
    return unmet


def cruddur_code_differs(tree, deployed, app_dir) -> list:
    """The files of `tree` (community.general.filetree entries: path, src, state) that are not on
    the target as the role deploys them: root:root, mode 0644, the same SHA-1. `deployed` lists what is
    under app_dir as ansible.builtin.find names it (path, isdir, mode, pw_name, gr_name, checksum
    as SHA-1): the role's one read of the host."""
    present = {entry["path"]: entry for entry in deployed or []}
    differs = []
    for item in tree:
        if item["state"] != "file":
            continue
        there = present.get(f"{app_dir}/{item['path']}")
        if there is not None and (there.get("isdir"), there.get("mode"), there.get("pw_name"),
                                  there.get("gr_name")) == (False, "0644", "root", "root"):
            with open(item["src"], "rb") as source:
                if hashlib.sha1(source.read()).hexdigest() == there.get("checksum"):  # noqa: S324 (find's checksum)
                    continue
        differs.append(item)
    return differs


class FilterModule:
    def filters(self):
        return {"cruddur_unmet_pins": cruddur_unmet_pins, "cruddur_code_differs": cruddur_code_differs}
