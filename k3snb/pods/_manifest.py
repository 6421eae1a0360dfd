"""Kubernetes Pod manifests → the kit's pod spec, validated before anything starts.

Accepts a YAML/JSON file path, a dict (the manifest as YAML gives it), or the ``kubernetes``
client's ``V1Pod``. Every problem is one :class:`~k3snb.errors.UsageError` naming the field
(``spec.containers[1].command``) and what is expected; nothing is started for a bad manifest.
Fields the kit does not act on (ports, resources, probes …) are accepted and listed in
``PodSpec.ignored`` so a reader sees what was not honoured.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InvalidParameter, UsageError

# image names the kit's offline builder serves (k3snb.images); any tag maps to the one local build
BUILTIN_IMAGES = ("busybox", "pause")
_IMAGE_RE = re.compile(r"^(?:(?:docker\.io/)?(?:library/)?|k3snb\.local/)(?P<name>[a-z0-9]+)(?::(?P<tag>[\w.-]+))?$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
RESTART_POLICIES = ("Always", "OnFailure", "Never")

CONTAINER_FIELDS = {"name", "image", "command", "args", "env", "workingDir"}
CONTAINER_IGNORED = {"ports", "resources", "imagePullPolicy", "livenessProbe", "readinessProbe", "startupProbe",
                     "terminationMessagePath", "terminationMessagePolicy", "securityContext", "volumeMounts",
                     "stdin", "stdinOnce", "tty", "lifecycle", "envFrom", "volumeDevices", "resizePolicy"}
SPEC_FIELDS = {"containers", "restartPolicy", "shareProcessNamespace", "hostNetwork", "terminationGracePeriodSeconds"}
SPEC_IGNORED = {"nodeName", "nodeSelector", "tolerations", "affinity", "dnsPolicy", "schedulerName",
                "serviceAccountName", "serviceAccount", "securityContext", "priority", "enableServiceLinks",
                "preemptionPolicy", "volumes", "automountServiceAccountToken", "hostname", "subdomain",
                "activeDeadlineSeconds", "imagePullSecrets", "priorityClassName", "dnsConfig", "hostPID",
                "hostIPC", "readinessGates", "topologySpreadConstraints", "runtimeClassName", "overhead"}


@dataclass
class ContainerSpec:
    name: str
    image: str  # the manifest's image string
    image_source: str  # "busybox" | "pause" | path of an OCI archive
    command: list[str] = field(default_factory=list)
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    working_dir: str = ""


@dataclass
class PodSpec:
    name: str
    namespace: str
    containers: list[ContainerSpec]
    restart_policy: str = "Always"
    share_process_namespace: bool = False
    host_network: bool = False
    grace_seconds: int = 30
    labels: dict[str, str] = field(default_factory=dict)
    ignored: list[str] = field(default_factory=list)

    def container(self, name: str | None) -> ContainerSpec:
        if name is None:
            return self.containers[0]
        for c in self.containers:
            if c.name == name:
                return c
        raise InvalidParameter(f"pod {self.name} has no container {name!r}",
                               hint=f"containers: {', '.join(c.name for c in self.containers)}")


def _bad(path: str, msg: str, hint: str) -> UsageError:
    return UsageError(f"invalid Pod manifest: {path}: {msg}", hint=hint)


def _type(path: str, value: Any, want: type | tuple[type, ...], example: str) -> Any:
    if not isinstance(value, want) or (want is int and isinstance(value, bool)):
        got = type(value).__name__ if value is not None else "null"
        names = " or ".join(t.__name__ for t in (want if isinstance(want, tuple) else (want,)))
        raise _bad(path, f"expected {names.replace('str', 'string').replace('dict', 'object')}, got {got}",
                   f"write it as {example}")
    return value


def _str_list(path: str, value: Any) -> list[str]:
    _type(path, value, list, '["sh", "-c", "echo hi"]')
    for i, v in enumerate(value):
        _type(f"{path}[{i}]", v, str, 'a quoted string ("3")' if isinstance(v, int | float) else "a string")
    return list(value)


def resolve_image(image: str, path: str = "image") -> str:
    """``busybox``/``pause`` (any tag, docker.io/library/ or k3snb.local/ prefix) or an OCI archive path."""
    if image.endswith(".tar") or os.sep in image and Path(image).exists():
        if not Path(image).is_file():
            raise _bad(path, f"image archive {image} does not exist", "give the path of an OCI image archive (.tar)")
        return str(Path(image).resolve())
    m = _IMAGE_RE.match(image)
    if m and m.group("name") in BUILTIN_IMAGES:
        return m.group("name")
    raise _bad(path, f"the kit cannot provide image {image!r} (no registry is used)",
               "use busybox or pause (built offline by k3snb.images), or a path to an OCI image archive (.tar)")


def _load(source: Any) -> dict:
    if isinstance(source, dict):
        return source
    if hasattr(source, "to_dict") and type(source).__name__ == "V1Pod":
        from kubernetes.client import ApiClient

        return ApiClient().sanitize_for_serialization(source)  # camelCase, as in YAML
    if isinstance(source, str | os.PathLike):
        p = Path(source)
        if not p.is_file():
            raise UsageError(f"Pod manifest {p} not found", hint="give the path of a Pod YAML file")
        import yaml

        try:
            docs = [d for d in yaml.safe_load_all(p.read_text()) if d is not None]
        except yaml.YAMLError as e:
            raise UsageError(f"invalid Pod manifest {p}: not valid YAML: {str(e).splitlines()[0]}",
                             hint="check the indentation and quoting at the reported line") from None
        if len(docs) != 1:
            raise UsageError(f"invalid Pod manifest {p}: expected one YAML document, found {len(docs)}",
                             hint="put exactly one Pod in the file")
        return docs[0]
    raise UsageError(f"cannot read a Pod manifest from {type(source).__name__}",
                     hint="pass a YAML file path, a dict, or a kubernetes.client.V1Pod")


def parse_manifest(source: Any) -> PodSpec:
    """Validate a Pod manifest and return the kit's :class:`PodSpec`."""
    m = _load(source)
    _type("(top level)", m, dict, "a YAML mapping with apiVersion, kind, metadata, spec")
    kind = m.get("kind", "Pod")
    if kind != "Pod":
        raise _bad("kind", f"expected Pod, got {kind!r}", "k3snb pod runs one Pod; use kind: Pod")
    if m.get("apiVersion", "v1") != "v1":
        raise _bad("apiVersion", f"expected v1, got {m.get('apiVersion')!r}", "use apiVersion: v1")
    unknown = set(m) - {"apiVersion", "kind", "metadata", "spec", "status"}
    if unknown:
        raise _bad(", ".join(sorted(unknown)), "unknown top-level field", "a Pod has apiVersion, kind, metadata, spec")
    meta = _type("metadata", m.get("metadata"), dict, "metadata: {name: my-pod}")
    name = _type("metadata.name", meta.get("name"), str, "metadata: {name: my-pod}")
    if not _DNS_SUBDOMAIN.match(name):
        raise _bad("metadata.name", f"{name!r} is not a DNS subdomain name", "lower-case letters, digits, '-' and '.'")
    namespace = _type("metadata.namespace", meta.get("namespace", "default"), str, "namespace: default")
    labels = _type("metadata.labels", meta.get("labels") or {}, dict, "labels: {app: demo}")
    labels = {str(k): str(v) for k, v in labels.items()}
    spec = _type("spec", m.get("spec"), dict, "spec: {containers: [...]}")
    ignored = []
    for k in spec:
        if k in SPEC_IGNORED:
            ignored.append(f"spec.{k}")
        elif k not in SPEC_FIELDS:
            if k in ("initContainers", "ephemeralContainers"):
                raise _bad(f"spec.{k}", "not supported by k3snb pods", "run the steps as ordinary containers")
            raise _bad(f"spec.{k}", "unknown field", f"supported: {', '.join(sorted(SPEC_FIELDS))}")
    policy = _type("spec.restartPolicy", spec.get("restartPolicy", "Always"), str, "restartPolicy: Never")
    if policy not in RESTART_POLICIES:
        raise _bad("spec.restartPolicy", f"{policy!r} is not one of {', '.join(RESTART_POLICIES)}",
                   "restartPolicy: Never | OnFailure | Always")
    share = _type("spec.shareProcessNamespace", spec.get("shareProcessNamespace", False), bool,
                  "shareProcessNamespace: true")
    host_net = _type("spec.hostNetwork", spec.get("hostNetwork", False), bool, "hostNetwork: true")
    grace = _type("spec.terminationGracePeriodSeconds", spec.get("terminationGracePeriodSeconds", 30), int,
                  "terminationGracePeriodSeconds: 5")
    raw = _type("spec.containers", spec.get("containers"), list, "containers: [{name: main, image: busybox}]")
    if not raw:
        raise _bad("spec.containers", "no containers", "add at least one container")
    containers: list[ContainerSpec] = []
    seen: set[str] = set()
    for i, c in enumerate(raw):
        p = f"spec.containers[{i}]"
        _type(p, c, dict, "{name: main, image: busybox}")
        for k in c:
            if k in CONTAINER_IGNORED:
                ignored.append(f"{p}.{k}")
            elif k not in CONTAINER_FIELDS:
                raise _bad(f"{p}.{k}", "unknown field", f"supported: {', '.join(sorted(CONTAINER_FIELDS))}")
        cname = _type(f"{p}.name", c.get("name"), str, "name: main")
        if not _DNS_LABEL.match(cname):
            raise _bad(f"{p}.name", f"{cname!r} is not a DNS label", "lower-case letters, digits and '-', ≤ 63")
        if cname in seen:
            raise _bad(f"{p}.name", f"duplicate container name {cname!r}", "give every container its own name")
        seen.add(cname)
        image = _type(f"{p}.image", c.get("image"), str, "image: busybox")
        env: dict[str, str] = {}
        for j, e in enumerate(_type(f"{p}.env", c.get("env") or [], list, "env: [{name: A, value: '1'}]")):
            ep = f"{p}.env[{j}]"
            _type(ep, e, dict, "{name: A, value: '1'}")
            if "valueFrom" in e:
                raise _bad(f"{ep}.valueFrom", "not supported (no API server)", "give a literal value")
            extra = set(e) - {"name", "value"}
            if extra:
                raise _bad(f"{ep}.{sorted(extra)[0]}", "unknown field", "env entries have name and value")
            env[_type(f"{ep}.name", e.get("name"), str, "name: A")] = _type(
                f"{ep}.value", e.get("value", ""), str, "value: '1' (quote numbers)")
        containers.append(ContainerSpec(
            name=cname, image=image, image_source=resolve_image(image, f"{p}.image"),
            command=_str_list(f"{p}.command", c["command"]) if c.get("command") is not None else [],
            args=_str_list(f"{p}.args", c["args"]) if c.get("args") is not None else [],
            env=env, working_dir=_type(f"{p}.workingDir", c.get("workingDir", ""), str, "workingDir: /tmp"),
        ))
    return PodSpec(name=name, namespace=namespace, containers=containers, restart_policy=policy,
                   share_process_namespace=share, host_network=host_net, grace_seconds=grace, labels=labels,
                   ignored=ignored)
