"""Link mode of the kit's CNI plugin: a real pod interface made only of operations gVisor accepts.

Enabled by ``"link": "bridge"`` in the plugin's config. What it does on ADD (each step an ``ip``
command, so the refusing netlink request shows up verbatim in the CNI error):

1. addresses from the IPAM plugin named in ``ipam.type`` (e.g. Debian's ``host-local``, found on
   ``CNI_PATH``), else from the kit's own allocator;
2. bridge ``bridge`` (default ``k3snb0``) created if missing and set up, the gateway address on it
   when ``isGateway``. Unlike the stock ``bridge`` plugin it never checks the link's *kind*: gVisor
   (2024) creates bridges but reports no ``IFLA_INFO_KIND`` back, which makes the stock plugin fail
   with ``already exists but is not a bridge`` (S29);
3. a veth pair, one end moved into ``CNI_NETNS``, renamed to ``CNI_IFNAME``, addressed, up, and a
   default route via the gateway. It never *deletes* a route: gVisor refuses ``RTM_DELROUTE``
   (``operation not supported``, what stops the stock ``ptp`` plugin, S30).

DEL removes the host end of the veth (the peer goes with it) and releases the addresses.
Stdlib only: it runs in every plugin invocation.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import json
import os
import shutil
import subprocess
from typing import Any

from ._ipam import IpamError

E_LINK = 100  # plugin-specific error code (spec: >= 100)
DEFAULT_BRIDGE = "k3snb0"


def wants_link(conf: dict) -> bool:
    return conf.get("link") == "bridge"


def _ip_bin() -> str:
    return shutil.which("ip", path="/usr/sbin:/usr/bin:/sbin:/bin") or "ip"


def _run(argv: list[str], netns: str | None = None, ok_if: tuple[str, ...] = ()) -> str:
    if netns:
        argv = [shutil.which("nsenter", path="/usr/bin:/bin:/usr/sbin:/sbin") or "nsenter", f"--net={netns}", "--",
                *argv]
    p = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if p.returncode != 0:
        err = (p.stderr or p.stdout).strip()
        if any(s in err for s in ok_if):
            return ""
        raise IpamError(E_LINK, f"{' '.join(argv[-6:] if netns else argv[1:])}: {err}",
                        "the kernel (or gVisor's netstack) refused this netlink request")
    return p.stdout


def _names(cid: str, ifname: str) -> tuple[str, str]:
    h = hashlib.sha256(f"{cid}/{ifname}".encode()).hexdigest()
    return f"k3v{h[:10]}", f"k3p{h[:10]}"


def _mac(name: str, netns: str | None = None) -> str:
    with_json = _run([_ip_bin(), "-j", "link", "show", "dev", name], netns)
    try:
        return json.loads(with_json)[0].get("address", "")
    except (ValueError, IndexError, KeyError):
        return ""


# -- IPAM ------------------------------------------------------------------------------------------
def _find_plugin(name: str, env: dict[str, str]) -> str:
    for d in (env.get("CNI_PATH") or "").split(os.pathsep):
        p = os.path.join(d, name)
        if d and os.path.isfile(p) and os.access(p, os.X_OK):
            return p
    raise IpamError(E_LINK, f"IPAM plugin {name!r} not found on CNI_PATH={env.get('CNI_PATH', '')!r}",
                    "install containernetworking-plugins or put the plugin in the CNI bin dir")


def delegate_ipam(command: str, conf: dict, env: dict[str, str]) -> dict | None:
    """Run the IPAM plugin ``conf['ipam']['type']`` (CNI delegation: same config, same env)."""
    prog = _find_plugin(conf["ipam"]["type"], env)
    p = subprocess.run([prog], input=json.dumps(conf).encode(), env={**env, "CNI_COMMAND": command},
                       capture_output=True, timeout=60)
    out = p.stdout.decode(errors="replace").strip()
    try:
        reply = json.loads(out) if out else None
    except ValueError:
        reply = {"msg": out}
    if p.returncode != 0:
        r = reply or {}
        raise IpamError(int(r.get("code") or E_LINK), f"IPAM {conf['ipam']['type']} {command}: {r.get('msg', out)}",
                        str(r.get("details", "")))
    return reply


def external_ipam(conf: dict, own_name: str) -> bool:
    ipam = conf.get("ipam") if isinstance(conf.get("ipam"), dict) else {}
    return bool(ipam.get("type")) and ipam.get("type") != own_name


# -- ADD / DEL ---------------------------------------------------------------------------------------
def add(conf: dict, env: dict[str, str], cid: str, ifname: str, ips: list[dict]) -> list[dict]:
    """Make bridge + veth + addresses + routes; returns the CNI ``interfaces`` list (pod end last)."""
    ip = _ip_bin()
    netns = env.get("CNI_NETNS", "")
    bridge = str(conf.get("bridge") or DEFAULT_BRIDGE)
    mtu = int(conf["mtu"]) if conf.get("mtu") else None
    host_if, peer = _names(cid, ifname)
    _run([ip, "link", "add", "name", bridge, "type", "bridge"], ok_if=("File exists",))
    _run([ip, "link", "set", "dev", bridge, "up"])
    if conf.get("isGateway"):
        for a in ips:
            if a.get("gateway"):
                plen = ipaddress.ip_interface(a["address"]).network.prefixlen
                _run([ip, "addr", "add", f"{a['gateway']}/{plen}", "dev", bridge], ok_if=("File exists",))
    # a leftover host end from an interrupted ADD of the same attachment: start clean
    _run([ip, "link", "del", "dev", host_if], ok_if=("Cannot find device", "does not exist"))
    extra = ["mtu", str(mtu)] if mtu else []
    _run([ip, "link", "add", "name", host_if, *extra, "type", "veth", "peer", "name", peer, *extra])
    try:
        _run([ip, "link", "set", "dev", peer, "netns", netns])
        _run([ip, "link", "set", "dev", host_if, "master", bridge])
        _run([ip, "link", "set", "dev", host_if, "up"])
        _run([ip, "link", "set", "dev", peer, "name", ifname], netns)
        for a in ips:
            _run([ip, "addr", "add", a["address"], "dev", ifname], netns, ok_if=("File exists",))
        _run([ip, "link", "set", "dev", ifname, "up"], netns)
        routes = (conf.get("ipam") or {}).get("routes") or conf.get("routes") or []
        gw4 = next((a["gateway"] for a in ips if a.get("gateway") and ":" not in a["gateway"]), None)
        for r in routes:
            dst, gw = r.get("dst"), r.get("gw") or gw4
            if dst and gw:
                _run([ip, "route", "add", dst, "via", gw, "dev", ifname], netns, ok_if=("File exists",))
        if not routes and gw4 and conf.get("isDefaultGateway", True):
            _run([ip, "route", "add", "default", "via", gw4, "dev", ifname], netns, ok_if=("File exists",))
    except BaseException:
        subprocess.run([ip, "link", "del", "dev", host_if], capture_output=True, timeout=30)
        raise
    return [{"name": bridge, "mac": _mac(bridge)}, {"name": host_if, "mac": _mac(host_if)},
            {"name": ifname, "mac": _mac(ifname, netns), "sandbox": netns}]


def delete(conf: dict, env: dict[str, str], cid: str, ifname: str) -> None:
    """Remove the host end of the attachment's veth (idempotent: a missing link is fine)."""
    host_if, _ = _names(cid, ifname)
    _run([_ip_bin(), "link", "del", "dev", host_if], ok_if=("Cannot find device", "does not exist"))


def result(version: str, ips: list[dict], interfaces: list[dict], conf: dict) -> dict[str, Any]:
    """ADD result: ``ips`` point at the pod end (the last interface)."""
    legacy = tuple(int(x) for x in version.split(".")) < (1, 0, 0)
    pod = len(interfaces) - 1
    out_ips = []
    for a in ips:
        d: dict[str, Any] = {"address": a["address"], "interface": pod}
        if legacy:
            d["version"] = a.get("version") or ("6" if ":" in a["address"] else "4")
        if a.get("gateway"):
            d["gateway"] = a["gateway"]
        out_ips.append(d)
    res: dict[str, Any] = {"cniVersion": version, "interfaces": interfaces, "ips": out_ips}
    routes = (conf.get("ipam") or {}).get("routes") or conf.get("routes")
    if routes:
        res["routes"] = routes
    res["dns"] = conf.get("dns") if isinstance(conf.get("dns"), dict) else {}
    return res


def _ips_of(reply: dict) -> list[dict]:
    return [{"address": i["address"], "gateway": i.get("gateway"),
             "version": i.get("version") or ("6" if ":" in i["address"] else "4")}
            for i in (reply or {}).get("ips", [])]


def add_attachment(plugin: Any, cid: str, ifname: str) -> dict[str, Any]:
    """ADD in link mode for ``plugin`` (a ``k3snb.cni.plugin.Plugin``): IPAM, then the links."""
    from ._ipam import allocate, key, range_sets, release

    conf, env = plugin.conf, plugin.env
    delegated = external_ipam(conf, plugin.name)
    if delegated:
        ips = _ips_of(delegate_ipam("ADD", conf, env) or {})
        if not ips:
            raise IpamError(E_LINK, f"IPAM {conf['ipam']['type']} returned no address")
    else:
        with plugin.store() as st:
            ips = allocate(st, range_sets(conf), cid, ifname)
            st.allocations[key(cid, ifname)]["netns"] = env.get("CNI_NETNS", "")
            st.save()
    try:
        ifaces = add(conf, env, cid, ifname, ips)
    except BaseException:
        # give the addresses back: a failed ADD must leave nothing allocated
        if delegated:
            with contextlib.suppress(IpamError):
                delegate_ipam("DEL", conf, env)
        else:
            with plugin.store() as st:
                if release(st, cid, ifname):
                    st.save()
        raise
    return result(plugin.version, ips, ifaces, conf)


def delete_attachment(plugin: Any, cid: str, ifname: str) -> None:
    from ._ipam import release

    delete(plugin.conf, plugin.env, cid, ifname)
    if external_ipam(plugin.conf, plugin.name):
        delegate_ipam("DEL", plugin.conf, plugin.env)
    else:
        with plugin.store() as st:
            if release(st, cid, ifname):
                st.save()
