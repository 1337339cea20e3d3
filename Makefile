# bankml: the two commands are `make demo` and `make test`; everything they need installs here.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
DATA   ?= https://automlsamplenotebookdata.blob.core.windows.net/automl-sample-notebook-data/bankmarketing_train.csv
HOME_DIR ?= .bankml
UV_PIN := uv==0.13.9

.PHONY: install demo test lint up bench bench-quick clean

# The Python and the Node installs run side by side.
install:
	@$(MAKE) --no-print-directory -j2 $(VENV)/.installed node_modules/.installed

# uv installs the pinned requirements in parallel (several times faster than pip).
$(VENV)/.installed: requirements.txt pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "bankml needs Python 3.11 (set PYTHON=python3.11)")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check $(UV_PIN)
	$(BIN)/uv pip install --quiet --python $(BIN)/python -r requirements.txt
	$(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps -e .
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

# Every benchmark, one at a time; rewrites docs/benchmarks.md (QUICK=1: the short run, under 5 min).
BANKML_REAL_DATA ?= $(wildcard ../shared/data/bankmarketing_train.csv /work/shared/data/bankmarketing_train.csv)
bench: install
	BANKML_REAL_DATA="$(firstword $(BANKML_REAL_DATA))" $(BIN)/python -m benchmarks $(if $(QUICK),--quick) $(BENCH_ARGS)

bench-quick:
	@$(MAKE) --no-print-directory bench QUICK=1

clean:
	rm -rf $(VENV) node_modules .pytest_cache .ruff_cache
