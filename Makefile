# Developer shortcuts; a fresh machine needs only the two commands in README.md (no make required).
.PHONY: setup run test quick notebooks lint doctor clean

setup:
	bash scripts/setup.sh

run:
	bash scripts/run-suite.sh

test:
	bash scripts/test.sh

quick:  ## the test suite without the slow tests
	bash scripts/test.sh -m "not slow"

# maintainers: re-execute every notebook in place (passed ones replace their source, outputs included)
notebooks: setup
	.venv/bin/k3snb run --in-place

lint:
	.venv/bin/ruff check .

doctor:
	.venv/bin/k3snb doctor

clean:  ## what the kit tagged and a killed run left behind; then caches (runs/ is kept)
	-.venv/bin/k3snb doctor --clean
	rm -rf .cache/test-run build *.egg-info
