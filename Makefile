# Development tasks for ckanext-webhooks. Every target is safe to re-run.
#
#   make venv       .venv with CKAN $(CKAN_VERSION), test tools and this extension
#   make services   PostgreSQL and Redis up, role ckan_default, databases ckan_test/ckan_demo
#   make browser    Debian's chromium, for the browser test
#   make test       run the test suite (PYTEST_ARGS="-k smoke -x" to pass options)
#   make demo       a local CKAN with the extension, a worker and a demo receiver
#   make clean      remove .venv and .demo

PYTHON ?= python3
CKAN_VERSION ?= 2.11.6
PYTEST_ARGS ?=
# another config (own database and Redis db) lets two test runs share a machine
TEST_INI ?= test.ini

VENV := .venv
BIN := $(VENV)/bin
# one stamp per CKAN version: changing CKAN_VERSION reinstalls
STAMP := $(VENV)/.installed-$(CKAN_VERSION)

.PHONY: venv services browser test demo clean

venv: $(STAMP)

$(STAMP): pyproject.toml setup.py dev-requirements.txt
	@# CKAN pins psycopg2, built from source: it needs pg_config and a C compiler
	@command -v pg_config >/dev/null && command -v gcc >/dev/null || { \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -qq libpq-dev gcc </dev/null; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@# pip may warn "Location ... is ignored" for configured extra indexes: harmless
	$(BIN)/python -m pip install --disable-pip-version-check \
		"ckan[requirements]==$(CKAN_VERSION)" -r dev-requirements.txt -e .
	rm -f $(VENV)/.installed-*
	touch $@

services:
	bash scripts/services.sh

# the browser test drives Debian's chromium with playwright (no downloads)
browser:
	@command -v chromium >/dev/null || { apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium </dev/null; }

test: venv services browser
	$(BIN)/ckan -c $(TEST_INI) db init
	$(BIN)/ckan -c $(TEST_INI) db upgrade -p webhooks
	$(BIN)/pytest --ckan-ini=$(TEST_INI) ckanext/webhooks/tests $(PYTEST_ARGS)

demo: venv services
	VENV=$(VENV) bash scripts/demo.sh

clean:
	rm -rf $(VENV) .demo
