"""k3snb.pods against real containerd 1.6, runc, crun and Debian's CNI plugins, on the Host runner
and in gVisor (2024 runs pods with the kit's workarounds; 2022 stops at a recorded stage)."""

from __future__ import annotations

import ipaddress
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from helpers import host_version, procs_with

import k3snb
from k3snb.errors import UsageError
from k3snb.pods import Pod, PodError, PodRuntime, parse_manifest
from k3snb.pods._pod import _cri_log_lines

TWO = {
    "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "two"},
    "spec": {"restartPolicy": "Never", "containers": [
        {"name": "web", "image": "busybox",
         "command": ["sh", "-c", "echo web-up; mkdir -p /www; echo hello-from-web > /www/index.html; "
                     "exec httpd -f -p 8080 -h /www"]},
        {"name": "side", "image": "docker.io/library/busybox:latest", "command": ["sh", "-c"],
         "args": ["echo side says $GREETING in $(pwd); sleep 60"], "env": [{"name": "GREETING", "value": "hi"}],
         "workingDir": "/tmp"},
    ]},
}
CLIENT = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "client"},
          "spec": {"containers": [{"name": "c", "image": "busybox", "command": ["sleep", "60"]}]}}


def leftovers(tag: str) -> list[str]:
    """What of one run (identified by its unique tag) still exists on the host."""
    out = [f"pid {p}" for p in procs_with(tag) if p != os.getpid()]
    out += [f"mount {line.split()[4]}" for line in Path("/proc/self/mountinfo").read_text().splitlines() if tag in line]
    out += [f"cgroup {d}" for d in Path("/sys/fs/cgroup").glob(f"*/{tag}*")]
    # the session dir (configs, pod logs, host-local's address store) inside the runner's workdir
    out += [f"path {p}" for p in Path(os.environ["K3SNB_TMP"]).glob(f"*/{tag}")]
    out += [f"path {p}" for p in Path(os.environ["K3SNB_TMP"]).glob(f"*/work/{tag}")]
    return out


def k3snb_cli(*args: str, timeout: float = 300, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "k3snb", *args], capture_output=True, text=True, timeout=timeout,
                          **kw)


# -- manifests: bad input is one clear error, nothing started -----------------------------------
@pytest.mark.parametrize("text,needle", [
    ("apiVersion: v1\nkind: Pod\nmetadata: {name: x}\nspec: {containers: [{name: a, image: busybox}\n",
     "not valid YAML"),
    ("apiVersion: v1\nkind: Pod\nmetadata: {name: x}\nspec: {containers: [{name: a, image: busybox, command: echo}]}\n",
     "spec.containers[0].command: expected list"),
    ("apiVersion: v1\nkind: Pod\nmetadata: {name: x}\nspec: {containers: [{name: a, image: busybox, bogus: 1}]}\n",
     "spec.containers[0].bogus: unknown field"),
    ("apiVersion: v1\nkind: Pod\nmetadata: {name: x}\nspec:\n  containers:\n  - {name: a, image: busybox}\n"
     "  - {name: a, image: busybox}\n", "duplicate container name 'a'"),
    ("apiVersion: v1\nkind: Pod\nmetadata: {name: x}\nspec: {containers: [{name: a, image: nginx:1.25}]}\n",
     "cannot provide image 'nginx:1.25'"),
    ("apiVersion: v1\nkind: Pod\nmetadata: {name: x}\nspec: {restartPolicy: Sometimes, containers: [{name: a, "
     "image: busybox}]}\n", "spec.restartPolicy"),
])
def test_bad_manifest_exits_2_and_starts_nothing(tmp_path: Path, text: str, needle: str) -> None:
    f = tmp_path / "pod.yaml"
    f.write_text(text)
    before = set(Path(os.environ["K3SNB_TMP"]).iterdir())
    with pytest.raises(UsageError) as ei:
        parse_manifest(f)
    assert needle in str(ei.value)
    r = k3snb_cli("pod", "run", str(f), timeout=60)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert lines[0].startswith("error: ") and needle in lines[0] and lines[1].lstrip().startswith("fix: ")
    if "image" in needle:
        assert "busybox or pause" in r.stderr  # names what the kit can provide
    assert set(Path(os.environ["K3SNB_TMP"]).iterdir()) == before  # no runner dir was made


def test_unknown_runtime_is_one_usage_error_naming_the_valid_ones() -> None:
    # the pods take containerd's own runtime check (k3snb.runtime.containerd.check_runtime), not a copy of it
    before = set(Path(os.environ["K3SNB_TMP"]).iterdir())
    with pytest.raises(UsageError) as ei:
        PodRuntime("host", runtime="youki")
    assert "unknown runtime 'youki'" in str(ei.value) and "runc, crun" in str(ei.value)
    assert "crun" in ei.value.hint
    assert set(Path(os.environ["K3SNB_TMP"]).iterdir()) == before


def test_manifest_from_v1pod_dict_and_file_agree(tmp_path: Path) -> None:
    from kubernetes import client

    pod = client.V1Pod(api_version="v1", kind="Pod", metadata=client.V1ObjectMeta(name="two"),
                       spec=client.V1PodSpec(restart_policy="Never", containers=[
                           client.V1Container(name="web", image="busybox", command=["sh"], args=["-c", "true"],
                                              env=[client.V1EnvVar(name="A", value="1")], working_dir="/tmp")]))
    s = parse_manifest(pod)
    assert s.restart_policy == "Never" and s.containers[0].env == {"A": "1"}
    assert s.containers[0].working_dir == "/tmp" and s.containers[0].image_source == "busybox"
    import yaml

    f = tmp_path / "p.yaml"
    f.write_text(yaml.safe_dump(TWO))
    assert parse_manifest(f) == parse_manifest(TWO)
    assert parse_manifest(TWO).containers[1].image_source == "busybox"


def test_cri_log_format_partial_lines_are_joined() -> None:
    text = ("2026-01-01T00:00:00.1Z stdout P hel\n2026-01-01T00:00:00.2Z stdout F lo\n"
            "2026-01-01T00:00:00.3Z stderr F oops\n")
    assert _cri_log_lines(text) == [("stdout", "hello"), ("stderr", "oops")]


# -- real pods ------------------------------------------------------------------------------------
def _two_pods_exercise(rt: PodRuntime) -> dict:
    """The issue's 'done when' list on one runtime: returns evidence for the caller's asserts."""
    with rt.pod(TWO) as p:
        st = p.wait(until="running", timeout=60)
        assert st["phase"] == "Running", st
        deadline = time.monotonic() + 20
        while not (p.logs("web") and p.logs("side")) and time.monotonic() < deadline:
            time.sleep(0.3)
        ev = {"logs": (p.logs("web"), p.logs("side")), "ip": p.ip, "alloc": rt.ipam_allocations()}
        ev["exec"] = p.exec("side", "echo out; echo err >&2; exit 4")
        with rt.pod(CLIENT) as q:
            q.wait(until="running", timeout=60)
            ev["q_ip"] = q.ip
            ev["wget"] = q.exec("c", ["wget", "-q", "-O-", f"http://{p.ip}:8080/index.html"])
    ev["events"] = p.events()  # after delete: the timeline holds the stop/remove calls too
    ev["frame_cols"] = set(p.to_frame().columns)
    ev["html"] = p._repr_html_()
    ev["alloc_after"] = rt.ipam_allocations()
    return ev


def _check_two_pods(ev: dict, subnet: str) -> None:
    assert ev["logs"] == ("web-up\n", "side says hi in /tmp\n")
    assert ipaddress.ip_address(ev["ip"]) in ipaddress.ip_network(subnet)
    assert ev["ip"] in ev["alloc"]  # the address is host-local's allocation
    assert ev["exec"]["stdout"] == "out\n" and ev["exec"]["stderr"] == "err\n" and ev["exec"]["exit_code"] == 4
    assert ev["q_ip"] != ev["ip"]
    assert ev["wget"]["exit_code"] == 0 and ev["wget"]["stdout"] == "hello-from-web\n"
    calls = [e.get("call") for e in ev["events"] if e["kind"] == "cri"]
    for c in ("RunPodSandbox", "CreateContainer", "StartContainer", "ExecSync", "StopPodSandbox", "RemovePodSandbox"):
        assert c in calls
    assert {"kind", "call", "t_s"} <= ev["frame_cols"] and "two" in ev["html"]
    assert ev["alloc_after"] == []  # both pods deleted: host-local released every address


@pytest.mark.root
@pytest.mark.slow
def test_host_two_container_pod_logs_exec_ip_and_second_pod() -> None:
    with PodRuntime("host") as rt:
        tags = [rt.id, rt.ctd.id]  # the pods session and its supervised containerd
        ev = _two_pods_exercise(rt)
        assert rt.conflist["plugins"][0]["type"] == "bridge"  # Debian's plugin, untouched
    _check_two_pods(ev, rt.subnet)
    assert leftovers(tags[0]) == [] and leftovers(tags[1]) == []


@pytest.mark.root
@pytest.mark.runsc2024
@pytest.mark.slow
def test_gvisor_2024_two_container_pod_with_recorded_workarounds() -> None:
    with PodRuntime("gvisor", runsc="2024") as rt:
        tag, root = rt.ctd.id, str(rt.runner.root_dir)
        ev = _two_pods_exercise(rt)
    _check_two_pods(ev, rt.subnet)
    found = {e["id"]: e for e in ev["events"] if e["kind"] == "workaround"}
    # each blocker's workaround is in the pod's own timeline, with the signature it answers
    assert found["cni-link"]["signature"] == "S29" and found["pid-node"]["signature"] == "N01"
    probes = {e["id"]: e for e in ev["events"] if e["kind"] == "probe"}
    assert probes["bridge-kind"]["created"] and not probes["bridge-kind"]["link_kind"]
    assert probes["pid-setns"]["ok"] is False and "Invalid argument" in probes["pid-setns"]["error"]
    assert leftovers(tag) == [] and procs_with(root) == []


@pytest.mark.root
@pytest.mark.runsc2024
@pytest.mark.slow
def test_gvisor_2024_without_workarounds_hits_the_signatures() -> None:
    with PodRuntime("gvisor", runsc="2024", workarounds=False) as rt, pytest.raises(PodError) as ei:
        p = rt.pod(CLIENT)
        p.start()
    assert ei.value.stage == "sandbox" and ei.value.signature == "S29"
    assert "S29" in p.classify().ids and p.summary()["failed_stage"] == "sandbox"
    assert any(e["kind"] == "failed" and e["signature"] == "S29" for e in p.events())
    assert "already exists but is not a bridge" in ei.value.msg


@pytest.mark.root
@pytest.mark.runsc2024
@pytest.mark.slow
def test_gvisor_2024_crun_two_container_pod_with_recorded_workarounds() -> None:
    with PodRuntime("gvisor", runsc="2024", runtime="crun") as rt:
        tag, root = rt.ctd.id, str(rt.runner.root_dir)
        ev = _two_pods_exercise(rt)
        # the wrapper removed each container's fake freezer.state with the container
        left = rt.runner.run(["find", "/sys/fs/cgroup/freezer", "-name", "freezer.state"], timeout=30)
    # read inside the sandbox, through the runtime wrapper containerd runs: the binaries' own versions
    assert rt.versions == {"containerd": host_version("containerd"), "crun": host_version("crun")}
    _check_two_pods(ev, rt.subnet)
    found = {e["id"]: e for e in ev["events"] if e["kind"] == "workaround"}
    assert found["crun-setgroups"]["signature"] == "R05" and found["crun-freezer"]["signature"] == "R10"
    assert "run.oci.keep_original_groups=0" in found["crun-setgroups"]["detail"]
    assert {"cni-link", "pid-node"} <= set(found)
    probe = next(e for e in ev["events"] if e["kind"] == "probe" and e["id"] == "crun")
    assert probe["setgroups_file"] is False and probe["freezer_mount_error"] == "mount(cgroup, -o freezer) = EINVAL"
    assert left.ok and left.stdout.strip() == ""
    assert leftovers(tag) == [] and procs_with(root) == []


@pytest.mark.root
@pytest.mark.runsc2024
@pytest.mark.parametrize("extra,stage,signature,path", [
    ((), "sandbox", "R05", "/proc/self/setgroups"),
    (("crun-setgroups",), "exec", "R10", "/freezer.state"),
])
def test_gvisor_2024_crun_without_its_workarounds_names_the_refusing_syscall(extra, stage, signature, path) -> None:
    """Each crun workaround left out in turn: the pod stops where its blocker is, and the kit's tracer
    (trace=True: containerd and all it starts under ptrace) names crun's refused open."""
    rt = PodRuntime("gvisor", runsc="2024", runtime="crun", workarounds=["cni-link", "pid-node", *extra], trace=True)
    p = rt.pod(CLIENT)
    try:
        with rt, pytest.raises(PodError) as ei:
            tag = rt.ctd.id
            p.start()
            p.wait(until="running", timeout=30)
            p.exec("c", "echo never")
        assert ei.value.stage == stage and ei.value.signature == signature
        ev = [e for e in p.events() if e["kind"] == "evidence"]
        assert ev and ev[0]["stage"] == stage and ev[0]["errno"] == "ENOENT"
        assert ev[0]["syscall"] in ("open", "openat") and ev[0]["exe"].endswith("/crun")
        assert ev[0]["path"].endswith(path)
    finally:
        if rt.trace_result is not None:
            rt.trace_result.close()
    assert leftovers(tag) == []


@pytest.mark.root
@pytest.mark.parametrize("runner,runsc", [("host", None),
                                          pytest.param("gvisor", "2024", marks=pytest.mark.runsc2024)])
def test_fake_cni_plugin_is_the_pod_network(runner: str, runsc: str | None) -> None:
    with PodRuntime(runner, runsc=runsc, cni="fake") as rt, rt.pod(CLIENT) as p:
        assert ipaddress.ip_address(p.ip) in ipaddress.ip_network(rt.subnet)
        calls = [c for c in (rt.ipam_dir / "calls.jsonl").read_text().splitlines() if '"ADD"' in c]
        assert calls and p.ip in calls[-1]  # the kit's plugin answered containerd's ADD
        assert p.exec("c", "echo ok")["stdout"] == "ok\n"
    # what pods.study rows record, read inside the runner (containerd: its daemon's `ctr version`)
    assert rt.versions == {"containerd": host_version("containerd"), "runc": host_version("runc")}


@pytest.mark.root
@pytest.mark.runsc
def test_gvisor_2022_records_failing_stage_and_signature() -> None:
    rt = PodRuntime("gvisor", runsc="2022")
    with pytest.raises(PodError) as ei, rt:
        pass
    assert ei.value.stage == "images" and ei.value.signature == "R01"
    stages = {s["stage"]: s["ok"] for s in rt.stages}
    assert stages["containerd"] is True and stages["images"] is False  # the furthest stage reached
    assert leftovers(rt.id) == [] and leftovers(rt.ctd.id) == []


@pytest.mark.root
def test_cli_exit_status_is_first_nonzero_container_exit_code(tmp_path: Path) -> None:
    f = tmp_path / "exit3.yaml"
    f.write_text(textwrap.dedent("""\
        apiVersion: v1
        kind: Pod
        metadata: {name: exit3}
        spec:
          restartPolicy: Never
          containers:
          - {name: a, image: busybox, command: ["sh", "-c", "echo one; sleep 1"]}
          - {name: b, image: busybox, command: ["sh", "-c", "echo bee; exit 3"]}
        """))
    r = k3snb_cli("pod", "run", "--runtime", "crun", str(f))
    assert r.returncode == 3, r.stderr
    assert "[a] one\n" in r.stdout and "[b] bee\n" in r.stdout


@pytest.mark.root
@pytest.mark.runsc
def test_cli_cannot_start_prints_stage_and_signature(tmp_path: Path) -> None:
    f = tmp_path / "p.yaml"
    f.write_text("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: a, image: busybox}]}\n")
    r = k3snb_cli("pod", "run", "--runner", "gvisor", "--runsc", "2022", str(f))
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert lines[0].startswith("error: images failed: ") and "invalid argument" in lines[0]
    assert lines[1] == "signature: R01"


@pytest.mark.root
def test_restart_policy_onfailure_restarts_and_never_does_not() -> None:
    m = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "flaky"},
         "spec": {"restartPolicy": "OnFailure",
                  "containers": [{"name": "f", "image": "busybox", "command": ["sh", "-c", "echo try; exit 1"]}]}}
    with PodRuntime("host") as rt:
        with rt.pod(m) as p:
            st = p.wait(timeout=6)
            assert p.restarts["f"] >= 1 and st.get("timed_out")
            assert p.logs("f", previous=True) == "try\n"
            assert any(e["kind"] == "restart" for e in p.events())
        m["spec"]["restartPolicy"] = "Never"
        with rt.pod(m) as p:
            st = p.wait(timeout=30)
            assert st["phase"] == "Failed" and p.restarts["f"] == 0 and p.exit_codes() == {"f": 1}


# -- cleanup after delete, exception, Ctrl-C, kill -9 + doctor --clean ----------------------------
@pytest.mark.root
def test_exception_inside_pod_leaves_nothing() -> None:
    p = Pod(CLIENT)
    with pytest.raises(RuntimeError), p:
        tags = [p.runtime.id, p.runtime.ctd.id]
        raise RuntimeError("boom")
    assert all(leftovers(t) == [] for t in tags)


def _long_pod(tmp_path: Path) -> Path:
    f = tmp_path / "long.yaml"
    f.write_text("apiVersion: v1\nkind: Pod\nmetadata: {name: long}\nspec:\n  containers:\n"
                 "  - {name: a, image: busybox, command: ['sh', '-c', 'echo up; sleep 300']}\n")
    return f


def _wait_for_line(p: subprocess.Popen, text: str, limit: float = 90) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        line = p.stdout.readline()
        if text in line:
            return
        if not line and p.poll() is not None:
            raise AssertionError(f"pod run exited {p.returncode}: {p.stderr.read()}")
    raise AssertionError(f"no {text!r} within {limit}s")


def _pods_tags_of(pid: int) -> list[str]:
    from k3snb._state import records

    return [r.id for r in records() if r.owner_pid == pid and r.kind in ("pods", "runtime")]


@pytest.mark.root
def test_ctrl_c_of_pod_run_leaves_nothing(tmp_path: Path) -> None:
    p = subprocess.Popen([sys.executable, "-m", "k3snb", "pod", "run", str(_long_pod(tmp_path))], text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _wait_for_line(p, "[a] up")
    tags = _pods_tags_of(p.pid)
    assert tags
    p.send_signal(signal.SIGINT)
    assert p.wait(120) == 130
    assert all(leftovers(t) == [] for t in tags)


@pytest.mark.root
@pytest.mark.parametrize("runner", ["host", pytest.param("gvisor:2024", marks=pytest.mark.runsc2024)])
def test_kill_9_then_doctor_clean_leaves_nothing(tmp_path: Path, runner: str) -> None:
    from k3snb._state import records
    from k3snb.runners.reaper import clean_records

    p = subprocess.Popen([sys.executable, "-m", "k3snb", "pod", "run", "--runner", runner, str(_long_pod(tmp_path))],
                         text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _wait_for_line(p, "[a] up")
    tags = _pods_tags_of(p.pid)
    owned = [r for r in records() if r.owner_pid == p.pid]
    roots = [sb["root"] for r in owned for sb in r.sandboxes]  # gVisor: the sandbox's runsc --root
    paths = [q for r in owned for q in r.paths if "/sys/fs/cgroup/" not in q]
    assert tags and (leftovers(tags[0]) or any(procs_with(root) for root in roots))  # it is running
    p.kill()
    p.wait(30)
    mine = [r for r in records() if r.owner_pid == p.pid]  # doctor --clean, limited to this run's records
    clean_records(mine)
    deadline = time.monotonic() + 10
    while any(leftovers(t) for t in tags) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert all(leftovers(t) == [] for t in tags)
    assert not [r for r in records() if r.owner_pid == p.pid]
    assert not [root for root in roots if procs_with(root)] and not [q for q in paths if Path(q).exists()]


@pytest.mark.root
def test_keep_list_logs_exec_delete(tmp_path: Path) -> None:
    f = tmp_path / "keep.yaml"
    f.write_text("apiVersion: v1\nkind: Pod\nmetadata: {name: kept-f-test}\nspec:\n  containers:\n"
                 "  - {name: a, image: busybox, command: ['sh', '-c', 'echo kept-up; sleep 300']}\n")
    r = k3snb_cli("pod", "run", "--keep", str(f))
    assert r.returncode == 0, r.stderr
    try:
        assert "kept-f-test" in k3snb_cli("pod", "list").stdout
        deadline = time.monotonic() + 20
        while "kept-up" not in (out := k3snb_cli("pod", "logs", "kept-f-test", "-c", "a")).stdout:
            assert time.monotonic() < deadline, out.stderr
            time.sleep(0.5)
        e = k3snb_cli("pod", "exec", "kept-f-test", "-c", "a", "--", "sh", "-c", "echo in-pod; exit 7")
        assert e.returncode == 7 and e.stdout == "in-pod\n"
        assert k3snb_cli("pod", "exec", "kept-f-test", "-c", "nope", "--", "true").returncode == 2
    finally:
        d = k3snb_cli("pod", "delete", "kept-f-test")
    assert d.returncode == 0, d.stderr
    assert "kept-f-test" not in k3snb_cli("pod", "list").stdout


def test_flat_api_exports_pods() -> None:
    assert k3snb.Pod is Pod and k3snb.PodRuntime is PodRuntime


@pytest.mark.root
@pytest.mark.runsc2024
def test_runtime_on_a_callers_runner_gives_it_back() -> None:
    from k3snb.runners import resolve

    with resolve("gvisor:2024", network="sandbox", net_raw=True) as g:
        with PodRuntime(g) as rt, rt.pod(CLIENT) as p:
            assert p.exec("c", "echo hi")["stdout"] == "hi\n"
        assert g.alive()  # not closed: it is the caller's
        left = g.run("grep -c ' cgroup ' /proc/self/mountinfo; ps -eo args | grep -c '[c]ontainerd'").stdout.split()
        assert left == ["0", "0"]  # cgroup mounts and containerd/shims are gone from the runner


@pytest.mark.root
def test_restart_policy_always_restarts_a_succeeded_container_until_the_timeout(tmp_path: Path) -> None:
    """Always (the Kubernetes default) starts a container again after exit 0 (OnFailure would not), with a
    restart event per attempt; `pod run` then ends at --timeout with one error/fix pair naming the restarts."""
    import json

    m = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "always"},
         "spec": {"restartPolicy": "Always",
                  "containers": [{"name": "a", "image": "busybox", "command": ["sh", "-c", "echo up"]}]}}
    with PodRuntime("host") as rt:
        tags = [rt.id, rt.ctd.id]
        with rt.pod(m) as p:
            st = p.wait(timeout=6)
            assert st.get("timed_out") and p.restarts["a"] >= 1, (st, p.restarts)
            assert p.status()["containers"]["a"]["restarts"] == p.restarts["a"]  # the count status reports
            restarts = [e for e in p.events() if e["kind"] == "restart"]
            assert len(restarts) == p.restarts["a"] and {e["exit_code"] for e in restarts} == {0}
            assert {e["policy"] for e in restarts} == {"Always"}
            assert p.logs("a", previous=True) == "up\n"
    assert all(leftovers(t) == [] for t in tags)

    f = tmp_path / "always.yaml"
    f.write_text(json.dumps(m))  # JSON is YAML
    proc = subprocess.Popen([sys.executable, "-m", "k3snb", "pod", "run", "--timeout", "6", str(f)], text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _wait_for_line(proc, "[a] up")
        tags = _pods_tags_of(proc.pid)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert tags and proc.returncode == 1, err
    assert out.count("[a] up\n") >= 1  # the first line was read above; every restart prints its own
    lines = err.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("error: pod always did not finish within 6s (restartPolicy "
                                                   "Always restarted a "), err
    assert lines[1].startswith("  fix: restartPolicy Always never finishes: use --keep"), err
    assert all(leftovers(t) == [] for t in tags)
