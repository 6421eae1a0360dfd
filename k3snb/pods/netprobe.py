"""Link-level network operations inside a runner's network namespace (notebooks 20 and 23).

``link_steps(runner)`` runs, in order, what a bridge-based pod network needs — bridge, its link kind,
promiscuous mode, network namespaces, a veth pair moved into one, master, addresses, route add and delete,
and HTTP between two namespaces over the bridge — and returns one row per step with its exit status and
error text. ``cni_steps(runner)`` calls Debian's CNI plugins directly (ADD, then DEL) on a fresh network
namespace: ``bridge`` (promiscMode off and on), ``ptp``, with ``host-local``. On a runner that shares the
host's network (the Host runner) both run inside a private network namespace (``unshare --net``), so the
host's links are never touched.
"""

from __future__ import annotations

import contextlib
import json
import shlex
from typing import Any

LINK_SCRIPT = r"""
step() { name=$1; shift; out=$("$@" 2>&1); rc=$?; printf 'STEP\t%s\t%s\t%s\n' "$name" "$rc" "$(echo "$out" | tr '\n\t' '  ' | cut -c1-300)"; }
step bridge_add ip link add name k3nbr0 type bridge
step bridge_up ip link set dev k3nbr0 up
step bridge_kind sh -c 'ip -d -j link show dev k3nbr0 | grep -o "\"info_kind\":\"[a-z]*\"" || { echo no info_kind; exit 1; }'
step bridge_promisc ip link set dev k3nbr0 promisc on
step bridge_addr ip addr add 10.99.0.1/24 dev k3nbr0
step netns_add ip netns add k3nbA
ip netns add k3nbB 2>/dev/null
step veth_add ip link add name k3nbva type veth peer name k3nbvah
ip link add name k3nbvb type veth peer name k3nbvbh 2>/dev/null
step veth_to_netns ip link set dev k3nbva netns k3nbA
ip link set dev k3nbvb netns k3nbB 2>/dev/null
step veth_master ip link set dev k3nbvah master k3nbr0
ip link set dev k3nbvbh master k3nbr0 2>/dev/null; ip link set dev k3nbvah up 2>/dev/null; ip link set dev k3nbvbh up 2>/dev/null
step addr_in_netns ip -n k3nbA addr add 10.99.0.2/24 dev k3nbva
ip -n k3nbB addr add 10.99.0.3/24 dev k3nbvb 2>/dev/null
for n in A B; do ip -n k3nb$n link set lo up 2>/dev/null; ip -n k3nb$n link set dev k3nbv$(echo $n | tr AB ab) up 2>/dev/null; done
step route_add ip -n k3nbA route add default via 10.99.0.1
step route_del ip -n k3nbA route del 10.99.0.0/24
ip -n k3nbA route add 10.99.0.0/24 dev k3nbva 2>/dev/null  # put it back where the delete worked
mkdir -p /tmp/k3nb-www && echo hello-over-bridge > /tmp/k3nb-www/index.html
ip netns exec k3nbA busybox httpd -p 8080 -h /tmp/k3nb-www 2>/dev/null
sleep 1.5
step http_over_bridge ip netns exec k3nbB timeout 5 busybox wget -q -O- http://10.99.0.2:8080/index.html
ip netns exec k3nbA pkill -f 'httpd -p 8080' 2>/dev/null
ip netns del k3nbA 2>/dev/null; ip netns del k3nbB 2>/dev/null; ip link del k3nbr0 2>/dev/null; rm -rf /tmp/k3nb-www
"""


def _in_own_netns(runner: Any, script: str) -> list[str]:
    argv = ["/bin/sh", "-c", script]
    if runner.capabilities.host_network_writable:
        # a private network (and mount, for `ip netns`) namespace: nothing reaches the host's links
        argv = ["unshare", "--net", "--mount", "--propagation", "private", "/bin/sh", "-c",
                "mount -t tmpfs k3snb-netns /run/netns 2>/dev/null || mkdir -p /run/netns; ip link set lo up; "
                + script]
    return argv


def _parse(out: str) -> list[dict[str, Any]]:
    rows = []
    for line in out.splitlines():
        parts = line.split("\t")
        if len(parts) == 4 and parts[0] == "STEP":
            rows.append({"step": parts[1], "ok": parts[2] == "0", "rc": int(parts[2]), "output": parts[3].strip()})
    return rows


def link_steps(runner: Any) -> list[dict[str, Any]]:
    """One row per link operation (see the module docstring), run in the runner's network namespace."""
    res = runner.run(_in_own_netns(runner, LINK_SCRIPT), timeout=120)
    rows = _parse(res.stdout)
    for r in rows:
        r["env"] = runner.label
    return rows


def _cni_script(plugins_dir: str, state: str) -> str:
    confs = {
        "bridge": {"type": "bridge", "bridge": "k3nbcni0", "isGateway": True, "promiscMode": False},
        "bridge_promisc": {"type": "bridge", "bridge": "k3nbcni1", "isGateway": True, "promiscMode": True},
        "ptp": {"type": "ptp"},
    }
    lines = ["mkdir -p /run/netns"]
    for i, (name, plugin) in enumerate(confs.items()):
        conf = {"cniVersion": "1.0.0", "name": f"k3nb-{name}", **plugin,
                "ipam": {"type": "host-local", "ranges": [[{"subnet": f"10.9{i}.0.0/24"}]],
                         "dataDir": f"{state}/ipam", "routes": [{"dst": "0.0.0.0/0"}]}}
        env = (f"CNI_PATH={plugins_dir} CNI_CONTAINERID=k3nb{name.replace('_', '')} CNI_IFNAME=eth0 "
               f"CNI_NETNS=/run/netns/k3nb{i}")
        plugin_bin = f"{plugins_dir}/{plugin['type']}"
        lines += [
            f"ip netns add k3nb{i}",
            f"out=$(echo {shlex.quote(json.dumps(conf))} | env CNI_COMMAND=ADD {env} {plugin_bin} 2>&1); rc=$?",
            f"printf 'STEP\\t%s\\t%s\\t%s\\n' {name} $rc \"$(echo \"$out\" | tr '\\n\\t' '  ' | cut -c1-400)\"",
            f"echo {shlex.quote(json.dumps(conf))} | env CNI_COMMAND=DEL {env} {plugin_bin} >/dev/null 2>&1",
            f"ip netns del k3nb{i}",
        ]
    lines += ["ip link del k3nbcni0 2>/dev/null; ip link del k3nbcni1 2>/dev/null", f"rm -rf {state}"]
    return "\n".join(lines) + "\n"


def cni_steps(runner: Any, plugins_dir: str = "/usr/lib/cni") -> list[dict[str, Any]]:
    """ADD (then DEL) of Debian's bridge (promiscMode off / on) and ptp with host-local, each on a fresh netns."""
    res = runner.run(_in_own_netns(runner, _cni_script(plugins_dir, "/tmp/k3nb-cni-state")), timeout=120)
    rows = _parse(res.stdout)
    for r in rows:
        r["env"] = runner.label
        if not r["ok"]:
            with contextlib.suppress(ValueError):
                r["output"] = json.loads(r["output"]).get("msg", r["output"])
    return rows


PODMAN_SCRIPT = r"""
step() { name=$1; shift; out=$("$@" 2>&1); rc=$?; printf 'STEP\t%s\t%s\t%s\n' "$name" "$rc" "$(echo "$out" | tail -3 | tr '\n\t' '  ' | cut -c1-300)"; }
# podman copies images through /var/tmp (read-only in the sandbox): a tmpfs there, private to the runner
mountpoint -q /var/tmp || mount -t tmpfs k3snb-vartmp /var/tmp
B=/tmp/k3nb-podman-$$; mkdir -p $B
P="podman --runtime $RT --root $B/root --runroot $B/run --storage-driver vfs --cgroup-manager cgroupfs --events-backend file --log-level error"
step netlink_subscribe python3 -c 'import socket; s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0); s.bind((0, 1)); print("subscribed to RTMGRP_LINK")'
step info $P info --format '{{.Host.OCIRuntime.Name}} {{.Store.GraphDriverName}} {{.Host.NetworkBackend}}'
step load $P load -i "$1"
step run_none $P run --rm --network none k3snb.local/busybox:latest echo hi-none
# podman's default sysctl net.ipv4.ping_group_range (containers.conf) is refused in gVisor (N06): the same run
# with no default sysctls
printf '[containers]\ndefault_sysctls = []\n' > $B/containers.conf
step run_none_nosysctl env CONTAINERS_CONF=$B/containers.conf $P run --rm --network none k3snb.local/busybox:latest echo hi-none
step run_host $P run --rm --network host k3snb.local/busybox:latest echo hi-host
step run_bridge $P run --rm k3snb.local/busybox:latest echo hi-bridge
$P rm -af >/dev/null 2>&1; $P system reset -f >/dev/null 2>&1; ip link del cni-podman0 2>/dev/null
umount $B/root/vfs 2>/dev/null; rm -rf $B
"""


def podman_steps(runner: Any, runtime: str = "runc") -> list[dict[str, Any]]:
    """podman (Debian's, CNI network backend) in the runner: netlink link-update subscription, ``podman
    info``, loading the kit's busybox archive, ``podman run`` with network none, host and the default bridge.
    Needs cgroup mounts in gVisor (the caller applies the cgroup-v1 workaround)."""
    from .. import images

    arch = str(images.busybox().archive)
    res = runner.run(_in_own_netns(runner, PODMAN_SCRIPT.replace('"$1"', shlex.quote(arch))), timeout=300,
                     env={"RT": runtime})
    rows = _parse(res.stdout)
    for r in rows:
        r["env"] = runner.label
        r["runtime"] = runtime
    return rows
