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
# torch first (the local CPU wheel), then every extra the test suites use, then our own package once more
# with --no-deps: twinkle-kit also installs a `twinkle-auto` command, and the last install owns the name.
$(VENV)/.stamp-test: pyproject.toml | $(PY)
	$(PIP) install "torch==2.13.0"
	$(PIP) install -e ".[dev,examples,search,hf,llm,server]"
	$(PIP) install --no-deps --force-reinstall -e .
	@touch $@

# The fetch writes the .sha256 marker last, so an interrupted fetch runs again.
MODEL := .models/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf.sha256
$(MODEL): | $(VENV)/.stamp-test
	$(PY) -m twinkle_auto.app.local_llm fetch .models

$(VENV)/.stamp-demo: pyproject.toml | $(PY)
	$(PIP) install "torch==2.13.0"
	$(PIP) install -e ".[examples,llm]"
	$(PIP) install --no-deps --force-reinstall -e .
	@touch $@

demo: $(VENV)/.stamp-demo
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" bash examples/demo.sh

cli-demo: $(VENV)/.stamp-demo
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" bash examples/cli_demo.sh

# Two workers (CI has 2 cores; most tests wait on processes, servers and pipes): the LLM, Ray and server
# suites each stay in one worker (tests/conftest.py: SHARED_RESOURCE_GROUPS).
TEST_WORKERS ?= 2
test: $(VENV)/.stamp-test $(MODEL)
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadgroup --durations=25

test-fast: $(VENV)/.stamp-test
	$(PY) -m pytest -q -m "not slow and not torch and not hf and not llm and not ray and not twinkle_server"

bench: $(VENV)/.stamp-test $(MODEL)
	$(PY) benchmarks/run_all.py
	$(PY) -m pytest -q -m bench

lint: $(VENV)/.stamp-test
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(VENV)/.stamp-test
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf $(VENV) .demo-home .pytest_cache .ruff_cache
