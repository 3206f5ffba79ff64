# robustify: `make demo` sets up and runs the main job, `make test` passes the tests.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

.PHONY: install demo up test lint bench clean

install: $(INSTALLED)

$(INSTALLED): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(INSTALLED)

demo: install
	$(BIN)/robustify demo

# The whole service on this machine (API + a Celery worker), state in ./.robustify.
up: install
	$(BIN)/robustify up

lint: install
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest

bench: install
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	$(BIN)/python -m benchmarks.aft_vs_scratch
	$(BIN)/python -m benchmarks.aft_vs_scratch --setting digits32_resnet18
	$(BIN)/python -m benchmarks.schedules
	$(BIN)/python -m benchmarks.pgd_speed
	$(BIN)/python -m benchmarks.zoo --threads 2
	$(BIN)/python -m benchmarks.eval_cost --threads 2
	$(BIN)/python -m benchmarks.throughput --threads 2
	$(BIN)/python -m benchmarks.data_scale
	$(BIN)/python -m benchmarks.ddp
	$(BIN)/python -m benchmarks.service_overhead
	$(BIN)/python -m benchmarks.api_load
	$(BIN)/python -m benchmarks.upload

clean:
	rm -rf $(VENV) demo-output .pytest_cache .ruff_cache .mypy_cache
