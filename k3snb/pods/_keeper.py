"""The keeper of a ``k3snb pod run --keep`` pod: a detached process that owns the runner, containerd
and the pod, and answers ``logs``/``exec``/``status``/``delete`` requests through files.

Layout: ``<state dir>/k3snb-pod-<name>/`` holds ``state.json`` (written by the keeper), ``req/`` and
``resp/`` (one JSON file per request, written atomically). The keeper's runner and pod records name
the keeper as owner, so after a kill -9 ``k3snb doctor --clean`` reaps the runner, containerd, the
pod and this folder (a record of kind ``podkeep`` names it).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from .._paths import TAG, state_dir
from .._procfs import proc_start
from ..errors import K3snbError, UsageError


def _dir(name: str) -> Path:
    return state_dir() / f"{TAG}-pod-{name}"


def _write(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, default=str))
    os.replace(tmp, path)


def _alive(st: dict[str, Any]) -> bool:
    pid = st.get("pid")
    return bool(pid) and proc_start(int(pid)) == st.get("pid_start")


def launch(manifest: str, name: str, *, runner: str, runsc: str | None, runtime: str, cni: str,
           workarounds: bool, timeout: float) -> dict[str, Any]:
    """Start a keeper for ``manifest`` and wait until it reports the pod running (or failed)."""
    d = _dir(name)
    if d.exists():
        st = _state(d)
        if st and _alive(st):
            raise UsageError(f"a kept pod named {name} exists", hint=f"k3snb pod delete {name}, or rename the pod")
        shutil.rmtree(d, ignore_errors=True)
    (d / "req").mkdir(parents=True)
    (d / "resp").mkdir()
    opts = {"manifest": str(Path(manifest).resolve()), "runner": runner, "runsc": runsc, "runtime": runtime,
            "cni": cni, "workarounds": workarounds, "timeout": timeout}
    _write(d / "options.json", opts)
    with open(d / "keeper.log", "ab") as log:
        subprocess.Popen([sys.executable, "-m", "k3snb.pods._keeper", str(d)], stdin=subprocess.DEVNULL,
                         stdout=log, stderr=log, start_new_session=True, cwd="/")
    deadline = time.monotonic() + timeout + 120
    while time.monotonic() < deadline:
        st = _state(d)
        if st and st.get("status") in ("running", "failed"):
            if st["status"] == "failed":
                with contextlib.suppress(OSError):
                    shutil.rmtree(d)
            return st
        time.sleep(0.2)
    delete(name)
    return {"status": "failed", "error": {"stage": "keeper", "message": f"no answer within {timeout + 120:.0f}s"}}


def _state(d: Path) -> dict[str, Any] | None:
    try:
        return json.loads((d / "state.json").read_text())
    except (OSError, ValueError):
        return None


def kept() -> list[dict[str, Any]]:
    rows = []
    for d in sorted(state_dir().glob(f"{TAG}-pod-*")):
        st = _state(d)
        if st:
            if not _alive(st):
                st["status"] = "gone"
            rows.append(st)
    return rows


def request(name: str, req: dict[str, Any], timeout: float = 60.0) -> dict[str, Any]:
    d = _dir(name)
    st = _state(d)
    if not st:
        raise UsageError(f"no kept pod named {name}", hint="see `k3snb pod list`")
    if not _alive(st):
        raise K3snbError(f"the keeper of pod {name} is gone", hint="run `k3snb doctor --clean` to reap what it left")
    rid = uuid.uuid4().hex
    _write(d / "req" / f"{rid}.json", req)
    resp = d / "resp" / f"{rid}.json"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if resp.exists():
            out = json.loads(resp.read_text())
            resp.unlink()
            if out.get("error"):
                cls = UsageError if out.get("usage") else K3snbError
                raise cls(out["error"], hint=out.get("hint") or "see `k3snb pod list`")
            return out
        if not _alive(st):
            break
        time.sleep(0.05)
    raise K3snbError(f"pod {name}: no answer to {req.get('op')} within {timeout:.0f}s", hint="see `k3snb pod list`")


def delete(name: str) -> None:
    d = _dir(name)
    st = _state(d)
    if not st:
        raise UsageError(f"no kept pod named {name}", hint="see `k3snb pod list`")
    if _alive(st):
        with contextlib.suppress(K3snbError):
            request(name, {"op": "delete"}, timeout=120)
        deadline = time.monotonic() + 30
        while _alive(st) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _alive(st):
            raise K3snbError(f"the keeper of {name} did not stop", hint="k3snb doctor --clean after killing it")
    else:
        from .._state import stale_records
        from ..runners.reaper import clean_records

        # what the dead keeper owned (runner, containerd, pod records): reap exactly those
        clean_records([r for r in stale_records() if r.owner_pid == st.get("pid")
                       and r.owner_start == st.get("pid_start")])
    shutil.rmtree(d, ignore_errors=True)


def _serve(d: Path) -> int:
    from .._state import Record
    from . import Pod, PodError

    opts = json.loads((d / "options.json").read_text())
    rec = Record(kind="podkeep", id=d.name, paths=[str(d)]).save()
    me = {"pid": os.getpid(), "pid_start": proc_start(os.getpid()), "started": time.time()}
    pod = Pod(opts["manifest"], runner=opts["runner"], runsc=opts["runsc"], cni=opts["cni"],
              container_runtime=opts["runtime"], workarounds=opts["workarounds"], timeout=max(opts["timeout"], 60))
    base = {**me, "name": pod.name, "runner": pod.runtime.runner_label(), "dir": str(d)}
    try:
        pod.start()
    except (PodError, K3snbError) as e:
        _write(d / "state.json", {**base, "status": "failed",
                                  "error": {"stage": e.fields.get("stage", "pod"), "message": e.msg,
                                            "signature": e.fields.get("signature")}})
        rec.drop()
        return 1
    _write(d / "state.json", {**base, "status": "running", "ip": pod.ip})
    try:
        while True:
            for f in sorted((d / "req").glob("*.json")):
                try:
                    req = json.loads(f.read_text())
                except (OSError, ValueError):
                    continue
                f.unlink()
                out = _answer(pod, req)
                _write(d / "resp" / f.name, out)
                if req.get("op") == "delete":
                    return 0
            if not pod.runtime.runner.alive():
                return 1
            time.sleep(0.05)
    finally:
        pod.delete()
        rec.drop()


def _answer(pod, req: dict[str, Any]) -> dict[str, Any]:
    try:
        op = req.get("op")
        if op == "logs":
            pod.wait(timeout=0)  # restartPolicy bookkeeping: the latest attempt's log
            return {"text": pod.logs(req.get("container"))}
        if op == "exec":
            return pod.exec(req.get("container"), req["cmd"], float(req.get("timeout") or 30))
        if op == "status":
            return pod.status()
        if op == "delete":
            return {"ok": True}
        return {"error": f"unknown request {op!r}", "usage": True}
    except UsageError as e:
        return {"error": e.msg, "hint": e.hint, "usage": True}
    except K3snbError as e:
        return {"error": e.msg, "hint": e.hint}


if __name__ == "__main__":
    sys.exit(_serve(Path(sys.argv[1])))
