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
# CI (.ci/run) runs both. Bytecode is cached even where the environment says not to (every
# process of the suite, workers and CLIs included, compiled the project again: ~10 s of collection
# each); hypothesis's plugin only adds a summary that imports hypothesis after the last test.
PYTEST := PYTHONDONTWRITEBYTECODE= $(BIN)/python -m pytest -q -n auto --dist worksteal -p no:hypothesispytest
test: $(STAMP)
	$(PYTEST) -m "not e2e" --durations=15 tests

e2e: $(STAMP)
	$(PYTEST) -m e2e --durations=0 tests

bench: $(STAMP)
	$(BIN)/python bench/run.py --quick
