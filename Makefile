# gpumeter: the single entry point. `make demo` and `make test` work on a fresh machine.
SHELL := /bin/bash
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
DEMO_PERIOD ?=
DEMO_ARGS ?=
export PATH := $(CURDIR)/$(BIN):$(PATH)
# The local stack's Stripe test key and webhook secret (stripe-mock; no default elsewhere).
include infra/local.env
export GPUMETER_STRIPE_API_KEY GPUMETER_STRIPE_WEBHOOK_SECRET
export GPUMETER_EXPORT_PSEUDONYM_KEY GPUMETER_S3_ACCESS_KEY_ID GPUMETER_S3_SECRET_ACCESS_KEY
export GPUMETER_DASHBOARD_SECRET

FAULT_ARGS ?=
BENCH_SCALE ?= 1

.PHONY: browser focus-validator demo-reset bench faults install stack-up stack-down stack-status migrate demo test test-unit test-fast lint typecheck schemas clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@touch $(STAMP)

# The FinOps Foundation's focus-validator in its own environment (Python >= 3.12 via pyenv);
# the partner-export tests run it on real exports.
FOCUS_VALIDATOR := $(or $(GPUMETER_LOCAL_DIR),.local)/focus-validator/venv/.installed
focus-validator: $(FOCUS_VALIDATOR)

$(FOCUS_VALIDATOR): infra/focus-validator.sh
	bash infra/focus-validator.sh install

# Debian's headless Chromium + chromium-driver for tests/browser (installed when missing).
browser:
	bash infra/browser.sh

stack-up:
	bash infra/stack.sh up

stack-down:
	bash infra/stack.sh down

stack-status:
	bash infra/stack.sh status

migrate: install
	$(BIN)/gpumeter db migrate

demo: install stack-up
	$(BIN)/gpumeter demo $(if $(DEMO_PERIOD),--period $(DEMO_PERIOD),) $(DEMO_ARGS)

# Start the demo from scratch (drops the gpumeter database, topics and worker state).
demo-reset: install stack-up
	$(BIN)/gpumeter reset --yes

# Everything: unit, integration (Kafka, ClickHouse server, chdb, stripe-mock) and end-to-end.
test: install stack-up focus-validator browser
	$(BIN)/pytest $(PYTEST_ARGS)

# Fault injection at a larger volume than the tests: ends with the `faults: ... lost=0 double_counted=0` line.
faults: install stack-up
	$(BIN)/gpumeter db migrate
	$(BIN)/gpumeter faults $(FAULT_ARGS)

# Benchmark: every figure against a baseline measured in the same run; BENCH_SCALE=0.1 is quick.
bench: install stack-up
	$(BIN)/gpumeter bench --scale $(BENCH_SCALE)

# Pure tests only, no services.
test-unit: install
	$(BIN)/pytest -m "unit" $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check pipeline devtools tests
	$(BIN)/mypy

schemas: install
	$(BIN)/gpumeter schemas write

clean:
	rm -rf out .pytest_cache .mypy_cache .ruff_cache
