"""One error hierarchy for the kit.

Every error carries a ``hint`` sentence naming the fix, plus structured fields. The CLI maps
error classes to exit codes (usage errors exit 2), so a cell and a shell see the same message.
"""

from __future__ import annotations

from typing import Any


class K3snbError(Exception):
    """Base class of every error the kit raises on purpose."""

    exit_code = 1
    hint: str = ""

    def __init__(self, msg: str, *, hint: str | None = None, **fields: Any) -> None:
        super().__init__(msg)
        self.msg = msg
        if hint is not None:
            self.hint = hint
        self.fields = fields
        for k, v in fields.items():
            setattr(self, k, v)

    def __str__(self) -> str:
        extra = ", ".join(f"{k}={v!r}" for k, v in self.fields.items() if v is not None)
        text = self.msg + (f" ({extra})" if extra else "")
        if self.hint:
            text += f"\n  fix: {self.hint}"
        return text

    def __reduce__(self):  # keep errors picklable across run_python boundaries
        return (_rebuild, (type(self), self.msg, self.hint, self.fields))


def _rebuild(cls, msg, hint, fields):
    return cls(msg, hint=hint, **fields)


class UsageError(K3snbError):
    """Bad input: unknown names, malformed parameters, wrong paths. Exit code 2."""

    exit_code = 2


class InvalidParameter(UsageError):
    pass


class NotRoot(UsageError):
    hint = "run as root (sudo -E k3snb ...), or choose an experiment/runner that does not need root"


class MissingDependency(UsageError):
    """A program or package the kit needs is not installed."""


class RunscMissing(MissingDependency):
    hint = "install gVisor: `apt-get install runsc` (or run `make setup`), or pass runsc=PATH"


class K3sBinaryMissing(MissingDependency):
    hint = (
        "set K3SNB_K3S=/path/to/k3s, put `k3s` on PATH, or run `k3snb k3s install VERSION` "
        "(k3snb.install_k3s) when online"
    )


class SandboxError(K3snbError):
    """The sandbox could not be created or driven."""


class SandboxDied(SandboxError):
    """The sandbox died under us (e.g. a gVisor sentry panic). Carries ``panic`` text when known."""


class CommandFailed(K3snbError):
    """A command run through a runner exited non-zero and the caller asked for check=True."""


class RemoteError(K3snbError):
    """A Python callable run inside a runner raised; ``traceback`` holds the remote traceback."""


class WorkaroundFailed(K3snbError):
    pass


class BlockerDetected(K3snbError):
    pass


class ExperimentFailed(K3snbError):
    pass


class K3sError(K3snbError):
    pass


class TraceError(K3snbError):
    pass


class UnsafeStateDir(K3snbError):
    """The kit's state directory belongs to someone else or others may write to it: its records
    (what ``doctor --clean`` kills and removes) could be planted, so the kit refuses to use it."""

    hint = "remove that directory (as its owner or root), or set K3SNB_STATE to a directory only you can write"


for _cls in list(globals().values()):
    if isinstance(_cls, type) and issubclass(_cls, Exception):
        _cls.__module__ = "k3snb"
