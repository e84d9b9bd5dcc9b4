"""A download from the operator's CLI trusts a digest only from a holder that proves it (client/keys.py).

In-process: a real gRPC server of this network on port 0; the download asks it to prove that it
is the member the directory names, serving this very content.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

import pytest

from client.download import download
from client.keys import HolderCheck
from common.config import Security
from common.errors import DataLoss
from common.security import ensure_secret, read_secret

DATA = b"hola\n"
SHA = hashlib.sha256(DATA).hexdigest()


@pytest.fixture
def secret(tmp_path) -> bytes:
    ensure_secret(tmp_path / ".p2p-secret")
    return read_secret(tmp_path / ".p2p-secret")


@pytest.fixture
def holder(serve, peer_config, tmp_path, secret) -> str:
    """peer1, a member of the network, serving archivo1.txt ("hola\\n")."""
    config = dataclasses.replace(peer_config, security=Security(secret_file=str(tmp_path / ".p2p-secret")))
    return serve(config=config)[0]


@pytest.mark.parametrize("lanes", [True, False], ids=["lane", "stream"])
@pytest.mark.parametrize("known", [True, False], ids=["digest-from-the-directory", "digest-from-the-holder"])
def test_a_member_proves_itself_and_its_content(holder, secret, tmp_path, lanes, known):
    out = tmp_path / "got.txt"
    expected: dict[str, Any] = {"expected_sha256": SHA, "size": len(DATA)} if known else {}
    result = download("archivo1.txt", out, [{"name": "peer1", "grpc_address": holder}], lanes=lanes,
                      holder_check=HolderCheck(secret), **expected)  # fmt: skip
    assert out.read_bytes() == DATA and result.sources == {"peer1": len(DATA)}


@pytest.mark.parametrize(
    ("name", "check"),
    [("peer2", "this network"), ("peer1", "another network")],
    ids=["another-members-name", "another-networks-holder"],
)
def test_a_holder_that_cannot_prove_itself_serves_nothing(holder, secret, tmp_path, name, check):
    """The directory says `name` holds the file at this address: a forged entry, or a holder of another network."""
    proofs = HolderCheck(secret if check == "this network" else b"another network's secret, 32+ bytes")
    out = tmp_path / "got.txt"
    with pytest.raises(DataLoss, match=f"{name} at {holder} did not prove that it is {name}, a member"):
        download("archivo1.txt", out, [{"name": name, "grpc_address": holder}], expected_sha256=SHA,
                 size=len(DATA), holder_check=proofs, retry_for=0)  # fmt: skip
    assert not out.exists()


def test_a_lane_ticket_carries_the_same_proof(holder, secret):
    import grpc

    from common import transfer_pb2, transfer_pb2_grpc
    from common.security import holder_proves, new_challenge

    challenge = new_challenge()
    with grpc.insecure_channel(holder) as channel:
        stub = transfer_pb2_grpc.FileTransferStub(channel)
        ticket = stub.OpenLane(transfer_pb2.FileRequest(filename="archivo1.txt", challenge=challenge), timeout=10)
        unasked = stub.OpenLane(transfer_pb2.FileRequest(filename="archivo1.txt"), timeout=10)
    assert ticket.holder == "peer1" and ticket.sha256 == SHA
    assert holder_proves(secret, "peer1", "archivo1.txt", len(DATA), SHA, ticket.blake3, challenge, ticket.proof)
    assert (unasked.holder, unasked.proof) == ("", "")
