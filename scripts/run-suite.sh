#!/usr/bin/env bash
# Set everything up (scripts/setup.sh), then run the experiment suite: every notebook in
# notebooks/ executed by papermill, each in a fresh kernel, in a local gVisor sandbox where the
# experiment uses one. Arguments go to `k3snb run` (ids, -p KEY=VALUE, --out DIR, --runsc 2024 ...).
#
#   bash scripts/run-suite.sh            # all experiments -> runs/<UTC timestamp>/
#   bash scripts/run-suite.sh 00 05      # just these
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
set +e
.venv/bin/k3snb run "$@"
rc=$?
set -e
case $rc in
  0) echo "run-suite: all experiments passed or were skipped with a reason (see the summary above)" ;;
  1) echo "run-suite: some experiments failed; their notebooks and logs are in the run folder above" ;;
esac
exit $rc
