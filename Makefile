# The two commands of the README: `make demo` (set up + run the quickstart) and `make test` (set up + test).
# Both create or reuse .venv and install the package into it; nothing else needs to be installed by hand.
# `make bench` runs every benchmark case against its peer (bench/runner.py; BENCH_ARGS='phantom-render --rounds 5')
# and regenerates BENCHMARKS.md's runner table; it exits non-zero when a ratio misses its target.
VENV ?= .venv
PYTHON ?= python3
STAMP := $(VENV)/.synthvlp-installed

.PHONY: demo test test-slow bench clean-runs

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet -e '.[dev,ray]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/synthvlp run configs/quickstart.yaml

test: $(STAMP)
	$(VENV)/bin/python -m pytest -q

test-slow: $(STAMP)
	$(VENV)/bin/python -m pytest -q -m slow

bench: $(STAMP)
	$(VENV)/bin/python bench/runner.py $(BENCH_ARGS); status=$$?; $(VENV)/bin/python bench/tables.py && exit $$status

clean-runs:
	rm -rf runs/
