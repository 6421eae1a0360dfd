"""Address allocation for the fake CNI plugin: range sets from the config, one JSON state file per
network guarded by an ``fcntl`` lock, stable per (container id, ifname).

Stdlib only: this runs inside every plugin invocation and must start fast.

Config shapes accepted (both may appear in the plugin entry itself or in its ``ipam`` object):

* simple:     ``{"subnet": "10.88.0.0/16", "gateway": "10.88.0.1", "rangeStart": ..., "rangeEnd": ...}``
* host-local: ``{"ranges": [[{"subnet": "10.88.0.0/16", "rangeStart": ..., "rangeEnd": ..., "gateway": ...}]]}``

Each *range set* (inner list) yields one address per attachment; ranges inside a set are tried in order.
Defaults follow host-local: gateway = first host, range = gateway+1 .. last host.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

DEFAULT_DATA_DIR = "/var/lib/k3snb/cni"

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddr = ipaddress.IPv4Address | ipaddress.IPv6Address


class IpamError(Exception):
    """Carries a CNI error code; the plugin turns it into spec error JSON."""

    def __init__(self, code: int, msg: str, details: str = "") -> None:
        super().__init__(msg)
        self.code, self.msg, self.details = code, msg, details


@dataclass(frozen=True)
class Range:
    subnet: IPNetwork
    start: IPAddr
    end: IPAddr
    gateway: IPAddr | None

    def __iter__(self) -> Iterator[IPAddr]:
        a = int(self.start)
        while a <= int(self.end):
            ip = ipaddress.ip_address(a)
            if ip != self.gateway:
                yield ip
            a += 1


def _addr(value: str, what: str) -> IPAddr:
    try:
        return ipaddress.ip_address(value)
    except ValueError as e:
        raise IpamError(7, f"invalid {what} {value!r}", str(e)) from None


def parse_range(d: dict) -> Range:
    if not isinstance(d, dict) or "subnet" not in d:
        raise IpamError(7, "each range needs a 'subnet' (e.g. {\"subnet\": \"10.88.0.0/16\"})")
    try:
        net = ipaddress.ip_network(d["subnet"], strict=False)
    except (ValueError, TypeError) as e:
        raise IpamError(7, f"invalid subnet {d['subnet']!r}", str(e)) from None
    if net.num_addresses < 4 and net.version == 4:
        raise IpamError(7, f"subnet {net} is too small to hold a gateway and an address")
    first_host = net.network_address + 1
    last_host = net.broadcast_address - 1 if net.version == 4 else net.broadcast_address
    gw = _addr(d["gateway"], "gateway") if d.get("gateway") else first_host
    start = _addr(d["rangeStart"], "rangeStart") if d.get("rangeStart") else first_host
    end = _addr(d["rangeEnd"], "rangeEnd") if d.get("rangeEnd") else last_host
    for ip, what in ((gw, "gateway"), (start, "rangeStart"), (end, "rangeEnd")):
        if ip not in net:
            raise IpamError(7, f"{what} {ip} is outside subnet {net}")
    if int(start) > int(end):
        raise IpamError(7, f"rangeStart {start} is after rangeEnd {end}")
    return Range(net, start, end, gw)


def range_sets(conf: dict) -> list[list[Range]]:
    """The range sets of a plugin config (the entry itself, or its ``ipam`` object)."""
    src = conf.get("ipam") if isinstance(conf.get("ipam"), dict) else {}
    for d in (src, conf):
        if d.get("ranges"):
            sets = d["ranges"]
            if not isinstance(sets, list) or not all(isinstance(s, list) and s for s in sets):
                raise IpamError(7, "'ranges' must be a list of non-empty lists of {\"subnet\": ...} objects")
            return [[parse_range(r) for r in s] for s in sets]
        if d.get("subnet"):
            return [[parse_range(d)]]
    raise IpamError(
        7,
        "no address range configured",
        'add "subnet": "10.88.0.0/16" or "ipam": {"ranges": [[{"subnet": "10.88.0.0/16"}]]}',
    )


def data_dir(conf: dict) -> Path:
    ipam = conf.get("ipam") if isinstance(conf.get("ipam"), dict) else {}
    return Path(ipam.get("dataDir") or conf.get("dataDir") or DEFAULT_DATA_DIR)


class Store:
    """The per-network state file ``<dataDir>/<network>.json``; use as a context manager (locks)."""

    def __init__(self, directory: Path, network: str) -> None:
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", network or "default")
        self.dir = Path(directory)
        self.path = self.dir / f"{safe}.json"
        self._lock_path = self.dir / f"{safe}.lock"
        self._fd: int | None = None
        self.data: dict = {}

    def __enter__(self) -> Store:
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
            fcntl.flock(self._fd, fcntl.LOCK_EX)
        except OSError as e:
            raise IpamError(5, f"cannot lock state in {self.dir}", str(e)) from None
        try:
            self.data = json.loads(self.path.read_text()) if self.path.exists() else {}
        except (OSError, ValueError) as e:
            raise IpamError(5, f"cannot read state file {self.path}", str(e)) from None
        self.data.setdefault("allocations", {})
        return self

    def save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        try:
            tmp.write_text(json.dumps(self.data, indent=1, sort_keys=True))
            os.replace(tmp, self.path)
        except OSError as e:
            raise IpamError(5, f"cannot write state file {self.path}", str(e)) from None

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    @property
    def allocations(self) -> dict[str, dict]:
        return self.data["allocations"]


def key(container_id: str, ifname: str) -> str:
    return f"{container_id}/{ifname}"


def allocate(store: Store, sets: list[list[Range]], container_id: str, ifname: str) -> list[dict]:
    """Addresses for one attachment: the stored ones if present (stable), else the lowest free ones."""
    k = key(container_id, ifname)
    have = store.allocations.get(k)
    if have and _still_valid(have["ips"], sets):
        return have["ips"]
    store.allocations.pop(k, None)  # config changed under a live attachment: allocate afresh
    used = {ip["address"].split("/")[0] for a in store.allocations.values() for ip in a["ips"]}
    ips = []
    for rs in sets:
        chosen = None
        for r in rs:
            for ip in r:
                if str(ip) not in used:
                    chosen = (ip, r)
                    break
            if chosen:
                break
        if chosen is None:
            raise IpamError(
                11,
                f"no free address in range set {[str(r.subnet) for r in rs]}",
                "release addresses (DEL/GC) or configure a larger subnet",
            )
        ip, r = chosen
        ips.append(
            {
                "address": f"{ip}/{r.subnet.prefixlen}",
                "gateway": str(r.gateway) if r.gateway else None,
                "version": str(ip.version),
            }
        )
        used.add(str(ip))
    store.allocations[k] = {"ips": ips, "container_id": container_id, "ifname": ifname, "created": time.time()}
    return ips


def _still_valid(ips: list[dict], sets: list[list[Range]]) -> bool:
    if len(ips) != len(sets):
        return False
    for ip, rs in zip(ips, sets, strict=True):
        addr = ipaddress.ip_interface(ip["address"]).ip
        if not any(int(r.start) <= int(addr) <= int(r.end) and addr in r.subnet for r in rs):
            return False
    return True


def release(store: Store, container_id: str, ifname: str) -> bool:
    return store.allocations.pop(key(container_id, ifname), None) is not None
