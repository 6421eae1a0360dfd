"""The fake CNI plugin program: ADD/DEL/CHECK/VERSION (+ STATUS/GC for 1.1.0), spec 0.3.0 – 1.1.0.

It hands out addresses but creates no interface: in a sandbox without working veth/bridge/route
netlink (gVisor) that is exactly what lets the CNI stage of a pod pass (research W10/W28), while the
addresses are real allocations (stable per container id + ifname, released on DEL/GC) instead of one
hard-coded answer.

Invoked under the network's plugin name it answers as a *main* plugin (``interfaces`` + ``ips``).
Invoked under another name (an alias such as ``host-local``) whose name equals the config's
``ipam.type`` it answers as an *IPAM* plugin (``ips`` only). Every call is appended to
``<dataDir>/calls.jsonl`` as evidence that a runtime really called it.

Stdlib only (no pandas, nothing from the rest of the kit): it is started once per CNI call.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import time
from typing import IO, Any

from . import _link
from ._ipam import IpamError, Store, allocate, data_dir, key, range_sets, release

SUPPORTED = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]
LATEST = SUPPORTED[-1]
COMMANDS = ("ADD", "DEL", "CHECK", "VERSION", "STATUS", "GC")

# well-known error codes of the CNI spec
E_VERSION, E_FIELD, E_UNKNOWN_CONTAINER, E_ENV, E_IO, E_DECODE, E_CONFIG, E_TRY_LATER = 1, 2, 3, 4, 5, 6, 7, 11
E_NOT_AVAILABLE = 50
E_INTERNAL = 999  # plugin-specific (>= 100): a bug, still answered as spec error JSON

_MAX_STDIN = 1 << 20  # a network config is a few KiB; refuse megabytes before parsing them

_CONTAINER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


def _vkey(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in v.split("."))


def _mac(container_id: str, ifname: str) -> str:
    # locally administered unicast (0x0a), deterministic so CHECK and re-ADD agree
    h = hashlib.sha256(f"{container_id}/{ifname}".encode()).digest()
    return ":".join(f"{b:02x}" for b in (0x0A, *h[:5]))


def _check_ifname(name: str) -> None:
    if not name or len(name) > 15 or name in (".", "..") or any(c in name for c in "/: \t\n"):
        raise IpamError(E_ENV, f"invalid CNI_IFNAME {name!r}", "1-15 chars, no '/', ':' or whitespace")


def _result(version: str, ips: list[dict], conf: dict, iface: dict | None) -> dict:
    """The ADD/CHECK result in the shape of ``version`` (0.3.x/0.4.0 keep ``ips[].version``)."""
    legacy = _vkey(version) < (1, 0, 0)
    out_ips = []
    for ip in ips:
        d: dict[str, Any] = {"address": ip["address"]}
        if legacy:
            d["version"] = ip["version"]
        if ip.get("gateway"):
            d["gateway"] = ip["gateway"]
        if iface is not None:
            d["interface"] = 0
        out_ips.append(d)
    res: dict[str, Any] = {"cniVersion": version}
    if iface is not None:
        res["interfaces"] = [iface]
    res["ips"] = out_ips
    ipam = conf.get("ipam") if isinstance(conf.get("ipam"), dict) else {}
    routes = ipam.get("routes") or conf.get("routes")
    if routes:
        res["routes"] = routes
    dns = conf.get("dns") or ipam.get("dns")
    res["dns"] = dns if isinstance(dns, dict) else {}
    return res


def _chain(prev: dict, ours: dict) -> dict:
    """Not first in the chain: keep the previous plugins' interfaces/ips/routes, append ours."""
    out = dict(prev, cniVersion=ours["cniVersion"])
    ifaces = list(prev.get("interfaces") or [])
    for ip in ours["ips"]:
        if "interface" in ip:
            ip["interface"] = len(ifaces)
    out["interfaces"] = ifaces + ours.get("interfaces", [])
    out["ips"] = list(prev.get("ips") or []) + ours["ips"]
    if ours.get("routes"):
        out["routes"] = list(prev.get("routes") or []) + ours["routes"]
    out["dns"] = prev.get("dns") or ours["dns"]
    return out


class Plugin:
    def __init__(self, name: str, env: dict[str, str], conf: dict) -> None:
        self.name, self.env, self.conf = name, env, conf
        self.version = conf.get("cniVersion") or ""
        self.network = conf.get("name") or "default"
        ipam = conf.get("ipam") if isinstance(conf.get("ipam"), dict) else {}
        # alias invocation as the config's IPAM delegate → IPAM result shape
        self.ipam_mode = conf.get("type") != name and ipam.get("type") == name

    def need(self, var: str) -> str:
        v = self.env.get(var, "")
        if not v:
            raise IpamError(E_ENV, f"{var} is required for CNI_COMMAND={self.env.get('CNI_COMMAND')}")
        return v

    def attachment(self, netns: bool) -> tuple[str, str]:
        cid = self.need("CNI_CONTAINERID")
        if not _CONTAINER_ID.match(cid):
            raise IpamError(E_ENV, f"invalid CNI_CONTAINERID {cid!r}", "letters, digits, '_', '.', '-'")
        ifname = self.need("CNI_IFNAME")
        _check_ifname(ifname)
        if netns:
            self.need("CNI_NETNS")
        return cid, ifname

    def store(self) -> Store:
        return Store(data_dir(self.conf), self.network)

    def iface(self, cid: str, ifname: str) -> dict | None:
        if self.ipam_mode:
            return None
        d: dict[str, Any] = {"name": ifname, "mac": _mac(cid, ifname), "sandbox": self.env.get("CNI_NETNS", "")}
        if _vkey(self.version) >= (1, 1, 0) and self.conf.get("mtu"):
            d["mtu"] = int(self.conf["mtu"])
        return d

    # --- commands -------------------------------------------------------------------------
    def add(self) -> dict:
        cid, ifname = self.attachment(netns=True)
        if _link.wants_link(self.conf) and not self.ipam_mode:  # a real interface: k3snb.cni._link
            return _link.add_attachment(self, cid, ifname)
        sets = range_sets(self.conf)
        with self.store() as st:
            ips = allocate(st, sets, cid, ifname)
            st.allocations[key(cid, ifname)]["netns"] = self.env.get("CNI_NETNS", "")
            st.save()
        res = _result(self.version, ips, self.conf, self.iface(cid, ifname))
        prev = self.conf.get("prevResult")
        return _chain(prev, res) if isinstance(prev, dict) and not self.ipam_mode else res

    def delete(self) -> None:
        # DEL must succeed for unknown containers and repeated calls (idempotent); no netns needed
        cid, ifname = self.attachment(netns=False)
        if _link.wants_link(self.conf) and not self.ipam_mode:
            _link.delete_attachment(self, cid, ifname)
            return
        with self.store() as st:
            if release(st, cid, ifname):
                st.save()

    def check(self) -> None:
        if _vkey(self.version) < (0, 4, 0):
            raise IpamError(E_VERSION, f"CHECK is not defined for cniVersion {self.version} (needs >= 0.4.0)")
        cid, ifname = self.attachment(netns=True)
        prev = self.conf.get("prevResult")
        if not isinstance(prev, dict):
            raise IpamError(E_CONFIG, "CHECK needs prevResult in the network config")
        range_sets(self.conf)  # the config must still be valid
        with self.store() as st:
            have = st.allocations.get(key(cid, ifname))
        if not have:
            raise IpamError(E_UNKNOWN_CONTAINER, f"no allocation for container {cid} interface {ifname}")
        want = {ip["address"] for ip in have["ips"]}
        got = {ip.get("address") for ip in prev.get("ips") or []}
        if not want <= got:
            raise IpamError(E_CONFIG, f"prevResult addresses {sorted(got)} lack allocated {sorted(want - got)}")

    def status(self) -> None:
        if _vkey(self.version) < (1, 1, 0):
            raise IpamError(E_VERSION, f"STATUS needs cniVersion >= 1.1.0, config has {self.version}")
        sets = range_sets(self.conf)
        with self.store() as st:
            used = {ip["address"].split("/")[0] for a in st.allocations.values() for ip in a["ips"]}
        for rs in sets:
            if not any(str(ip) not in used for r in rs for ip in r):
                raise IpamError(E_NOT_AVAILABLE, f"address range {[str(r.subnet) for r in rs]} exhausted")

    def gc(self) -> None:
        if _vkey(self.version) < (1, 1, 0):
            raise IpamError(E_VERSION, f"GC needs cniVersion >= 1.1.0, config has {self.version}")
        valid = self.conf.get("cni.dev/valid-attachments")
        if valid is None:
            valid = []
        if not isinstance(valid, list):
            raise IpamError(E_CONFIG, "cni.dev/valid-attachments must be a list")
        keep = {key(a.get("containerID", ""), a.get("ifname", "")) for a in valid if isinstance(a, dict)}
        with self.store() as st:
            stale = [k for k in st.allocations if k not in keep]
            for k in stale:
                del st.allocations[k]
            if stale:
                st.save()


def _bad(path: str, want: str, value: Any) -> IpamError:
    shown = json.dumps(value)[:60] if not isinstance(value, float) or value == value else str(value)
    return IpamError(E_CONFIG, f"invalid network config: {path} must be {want}, got {shown}")


def _ips(value: Any, path: str) -> None:
    if not isinstance(value, list):
        raise _bad(path, "a list of {\"address\": CIDR} objects", value)
    for i, ip in enumerate(value):
        if not isinstance(ip, dict) or not isinstance(ip.get("address"), str):
            raise _bad(f"{path}[{i}]", "an object with a string \"address\"", ip)
        if "gateway" in ip and not isinstance(ip["gateway"], str):
            raise _bad(f"{path}[{i}].gateway", "a string", ip["gateway"])
        if "interface" in ip and (not isinstance(ip["interface"], int) or isinstance(ip["interface"], bool)):
            raise _bad(f"{path}[{i}].interface", "an integer", ip["interface"])


def _list_of_objects(value: Any, path: str) -> None:
    if not isinstance(value, list) or not all(isinstance(x, dict) for x in value):
        raise _bad(path, "a list of objects", value)


def validate_conf(conf: dict) -> None:
    """Type-check the fields the plugin reads, so bad input gets a spec error (code 7), never a crash."""
    for field in ("cniVersion", "name", "type", "dataDir"):
        if field in conf and not isinstance(conf[field], str):
            raise _bad(field, "a string", conf[field])
    if "mtu" in conf and conf["mtu"] is not None:
        mtu = conf["mtu"]
        if not isinstance(mtu, int) or isinstance(mtu, bool) or not 68 <= mtu <= 65535:
            raise _bad("mtu", "an integer from 68 to 65535", mtu)
    ipam = conf.get("ipam")
    for where, d in (("", conf), ("ipam.", ipam if isinstance(ipam, dict) else {})):
        # relative to what? the runtime's cwd is nobody's choice: state goes to an absolute folder
        if isinstance(d.get("dataDir"), str) and d["dataDir"] and not d["dataDir"].startswith("/"):
            raise _bad(f"{where}dataDir", "an absolute path", d["dataDir"])
    if ipam is not None:
        if not isinstance(ipam, dict):
            raise _bad("ipam", "an object", ipam)
        for field in ("type", "dataDir", "subnet", "gateway", "rangeStart", "rangeEnd"):
            if field in ipam and not isinstance(ipam[field], str):
                raise _bad(f"ipam.{field}", "a string", ipam[field])
        if "routes" in ipam:
            _list_of_objects(ipam["routes"], "ipam.routes")
        if "dns" in ipam and not isinstance(ipam["dns"], dict):
            raise _bad("ipam.dns", "an object", ipam["dns"])
    for field in ("subnet", "gateway", "rangeStart", "rangeEnd"):
        if field in conf and not isinstance(conf[field], str):
            raise _bad(field, "a string", conf[field])
    if "routes" in conf:
        _list_of_objects(conf["routes"], "routes")
    if "dns" in conf and not isinstance(conf["dns"], dict):
        raise _bad("dns", "an object", conf["dns"])
    prev = conf.get("prevResult")
    if prev is not None:
        if not isinstance(prev, dict):
            raise _bad("prevResult", "an object", prev)
        if "ips" in prev:
            _ips(prev["ips"], "prevResult.ips")
        for field in ("interfaces", "routes"):
            if field in prev:
                _list_of_objects(prev[field], f"prevResult.{field}")
        if "dns" in prev and not isinstance(prev["dns"], dict):
            raise _bad("prevResult.dns", "an object", prev["dns"])
    if "cni.dev/valid-attachments" in conf and conf["cni.dev/valid-attachments"] is not None:
        _list_of_objects(conf["cni.dev/valid-attachments"], "cni.dev/valid-attachments")


def _log(conf: dict, entry: dict) -> None:
    # best effort: evidence of real calls, never a reason to fail the CNI operation
    try:
        d = data_dir(conf)
        d.mkdir(parents=True, exist_ok=True)
        with open(d / "calls.jsonl", "a") as f:
            f.write(json.dumps(entry) + "\n")
    except (OSError, IpamError):
        pass


def run(name: str, env: dict[str, str], stdin: bytes) -> tuple[int, dict | None]:
    """One invocation: returns (exit code, JSON reply or None). Pure apart from the state files."""
    cmd = env.get("CNI_COMMAND", "")
    version = LATEST
    conf: dict = {}
    try:
        if cmd not in COMMANDS:
            raise IpamError(E_ENV, f"CNI_COMMAND={cmd!r} is not one of {', '.join(COMMANDS)}")
        if len(stdin or b"") > _MAX_STDIN:
            raise IpamError(E_DECODE, f"the network config on stdin is larger than {_MAX_STDIN} bytes")
        try:
            # VERSION may come with an empty stdin; every other command needs a config
            parsed = json.loads(stdin) if (stdin or b"").strip() or cmd != "VERSION" else {}
        except (ValueError, RecursionError) as e:  # RecursionError: absurdly deep nesting
            raise IpamError(E_DECODE, "cannot decode the network config on stdin as JSON",
                            str(e)[:200] or type(e).__name__) from None
        if not isinstance(parsed, dict):
            raise IpamError(E_DECODE, "the network config on stdin must be a JSON object")
        if cmd != "VERSION":
            validate_conf(parsed)
        conf = parsed
        requested = conf.get("cniVersion")
        if cmd == "VERSION":
            v = requested if requested in SUPPORTED else LATEST
            return 0, {"cniVersion": v, "supportedVersions": SUPPORTED}
        if not requested:
            raise IpamError(E_CONFIG, "network config has no cniVersion")
        if not isinstance(requested, str) or requested not in SUPPORTED:
            raise IpamError(
                E_VERSION,
                f"incompatible CNI versions; config is {requested!r}, plugin supports {SUPPORTED}",
            )
        version = requested
        p = Plugin(name, env, conf)
        reply: dict | None = None
        if cmd == "ADD":
            reply = p.add()
        elif cmd == "DEL":
            p.delete()
        elif cmd == "CHECK":
            p.check()
        elif cmd == "STATUS":
            p.status()
        else:
            p.gc()
        _log(conf, _entry(cmd, env, 0, reply))
        return 0, reply
    except IpamError as e:
        err = {"cniVersion": version, "code": e.code, "msg": e.msg}
        if e.details:
            err["details"] = e.details
        if conf:
            _log(conf, _entry(cmd, env, e.code, None))
        return 1, err
    except Exception as e:  # a bug or input nobody foresaw: still the CNI error contract, never a traceback
        msg = f"internal error: {type(e).__name__}: {e}"[:300]
        return 1, {"cniVersion": version, "code": E_INTERNAL, "msg": msg,
                   "details": "this is a k3snb bug; the config and CNI_* variables reproduce it"}


def _entry(cmd: str, env: dict[str, str], code: int, reply: dict | None) -> dict:
    return {
        "time": time.time(),
        "command": cmd,
        "container_id": env.get("CNI_CONTAINERID", ""),
        "ifname": env.get("CNI_IFNAME", ""),
        "netns": env.get("CNI_NETNS", ""),
        "code": code,
        "ips": [ip["address"] for ip in (reply or {}).get("ips", [])],
    }


def main(argv0: str | None = None, stdin: IO[bytes] | None = None, stdout: IO[str] | None = None) -> int:
    """Entry point of the installed executable: reads env + stdin, writes the JSON reply."""
    name = os.path.basename(argv0 or sys.argv[0])
    try:
        data = (stdin or sys.stdin.buffer).read(_MAX_STDIN + 1)
    except OSError as e:
        data, reply = b"", {"cniVersion": LATEST, "code": E_IO, "msg": f"cannot read stdin: {e}"}
        code = 1
    else:
        code, reply = run(name, dict(os.environ), data)
    out = stdout or sys.stdout
    if reply is not None:
        out.write(json.dumps(reply) + "\n")
        out.flush()
    return code


if __name__ == "__main__":  # pragma: no cover - the installed script calls main()
    sys.exit(main())
