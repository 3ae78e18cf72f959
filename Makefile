# The two commands of the README: `make demo` (set up + run the quickstart) and `make test` (set up + test).
# Both create or reuse .venv and install the package into it; nothing else needs to be installed by hand.
# `make bench` runs every benchmark case against its peer (bench/runner.py; BENCH_ARGS='phantom-render --rounds 5')
# and regenerates BENCHMARKS.md's runner table; it exits non-zero when a ratio misses its target.
VENV ?= .venv
PYTHON ?= python3
STAMP := $(VENV)/.synthvlp-installed

.PHONY: demo test test-slow bench clean-runs syncxr

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

# The SynCXR table at small scale (docs/syncxr.md): every recipe of configs/syncxr/ at equal steps, then one table.
syncxr: $(STAMP)
	$(VENV)/bin/synthvlp run configs/syncxr/synthetic.yaml
	$(VENV)/bin/synthvlp run configs/syncxr/synthetic-4x.yaml --stages plan,reports,images,filter,balance
	$(VENV)/bin/synthvlp run configs/syncxr/real.yaml
	$(VENV)/bin/synthvlp run configs/syncxr/mixed.yaml --stages pretrain,evaluate
	$(VENV)/bin/synthvlp run configs/syncxr/mixed-4x.yaml --stages pretrain,evaluate
	$(VENV)/bin/synthvlp pretrain rasd configs/rasd-2d.yaml backbone.name=clip backbone.clip_model=synthvlp-cnn-tiny train.out_dir=runs/syncxr/rasd
	$(VENV)/bin/synthvlp run configs/syncxr/mixed-rasd.yaml --stages pretrain,evaluate
	$(VENV)/bin/synthvlp compare runs/syncxr/real runs/syncxr/synthetic runs/syncxr/mixed runs/syncxr/mixed-4x runs/syncxr/mixed-rasd \
		--out runs/syncxr/table.md --plot runs/syncxr/table.png
