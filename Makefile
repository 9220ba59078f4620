# Two commands: `make app` (set up and launch the dashboard) and `make test` (set up and test).
PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: app test bench browser-deps

$(BIN)/python:
	$(PY) -m venv $(VENV)

# Reinstall only when requirements.txt changes.
$(STAMP): requirements.txt | $(BIN)/python
	$(BIN)/pip install -q -r requirements.txt
	touch $(STAMP)

app: $(STAMP)
	$(BIN)/streamlit run dashboard/app.py

# In parallel, one worker per core (pytest-xdist); worksteal evens out the few long tests.
test: $(STAMP)
	$(BIN)/python -m pytest -q -n auto --dist worksteal --durations=15 tests

bench: $(STAMP)
	$(BIN)/python bench/run.py --quick
