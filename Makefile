# Development tasks for ckanext-webhooks. Every target is safe to re-run.
#
#   make venv       .venv with CKAN $(CKAN_VERSION), test tools and this extension
#   make services   PostgreSQL and Redis up, role ckan_default, databases ckan_test/ckan_demo
#   make solr       Apache Solr 9 (Maven) with a `ckan` core on 127.0.0.1:$(SOLR_PORT),
#                   in the foreground; `make test`, `make demo` and `make bench`
#                   start one of their own (scripts/solr.sh)
#   make browser    Debian's chromium, for the browser test
#   make lint       ruff and mypy (pinned in lint-requirements.txt)
#   make test       run the test suite (PYTEST_ARGS="-k smoke -x" to pass options)
#                   against a Solr of its own (TEST_SOLR_URL=... to use another)
#                   on another CKAN: make test CKAN_VERSION=2.12.0
#   make test-fast  the suite without the slow tests (pytest -m "not slow": those
#                   that start workers, CKAN servers, a browser, the demo or a
#                   Redis or PostgreSQL of their own)
#   make test-matrix the suite on CKAN 2.10.11, 2.11.6 and 2.12.0, one after another
#   make bench      the benchmarks (BENCH_SIZE=smoke for a short run)
#   make demo       a local CKAN with the extension, a worker and a demo receiver
#                   (installs CKAN and the extension only, not the test tools)
#   make clean      remove .venv and .demo

PYTHON ?= python3
DEFAULT_CKAN := 2.11.6
CKAN_VERSION ?= $(DEFAULT_CKAN)
MATRIX := 2.10.11 2.11.6 2.12.0
PYTEST_ARGS ?=
BENCH_SIZE ?= full

# The default CKAN lives in .venv and tests against test.ini; every other
# version gets its own venv, and its own database and Redis db through a
# generated config, since CKAN versions migrate the core tables differently.
ifeq ($(CKAN_VERSION),$(DEFAULT_CKAN))
VENV := .venv
TEST_INI ?= test.ini
else
VERSION_SLUG := $(subst .,_,$(CKAN_VERSION))
VENV := .venv-$(CKAN_VERSION)
TEST_INI ?= .test-$(CKAN_VERSION).ini
export SERVICES_DATABASES := ckan_test_$(VERSION_SLUG)
endif
BIN := $(VENV)/bin
# one stamp per CKAN version: changing CKAN_VERSION reinstalls
STAMP := $(VENV)/.installed-$(CKAN_VERSION)

# the demo needs CKAN, the extension and scripts/demo-requirements.txt only
DEMO_STAMP := $(VENV)/.demo-installed-$(CKAN_VERSION)

.PHONY: venv demo-venv build-tools services solr browser lint test test-fast \
	test-matrix bench demo clean

venv: $(STAMP)

# CKAN pins psycopg2, built from source: it needs pg_config and a C compiler
build-tools:
	@command -v pg_config >/dev/null && command -v gcc >/dev/null || { \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -qq libpq-dev gcc </dev/null; }

$(STAMP): pyproject.toml setup.py dev-requirements.txt browser-requirements.txt | build-tools
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@# pip may warn "Location ... is ignored" for configured extra indexes: harmless
	$(BIN)/python -m pip install --disable-pip-version-check \
		"ckan[requirements]==$(CKAN_VERSION)" -r dev-requirements.txt -e .
	$(BIN)/python -m pip install --disable-pip-version-check \
		-r browser-requirements.txt
	rm -f $(VENV)/.installed-*
	touch $@

services:
	bash scripts/services.sh

SOLR_PORT ?= 8983
SOLR_HOME ?= .solr
solr: venv
	VENV=$(VENV) exec bash scripts/solr.sh foreground $(SOLR_HOME) $(SOLR_PORT)

# the browser test drives Debian's chromium with playwright (no downloads)
browser:
	@command -v chromium >/dev/null || { apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium </dev/null; }

.test-%.ini: test.ini
	sed -e 's#/ckan_test$$#/ckan_test_$(subst .,_,$*)#' \
	    -e 's#^ckan.redis.url = .*#ckan.redis.url = redis://127.0.0.1:6379/$(word 2,$(subst ., ,$*))#' \
	    -e 's#^ckan.site_id = .*#ckan.site_id = webhooks-test-$*#' $< > $@

# ruff over the code, tests and tools; mypy over the extension's code
# (config in pyproject.toml: [tool.ruff], [tool.mypy]). The tools have a venv
# of their own: CKAN's [requirements] extra pins another mypy. mypy reads
# CKAN and the libraries from the test venv (CI: the default CKAN's).
LINT_VENV := .venv-lint
LINT_STAMP := $(LINT_VENV)/.installed

$(LINT_STAMP): lint-requirements.txt
	test -x $(LINT_VENV)/bin/python || $(PYTHON) -m venv $(LINT_VENV)
	$(LINT_VENV)/bin/python -m pip install --disable-pip-version-check \
		-r lint-requirements.txt
	touch $@

lint: venv $(LINT_STAMP)
	$(LINT_VENV)/bin/ruff check ckanext bench scripts
	$(LINT_VENV)/bin/mypy --python-executable $(BIN)/python

# the slow tests are marked in the tests (conftest.py registers the marker)
test-fast: SELECT_TESTS := -m "not slow"

# One Solr for the whole run (scripts/solr.sh run: a free port, the index in
# memory, CKAN's schema from $(VENV), stopped afterwards); the tests and the
# workers and servers they start read its core from CKAN_SOLR_URL.
# TEST_SOLR_URL=http://127.0.0.1:8983/solr/ckan uses a Solr already running.
TEST_SOLR_URL ?=
WITH_TEST_SOLR = $(if $(TEST_SOLR_URL),env CKAN_SOLR_URL=$(TEST_SOLR_URL),\
	VENV=$(VENV) bash scripts/solr.sh run)

# (the database commands inside it too: CKAN checks its Solr when it starts)
test test-fast: venv services browser $(filter .test-%,$(TEST_INI))
	$(WITH_TEST_SOLR) bash -c '"$$1" -c "$$2" db init && \
		"$$1" -c "$$2" db upgrade -p webhooks && exec "$${@:3}"' _ \
		$(BIN)/ckan $(TEST_INI) \
		$(BIN)/pytest --ckan-ini=$(TEST_INI) ckanext/webhooks/tests $(SELECT_TESTS) $(PYTEST_ARGS)

test-matrix:
	@for v in $(MATRIX); do \
		echo "== CKAN $$v"; \
		$(MAKE) --no-print-directory test CKAN_VERSION=$$v || exit $$?; \
	done

bench: venv services
	bench/run --size $(BENCH_SIZE)

demo-venv: $(DEMO_STAMP)

$(DEMO_STAMP): pyproject.toml setup.py scripts/demo-requirements.txt | build-tools
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --disable-pip-version-check \
		"ckan[requirements]==$(CKAN_VERSION)" -r scripts/demo-requirements.txt -e .
	rm -f $(VENV)/.demo-installed-*
	touch $@

# exec: Ctrl-C and `kill -TERM` reach the demo script itself, which stops
# every process it started
demo: demo-venv services
	VENV=$(VENV) exec bash scripts/demo.sh

clean:
	rm -rf .venv .venv-* .demo .solr .test-*.ini .test-storage
