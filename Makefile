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

.PHONY: setup dev dev-aws test test-slow lint format demo-data clean lambda-zip

$(CURDIR)/.bootstrap/bin/uv:
	$(PYTHON) -m venv .bootstrap
	.bootstrap/bin/python -m pip install --quiet uv

.venv/.synced: pyproject.toml uv.lock | $(UV)
	$(UV) sync --locked
	touch $@

# The browser test (tests/test_ui_browser.py) drives Debian's headless Chromium through
# Playwright: `playwright install` would download a browser build, which CI cannot.
CHROMIUM := /usr/bin/chromium
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
$(CHROMIUM):
	$(SUDO) apt-get update -q
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver

setup: .venv/.synced $(CHROMIUM)

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

# The production profile on this machine: moto server on 127.0.0.1:$(MOTO_PORT) stands in for
# AWS (S3, EventBridge, SQS, DynamoDB), the machine's Postgres holds the Dagster instance
# (database $(PG_DB)), the ingest step's Lambda runs as a subprocess through Dagster Pipes, and
# the live stream goes through the bus. A real account: docs/deploy-aws.md.
MOTO_PORT ?= 5055
PG_DB ?= figstream_dev
AWS_DEV_ENV = FIGSTREAM_PROFILE=aws FIGSTREAM_AWS_ENDPOINT=http://127.0.0.1:$(MOTO_PORT) \
	AWS_ACCESS_KEY_ID=dev AWS_SECRET_ACCESS_KEY=dev AWS_DEFAULT_REGION=us-east-1 \
	FIGSTREAM_LAMBDA_INVOKER=subprocess DAGSTER_HOME=$(FIGSTREAM_HOME)/dagster_home_aws \
	DAGSTER_PG_HOST=127.0.0.1 DAGSTER_PG_PORT=5432 DAGSTER_PG_USER=postgres \
	DAGSTER_PG_PASSWORD= DAGSTER_PG_DB=$(PG_DB)
dev-aws: setup demo-data
	mkdir -p "$(FIGSTREAM_HOME)/dagster_home_aws"
	# No ECS here: backfills and the legacy night start on the local workers like streaming runs.
	sed -e 's/backfills_on_ecs: true/backfills_on_ecs: false/' \
		-e 's/ecs_jobs: \[legacy_nightly_job\]/ecs_jobs: []/' \
		platform/aws/dagster.yaml > "$(FIGSTREAM_HOME)/dagster_home_aws/dagster.yaml"
	psql -h 127.0.0.1 -U postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$(PG_DB)'" \
		| grep -q 1 || createdb -h 127.0.0.1 -U postgres $(PG_DB)
	curl -sf http://127.0.0.1:$(MOTO_PORT)/moto-api/data.json >/dev/null || \
		{ .venv/bin/moto_server -H 127.0.0.1 -p $(MOTO_PORT) >"$(FIGSTREAM_HOME)/moto.log" 2>&1 & \
		  for i in $$(seq 50); do curl -sf http://127.0.0.1:$(MOTO_PORT)/moto-api/data.json \
		  >/dev/null && break; sleep 0.2; done; }
	$(AWS_DEV_ENV) .venv/bin/figstream aws setup
	$(AWS_DEV_ENV) .venv/bin/figstream produce --rate $(DEMO_RATE) --producer demo & producer=$$!; \
	trap 'kill -INT $$producer 2>/dev/null; wait $$producer 2>/dev/null' EXIT INT TERM; \
	$(AWS_DEV_ENV) .venv/bin/dagster dev -w workspace.yaml -h $(HOST) -p $(PORT)

lint: setup
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/lint-imports

format: setup
	.venv/bin/ruff check --fix .
	.venv/bin/ruff format .

# Two workers, a test file each at a time (a file's fixtures stay in one process). `make test`
# leaves out the end-to-end tests marked `slow` (real dagster dev, daemons, webserver, long
# moto-backed scenarios); `make test-slow` runs exactly those. .ci/run runs both.
PYTEST := .venv/bin/pytest -n 2 --dist loadfile --durations=25
test: lint
	$(PYTEST) -m "not slow"

# Files whose tests start dagster dev first (tests/conftest.py), not the files with most tests.
test-slow: setup
	$(PYTEST) -m slow --no-loadscope-reorder

# The validate-batch Lambda's deployment package: dist/lambda.zip (lambdas/build_zip.py says
# what it holds and which layer brings pyarrow).
lambda-zip: setup
	.venv/bin/python -m lambdas.build_zip

clean:
	rm -rf .venv .bootstrap .pytest_cache .ruff_cache
