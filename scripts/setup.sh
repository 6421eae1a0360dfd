#!/usr/bin/env bash
# Set up k3snb on a fresh Debian 12 or 13 machine, as root. Idempotent: every step checks first and
# a second run only re-does what changed (missing apt packages, a new pyproject.toml, no kernelspec).
#
#   bash scripts/setup.sh          # apt packages, .venv with the kit, the k3snb kernelspec, runsc 2024
#
# Never touches the system apt configuration: the 2024 runsc build comes from the machine's own Debian
# mirror through private apt state (python -m k3snb.runners.runsc fetch).
set -euo pipefail

cd "$(dirname "$0")/.."
REPO=$PWD
STAMPS=$REPO/.cache/setup
VENV=$REPO/.venv
KERNEL=k3snb

# apt packages the kit's layers use (runners, trace, cni, k3s workarounds, benchmarks, the venv)
APT_PACKAGES=(
  runsc runc containerd containernetworking-plugins busybox-static strace proot hyperfine iptables
  gcc libc6-dev make python3-venv ca-certificates iproute2 util-linux podman golang-go crun umoci
  chromium chromium-driver libfuse-dev pkg-config
)

say() { printf 'setup: %s\n' "$*"; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 2; }

[ "$(id -u)" -eq 0 ] || die "run as root (sudo bash scripts/setup.sh): it installs apt packages"
command -v apt-get >/dev/null || die "apt-get not found: this script supports Debian 12 and 13"
mkdir -p "$STAMPS"
export DEBIAN_FRONTEND=noninteractive PIP_DISABLE_PIP_VERSION_CHECK=1

# -- 1. apt packages (apt-get update at most once, and only when something is missing) ----------------
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing apt packages: ${missing[*]}"
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  say "apt packages: all present"
fi

# -- 2. a venv on the machine's python3 (>= 3.11: Debian 12 has 3.11, Debian 13 has 3.13) ------------
pick_python() {
  local c
  for c in /usr/bin/python3 python3 python3.13 python3.12 python3.11; do
    if command -v "$c" >/dev/null && "$c" -c 'import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      command -v "$c"; return 0
    fi
  done
  return 1
}
if ! "$VENV/bin/python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  PY=$(pick_python) || die "no python3 >= 3.11 with venv support found (apt-get install python3-venv)"
  say "creating $VENV with $PY ($("$PY" --version))"
  rm -rf "$VENV"
  "$PY" -m venv "$VENV"
fi

# -- 3. the kit and its Python dependencies (again only when pyproject.toml changed) --------------------
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ "$(cat "$STAMPS/pip" 2>/dev/null)" != "$want" ] || ! "$VENV/bin/python" -c 'import k3snb.cli' 2>/dev/null; then
  say "pip install -e .[dev] (uses this machine's pip configuration)"
  # the build backend's deprecation chatter goes to a log, shown only when the install fails
  if ! "$VENV/bin/python" -m pip install -q -e ".[dev]" >"$STAMPS/pip.log" 2>&1; then
    tail -n 40 "$STAMPS/pip.log" >&2
    die "pip install failed (full log: $STAMPS/pip.log)"
  fi
  echo "$want" > "$STAMPS/pip"
else
  say "python packages: up to date"
fi

# bytecode for the kit itself: with PYTHONDONTWRITEBYTECODE set (as on some CI machines) every tracer
# start would otherwise recompile its modules (~50 ms, a large share of a short traced run)
"$VENV/bin/python" -m compileall -q -j 0 k3snb >/dev/null

# -- 4. the pinned kernel, inside the venv (--sys-prefix: nothing under \$HOME) -------------------------
if [ ! -f "$VENV/share/jupyter/kernels/$KERNEL/kernel.json" ]; then
  tmp=$(mktemp -d)  # ipykernel install leaves a tmpXXXX_kernels dir behind in $TMPDIR
  TMPDIR=$tmp "$VENV/bin/python" -m ipykernel install --sys-prefix --name "$KERNEL" --display-name "Python 3 ($KERNEL)" >/dev/null
  rm -rf "$tmp"
  say "installed kernelspec $KERNEL into $VENV"
else
  say "kernelspec $KERNEL: present"
fi

# -- 5. runsc 2024 (Debian 13's 20240729 build) next to the system one --------------------------------
if [ -f "$STAMPS/runsc2024-unavailable" ]; then
  say "runsc 2024: unavailable here (noted earlier; rm $STAMPS/runsc2024-unavailable to retry) — carrying on"
elif "$VENV/bin/python" -m k3snb.runners.runsc fetch --strict; then
  :
else
  date -u +%FT%TZ > "$STAMPS/runsc2024-unavailable"
  say "runsc 2024: cannot be had here; experiments and tests that need it are skipped with the reason"
fi

say "ready: $VENV (kernel $KERNEL)"
