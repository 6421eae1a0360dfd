"""``PodRuntime``: one runner + containerd (CRI) + a CNI network + the kit's images, for pods.

Start-up is a sequence of stages (``runner``, ``cgroups``, ``network``, ``containerd``, ``images``);
the first that fails raises :class:`PodError` naming it, with the blocker signature when the
catalogue knows the error. Everything lives under one tagged session directory inside the runner's
workdir and a :class:`k3snb._state.Record` (cgroup dirs on the host), so ``stop()`` — or, after a
kill -9, ``k3snb doctor --clean`` — leaves nothing behind.

Networking (``cni=``):

* ``"bridge"``: Debian's ``bridge`` + ``host-local`` + ``loopback``. On the Host runner containerd
  runs in a private network namespace, so the bridge and veths never touch the host's network.
  In gVisor the stock ``bridge`` plugin cannot pass (the netstack reports no link kind: S29/F-N01),
  so with ``workarounds=True`` the kit's CNI plugin in link mode (k3snb.cni._link) builds the same
  bridge + veth + addresses + default route, still with ``host-local`` as IPAM; the switch is an
  event in every pod's timeline.
* ``"fake"``: the kit's fake plugin (addresses only, no interface) + ``loopback``.

crun in gVisor (``runtime="crun"``): a probe asks for what crun reads that the sandbox lacks. No
``/proc/self/setgroups`` (R05): ``crun-setgroups`` sets crun's annotation ``run.oci.keep_original_groups=0``
on every pod (containerd's ``pod_annotations`` passes it to each OCI spec), so crun calls setgroups(2)
without reading the file. No freezer cgroup (R10; crun exec reads ``freezer.state``): ``crun-freezer``
has the runtime wrapper write a fake one per container. With ``trace=True`` a failing pod gets the
refusing syscall as an ``evidence`` event (the kit's tracer around containerd).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from .._paths import need_program
from .._state import Record, new_id
from ..errors import InvalidParameter, K3snbError, MissingDependency
from ..report import Rich, render
from ..runtime.containerd import check_runtime

CNI_MODES = ("bridge", "fake", "ptp", "loopback")  # ptp/loopback: research only (notebooks 20/23/32)
CNI_BIN = "/usr/lib/cni"
PAUSE_REF = "k3snb.local/pause:latest"
# the kit's pod workarounds, each applied only where a probe (or the host layout) shows its blocker
WORKAROUNDS = ("cni-link", "pid-node", "cgroup-v1-only", "crun-setgroups", "crun-freezer")
# crun skips its read of /proc/self/setgroups when this annotation is set; "0" still calls setgroups(2)
# (what a process outside a user namespace may do: the file would read "allow" there)
KEEP_GROUPS = "run.oci.keep_original_groups"
CGROUP_CONTROLLERS = ("cpu", "cpuacct", "cpuset", "memory", "pids", "devices")  # runc needs devices


class PodError(K3snbError):
    """A pod (or its runtime) could not get past ``stage``; ``signature`` is the catalogue id if any."""

    def __init__(self, msg: str, *, hint: str | None = None, stage: str = "", signature: str | None = None,
                 **fields: Any) -> None:
        super().__init__(msg, hint=hint or "see the pod's events() and the containerd log", stage=stage,
                         signature=signature, **fields)


def classify_text(text: str) -> list[str]:
    """Failure signature ids found in ``text`` (the kit's catalogue)."""
    from ..signatures import classify

    return classify(text).ids if text.strip() else []


def _pod_containerd(runner: Any, *, runtime: str, runtime_binary: str | None, cni_bin_dir: str, cni_conf_dir: str,
                    private_netns: bool, bin_dir: Path, pod_annotations: tuple[str, ...] = (), trace: bool = False):
    """The kit's supervised containerd (k3snb.runtime.Containerd) with what pods need on top: pod netns
    mounts under its state dir, one CNI network, no unprivileged port/ICMP sysctls (S36/S40), the
    runtime wrapper (pid-node, crun-freezer) as the runtime's BinaryName, ``pod_annotations`` the runtime
    passes on (crun-setgroups), the tracer around it (``trace``), and — where the runner shares the host's
    network — its own network namespace, so the CNI bridge and veths never touch the host."""
    from ..runtime.containerd import Containerd

    class PodContainerd(Containerd):
        def config(self) -> str:
            text = super().config()
            cri = '[plugins."io.containerd.grpc.v1.cri"]\n'
            text = text.replace(cri, cri + "  netns_mounts_under_state_dir = true\n", 1)
            text = text.replace(f'    bin_dir = "{cni_bin_dir}"\n', f'    bin_dir = "{cni_bin_dir}"\n    max_conf_num = 1\n', 1)
            if pod_annotations:  # CRI copies these pod annotations into every OCI spec of the runtime
                rt = f'[{cri.strip()[1:-1]}.containerd.runtimes.{runtime}]\n      runtime_type = "io.containerd.runc.v2"\n'
                if rt not in text:
                    raise K3snbError("the containerd config changed shape; k3snb.pods cannot add pod_annotations",
                                     hint="update _pod_containerd in k3snb/pods/_runtime.py to the new config layout")
                text = text.replace(rt, rt + f"      pod_annotations = {json.dumps(list(pod_annotations))}\n", 1)
            if "netns_mounts_under_state_dir" not in text or "max_conf_num" not in text:
                # never fall back silently: pod netns mounts would land in the host's /var/run/netns
                raise K3snbError("the containerd config changed shape; k3snb.pods cannot add its CRI options",
                                 hint="update _pod_containerd in k3snb/pods/_runtime.py to the new config layout")
            return text

    c = PodContainerd(runner, runtime=runtime, cni_bin_dir=cni_bin_dir, cni_conf_dir=cni_conf_dir,
                      unprivileged_ports=False, unprivileged_icmp=False, timeout=60, trace=trace)
    if runtime_binary:
        c.runtimes[runtime] = runtime_binary
    if private_netns:
        bin_dir.mkdir(parents=True, exist_ok=True)
        w = bin_dir / "k3snb-containerd-netns"
        w.write_text("#!/bin/sh\n# k3snb.pods: containerd in its own network namespace (regenerate, do not edit)\n"
                     f"exec unshare --net /bin/sh -c 'ip link set lo up && exec \"$0\" \"$@\"' {c.binary} \"$@\"\n")
        w.chmod(0o755)
        c.binary = str(w)
    return c


def conflist(mode: str, *, subnet: str, ipam_dir: str, bridge: str, link: bool = False) -> dict[str, Any]:
    """The pod network's conflist: ``bridge`` (stock, or the kit plugin's link mode) or ``fake``."""
    ranges = [[{"subnet": subnet}]]
    if mode == "loopback":
        return {"cniVersion": "1.0.0", "name": "k3snb-pods", "plugins": [{"type": "loopback"}]}
    if mode == "ptp":
        main = {"type": "ptp", "ipMasq": False, "ipam": {"type": "host-local", "ranges": ranges, "dataDir": ipam_dir,
                                                          "routes": [{"dst": "0.0.0.0/0"}]}}
        return {"cniVersion": "1.0.0", "name": "k3snb-pods", "plugins": [main, {"type": "loopback"}]}
    if mode == "fake":
        main = {"type": "k3snb", "ipam": {"ranges": ranges, "dataDir": ipam_dir}}
    else:
        main = {"type": "k3snb" if link else "bridge", "bridge": bridge, "isGateway": True, "ipMasq": False,
                "hairpinMode": False, "promiscMode": False,
                "ipam": {"type": "host-local", "ranges": ranges, "dataDir": ipam_dir,
                         "routes": [{"dst": "0.0.0.0/0"}]}}
        if link:
            main["link"] = "bridge"
    return {"cniVersion": "1.0.0", "name": "k3snb-pods", "plugins": [main, {"type": "loopback"}]}


def _bridge_kind_probe(ip: str, name: str) -> dict[str, Any]:
    """Inside the runner: does the netstack report a new bridge's kind (IFLA_INFO_KIND)? That is
    what the stock bridge plugin checks; gVisor creates the bridge but reports no kind."""
    import subprocess

    add = subprocess.run([ip, "link", "add", "name", name, "type", "bridge"], capture_output=True, text=True)
    show = subprocess.run([ip, "-d", "-j", "link", "show", "dev", name], capture_output=True, text=True)
    subprocess.run([ip, "link", "del", "dev", name], capture_output=True, text=True)
    kind = None
    with contextlib.suppress(ValueError, IndexError, KeyError, TypeError):
        kind = json.loads(show.stdout)[0].get("linkinfo", {}).get("info_kind")
    return {"created": add.returncode == 0, "add_error": add.stderr.strip(), "link_kind": kind,
            "request": "RTM_GETLINK (ip -d link show): IFLA_LINKINFO/IFLA_INFO_KIND"}


def _pid_setns_probe() -> dict[str, Any]:
    """Inside the runner: can a process join another process's PID namespace (setns CLONE_NEWPID)?
    runc needs it for shared-PID pods (create) and for every exec into a container (runc exec)."""
    import subprocess

    holder = subprocess.Popen(["unshare", "--pid", "--fork", "sleep", "30"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE)
    child = None
    try:
        for _ in range(100):
            with contextlib.suppress(OSError):
                kids = Path(f"/proc/{holder.pid}/task/{holder.pid}/children").read_text().split()
                if kids:
                    child = int(kids[0])
                    break
            time.sleep(0.02)
        if child is None:
            return {"ok": None, "error": "no child in a new pid namespace (unshare --pid failed?)",
                    "request": "setns(fd of /proc/<pid>/ns/pid, CLONE_NEWPID)"}
        r = subprocess.run(["nsenter", "-t", str(child), "--pid", "true"], capture_output=True, text=True)
        return {"ok": r.returncode == 0, "error": r.stderr.strip(),
                "request": "setns(fd of /proc/<pid>/ns/pid, CLONE_NEWPID)"}
    finally:
        if child is not None:  # the sleep in the new pid namespace outlives a killed unshare
            with contextlib.suppress(OSError):
                os.kill(child, 9)
        holder.kill()
        holder.wait()


WRAPPER = """#!/bin/sh
# k3snb runtime wrapper (written by k3snb.pods; regenerate, do not edit). Workarounds: {what}.
# On `create` it edits the bundle (pid-node: no PID namespace, the sandbox refuses setns(CLONE_NEWPID));
# crun-freezer: a fake freezer.state per container, removed on `delete`.
HOOK={hook}
for a in "$@"; do
  case "$a" in create|delete) {python} -c "$HOOK" "$a" "$@" || exit 1; break;; esac
done
exec {real} "$@"
"""
HOOK = r"""
import json, os, shutil, sys
DROP_PID, FREEZER = {drop_pid!r}, {freezer!r}
cmd, a = sys.argv[1], sys.argv[2:]
if cmd == "create":
    b = next((a[i + 1] for i, x in enumerate(a[:-1]) if x in ("--bundle", "-b")), ".")
    p = os.path.join(b, "config.json")
    c = json.load(open(p))
    lin = c.setdefault("linux", {{}})
    ns = lin.get("namespaces", [])
    keep = [n for n in ns if n.get("type") != "pid"] if DROP_PID else ns
    if keep != ns:
        lin["namespaces"] = keep
        json.dump(c, open(p + ".k3snb", "w"))
        os.replace(p + ".k3snb", p)
    cg = (lin.get("cgroupsPath") or "").strip("/")
    if FREEZER and cg and ":" not in cg:
        d = os.path.join(FREEZER, cg)
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "freezer.state"), "w") as f:
            f.write("THAWED\n")
elif cmd == "delete" and FREEZER and a:
    for root, dirs, _ in os.walk(FREEZER):
        if a[-1] in dirs:
            shutil.rmtree(os.path.join(root, a[-1]), ignore_errors=True)
"""
# where crun looks for a v1 container's freezer state (CGROUP_ROOT "/freezer" + cgroupsPath)
FREEZER_ROOT = "/sys/fs/cgroup/freezer"


def write_runtime_wrapper(bin_dir: Path, real: str, python: str, *, drop_pid: bool = True,
                          freezer: str | None = None) -> Path:
    """The OCI runtime wrapper (containerd's ``BinaryName``) for the pid-node and crun-freezer workarounds."""
    import shlex

    bin_dir.mkdir(parents=True, exist_ok=True)
    w = bin_dir / f"k3snb-{Path(real).name}"
    what = ", ".join(n for n, on in (("pid-node", drop_pid), ("crun-freezer", freezer)) if on) or "none"
    hook = HOOK.format(drop_pid=bool(drop_pid), freezer=freezer)
    w.write_text(WRAPPER.format(what=what, hook=shlex.quote(hook), python=shlex.quote(python), real=shlex.quote(real)))
    w.chmod(0o755)
    return w


def _crun_probe() -> dict[str, Any]:
    """Inside the runner: what crun needs that a sandbox may lack — /proc/self/setgroups (crun reads it
    before setgroups(2)) and a freezer cgroup (crun exec reads the container's freezer.state)."""
    import errno
    import tempfile

    from .._system import mount, mountinfo, umount

    # v2 (cgroup.freeze) or a v1 freezer hierarchy: crun finds the state it reads
    freezer = any(m.fstype == "cgroup2" and m.mountpoint == "/sys/fs/cgroup" or m.fstype == "cgroup"
                  and "freezer" in m.super_options.split(",") for m in mountinfo())
    out: dict[str, Any] = {"setgroups_file": os.path.exists("/proc/self/setgroups"), "freezer_mounted": freezer,
                           "freezer_mount_error": None}
    if not out["freezer_mounted"]:
        d = tempfile.mkdtemp(prefix="k3snb-freezer-probe-", dir="/run")
        try:
            mount("cgroup", d, "cgroup", 0, "freezer")
            umount(d)
        except OSError as e:
            out["freezer_mount_error"] = f"mount(cgroup, -o freezer) = {errno.errorcode.get(e.errno, e.errno)}"
        finally:
            os.rmdir(d)
    out["request"] = "open(/proc/self/setgroups); mount(cgroup, -o freezer)"
    return out


class PodRuntime(Rich):
    """containerd with its CRI plugin in a runner, ready for :class:`k3snb.Pod`.

    Args:
        runner: ``"host"``, ``"gvisor"`` or a started Runner (then it is not closed by ``stop()``).
        runsc: ``"2022"``, ``"2024"`` or a path (gvisor only).
        runtime: ``"runc"`` or ``"crun"`` (through containerd's runc shim).
        cni: ``"bridge"`` (Debian's bridge + host-local + loopback) or ``"fake"`` (the kit's plugin).
        workarounds: apply the kit's workarounds for blockers it knows (recorded as events): True (all of
            ``WORKAROUNDS``), False, or a list of ids.
        subnet: the pod network (host-local range).
        trace: run containerd (and its shims, runtimes and containers) under the kit's tracer; a pod that
            fails then gets an ``evidence`` event naming the refusing syscall (:meth:`evidence`).

    Example:
        >>> with PodRuntime("host") as rt, rt.pod("pod.yaml") as p:
        ...     p.wait()
    """

    _title_text = "pod runtime"

    def __init__(self, runner: Any = "host", *, runsc: str | None = None, runtime: str = "runc",
                 cni: str = "bridge", workarounds: bool = True, subnet: str = "10.88.0.0/24",
                 timeout: float = 120.0, trace: bool = False) -> None:
        check_runtime(runtime)
        if cni not in CNI_MODES:
            raise InvalidParameter(f"unknown cni {cni!r}; valid: {', '.join(CNI_MODES)}",
                                   hint="pass cni='bridge' (Debian plugins) or cni='fake' (the kit's plugin)")
        from ..runners import resolve
        from ..runners.base import Runner

        if not isinstance(runner, Runner):
            resolve(runner, runsc=runsc)  # a bad spec or runsc build is a usage error now, before anything starts
        from ..cni.conflist import check_subnet

        self.subnet = check_subnet(subnet)
        self.runner_spec = runner
        self.runsc = runsc
        self.runtime = runtime
        self.cni = cni
        self.workarounds_enabled = self._workaround_set(workarounds)
        self.timeout = float(timeout)
        self.id = new_id("k3snb-pods-")
        self.runner: Any = None
        self._own_runner = False
        self.stages: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []  # runtime-level events (workarounds, probes)
        self.workarounds: list[dict[str, Any]] = []
        self.images: dict[str, str] = {}  # source -> ref imported
        self.pods: list[Any] = []
        self._proc = None
        self._record: Record | None = None
        self.started = False
        self.link_mode = False
        self.pid_node = False  # workaround pid-node: containers in the runner's PID namespace
        self.annotations: dict[str, str] = {}  # pod annotations every sandbox carries (crun-setgroups)
        self.fake_freezer: str | None = None  # workaround crun-freezer: the fake freezer root
        self.trace = bool(trace)
        self.trace_result: Any = None  # the tracer's Trace after stop() (trace=True); close() it when done
        self.failures: list[tuple[Any, str, str]] = []  # (pod, stage, error) for evidence after stop()
        self._cgroup_mounts: list[str] = []
        self.ctd: Any = None  # the supervised containerd (k3snb.runtime.Containerd)
        # what runs the pods, read inside the runner: {"containerd": "1.6.20~ds1", "runc": "1.1.5+ds1"}
        # (a program whose version could not be read is absent, never guessed)
        self.versions: dict[str, str] = {}
        self.cleanup: dict[str, Any] = {}

    @staticmethod
    def _workaround_set(value: Any) -> frozenset[str]:
        if value is True:
            return frozenset(WORKAROUNDS)
        if value is False or value is None:
            return frozenset()
        chosen = frozenset([value] if isinstance(value, str) else value)
        unknown = sorted(chosen - set(WORKAROUNDS))
        if unknown:
            raise InvalidParameter(f"unknown pod workaround(s) {unknown}; valid: {', '.join(WORKAROUNDS)}",
                                   hint="pass workarounds=True, False, or a list of these ids")
        return chosen

    # -- layout ------------------------------------------------------------------------------
    @property
    def session_dir(self) -> Path:
        """Host-visible (and runner-visible) dir: configs, CNI bin/conf, host-local store, pod logs."""
        return Path(self.runner.workdir) / self.id

    @property
    def base(self) -> str:
        """containerd's root/state dir (the supervised instance's, k3snb.runtime.Containerd)."""
        return self.ctd.base

    @property
    def address(self) -> str:
        return self.ctd.address

    @property
    def log_path(self) -> Path:
        return self.ctd.log_path if self.ctd is not None else self.session_dir / "containerd.log"

    @property
    def cgroup_parent(self) -> str:
        """Pods' cgroups go under the instance's parent, so its stop() ends and removes them."""
        return self.ctd.cgroup_parent

    @property
    def ipam_dir(self) -> Path:
        return self.session_dir / "ipam"

    def runner_label(self) -> str:
        from ..runners import spec_label

        if self.runner is not None:
            return self.runner.label
        return spec_label(self.runner_spec, runsc=self.runsc)

    # -- stages ------------------------------------------------------------------------------
    def _stage(self, name: str, fn, *args: Any, **kw: Any) -> Any:
        t0 = time.monotonic()
        try:
            out = fn(*args, **kw)
        except PodError as e:
            self.stages.append({"stage": name, "ok": False, "duration_s": round(time.monotonic() - t0, 3),
                                "error": e.msg, "signature": e.fields.get("signature")})
            raise
        except K3snbError as e:
            sig = next(iter(classify_text(str(e.msg))), None)
            self.stages.append({"stage": name, "ok": False, "duration_s": round(time.monotonic() - t0, 3),
                                "error": e.msg, "signature": sig})
            raise PodError(f"{name} failed: {e.msg}", stage=name, signature=sig) from e
        self.stages.append({"stage": name, "ok": True, "duration_s": round(time.monotonic() - t0, 3)})
        return out

    def event(self, kind: str, **kw: Any) -> dict[str, Any]:
        ev = {"t": time.time(), "kind": kind, **kw}
        self.events.append(ev)
        return ev

    def _used(self, wid: str, signature: str, detail: str, ok: bool = True) -> None:
        """Record a workaround the kit applied: in ``workarounds`` and, with why, on the timeline."""
        self.workarounds.append({"id": wid, "ok": ok, "because": signature})
        self.event("workaround", id=wid, signature=signature, detail=detail)

    def start(self) -> PodRuntime:
        if self.started:
            return self
        try:
            self._stage("runner", self._start_runner)
            self._record = Record(kind="pods", id=self.id, paths=[], note=str(self.session_dir)).save()
            caps = self.runner.capabilities
            if not caps.has_real_cgroups:  # gVisor: no cgroup hierarchy until the kit mounts v1 ones
                self._stage("cgroups", self._cgroups)
            elif self.runtime == "crun" and "cgroup-v1-only" in self.workarounds_enabled:
                self._stage("cgroups", self._host_v1_only)
            self._stage("probes", self._probes)
            self._stage("network", self._network)
            self._stage("containerd", self._start_containerd)
            self._stage("images", self.ensure_images, ["pause"])
            self.started = True
        except BaseException:
            self.stop()
            raise
        return self

    def _start_runner(self) -> None:
        from ..runners.base import Runner

        if isinstance(self.runner_spec, Runner):
            self.runner = self.runner_spec
            return
        from ..runners import resolve

        # gVisor: network='sandbox' (netstack on a private netns, where bridges and veths can be made)
        # and CAP_NET_RAW; the Host runner records these options as not applicable
        self.runner = resolve(self.runner_spec, runsc=self.runsc, network="sandbox", net_raw=True)
        self._own_runner = True
        self.runner.start()

    def _cgroups(self) -> None:
        from ..workarounds import _ops

        res = self.runner.run_python(_ops.cgroup_apply, "/sys/fs/cgroup", list(CGROUP_CONTROLLERS), "cgroupfs",
                                     timeout=60)
        self.workarounds.append({"id": "cgroup-v1", "ok": res.get("ok"), "mounted": res.get("mounted")})
        self._cgroup_mounts = list(res.get("mounted") or [])
        self.event("workaround", id="cgroup-v1", detail=f"cgroup v1 hierarchies mounted: {res.get('mounted')}")
        if not res.get("ok"):
            if not res.get("mounted"):
                raise PodError(f"cgroups failed: cgroup v1 mounts refused: {res.get('errors')}", stage="cgroups")
            # partial (runsc 2022 refuses devices): go on, so the furthest stage and runc's own error show
            self.event("note", detail=f"cgroup v1 controllers refused: {res.get('errors')}")

    def _host_v1_only(self) -> None:
        """crun refuses a hybrid layout (R04): hide the cgroup2 mount in the runner's private mount
        namespace only (the host keeps it)."""
        r = self.runner.run("if mountpoint -q /sys/fs/cgroup/unified; then umount -l /sys/fs/cgroup/unified && echo "
                            "hidden; fi", timeout=30)
        if "hidden" in r.stdout:
            self._used("cgroup-v1-only", "R04", "crun refuses hybrid cgroups: /sys/fs/cgroup/unified unmounted in "
                       "the runner's private mount namespace", ok=r.ok)

    def _probes(self) -> None:
        probe = self.runner.run_python(_pid_setns_probe, timeout=60)
        self.event("probe", id="pid-setns", **probe)
        if probe["ok"] is False:
            if "pid-node" in self.workarounds_enabled:
                self.pid_node = True
                self._used("pid-node", "N01",
                           "setns(CLONE_NEWPID) is refused with EINVAL (even into the caller's own PID "
                           "namespace), which breaks runc exec (ExecSync) and every container whose spec names a "
                           "PID namespace path; a wrapper around the OCI runtime drops the PID namespace from each "
                           "bundle at create, so containers share the runner's PID namespace")
            else:
                self.event("note", detail="setns into a PID namespace refused: ExecSync and shared-PID pods will fail")
        if self.runtime == "crun":
            self._crun_probes()

    def _crun_probes(self) -> None:
        probe = self.runner.run_python(_crun_probe, timeout=60)
        self.event("probe", id="crun", **probe)
        if not probe["setgroups_file"]:
            if "crun-setgroups" in self.workarounds_enabled:
                self.annotations[KEEP_GROUPS] = "0"
                self._used("crun-setgroups", "R05",
                           "the sandbox has no /proc/self/setgroups, which crun reads (open = ENOENT) before "
                           f"setgroups(2) in every container and exec; the pod annotation {KEEP_GROUPS}=0 "
                           "(passed to the OCI spec by containerd's pod_annotations) makes crun call setgroups(2) "
                           "without reading it, as it would where the file says 'allow'")
            else:
                self.event("note", detail="no /proc/self/setgroups: crun fails creating every container (R05)")
        if not probe["freezer_mounted"]:
            if "crun-freezer" in self.workarounds_enabled:
                self.fake_freezer = FREEZER_ROOT
                self._used("crun-freezer", "R10",
                           f"no freezer cgroup ({probe['freezer_mount_error'] or 'not mounted'}), but crun exec "
                           "reads the container's freezer.state (open = ENOENT) to refuse paused containers; the "
                           "runtime wrapper writes a fake freezer.state ('THAWED') per container at create, in "
                           f"{FREEZER_ROOT} on the runner's cgroup tmpfs, and removes it at delete (pause/resume "
                           "of crun containers is then not real)")
            else:
                self.event("note", detail="no freezer cgroup: ExecSync into crun containers fails (R10)")

    def _network(self) -> None:
        from ..cni import install_cni

        sd = self.session_dir
        (sd / "net.d").mkdir(parents=True, exist_ok=True)
        (sd / "logs").mkdir(exist_ok=True)
        bin_dir = sd / "cni-bin"
        install_cni(bin_dir, sd / "k3snb-net.d", names=("k3snb",), data_dir=self.ipam_dir, python=self.runner.python)
        for p in Path(CNI_BIN).iterdir() if Path(CNI_BIN).is_dir() else []:
            if not (bin_dir / p.name).exists():
                os.symlink(p, bin_dir / p.name)
        if self.cni != "fake" and not (bin_dir / "bridge").exists():
            raise MissingDependency(f"CNI plugins not found in {CNI_BIN}", hint="apt-get install containernetworking-plugins")
        bridge = f"k3nb{self.id[-8:]}"  # ≤ 15 chars, unique per session
        if self.cni == "bridge" and not self.runner.capabilities.host_network_writable:
            # (on the host the plugin runs in containerd's private netns; a probe there would touch the host)
            probe = self.runner.run_python(_bridge_kind_probe, "ip", f"k3nbprobe{self.id[-5:]}", timeout=60)
            self.event("probe", id="bridge-kind", **probe)
            if probe["created"] and not probe["link_kind"]:
                if "cni-link" in self.workarounds_enabled:
                    self.link_mode = True
                    self._used("cni-link", "S29",
                               "the netstack creates bridges but reports no link kind, so the stock bridge "
                               "plugin fails ('already exists but is not a bridge'); the kit's CNI plugin in link "
                               "mode makes the bridge, veth, addresses and default route instead (IPAM: host-local)")
                else:
                    self.event("note", detail="bridge kind not reported; stock bridge plugin expected to fail (S29)")
        conf = conflist(self.cni, subnet=self.subnet, ipam_dir=str(self.ipam_dir), bridge=bridge, link=self.link_mode)
        (sd / "net.d" / "10-k3snb-pods.conflist").write_text(json.dumps(conf, indent=1))
        self.conflist = conf

    def _start_containerd(self) -> None:
        binary = need_program("crun", "crun") if self.runtime == "crun" else None
        sd = self.session_dir
        if self.pid_node or self.fake_freezer:
            binary = str(write_runtime_wrapper(sd / "bin", binary or need_program("runc", "runc"), self.runner.python,
                                               drop_pid=self.pid_node, freezer=self.fake_freezer))
        self.ctd = _pod_containerd(self.runner, runtime=self.runtime, runtime_binary=binary,
                                   cni_bin_dir=str(sd / "cni-bin"), cni_conf_dir=str(sd / "net.d"),
                                   private_netns=self.runner.capabilities.host_network_writable, bin_dir=sd / "bin",
                                   pod_annotations=tuple(self.annotations), trace=self.trace)
        try:
            self.ctd.start()
        except K3snbError as e:
            text = self.ctd.logs(60)
            raise PodError(f"containerd failed: {e.msg[-600:]}", stage="containerd",
                           signature=next(iter(classify_text(e.msg + "\n" + text)), None)) from e
        finally:
            self._read_versions()
        self._proc = self.ctd.proc
        from . import _cri

        self.cri_version = self.runner.run_python(_cri.version, self.address, timeout=60)

    def _read_versions(self) -> None:
        """Record containerd's version (its daemon's, once it served) and the OCI runtime's (``--version`` of
        the binary containerd runs, in the runner), as :class:`k3snb.runtime.Containerd` reads them."""
        if self.ctd.version:
            self.versions["containerd"] = self.ctd.version
        with contextlib.suppress(K3snbError):  # the runner died: the version is not recorded
            if ver := self.ctd.runtime_version(self.runtime):
                self.versions[self.runtime] = ver

    def ensure_images(self, sources: list[str]) -> dict[str, str]:
        """Import the kit's images (``busybox``, ``pause`` or archive paths) into containerd's k8s.io namespace."""
        from .. import images as kimages

        for src in sources:
            if src in self.images:
                continue
            img = kimages.get_image(src)
            res = self.ctd.import_image(img)
            if not res.ok:
                text = (res.stderr or res.stdout).strip()
                last = (text.splitlines() or [""])[-1].removeprefix("ctr: ")
                raise PodError(f"images failed: ctr images import {img.ref}: {last[-400:]}", stage="images",
                               signature=next(iter(classify_text(text)), None), output=text[-2000:])
            self.images[src] = img.ref
            self.event("image", source=src, ref=img.ref, digest=img.digest)
        return self.images

    # -- use ---------------------------------------------------------------------------------
    def pod(self, manifest: Any, **kw: Any):
        """A :class:`k3snb.Pod` on this runtime (not started; use ``with`` or ``.start()``)."""
        from ._pod import Pod

        return Pod(manifest, runtime=self, **kw)

    def call(self, fn, *args: Any, timeout: float | None = None) -> Any:
        """Run one of :mod:`k3snb.pods._cri`'s functions in the runner."""
        return self.runner.run_python(fn, self.address, *args, timeout=timeout or self.timeout + 60)

    def containerd_log(self, tail: int = 50) -> str:
        if self.ctd is not None:
            return self.ctd.logs(tail)
        return getattr(self, "_final_log", "")

    def ipam_allocations(self) -> list[str]:
        """Addresses host-local holds right now (files named by IP in its store)."""
        d = self.ipam_dir / "k3snb-pods"
        return sorted(p.name for p in d.iterdir() if p.name[0].isdigit()) if d.is_dir() else []

    # -- teardown ----------------------------------------------------------------------------
    def watch(self, **kw: Any):
        """Live view of this containerd: process tree, CPU/memory sparklines, the latest classified log
        lines, refreshed every second until the cell is interrupted (a static snapshot without a front
        end). Keywords go to :func:`k3snb.monitoring.watch` (interval, duration, lines, live)."""
        from ..monitoring import watch

        return watch(self, log=kw.pop("log", self.log_path), title=kw.pop("title", f"pod runtime {self.runner.label}"), **kw)

    def stop(self) -> None:
        """Delete every pod, end containerd, its shims and containers, unmount and remove everything."""
        for p in list(self.pods):
            with contextlib.suppress(Exception):
                p.delete()
        runner_ok = self.runner is not None and self.runner.alive() if self.runner is not None else False
        with contextlib.suppress(Exception):
            self._final_log = self.containerd_log(400)
        if self.ctd is not None and (runner_ok or not self._own_runner):
            # ends containerd, shims and containers, the pods' cgroups, unmounts and removes its dirs
            with contextlib.suppress(Exception):
                self.cleanup = self.ctd.stop()
        if runner_ok and not self._own_runner:
            from ..workarounds import _ops

            if self._cgroup_mounts:  # a runner we did not make gets its cgroup layout back
                with contextlib.suppress(Exception):
                    self.runner.run_python(_ops.umount_all, self._cgroup_mounts, timeout=60)
        self._proc = None
        if self._own_runner and self.ctd is not None and self.ctd.record is not None:
            # closing the runner ends every process; the runtime's record still names host cgroups/paths
            with contextlib.suppress(Exception):
                self.ctd.stop()
        if self.trace and self.ctd is not None and self.trace_result is None:
            with contextlib.suppress(Exception):
                self.trace_result = self.ctd.trace_result()
            self._add_evidence()
        if self._own_runner and self.runner is not None:
            with contextlib.suppress(Exception):
                self.runner.close()
        elif self.runner is not None:
            with contextlib.suppress(Exception, AttributeError):
                shutil.rmtree(self.session_dir, ignore_errors=True)
        if self._record is not None:
            self._record.drop()
            self._record = None
        self.started = False

    def evidence(self, message: str, stage: str = "container_created") -> dict[str, Any] | None:
        """The refusing syscall behind ``message`` in the tracer's record (trace=True, after stop()):
        ``{"syscall", "path", "errno", "exe", ...}`` (:func:`k3snb.runtime.stages.failing_syscall`), or None."""
        if self.trace_result is None:
            return None
        from ..runtime.stages import failing_syscall

        return failing_syscall(self.trace_result, stage, message)

    def _add_evidence(self) -> None:
        for pod, stage, message in self.failures:
            sc = self.evidence(message)
            if sc:
                pod._add([{"t": time.time(), "kind": "evidence", "stage": stage,
                           **{k: sc.get(k) for k in ("syscall", "path", "errno", "exe")}}])

    def __enter__(self) -> PodRuntime:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- presentation ------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        return {"runner": self.runner_label(), "runtime": self.runtime, "cni": self.cni,
                "cni_link_mode": self.link_mode, "started": self.started, "pods": len(self.pods),
                "failed_stage": next((s["stage"] for s in self.stages if not s["ok"]), None)}

    def to_frame(self):
        import pandas as pd

        return pd.DataFrame(self.stages, columns=["stage", "ok", "duration_s", "error", "signature"])

    def _repr_html_(self) -> str:
        return render("pod runtime", self.summary(), [("stages", self.to_frame()), ("workarounds", self.workarounds)],
                      text=self._repr_text())


def _remove_cgroup_trees(paths: list[str]) -> list[str]:
    """rmdir cgroup trees deepest first (cgroupfs allows rmdir of an empty cgroup with its files)."""
    left = []
    for root in paths:
        r = Path(root)
        if not r.is_dir():
            continue
        dirs = sorted((p for p in r.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True) + [r]
        for d in dirs:
            for _ in range(20):
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.1)
        if r.exists():
            left.append(root)
    return left
