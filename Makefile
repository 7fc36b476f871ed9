# Two commands set everything up on a fresh machine with Python 3.11 and make:
#   make demo   — install, migrate SQLite, load demo data, start a django-q2 worker and the web server
#   make test   — run the whole test suite (SQLite by default; DATABASE_URL=postgres://… for PostgreSQL)
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000
PYTEST_ARGS ?=

.PHONY: demo test test-postgres lint format bench env venv lock clean

$(VENV)/installed: requirements.lock pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "Needs $(PYTHON) (set PYTHON=python3.x for another 3.11/3.12)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.lock
	touch $@

venv: $(VENV)/installed

# Local, git-ignored keys for the demo and the tests; production sets real environment variables instead.
var/local.env: | $(VENV)/installed
	mkdir -p var/static
	$(PY) -c "import secrets; from cryptography.fernet import Fernet; \
	print('SECRET_KEY=' + secrets.token_urlsafe(50)); \
	print('SERIAL_MASTER_KEYS=' + Fernet.generate_key().decode())" > $@
	chmod 600 $@

env: var/local.env

demo: venv env
	$(PY) manage.py migrate --noinput
	$(PY) manage.py load_demo
	$(PY) manage.py load_demo_pools
	$(PY) manage.py load_demo_partners
	@echo "Starting the django-q2 worker (ORM broker) and the web server on http://$(HOST):$(PORT)/ — Ctrl-C stops both."
	@trap 'kill 0' INT TERM EXIT; \
	$(PY) manage.py qcluster & \
	$(PY) manage.py runserver $(HOST):$(PORT)

test: venv env
	$(PY) -m pytest $(PYTEST_ARGS)

test-postgres: venv env
	DATABASE_URL=$${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/backoffice} $(PY) -m pytest $(PYTEST_ARGS)

lint: venv
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: venv
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

bench: venv env
	$(PY) bench/run.py

# Refresh the committed lock after changing pyproject.toml's ranges.
lock: venv
	$(PY) -m pip freeze --exclude-editable | sort > requirements.lock

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache .hypothesis
