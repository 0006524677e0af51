# Entry points used by the README. `make run` and `make test` each install what they need first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cksum requirements.txt | cut -d' ' -f1)

.PHONY: install run test test-all test-oldest-dspy lint format clean bench bench-compare bench-gate bench-smoke torture

$(STAMP): requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

install: $(STAMP)

## Install, migrate the embedded SQLite database and start the dev server (reloads) with the examples,
## and one job worker beside it (docs/JOBS.md), stopped with the server.
run: install
	$(PY) manage.py migrate --noinput
	$(PY) manage.py jobworker & worker=$$!; trap 'kill $$worker 2>/dev/null' EXIT INT TERM; \
	$(PY) manage.py runserver $(ADDRPORT)

## Install, lint and run the test suite (SQLite; PostgreSQL when DATABASE_URL is set) without the
## tests marked `slow` (minutes each: the torture and soak runs, the wheel in a fresh virtualenv;
## a fast run of each stays in). PYTEST_WORKERS test processes (pytest-xdist; a test file's tests
## stay in one process, so its servers start once); 0 runs everything in this process.
PYTEST_WORKERS ?= 3
PYTEST_MARKERS ?= not slow
test: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/vulture
	$(PY) -m pytest -n $(PYTEST_WORKERS) --dist loadfile -m "$(PYTEST_MARKERS)" $(PYTEST_ARGS)

## The whole suite, the `slow` tests included (what CI runs: .ci/run).
test-all:
	$(MAKE) test PYTEST_MARKERS=

## The core suite (serving, tokens and cost in the log, error mapping, the DSPy patches' checks) on
## the oldest DSPy the wheel supports: pyproject.toml's lower bound, in its own venv with
## requirements.txt's other pins (a few minutes; CI runs it after `make test`).
DSPY_OLDEST := $(shell sed -n 's/^ *"dspy>=\([0-9.]*\),.*/\1/p' pyproject.toml)
OLDEST_VENV ?= .venv-dspy-$(DSPY_OLDEST)
OLDEST_STAMP := $(OLDEST_VENV)/.installed-$(shell cksum requirements.txt | cut -d' ' -f1)
CORE_TESTS ?= tests/programs/test_dspy_patches.py tests/programs/test_dspy_speedups.py tests/programs/test_prompts.py \
	tests/programs/test_routes.py tests/programs/test_route_contract.py tests/programs/test_upstream.py tests/telemetry/test_lm_usage.py \
	tests/programs/test_lm_gates.py tests/programs/test_upstream_policies.py \
	tests/telemetry/test_server.py::test_tokens_per_row_match_the_mock_under_200_concurrent_requests \
	tests/packaging/test_cli.py
$(OLDEST_STAMP): requirements.txt pyproject.toml
	test -n "$(DSPY_OLDEST)"
	test -x $(OLDEST_VENV)/bin/python || $(PYTHON) -m venv $(OLDEST_VENV)
	sed 's/^dspy==.*/dspy==$(DSPY_OLDEST)/' requirements.txt > $(OLDEST_VENV)/requirements.txt
	$(OLDEST_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(OLDEST_VENV)/bin/python -m pip install --quiet -r $(OLDEST_VENV)/requirements.txt
	rm -f $(OLDEST_VENV)/.installed-*
	touch $(OLDEST_STAMP)

test-oldest-dspy: $(OLDEST_STAMP)
	$(OLDEST_VENV)/bin/python -c "import dspy; assert dspy.__version__ == '$(DSPY_OLDEST)', dspy.__version__"
	TEST_READY_TIMEOUT_S=180 $(OLDEST_VENV)/bin/python -m pytest -n $(PYTEST_WORKERS) --dist loadfile $(CORE_TESTS)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/vulture

format: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

## Load tests (loadtest/README.md): the standard matrix into loadtest/results (about 45 minutes).
bench: install
	VENV=$(abspath $(VENV)) loadtest/run_matrix.sh

## This service (one process; the fixture's config, then the dspy-cli project's) against dspy-cli
## serving the same fixture, 50 users, 50 ms model.
bench-compare: install
	VENV=$(abspath $(VENV)) MODES="single dspy-cli-layout dspy-cli" POINTS="50:50" loadtest/run_matrix.sh

## The regression gate: the baseline's points, every mode, then assert_benchmark.py against
## loadtest/results/baseline (about 30 minutes; on the machine the baseline was measured on).
GATE_POINTS ?= 50:50 500:200 0:50 50:10 50:200
bench-gate: install
	rm -rf test-artifacts/bench-gate
	VENV=$(abspath $(VENV)) DURATION=20s POINTS="$(GATE_POINTS)" RESULTS_DIR=$(abspath test-artifacts/bench-gate) \
		loadtest/run_matrix.sh
	$(PY) loadtest/assert_benchmark.py loadtest/results/baseline test-artifacts/bench-gate

## A few seconds of load on one process, to prove the kit works (results in test-artifacts/).
bench-smoke: install
	VENV=$(abspath $(VENV)) RESULTS_DIR=test-artifacts/bench-smoke \
		loadtest/run_benchmark.sh --mode single --users 5 --duration 5s

## Torture test (loadtest/README.md): 100,000 requests of every shape to one process, then to
## gunicorn with 2 workers; every one answered and logged once (about 15 minutes per mode here).
torture: install
	$(PY) -m loadtest.torture $(TORTURE_ARGS)

clean:
	rm -rf $(VENV) .venv-dspy-* .pytest_cache .ruff_cache
