PY ?= python

.PHONY: proto test unit e2e lint format bench install

proto:  ## regenerate the gRPC stubs from proto/
	$(PY) -m grpc_tools.protoc -I proto --python_out=. --pyi_out=. --grpc_python_out=. proto/common/transfer.proto

install:
	$(PY) -m pip install -r requirements-dev.txt

test:  ## everything: unit then end-to-end (real processes)
	$(PY) -m pytest

unit:  ## in-process tests only (tests/unit; nothing under tests/e2e can start a process here)
	$(PY) -m pytest tests/unit -m "not e2e"

e2e:  ## tests that start real gunicorn/gRPC/supervisord processes on free ports
	$(PY) -m pytest tests/e2e

lint:
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format:
	$(PY) -m ruff format .

bench:
	$(PY) -m bench.transfer
	$(PY) -m bench.discovery
