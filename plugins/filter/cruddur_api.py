"""What the API role compares on the controller."""

from __future__ import annotations

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
        name, _, version = pin.partition("==")
        if not version or installed.get(_name(name)) != version.strip():
            unmet.append(pin)
    return unmet


class FilterModule:
    def filters(self):
        return {"cruddur_unmet_pins": cruddur_unmet_pins}
