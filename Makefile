# Set-up is part of every target: the first `make demo` or `make test` creates .venv and
# installs the pinned requirements (torch 2.13.0 CPU is taken from the machine's disk).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test install clean

demo: $(STAMP)
	$(VENV)/bin/truthserum demo

# Two pytest workers (pytest-xdist): each test runs torch on one thread (tests/conftest.py), so
# one process leaves the second core of a 2-core machine idle; on this project's 2-core machine
# the suite took 359 s in one process and 220 to 231 s with two. TEST_WORKERS=0 runs it in one
# process.
TEST_WORKERS ?= 2

test: $(STAMP)
	$(PY) -m pytest -q -n $(TEST_WORKERS)

install: $(STAMP)

$(STAMP): pyproject.toml requirements.lock requirements-test.lock
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.lock -r requirements-test.lock
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

clean:
	rm -rf $(VENV) runs .pytest_cache
