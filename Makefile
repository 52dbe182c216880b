# Two commands for a newcomer: `make demo` and `make test`.
# Each creates .venv and installs the project into it on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# docker-compose 1.29, for tests that validate docker-compose.yml (see compose-config).
COMPOSE_VENV := $(VENV)/compose
COMPOSE := $(COMPOSE_VENV)/bin/docker-compose

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/churnwatch demo

# Most integration tests wait on a broker or a worker's group join, so the suite runs on
# TEST_PROCESSES processes, a test file to each (its module fixtures are built once).
TEST_PROCESSES ?= 3

test: $(STAMP) $(COMPOSE)
	$(BIN)/python -m pytest -n $(TEST_PROCESSES) --dist loadfile

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/churnwatch bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info

# `docker-compose config` (Debian's/PyPI's docker-compose 1.29) validates docker-compose.yml
# without a Docker engine. It lives in a venv of its own: it pins old libraries (PyYAML 5,
# jsonschema 3) the project must not share. deploy/compose-constraints.txt lets PyYAML 5.4.1
# build on Python 3.11.
.PHONY: compose-config

$(COMPOSE):
	test -x $(COMPOSE_VENV)/bin/python || $(PYTHON) -m venv $(COMPOSE_VENV)
	PIP_CONSTRAINT=$(CURDIR)/deploy/compose-constraints.txt \
		$(COMPOSE_VENV)/bin/python -m pip install --quiet --disable-pip-version-check \
		'docker-compose==1.29.2'

compose-config: $(COMPOSE)
	$(COMPOSE) --file docker-compose.yml config --quiet
	$(COMPOSE) --file docker-compose.yml --profile demo config --quiet
	@echo "compose-config: docker-compose.yml is valid for $$($(COMPOSE) version --short)"
