# Every target creates .venv and installs the pinned dependencies when needed,
# so `make test` and `make repro` work on a fresh clone with nothing but
# Python 3.11 (python3 -m venv) on the PATH.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: repro test install clean-venv

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

# The main job. Until the notebook pipeline lands: an end-to-end check that
# builds a model and evaluates it on a small generated set.
repro: $(STAMP)
	$(PY) -m repro smoke

test: $(STAMP)
	$(PY) -m pytest

clean-venv:
	rm -rf $(VENV)
