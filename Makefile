# Two entry points for a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DATA ?= data
SERVER_NAME ?= localhost:8008
CONFIG := $(DATA)/homeserver.yaml

.PHONY: run test venv lint typecheck bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: $(BIN)/python setup.cfg pyproject.toml
	$(BIN)/pip install -q -e '.[test]'
	touch $@

venv: $(VENV)/.installed

$(CONFIG): | venv
	$(BIN)/homeserver --generate-config -H $(SERVER_NAME) -c $(CONFIG) --data-directory $(DATA) --report-stats=no --enable-registration

run: venv $(CONFIG)
	exec $(BIN)/homeserver -c $(CONFIG)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: venv
	$(BIN)/mypy homeserver federation storage crypto synapse_compat

test: venv
	bash scripts/ensure-services.sh
	$(MAKE) lint typecheck
	$(BIN)/python scripts/run_tests.py

clean:
	rm -rf $(VENV) build *.egg-info
