# bankml: the two commands are `make demo` and `make test`; everything they need installs here.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
DATA   ?= https://automlsamplenotebookdata.blob.core.windows.net/automl-sample-notebook-data/bankmarketing_train.csv
HOME_DIR ?= .bankml

.PHONY: install demo test lint up bench clean

install: $(VENV)/.installed node_modules/.installed

$(VENV)/.installed: requirements.txt pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "bankml needs Python 3.11 (set PYTHON=python3.11)")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.txt
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps -e .
	@touch $@

node_modules/.installed: package.json package-lock.json
	@command -v npm >/dev/null || { echo "bankml needs Node.js and npm for Azurite (apt-get install nodejs npm)"; exit 1; }
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

demo: install
	$(BIN)/bankml demo --home $(HOME_DIR) --data "$(DATA)"

test: install
	$(BIN)/ruff check .
	$(BIN)/pytest

up: install
	$(BIN)/bankml up --home $(HOME_DIR)

clean:
	rm -rf $(VENV) node_modules .pytest_cache .ruff_cache
