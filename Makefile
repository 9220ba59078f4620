# Two commands: `make app` (set up and launch the dashboard) and `make test` (set up and test).
PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: app test e2e bench browser-deps

$(BIN)/python:
	$(PY) -m venv $(VENV)

# Reinstall only when requirements.txt changes.
$(STAMP): requirements.txt | $(BIN)/python
	$(BIN)/pip install -q -r requirements.txt
	touch $(STAMP)

app: $(STAMP)
	$(BIN)/streamlit run dashboard/app.py

# In parallel, one worker per core (pytest-xdist); worksteal evens out the few long tests.
# `test`: everything but the scenarios across real processes (marked e2e), which `e2e` runs;
# CI (.ci/run) runs both.
test: $(STAMP)
	$(BIN)/python -m pytest -q -n auto --dist worksteal -m "not e2e" --durations=15 tests

e2e: $(STAMP)
	$(BIN)/python -m pytest -q -n auto --dist worksteal -m e2e --durations=0 tests

bench: $(STAMP)
	$(BIN)/python bench/run.py --quick
