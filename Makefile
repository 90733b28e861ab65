# Two commands on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed

.PHONY: run test check bench load clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# The runtime dependencies at the versions the image runs (requirements.lock), then the
# package and its test tools around them: the suite tests what ships.
$(STAMP): pyproject.toml requirements.lock | $(BIN)/python
	$(BIN)/python -m pip install --quiet --require-hashes --only-binary=:all: --no-deps \
		-r requirements.lock
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

## run: start the webhook on its embedded default (https://127.0.0.1:8443)
run: $(STAMP)
	$(BIN)/costgate serve

# Debian tools the suite and the benchmarks' smoke drive: wrk offers HTTP load. Installed
# when missing (CI starts from a clean machine); where it cannot be, CI fails here.
TOOLS = $(VENV)/.tools
$(TOOLS): | $(BIN)/python
	@command -v wrk >/dev/null || apt-get install -y -qq wrk >/dev/null 2>&1 || \
		{ apt-get update -qq && apt-get install -y -qq wrk; } || \
		{ echo "make: wrk is missing and apt-get could not install it" >&2; [ "$$CI" != true ]; }
	touch $@

## test: lint, strict types, import contracts, the test suite and the benchmarks' smoke
test: $(STAMP) $(TOOLS)
	$(BIN)/ruff check webhook tests bench
	$(BIN)/ruff format --check webhook tests bench
	$(BIN)/mypy --strict webhook
	$(BIN)/lint-imports
	$(BIN)/python -m pytest
	$(BIN)/python bench/run.py --quick

## bench: the benchmarks (needs wrk and taskset for the server part)
bench: $(STAMP)
	$(BIN)/python bench/run.py

## load: the real server at rising rates until p99 > 10 ms, 1 and 2 workers, and a 10-minute soak
load: $(STAMP)
	$(BIN)/python bench/load.py

clean:
	rm -rf $(VENV) .costgate .pytest_cache .hypothesis
