# The two set-up commands: `make demo` and `make test`. Both create .venv when needed.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
# The demo needs the runtime dependencies only (a fresh clone's `make demo` spends less
# time installing); tests, benchmarks and lint need the dev extras as well.
RUNTIME_STAMP := $(VENV)/.installed-runtime
STAMP := $(VENV)/.installed-stamp

.PHONY: install demo test bench lint format clean

$(RUNTIME_STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	touch $(RUNTIME_STAMP)

$(STAMP): $(RUNTIME_STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(RUNTIME_STAMP)
	PREFECT_SERVER_ANALYTICS_ENABLED=false $(BIN)/selfheal demo $(DEMO_ARGS)

# Two workers: most of the suite's time is spent waiting (real servers starting, cycles
# ticking), so two processes halve its wall time on two cores (22 -> 13 min measured).
# Each worker starts its own temporary Prefect server; `make test PYTEST_WORKERS=0` runs
# everything in one process.
PYTEST_WORKERS ?= 2
test: $(STAMP)
	$(BIN)/pytest $(if $(filter 0,$(PYTEST_WORKERS)),,-n $(PYTEST_WORKERS) --dist worksteal) $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python -m bench $(if $(QUICK),--quick) $(BENCH)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy storage tasks flows

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .selfheal .pytest_cache .mypy_cache .ruff_cache
