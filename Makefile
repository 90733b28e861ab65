# Two commands on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed

.PHONY: run test check bench load clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

## run: start the webhook on its embedded default (https://127.0.0.1:8443)
run: $(STAMP)
	$(BIN)/costgate serve

## test: lint, strict types, import contracts and the test suite
test: $(STAMP)
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
