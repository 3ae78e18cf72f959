# The two commands of the README: `make demo` (set up + run the quickstart) and `make test` (set up + test).
# Both create or reuse .venv and install the package into it; nothing else needs to be installed by hand.
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

clean-runs:
	rm -rf runs/
