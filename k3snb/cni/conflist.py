"""Network configuration lists (``*.conflist``) that reference the kit's plugin."""

from __future__ import annotations

import ipaddress
import json
import os
import re
from pathlib import Path
from typing import Any

from ..errors import InvalidParameter
from ._ipam import DEFAULT_DATA_DIR
from .plugin import SUPPORTED

# the CNI spec's network name (libcni validates the same way): it also becomes a file name
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*")


def check_name(name: str, what: str = "network") -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name) or len(name) > 200:
        raise InvalidParameter(f"invalid {what} name {name!r}",
                               hint="letters, digits, '_', '.', '-', starting with a letter or digit (e.g. k3snb)")
    return name


def check_subnet(subnet: str) -> str:
    try:
        net = ipaddress.ip_network(subnet, strict=False)
    except (ValueError, TypeError) as e:
        raise InvalidParameter(
            f"invalid subnet {subnet!r}: {e}", hint="pass a CIDR such as 10.88.0.0/16 or fd00:88::/64"
        ) from None
    if net.num_addresses < 4:
        raise InvalidParameter(f"subnet {net} is too small", hint="use a prefix of /30 or shorter (IPv4)")
    return str(net)


def make_conflist(
    network: str = "k3snb",
    plugin: str = "k3snb",
    subnet: str = "10.88.0.0/16",
    data_dir: str | os.PathLike | None = None,
    cni_version: str = "1.0.0",
    default_route: bool = True,
    mtu: int | None = None,
) -> dict[str, Any]:
    """A conflist with one entry of type ``plugin`` allocating from ``subnet`` (``ipam.ranges`` form)."""
    check_name(network, "network")
    check_name(plugin, "plugin")
    if cni_version not in SUPPORTED:
        raise InvalidParameter(
            f"cni_version {cni_version!r} is not supported", hint=f"choose one of {', '.join(SUPPORTED)}"
        )
    net = check_subnet(subnet)
    default = "::/0" if ipaddress.ip_network(net).version == 6 else "0.0.0.0/0"
    entry: dict[str, Any] = {
        "type": plugin,
        "ipam": {
            "ranges": [[{"subnet": net}]],
            "dataDir": str(data_dir or DEFAULT_DATA_DIR),
        },
    }
    if default_route:
        entry["ipam"]["routes"] = [{"dst": default}]
    if mtu:
        entry["mtu"] = int(mtu)
    return {"cniVersion": cni_version, "name": network, "plugins": [entry]}


def write_conflist(conf_dir: str | os.PathLike, conflist: dict[str, Any], priority: int = 10) -> Path:
    """Write ``<conf_dir>/<priority>-<name>.conflist`` atomically; runtimes pick the lowest name first."""
    d = Path(conf_dir)
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"{priority:02d}-{conflist['name']}.conflist"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(conflist, indent=2) + "\n")
    os.replace(tmp, path)
    return path
