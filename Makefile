# Developer shortcuts; a fresh machine needs only the two commands in README.md (no make required).
.PHONY: setup run test quick notebooks template lint doctor clean

setup:
	bash scripts/setup.sh

run:
	bash scripts/run-suite.sh

test:
	bash scripts/test.sh

quick:  ## the test suite without the slow tests
	bash scripts/test.sh -m "not slow"

# maintainers: re-execute every notebook in place (passed ones replace their source, outputs included)
notebooks: setup template
	.venv/bin/k3snb run --in-place

# the template is not an experiment (no registry entry); execute it with Jupyter state kept out of $HOME
template:
	d=$$(mktemp -d) && IPYTHONDIR=$$d/ipython JUPYTER_CONFIG_DIR=$$d/config JUPYTER_DATA_DIR=$$d/data \
	  JUPYTER_RUNTIME_DIR=$$d/runtime MPLCONFIGDIR=$$d/mpl JUPYTER_PLATFORM_DIRS=1 TMPDIR=$$d \
	  .venv/bin/papermill -k k3snb --cwd $$d notebooks/_template.ipynb notebooks/_template.ipynb; \
	rc=$$?; rm -rf $$d; exit $$rc

lint:
	.venv/bin/ruff check .

doctor:
	.venv/bin/k3snb doctor

clean:  ## what the kit tagged and a killed run left behind; then caches (runs/ is kept)
	-.venv/bin/k3snb doctor --clean
	rm -rf .cache/test-run build *.egg-info
