PY ?= python

.PHONY: proto test lint bench install

proto:  ## regenerate the gRPC stubs from proto/
	$(PY) -m grpc_tools.protoc -I proto --python_out=. --pyi_out=. --grpc_python_out=. proto/common/transfer.proto

install:
	$(PY) -m pip install -r requirements-dev.txt

test:
	$(PY) -m pytest

lint:
	$(PY) -m ruff check .

bench:
	$(PY) -m bench.transfer
	$(PY) -m bench.discovery
