"""Which local account made a connection (common/local_owner.py): real sockets, asked of this machine's kernel."""

from __future__ import annotations

import os
import socket

import pytest

from common.local_owner import ConnectionOwners, is_own_address, owner_of_socket, socket_owner
from peer_app.access import peer_address

pytestmark = pytest.mark.skipif(not hasattr(socket, "AF_NETLINK"), reason="sock_diag netlink is Linux only")


@pytest.fixture
def connection():
    """(client socket, the server's accepted socket) over loopback."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        client = socket.create_connection(server.getsockname())
        accepted, _ = server.accept()
        yield client, accepted
        client.close()
        accepted.close()


def test_the_account_at_the_other_end_of_a_loopback_connection_is_this_process(connection):
    client, accepted = connection
    assert owner_of_socket(accepted) == os.geteuid()
    assert socket_owner(client.getsockname(), [("10.9.9.9", 1), accepted.getsockname()]) == os.geteuid()


def test_no_such_connection_is_unknown(connection):
    client, accepted = connection
    host, port = client.getsockname()
    assert socket_owner((host, port), [(host, 1)]) is None  # not connected to that port
    assert socket_owner(("not an address", port), [accepted.getsockname()]) is None


def test_a_closed_connection_is_unknown_not_root(connection):
    client, accepted = connection
    client.close()  # the client's side lingers in FIN_WAIT/TIME_WAIT, which the kernel reports as uid 0
    assert owner_of_socket(accepted) is None


def test_an_ipv6_loopback_connection_is_known_too():
    try:
        server = socket.create_server(("::1", 0), family=socket.AF_INET6)
    except OSError:
        pytest.skip("no IPv6 loopback here")
    with server:
        client = socket.create_connection(server.getsockname()[:2])
        accepted, _ = server.accept()
        with client, accepted:
            assert owner_of_socket(accepted) == os.geteuid()


def test_an_ipv4_caller_of_a_dual_stack_server_is_known():
    if not socket.has_dualstack_ipv6():
        pytest.skip("no dual-stack sockets here")
    with socket.create_server(("::", 0), family=socket.AF_INET6, dualstack_ipv6=True) as server:
        client = socket.create_connection(("127.0.0.1", server.getsockname()[1]))
        accepted, _ = server.accept()
        with client, accepted:
            assert accepted.getpeername()[0] == "::ffff:127.0.0.1"
            assert owner_of_socket(accepted) == os.geteuid()


def test_each_connection_is_asked_once_and_never_mistaken_for_another(connection):
    client, accepted = connection
    owners = ConnectionOwners()
    assert owners.of(accepted) == os.geteuid()
    client.close()
    assert owners.of(accepted) == os.geteuid()  # the same connection: its answer holds
    assert owners.of(None) is None


def test_own_addresses_are_loopback_and_this_machines():
    assert is_own_address("127.0.0.1") and is_own_address("::1") and is_own_address("::ffff:127.0.0.1")
    assert not is_own_address("192.0.2.1")  # TEST-NET-1: nobody's
    assert not is_own_address("not an address")


@pytest.mark.parametrize(
    ("peer", "address"),
    [
        ("ipv4:127.0.0.1:5000", ("127.0.0.1", 5000)),
        ("ipv6:[::1]:5000", ("::1", 5000)),
        ("ipv6:%5B::1%5D:5000", ("::1", 5000)),
        ("unix:/tmp/x", None),
        ("ipv4:127.0.0.1", None),
    ],
)
def test_grpc_peer_strings_give_the_callers_address_and_port(peer, address):
    assert peer_address(peer) == address
