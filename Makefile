# One command to run the platform (`make dev`), one to test it (`make test`).
# Both bootstrap their own environment: uv (installed with pip into .bootstrap/ when it is not
# on PATH), then a locked virtualenv in .venv/.
SHELL := /bin/bash
PYTHON ?= python3
HOST ?= 127.0.0.1
PORT ?= 3000
DEMO_RATE ?= 20
export FIGSTREAM_HOME ?= $(CURDIR)/.figstream
export DAGSTER_HOME ?= $(FIGSTREAM_HOME)/dagster_home

UV := $(shell command -v uv 2>/dev/null)
ifeq ($(UV),)
UV := $(CURDIR)/.bootstrap/bin/uv
endif

.PHONY: setup dev test lint format demo-data clean lambda-zip

$(CURDIR)/.bootstrap/bin/uv:
	$(PYTHON) -m venv .bootstrap
	.bootstrap/bin/python -m pip install --quiet uv

.venv/.synced: pyproject.toml uv.lock | $(UV)
	$(UV) sync --locked
	touch $@

setup: .venv/.synced

demo-data: setup
	.venv/bin/figstream demo-data

# The UI plus a live demo stream: a producer lands DEMO_RATE events/s while dagster dev runs,
# and stops with it.
dev: setup demo-data
	mkdir -p "$(DAGSTER_HOME)"
	cp platform/local/dagster.yaml "$(DAGSTER_HOME)/dagster.yaml"
	.venv/bin/figstream produce --rate $(DEMO_RATE) --producer demo & producer=$$!; \
	trap 'kill -INT $$producer 2>/dev/null; wait $$producer 2>/dev/null' EXIT INT TERM; \
	.venv/bin/dagster dev -w workspace.yaml -h $(HOST) -p $(PORT)

lint: setup
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/lint-imports

format: setup
	.venv/bin/ruff check --fix .
	.venv/bin/ruff format .

# Two workers, a test file each at a time (a file's fixtures stay in one process): the slow
# files wait on servers and daemons as much as they compute.
test: lint
	.venv/bin/pytest -n 2 --dist loadfile

# The validate-batch Lambda's deployment package: dist/lambda.zip (lambdas/build_zip.py says
# what it holds and which layer brings pyarrow).
lambda-zip: setup
	.venv/bin/python -m lambdas.build_zip

clean:
	rm -rf .venv .bootstrap .pytest_cache .ruff_cache
