"""Live views: watch() on real process trees and logs, in a real kernel (live widget, interrupted like a
JupyterLab user would) and under papermill (static snapshot); the run progress view never stays at 0 %."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from k3snb.monitoring import frontend, watch

HOSTILE = "<script>window.__k3snb_xss=1</script>"


@pytest.fixture
def tree(tmp_path: Path):
    """A real two-process tree writing a log with a known blocker line (S06) and a hostile one."""
    log = tmp_path / "k3s.log"
    code = textwrap.dedent(f"""
        import subprocess, sys, time
        kid = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        with open({str(log)!r}, "w") as f:
            f.write("I1130 starting\\n")
            f.write("E1130 open /dev/kmsg: no such file or directory\\n")
            f.write("W1130 {HOSTILE}\\n")
        time.sleep(60)
    """)
    p = subprocess.Popen([sys.executable, "-c", code])
    deadline = time.monotonic() + 20
    while not (log.is_file() and "W1130" in log.read_text()) and time.monotonic() < deadline:
        time.sleep(0.1)
    try:
        yield p, log
    finally:
        subprocess.run(["pkill", "-KILL", "-P", str(p.pid)], check=False)
        p.kill()
        p.wait()


def test_snapshot_without_frontend(tree):
    p, log = tree
    assert not frontend()  # pytest is no front end
    w = watch(p.pid, log=log, interval=0.3, duration=1.5)
    assert w.stopped == "duration reached" and not w.monitor.running
    procs = w.tree()
    assert procs[0]["pid"] == p.pid and procs[0]["depth"] == 0
    assert any(r["ppid"] == p.pid and r["depth"] == 1 for r in procs)
    lines = w.log_lines()
    assert [x["text"][:5] for x in lines] == ["I1130", "E1130", "W1130"]
    assert "S06" in lines[1]["signatures"] and not lines[0]["signatures"]
    html = w._repr_html_()
    assert HOSTILE not in html and "&lt;script&gt;" in html
    assert "k3snb-text-fallback" in html and "<svg" in html
    assert str(p.pid) in repr(w)


def test_watch_ends_with_the_processes(tmp_path):
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.8)"])
    w = watch(p.pid, interval=0.2, live=False, duration=30)
    p.wait()
    assert w.stopped == "processes ended"
    assert w.log_lines() == []


def _kernel_env(tmp: Path) -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("K3SNB_RESULTS", "K3SNB_RUN_TAG", "K3SNB_LIVE")}


def test_live_widget_stops_on_interrupt(tree, tmp_path):
    """A real kernel: the live view displays a widget, refreshes it, and a kernel interrupt (the
    JupyterLab stop button) ends it cleanly, leaving the final snapshot in the output."""
    from jupyter_client.manager import start_new_kernel

    from k3snb.experiments import ensure_kernel

    p, log = tree
    km, kc = start_new_kernel(kernel_name=ensure_kernel(), env=_kernel_env(tmp_path), cwd=str(tmp_path))
    try:
        kc.execute_interactive("import k3snb.monitoring as m", timeout=120)
        msgs: list[dict] = []
        code = f"w = m.watch({p.pid}, log={str(log)!r}, interval=0.3, live=True)\nprint('stopped:', w.stopped)"
        msg_id = kc.execute(code)
        interrupted = False
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            msg = kc.get_iopub_msg(timeout=60)
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            msgs.append(msg)
            # interrupt once the view is up and has refreshed a few times, as a user watching it would
            if not interrupted and sum(1 for m in msgs if m["msg_type"] == "comm_msg") >= 3:
                km.interrupt_kernel()
                interrupted = True
            if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                break
        assert interrupted, [m["msg_type"] for m in msgs]
        reply = kc.get_shell_msg(timeout=30)
        assert reply["content"]["status"] == "ok", reply["content"]
        kinds = [m["msg_type"] for m in msgs]
        shown = next(m for m in msgs if m["msg_type"] == "display_data")
        assert "application/vnd.jupyter.widget-view+json" in shown["content"]["data"]
        final = [m for m in msgs if m["msg_type"] == "update_display_data"]
        assert final and "text/html" in final[-1]["content"]["data"], kinds
        assert "interrupted" in final[-1]["content"]["data"]["text/plain"]
        assert HOSTILE not in final[-1]["content"]["data"]["text/html"]
        out = "".join(m["content"].get("text", "") for m in msgs if m["msg_type"] == "stream")
        assert "stopped: interrupted" in out
        # the sampler thread is gone: the kernel is usable and nothing keeps sampling
        said: list[str] = []
        r = kc.execute_interactive(
            "import threading; print(any(t.name == 'k3snb-monitor' for t in threading.enumerate()))", timeout=60,
            output_hook=lambda m: said.append(m["content"].get("text", "")) if m["msg_type"] == "stream" else None)
        assert r["content"]["status"] == "ok" and "".join(said).strip() == "False"
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def test_papermill_keeps_snapshots_and_final_progress(tree, tmp_path):
    import nbformat
    import papermill
    from nbformat.v4 import new_code_cell, new_notebook

    from k3snb.experiments import ensure_kernel

    p, log = tree
    nb = new_notebook(cells=[
        new_code_cell(f"import k3snb.monitoring as m\nm.watch({p.pid}, log={str(log)!r}, interval=0.3, duration=1)"),
        new_code_cell("from k3snb.monitoring import progress_view\n"
                      "v = progress_view(['00-a', '01-b'])\n"
                      "v.start('00-a')\nv.done({'id': '00-a', 'status': 'passed', 'duration_s': 1.0, 'reproduced': 2})\n"
                      "v.start('01-b')\nv.done({'id': '01-b', 'status': 'failed', 'duration_s': 2.0, 'reason': 'boom'})\n"
                      "v.close()"),
    ])
    src, out = tmp_path / "live.ipynb", tmp_path / "live-out.ipynb"
    nbformat.write(nb, src)
    papermill.execute_notebook(str(src), str(out), kernel_name=ensure_kernel(), progress_bar=False,
                               cwd=str(tmp_path), start_timeout=180)
    done = nbformat.read(out, as_version=4)
    watch_out = done.cells[0].outputs
    assert not any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in watch_out)
    html = next(o["data"]["text/html"] for o in watch_out if "text/html" in o.get("data", {}))
    assert "S06" in html and "&lt;script&gt;" in html
    prog = [o for o in done.cells[1].outputs if o.get("output_type") == "display_data"]
    assert len(prog) == 1  # one display, updated in place
    text = prog[0]["data"]["text/plain"]
    assert "2/2 done (100 %)" in text and not re.search(r"\(0 %\)", text)
    assert "1 passed, 1 failed" in text and "boom" in text


@pytest.mark.root
@pytest.mark.runsc
def test_watch_a_gvisor_sandbox():
    """A started gVisor runner is watchable as is: its sandbox's host processes and a log it writes."""
    import k3snb

    with k3snb.get_runner("gvisor") as g:
        sp = g.spawn(["sh", "-c", f"echo 'open /dev/kmsg: no such file or directory'; echo '{HOSTILE}'; sleep 30"])
        deadline = time.monotonic() + 30
        while "script" not in Path(sp.stdout_path).read_text() and time.monotonic() < deadline:
            time.sleep(0.2)
        w = watch(g, log=sp.stdout_path, interval=0.3, duration=1.5)
        sandbox = set(g.sandbox_pids())
    assert {r["pid"] for r in w.tree() if r["depth"] == 0} <= sandbox
    assert any(r["depth"] >= 1 for r in w.tree())  # the sentry/gofer children of runsc
    assert [x["signatures"] for x in w.log_lines()][0] == ["S06"]
    assert HOSTILE not in w._repr_html_()


@pytest.mark.root
def test_containerd_handle_watch():
    """A real containerd handle offers .watch(): its process tree and its own log."""
    import k3snb
    from k3snb.runtime.containerd import Containerd

    with k3snb.get_runner("host") as r, Containerd(r) as c:
        w = c.watch(interval=0.5, duration=2)
    assert "containerd" in {x["name"] for x in w.tree()}
    assert w.log_lines() and all(x["text"] for x in w.log_lines())
    assert w.title.startswith("containerd")


@pytest.mark.root
def test_pod_handle_watch():
    """A running pod offers .watch(): containerd, the pod's shim with its pause and container, and the
    classified lines of the pod's own log."""
    from k3snb.pods import Pod

    manifest = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "watched"},
                "spec": {"containers": [{"name": "c", "image": "busybox", "command": [
                    "sh", "-c", f"echo 'open /dev/kmsg: no such file or directory'; echo '{HOSTILE}'; sleep 60"]}]}}
    with Pod(manifest, runner="host") as p:
        p.wait(timeout=120, until="running")
        w = p.watch(interval=0.5, duration=2)
    names = [x["name"] for x in w.tree()]
    assert "containerd" in names and any(n.startswith("containerd-shim") for n in names)
    assert "sleep" in names  # the pod's container process, under its shim
    lines = w.log_lines()
    assert lines[0]["signatures"] == ["S06"] and HOSTILE not in w._repr_html_()
