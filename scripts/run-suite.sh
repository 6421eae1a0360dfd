#!/usr/bin/env bash
# Set everything up (scripts/setup.sh), then run the experiment suite: every notebook in
# notebooks/ executed by papermill, each in a fresh kernel, in a local gVisor sandbox where the
# experiment uses one. Arguments go to `k3snb run` (ids, -p KEY=VALUE, --out DIR, --runsc 2024 ...).
#
#   bash scripts/run-suite.sh            # all experiments -> runs/<UTC timestamp>/
#   bash scripts/run-suite.sh 00 05      # just these
#
# The last line printed is the path of the run's findings report (report.html).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
.venv/bin/k3snb run "$@" | tee "$log"
rc=${PIPESTATUS[0]}
set -e
case $rc in
  0) echo "run-suite: all experiments passed or were skipped with a reason (see the summary above)" ;;
  1) echo "run-suite: some experiments failed; their notebooks and logs are in the run folder above" ;;
esac
# the findings report (claims x environments, plots, executed notebooks) is the run's last word
run_dir=$(sed -n 's/^results: //p' "$log" | tail -n 1)
if [ -n "$run_dir" ] && [ -f "$run_dir/report.html" ]; then
  echo "report: $run_dir/report.html"
fi
exit $rc
