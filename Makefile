# The two entry points named in the README. Each creates the virtual environment it needs and
# installs this project into it (editable), which puts the `sonomark` command in $(VENV)/bin.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: app test

$(VENV)/.app: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $@

$(VENV)/.test: requirements.txt requirements-cluster.txt requirements-test.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements-test.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $@

app: $(VENV)/.app
	$(VENV)/bin/sonomark app

test: $(VENV)/.test
	$(PY) -m pytest
