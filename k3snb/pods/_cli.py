"""``k3snb pod run|list|logs|exec|delete``: a Pod manifest run over CRI, in the Host runner or gVisor.

``pod run`` runs the pod to completion, printing each log line as ``[<container>] line``; its exit
status is the first non-zero container exit code (0 when all succeed). A pod that cannot start exits 1
with ``error: <stage> failed: <message>`` and ``signature: <id>``. ``--keep`` hands the pod to a
background keeper process (see k3snb.pods._keeper) for ``list``/``logs``/``exec``/``delete``.
"""

from __future__ import annotations

import argparse
import sys
import time

from .._cliopts import add_json, add_runner, add_runsc, add_timeout, printable


def register(subparsers) -> None:
    p = subparsers.add_parser("pod", help="run Kubernetes Pod manifests over CRI (containerd) in a runner")
    sub = p.add_subparsers(dest="pod_command", required=True, metavar="SUBCOMMAND")
    r = sub.add_parser("run", help="run a Pod manifest to completion (or keep it with --keep)")
    add_runner(r, help="where containerd runs: host (private namespaces), gvisor or gvisor:BUILD (default host)")
    add_runsc(r)
    r.add_argument("--runtime", default="runc", choices=("runc", "crun"),
                   help="OCI runtime behind containerd's runc shim (default runc)")
    r.add_argument("--cni", default="bridge", choices=("bridge", "fake"),
                   help="pod network: bridge (Debian bridge + host-local + loopback) or fake (the kit's plugin)")
    r.add_argument("--no-workarounds", action="store_true",
                   help="do not apply the kit's workarounds for known blockers (to see them fail)")
    add_timeout(r, default=120.0, help="seconds to wait for the pod to finish (or to start, with --keep)")
    r.add_argument("--keep", action="store_true",
                   help="leave the pod running in the background; end it with `k3snb pod delete NAME`")
    r.add_argument("manifest", metavar="POD.yaml", help="Pod manifest (YAML)")
    r.set_defaults(func=_run)
    ls = sub.add_parser("list", help="pods kept with --keep")
    add_json(ls)
    ls.set_defaults(func=_list)
    lg = sub.add_parser("logs", help="a kept pod's container output (from the CRI log file)")
    lg.add_argument("name", help="pod name")
    lg.add_argument("-c", "--container", default=None, help="container name (default: the first)")
    lg.set_defaults(func=_logs)
    ex = sub.add_parser("exec", help="run a command in a kept pod's container (CRI ExecSync)")
    ex.add_argument("-c", "--container", default=None, help="container name (default: the first)")
    add_timeout(ex, default=30.0, help="seconds the command may run")
    # one REMAINDER positional: argparse cannot mix an optional between NAME and `-- CMD` otherwise
    ex.add_argument("rest", nargs=argparse.REMAINDER, metavar="NAME [-c C] -- CMD",
                    help="pod name, then the command after --")
    ex.set_defaults(func=_exec)
    de = sub.add_parser("delete", help="stop and remove a kept pod (and its runner)")
    de.add_argument("name", nargs="?", help="pod name")
    de.add_argument("--all", action="store_true", help="delete every kept pod")
    de.set_defaults(func=_delete)


def _fail(e) -> int:
    stage = e.fields.get("stage") or "pod"
    msg = e.msg if e.msg.startswith(f"{stage} failed") else f"{stage} failed: {e.msg}"
    print(f"error: {printable(msg)}", file=sys.stderr)
    if e.fields.get("signature"):
        print(f"signature: {e.fields['signature']}", file=sys.stderr)
    return 1


def _run(args: argparse.Namespace) -> int:
    from ..errors import K3snbError
    from ..runners import check_spec
    from . import Pod, PodError
    from ._manifest import parse_manifest

    check_spec(args.runner, runsc=args.runsc)  # bad spec or runsc build: exit 2 before anything starts
    spec = parse_manifest(args.manifest)  # bad input: exit 2 before anything starts
    if args.keep:
        from ._keeper import launch

        info = launch(args.manifest, spec.name, runner=args.runner, runsc=args.runsc, runtime=args.runtime,
                      cni=args.cni, workarounds=not args.no_workarounds, timeout=args.timeout)
        if info.get("status") != "running":
            err = info.get("error") or {}
            return _fail(PodError(err.get("message", "the keeper did not start the pod"),
                                  stage=err.get("stage", "pod"), signature=err.get("signature")))
        print(f"pod/{spec.name} running (ip {info.get('ip') or '-'}); "
              f"`k3snb pod logs {spec.name}`, `k3snb pod delete {spec.name}`")
        return 0
    pod = Pod(args.manifest, runner=args.runner, runsc=args.runsc, cni=args.cni, container_runtime=args.runtime,
              workarounds=not args.no_workarounds, timeout=max(args.timeout, 60.0))
    try:
        with pod:
            st = _follow(pod, args.timeout)
    except PodError as e:
        return _fail(e)
    if st.get("timed_out"):
        restarted = ", ".join(f"{n} {k}x" for n, k in pod.restarts.items() if k)
        why = f" (restartPolicy {spec.restart_policy} restarted {restarted})" if restarted else ""
        fix = (f"restartPolicy Always never finishes: use --keep (end it with `k3snb pod delete {spec.name}`) "
               "or restartPolicy Never/OnFailure" if spec.restart_policy == "Always"
               else "raise --timeout, or use --keep for long-running pods")
        raise K3snbError(f"pod {spec.name} did not finish within {args.timeout:g}s{why}", hint=fix)
    codes = [c["exit_code"] for c in (st.get("containers") or {}).values()]
    return next((c for c in codes if c), 0)


def _follow(pod, timeout: float) -> dict:
    """Wait for the pod like Pod.wait, printing new CRI log lines as ``[container] line``."""
    printed: dict[tuple[str, int], int] = {}
    deadline = time.monotonic() + timeout

    def flush() -> None:
        for c in pod.spec.containers:
            for attempt in range(pod.attempts[c.name] + 1):
                key = (c.name, attempt)
                path = pod.log_dir / c.name / f"{attempt}.log"
                try:
                    text = path.read_text(errors="replace")
                except OSError:
                    continue
                from ._pod import _cri_log_lines

                lines = _cri_log_lines(text)
                for _, body in lines[printed.get(key, 0):]:
                    print(f"[{c.name}] {printable(body)}", flush=True)
                printed[key] = len(lines)

    while True:
        st = pod.wait(timeout=max(0.0, min(1.0, deadline - time.monotonic())), interval=0.3)
        flush()
        if not st.get("timed_out") or time.monotonic() >= deadline:
            time.sleep(0.2)  # the runtime flushes the last lines when the container exits
            flush()
            return st


def _list(args: argparse.Namespace) -> int:
    import json

    from ._keeper import kept

    rows = kept()
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    if not rows:
        print("no kept pods")
        return 0
    print(f"{'NAME':24} {'STATUS':10} {'RUNNER':12} {'IP':16} AGE")
    for r in rows:
        print(f"{r['name']:24} {r['status']:10} {r.get('runner', '-'):12} {r.get('ip') or '-':16} "
              f"{int(time.time() - r.get('started', time.time()))}s")
    return 0


def _logs(args: argparse.Namespace) -> int:
    from ._keeper import request

    out = request(args.name, {"op": "logs", "container": args.container})
    sys.stdout.write(out["text"])
    return 0


def _exec(args: argparse.Namespace) -> int:
    from ..errors import UsageError
    from ._keeper import request

    rest = list(args.rest)
    if not rest or rest[0].startswith("-"):
        raise UsageError("no pod name given", hint="k3snb pod exec NAME [-c C] -- CMD ...")
    args.name = rest.pop(0)
    while rest and rest[0] in ("-c", "--container", "--timeout"):
        if len(rest) < 2:
            raise UsageError(f"{rest[0]} needs a value", hint="k3snb pod exec NAME [-c C] -- CMD ...")
        opt, val = rest.pop(0), rest.pop(0)
        if opt == "--timeout":
            try:
                args.timeout = float(val)
            except ValueError:
                raise UsageError(f"--timeout {val!r} is not a number", hint="--timeout 30") from None
        else:
            args.container = val
    cmd = rest[1:] if rest[:1] == ["--"] else rest
    if not cmd:
        raise UsageError("no command given", hint="k3snb pod exec NAME [-c C] -- CMD ...")
    out = request(args.name, {"op": "exec", "container": args.container, "cmd": cmd, "timeout": args.timeout},
                  timeout=args.timeout + 60)
    sys.stdout.write(out["stdout"])
    sys.stderr.write(out["stderr"])
    return int(out["exit_code"] or 0)


def _delete(args: argparse.Namespace) -> int:
    from ..errors import UsageError
    from ._keeper import delete, kept

    if bool(args.name) == bool(args.all):
        raise UsageError("give a pod name or --all", hint="k3snb pod delete NAME | k3snb pod delete --all")
    names = [r["name"] for r in kept()] if args.all else [args.name]
    for n in names:
        delete(n)
        print(f"pod/{n} deleted")
    return 0
