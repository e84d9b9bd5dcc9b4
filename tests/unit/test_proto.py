"""The committed gRPC stubs are exactly what `make proto` generates from proto/."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.support import ROOT

STUBS = ["transfer_pb2.py", "transfer_pb2.pyi", "transfer_pb2_grpc.py"]


def test_generated_stubs_match_the_proto(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            "-I",
            str(ROOT / "proto"),
            f"--python_out={tmp_path}",
            f"--pyi_out={tmp_path}",
            f"--grpc_python_out={tmp_path}",
            str(ROOT / "proto" / "common" / "transfer.proto"),
        ],
        check=True,
    )
    for stub in STUBS:
        fresh = (tmp_path / "common" / stub).read_text()
        assert fresh == (ROOT / "common" / stub).read_text(), f"common/{stub} is stale: run `make proto`"


def test_no_package_shadows_an_installed_library():
    for name in ("proto", "grpc", "supervisor"):
        assert not (Path(ROOT) / name / "__init__.py").exists()
