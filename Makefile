# The two commands of the README: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test clean browser audit

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

## test: the whole suite (PostgreSQL, Redis and browser tests skip locally without them, fail in CI)
test: install browser audit
	$(BIN)/python -m pytest

## audit: known vulnerabilities in the installed dependencies (pip-audit); without an advisory
## service it fails in CI and skips locally with a message (tests/security/audit.py)
audit: install
	$(BIN)/python tests/security/audit.py

## browser: Debian's chromium for the browser tests (Playwright drives it; it never downloads one)
browser:
	@command -v chromium >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	  else echo "chromium is not installed and this is not root: the browser tests will skip"; fi; }

clean:
	rm -rf $(VENV) instance .pytest_cache
