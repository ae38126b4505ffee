# `make test` and `make demo` bootstrap their own virtual environment on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
DEMO_DIR ?= demo-output

.PHONY: test demo bench clean

# constraints.txt holds the exact torch/torchaudio that CI and the images use.
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q -rs

# The reproduce scripts natively on the synthetic corpus: pretrain, extract, probe, results table.
demo: $(STAMP)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" bash reproduce/demo.sh $(DEMO_DIR)

bench: $(STAMP)
	$(PY) benchmarks/extract.py

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache
