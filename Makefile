PY ?= python

.PHONY: proto check test unit e2e lint format typecheck layers constraints bench install

proto:  ## regenerate the gRPC stubs from proto/
	$(PY) -m grpc_tools.protoc -I proto --python_out=. --pyi_out=. --grpc_python_out=. proto/common/transfer.proto

install:
	$(PY) -m pip install -r requirements-dev.txt -c constraints.txt

constraints:  ## after editing requirements*.txt: pin every transitive dependency into constraints.txt
	rm -rf .venv-constraints
	$(PY) -m venv .venv-constraints
	.venv-constraints/bin/pip install --quiet -r requirements-dev.txt
	{ echo "# Every installed package, transitive ones included: made by \`make constraints\` from requirements-dev.txt."; \
	  .venv-constraints/bin/pip freeze --exclude-editable; } > constraints.txt
	rm -rf .venv-constraints

check: lint typecheck layers unit  ## what a developer runs often (under a minute): lint, types, layers, in-process tests

test:  ## everything: unit then end-to-end (real processes)
	$(PY) -m pytest

unit:  ## in-process tests only (tests/unit; nothing under tests/e2e can start a process here)
	$(PY) -m pytest -q tests/unit -m "not e2e"

e2e:  ## tests that start real gunicorn/gRPC/supervisord processes on free ports
	$(PY) -m pytest tests/e2e

lint:
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

layers:  ## the import contract in pyproject's [tool.importlinter] (no import climbs a layer)
	lint-imports

typecheck:  ## mypy over the packages listed in pyproject's [tool.mypy] files
	$(PY) -m mypy

format:
	$(PY) -m ruff format .

bench:
	$(PY) -m bench.transfer
	$(PY) -m bench.discovery
	$(PY) -m bench.load
