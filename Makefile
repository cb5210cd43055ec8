# The two commands of the README: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run serve test clean browser faketime interop audit bench bench-compare messages

install: $(STAMP)

## argon2id's C library is compiled for this CPU (AVX2/AVX-512: about 1.6x less CPU per password
## hash than the portable SSE2 wheel); for images that move between CPUs, ARGON2_MARCH=x86-64-v3
## (any AVX2 CPU) or x86-64-v2. Without a C compiler the next step installs the portable wheel.
ARGON2_MARCH ?= native
ARGON2_BINDINGS := $(shell sed -n 's/.*"\(argon2-cffi-bindings==[^"]*\)".*/\1/p' pyproject.toml)
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	CFLAGS="-march=$(ARGON2_MARCH)" $(BIN)/python -m pip install --quiet --no-cache-dir --force-reinstall \
	  --no-deps --no-binary argon2-cffi-bindings '$(ARGON2_BINDINGS)' \
	  || echo "argon2: no build for this CPU; the portable wheel costs about 1.6x the CPU per password hash"
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

## run: keys, database, demo client and user if missing; then serve on 127.0.0.1:5000
run: install
	$(BIN)/oidc-provider demo
	$(BIN)/oidc-provider run

## serve: production shape: Granian with WORKERS processes (default one per CPU) on HOST:PORT;
## settings from config/provider.yaml and the environment (ISSUER, DATABASE_URL, REDIS_URL, METRICS_TOKEN)
HOST ?= 127.0.0.1
PORT ?= 5000
WORKERS ?=
THREADS ?= 4
serve: install
	$(BIN)/oidc-provider db upgrade
	$(BIN)/oidc-provider serve --host $(HOST) --port $(PORT) --threads $(THREADS) $(if $(WORKERS),--workers $(WORKERS))

## test: the whole suite (PostgreSQL, Redis and browser tests skip locally without them, fail in CI)
test: install browser faketime interop audit
	$(BIN)/python -m pytest

## interop: outside client libraries (npm) that the interoperability tests drive
interop:
	cd tests/interop && npm ci --no-audit --no-fund --silent

## audit: known vulnerabilities in the installed dependencies (pip-audit); without an advisory
## service it fails in CI and skips locally with a message (tests/security/audit.py)
audit: install
	$(BIN)/python tests/security/audit.py

## browser: Debian's chromium for the browser tests (Playwright drives it; it never downloads one)
browser:
	@command -v chromium >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	  else echo "chromium is not installed and this is not root: the browser tests will skip"; fi; }

## faketime: libfaketime, with which the fault tests move a served provider's clock
faketime:
	@ls /usr/lib/*/faketime/libfaketimeMT.so.1 >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq faketime; \
	  else echo "libfaketime is not installed and this is not root: the clock fault tests will skip"; fi; }

## bench: our provider in production shape (PostgreSQL, Redis, the production WSGI server) under load;
## BENCH_ARGS passes options, e.g. BENCH_ARGS="--repeat 3 --duration 6" (python -m bench.run --help)
BENCH_ARGS ?=
bench: install
	$(BIN)/python -m bench.run $(BENCH_ARGS)

## bench-compare: the same workloads against node-oidc-provider (npm) in one run, with ratios
bench-compare: install
	cd bench/peer && npm ci --no-audit --no-fund --silent
	$(BIN)/python -m bench.run --compare $(BENCH_ARGS)

## messages: re-extract the pages' and emails' texts into messages.pot, merge them into every
## translations/<lang>/LC_MESSAGES/messages.po, and compile the .mo files (commit all three)
messages: install
	$(BIN)/pybabel extract --no-location --no-wrap --sort-output --project oidc-provider -F babel.cfg -k _l -k lazy_gettext -o messages.pot oidc_provider
	$(BIN)/pybabel update --no-fuzzy-matching --no-wrap -i messages.pot -d oidc_provider/translations
	$(BIN)/pybabel compile --use-fuzzy -d oidc_provider/translations

clean:
	rm -rf $(VENV) instance .pytest_cache
