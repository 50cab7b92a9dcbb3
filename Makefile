# Set-up is part of every target: the first `make demo` or `make test` creates .venv and
# installs the pinned requirements (torch 2.13.0 CPU is taken from the machine's disk).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test install clean

demo: $(STAMP)
	$(VENV)/bin/truthserum demo

test: $(STAMP)
	$(PY) -m pytest -q

install: $(STAMP)

$(STAMP): pyproject.toml requirements.lock requirements-test.lock
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.lock -r requirements-test.lock
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

clean:
	rm -rf $(VENV) runs .pytest_cache
