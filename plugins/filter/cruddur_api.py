"""What the API role compares on the controller."""

from __future__ import annotations

import re


def _name(requirement: str) -> str:
    return re.sub(r"[-_.]+", "-", re.split(r"[\[=<>!~; ]", requirement.strip(), maxsplit=1)[0]).lower()


def cruddur_unmet_pins(pins, installed) -> list:
    """The "name==version" pins that `installed` (normalised name -> version, or None for no
    virtualenv) does not satisfy exactly; every pin when there is nothing installed."""
    if not installed:
        return list(pins)
    unmet = []
    for pin in pins:
        name, _, version = pin.partition("==")
        if not version or installed.get(_name(name)) != version.strip():
            unmet.append(pin)
    return unmet


class FilterModule:
    def filters(self):
        return {"cruddur_unmet_pins": cruddur_unmet_pins}
