"""The developer rule's address, checked one way: by the module that writes the rule
(cruddur_sg_address_rule) and, before anything is created, by aws-site.yml's preflight (the
cruddur_cidr_problem filter loads this file)."""

from __future__ import annotations

import ipaddress


class WideCidr(ValueError):
    pass


def normalize(cidr, force_wide):
    """The CIDR as a network string; WideCidr when it is not one or covers more than one address."""
    try:
        network = ipaddress.ip_network(str(cidr).strip(), strict=True)
    except ValueError as exc:
        raise WideCidr(f"{cidr!r} is not an IP address or CIDR: {exc}") from None
    if network.num_addresses > 1 and not force_wide:
        everyone = " (every address on the internet)" if network.prefixlen == 0 else ""
        raise WideCidr(
            f"refusing {network}{everyone}: the rule must name one address "
            f"(/{network.max_prefixlen}); pass force_wide to allow a wider prefix"
        )
    return str(network)
