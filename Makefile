# The two commands of the README: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

## run: keys, database, demo client and user if missing; then serve on 127.0.0.1:5000
run: install
	$(BIN)/oidc-provider demo
	$(BIN)/oidc-provider run

## test: the whole suite (PostgreSQL and Redis tests skip locally without them, fail in CI)
test: install
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) instance .pytest_cache
