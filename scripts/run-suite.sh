#!/usr/bin/env bash
# Set everything up (scripts/setup.sh), then run the experiment suite: every notebook in
# notebooks/ executed by papermill, each in a fresh kernel, in a local gVisor sandbox where the
# experiment uses one. Arguments go to `k3snb run` (ids, -p KEY=VALUE, --out DIR, --runsc 2024 ...).
#
#   bash scripts/run-suite.sh            # all experiments -> runs/<UTC timestamp>/
#   bash scripts/run-suite.sh 00 05      # just these
#
# The last line printed is the path of the run's findings report (report.html), also after Ctrl-C.
set -euo pipefail

# `k3snb run ARGS`, shown and kept, then the closing lines. tee ignores SIGINT: Ctrl-C reaches the
# whole process group, and the kit still prints the partial summary and results: after it, which a
# tee killed by the same Ctrl-C would drop (and the report: line below would never be found).
run_and_report() {
  local rc run_dir
  SUITE_LOG=$(mktemp)
  trap 'rm -f "$SUITE_LOG"' EXIT  # also when the script itself is stopped
  set +e
  .venv/bin/k3snb run "$@" | (trap '' INT; exec tee "$SUITE_LOG")
  rc=${PIPESTATUS[0]}
  set -e
  case $rc in
    0) echo "run-suite: all experiments passed or were skipped with a reason (see the summary above)" ;;
    1) echo "run-suite: some experiments failed; their notebooks and logs are in the run folder above" ;;
    130) echo "run-suite: interrupted; the summary above covers the experiments that ran" ;;
  esac
  # the findings report (claims x environments, plots, executed notebooks) is the run's last word
  run_dir=$(sed -n 's/^results: //p' "$SUITE_LOG" | tail -n 1)
  if [ -n "$run_dir" ] && [ -f "$run_dir/report.html" ]; then
    echo "report: $run_dir/report.html"
  fi
  return "$rc"
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then  # run, not sourced (tests source it to call run_and_report)
  cd "$(dirname "$0")/.."
  bash scripts/setup.sh
  rc=0
  run_and_report "$@" || rc=$?
  exit "$rc"
fi
