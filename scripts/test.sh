#!/usr/bin/env bash
# Set everything up (scripts/setup.sh), then run the whole test suite: ruff, the unit/integration tests
# and nbval over the stored notebooks (tests/test_notebooks.py). Extra arguments go to pytest.
#
#   bash scripts/test.sh                 # everything
#   bash scripts/test.sh -m "not slow"   # the quick part
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

# Jupyter, IPython, matplotlib and the kit's temp dirs of the whole test session stay in one folder
export K3SNB_TEST_RUN=$PWD/.cache/test-run
rm -rf "$K3SNB_TEST_RUN"
mkdir -p "$K3SNB_TEST_RUN"

echo "test: ruff"
.venv/bin/ruff check .

echo "test: pytest"
set +e
.venv/bin/python -m pytest tests "$@"
rc=$?
set -e
if [ $rc -eq 5 ]; then
  echo "test: error: pytest collected no tests — that is a failure, not a pass" >&2
  exit 1
fi
exit $rc
