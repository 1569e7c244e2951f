# The README's two commands. Both create .venv when it is missing and reinstall when
# pyproject.toml changes; neither needs anything installed by hand.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
export LITELLM_LOCAL_MODEL_COST_MAP := True
export DO_NOT_TRACK := 1

.PHONY: run test install install-test clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

run: install
	$(BIN)/sleeptime run $(ARGS)

test: install-test
	$(BIN)/python -m pytest -q $(ARGS)

clean:
	rm -rf out .pytest_cache
