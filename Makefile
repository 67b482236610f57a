# twinkle-auto: `make demo` and `make test` each set up .venv on their own (see README).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q
export TWINKLE_DEMO_HOME ?= $(CURDIR)/.demo-home

.PHONY: demo cli-demo test test-fast bench lint format clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade "pip>=24"

# One stamp per set of extras: editing pyproject.toml reinstalls.
$(VENV)/.stamp-test: pyproject.toml | $(PY)
	$(PIP) install -e ".[dev,examples]"
	@touch $@

$(VENV)/.stamp-demo: pyproject.toml | $(PY)
	$(PIP) install -e ".[examples,llm]"
	$(PIP) install --no-deps -e .
	@touch $@

demo: $(VENV)/.stamp-demo
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" bash examples/demo.sh

cli-demo: $(VENV)/.stamp-demo
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" bash examples/cli_demo.sh

test: $(VENV)/.stamp-test
	$(PY) -m pytest -q

test-fast: $(VENV)/.stamp-test
	$(PY) -m pytest -q -m "not slow and not torch"

bench: $(VENV)/.stamp-test
	$(PY) benchmarks/run_all.py

lint: $(VENV)/.stamp-test
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(VENV)/.stamp-test
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf $(VENV) .demo-home .pytest_cache .ruff_cache
