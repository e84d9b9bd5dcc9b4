"""Members only: the secret file, credentials bound to names, trusted networks (common/security.py)."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest

from common.errors import Forbidden, Unauthorized
from common.security import (
    MUTATING,
    OPEN,
    OPERATOR,
    OWN,
    READ,
    READER,
    Caller,
    Guard,
    SecretError,
    ensure_secret,
    holder_proves,
    hop_peer,
    hop_token,
    loose_permissions,
    new_challenge,
    operator_token,
    peer_token,
    principal_of,
    read_secret,
    reader_token,
    secret_path,
    token_for,
)

SECRET = b"0123456789abcdef0123456789abcdef-network-one"
OTHER = b"0123456789abcdef0123456789abcdef-network-two"


def test_the_secret_file_is_created_once_private_and_random(tmp_path):
    path = tmp_path / "net" / ".p2p-secret"
    assert ensure_secret(path) is True
    first = read_secret(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert len(first) == 64
    assert ensure_secret(path) is False  # never replaced: every host copies this one file
    assert read_secret(path) == first
    ensure_secret(tmp_path / "other")
    assert read_secret(tmp_path / "other") != first


def test_a_missing_short_or_shared_secret_is_named(tmp_path):
    with pytest.raises(SecretError, match="no such secret file"):
        read_secret(tmp_path / "none")
    (tmp_path / "short").write_text("abc\n")
    with pytest.raises(SecretError, match="at least 32"):
        read_secret(tmp_path / "short")
    shared = tmp_path / "shared"
    shared.write_text("x" * 40)
    shared.chmod(0o644)
    assert "chmod 600" in (loose_permissions(shared) or "")
    shared.chmod(0o600)
    assert loose_permissions(shared) is None


def test_secret_path_is_relative_to_the_topology_folder(tmp_path):
    assert secret_path(tmp_path) == tmp_path / ".p2p-secret"
    assert secret_path(tmp_path, "keys/net.secret") == tmp_path / "keys" / "net.secret"
    assert secret_path(tmp_path, "/etc/p2p/secret") == Path("/etc/p2p/secret")


def test_credentials_are_bound_to_names_and_to_the_network():
    guard = Guard(SECRET, trusted_networks=[])
    assert guard.identify(peer_token(SECRET, "peer2")) == "peer2"
    assert guard.identify(operator_token(SECRET)) == OPERATOR
    forged = "peer3." + peer_token(SECRET, "peer2").split(".", 1)[1]  # peer2's MAC under peer3's name
    assert guard.identify(forged) is None
    assert guard.identify(peer_token(OTHER, "peer2")) is None  # another network's secret
    assert guard.identify("peer2") is None
    assert guard.identify("") is None
    assert guard.identify("x" * 10_000) is None


def owned_by(uid):
    """The owner callable of a connection made by account uid (what the kernel would answer)."""
    return lambda: uid


OWNER = owned_by(1000)


def checked(guard: Guard, *args: Any) -> Caller:
    """guard.check(*args), which lets the call through: the caller it names."""
    caller = guard.check(*args)
    assert caller is not None
    return caller  # the account that owns the secret file in these tests


def test_strangers_need_a_valid_credential_for_mutating_calls():
    guard = Guard(SECRET, trusted_networks=["127.0.0.0/8", "::1/128"], operator_uids={1000})
    assert checked(guard, MUTATING, "127.0.0.1", None, OWNER).is_operator
    assert checked(guard, MUTATING, "::1", None, OWNER).is_operator
    assert checked(guard, MUTATING, "::ffff:127.0.0.1", None, OWNER).is_operator  # IPv4-mapped loopback
    with pytest.raises(Unauthorized, match="not a member"):
        guard.check(MUTATING, "10.208.0.2", None)
    with pytest.raises(Unauthorized, match="not valid"):
        guard.check(MUTATING, "10.208.0.2", "Bearer " + peer_token(OTHER, "peer2"))
    with pytest.raises(Unauthorized):
        guard.check(MUTATING, "10.208.0.2", "Basic " + peer_token(SECRET, "peer2"))
    caller = checked(guard, MUTATING, "10.208.0.2", "Bearer " + peer_token(SECRET, "peer2"))
    assert caller.name == "peer2" and not caller.is_operator
    assert checked(guard, MUTATING, "10.208.0.2", "bearer " + operator_token(SECRET)).is_operator


def test_a_trusted_address_is_the_operator_even_with_a_stale_credential():
    guard = Guard(SECRET, operator_uids={1000})
    assert checked(guard, MUTATING, "127.0.0.1", "Bearer " + peer_token(OTHER, "peer2"), OWNER).is_operator


def test_reads_are_open_unless_the_network_says_members():
    open_guard, members = Guard(SECRET, trusted_networks=[]), Guard(SECRET, trusted_networks=[], read="members")
    assert open_guard.check(READ, "10.208.0.2", None) is None
    with pytest.raises(Unauthorized):
        members.check(READ, "10.208.0.2", None)
    assert checked(members, READ, "10.208.0.2", "Bearer " + peer_token(SECRET, "peer1")).name == "peer1"
    assert members.check(OPEN, "10.208.0.2", None) is None  # health probes stay open


def test_a_peer_registers_only_as_itself_and_nobody_else_registers_it():
    guard = Guard(SECRET, trusted_networks=["127.0.0.0/8"], operator_uids={1000})
    peer3 = guard.caller("10.208.0.2", "Bearer " + peer_token(SECRET, "peer3"))
    peer3.require_self("peer3")
    with pytest.raises(Forbidden, match="only as itself"):
        peer3.require_self("peer2")
    for caller in (
        guard.caller("10.208.0.2", "Bearer " + operator_token(SECRET)),
        guard.caller("127.0.0.1", None, OWNER),  # the operator by address
        guard.caller("10.208.0.2", "Bearer " + reader_token(operator_token(SECRET))),
        guard.caller("10.208.0.2", "Bearer " + hop_token(SECRET, "peer2")),  # peer2's hop credential
    ):
        with pytest.raises(Forbidden, match="only the peer 'peer2' itself, by its own credential"):
            caller.require_self("peer2")
    Guard(None, operator_uids={1000}).caller("127.0.0.1", None, OWNER).require_self("peer2")  # no secret


def test_a_valid_credential_names_the_caller_even_on_a_trusted_address():
    guard = Guard(SECRET, operator_uids={1000}, node="peer1")
    assert guard.caller("127.0.0.1", "Bearer " + peer_token(SECRET, "peer2"), OWNER).name == "peer2"
    with pytest.raises(Forbidden):
        guard.check(OWN, "127.0.0.1", "Bearer " + peer_token(SECRET, "peer2"), OWNER)
    assert checked(guard, OWN, "127.0.0.1", None, OWNER).is_operator


@pytest.mark.parametrize(
    ("principal", "read", "member", "own"),
    [("@operator", True, True, True), ("peer1", True, True, True), ("peer2", True, True, False),
     ("@reader", True, False, False), ("peer1/hop", True, False, False), ("peer2/hop", True, False, False)],
    ids=["operator", "this-peer", "another-peer", "reader", "this-peer-hop", "another-peer-hop"],
)  # fmt: skip
def test_who_may_do_what_at_peer1(principal, read, member, own):
    guard = Guard(SECRET, trusted_networks=[], read="members", node="peer1")
    token = reader_token(operator_token(SECRET)) if principal == READER else None
    header = "Bearer " + (token or (operator_token(SECRET) if principal == OPERATOR else peer_token(SECRET, principal)))
    for kind, allowed in ((READ, read), (MUTATING, member), (OWN, own)):
        if allowed:
            assert checked(guard, kind, "10.208.0.2", header).name == principal
        else:
            with pytest.raises(Forbidden):
                guard.check(kind, "10.208.0.2", header)


def test_a_peers_hop_credential_names_the_peer_and_reads_only():
    guard = Guard(SECRET, trusted_networks=[], read="members", node="peer1")
    assert guard.hop_credential() == hop_token(SECRET, "peer1") == token_for(SECRET, "peer1/hop")
    caller = checked(guard, READ, "10.208.0.2", "Bearer " + hop_token(SECRET, "peer1"))
    assert caller.name == "peer1/hop" and not caller.is_peer and not caller.is_operator
    assert hop_peer(caller.name) == "peer1"
    assert [hop_peer(p) for p in ("peer1", OPERATOR, READER, "/hop", "Peer1/hop", "a/b/hop", None)] == [None] * 7
    assert guard.identify(hop_token(OTHER, "peer1")) is None  # another network's
    assert Guard(None, node="peer1").hop_credential() is None and Guard(SECRET).hop_credential() is None


def test_the_read_credential_is_made_from_the_operators_and_only_from_it():
    reader = reader_token(operator_token(SECRET))
    assert principal_of(reader) == READER and principal_of(operator_token(SECRET)) == OPERATOR
    guard = Guard(SECRET, trusted_networks=[], read="members")
    assert guard.identify(reader) == READER
    assert guard.identify(peer_token(SECRET, READER)) is None  # a reader MAC'd like a peer is not one
    assert guard.identify(reader_token(operator_token(OTHER))) is None
    assert guard.identify(reader_token(peer_token(SECRET, "peer2"))) is None
    assert guard.read_credential() == reader
    assert Guard(SECRET).read_credential() is None  # read: open: reads show nothing
    assert principal_of(None) is None and principal_of("nodot") is None


def test_a_holders_proof_binds_its_name_the_file_its_content_and_the_challenge():
    guard, challenge = Guard(SECRET, node="peer1"), new_challenge()
    content = ("archivo1.txt", 4, "a" * 64, "b" * 64)
    proof = guard.holder_proof("peer1", *content, challenge)
    assert holder_proves(SECRET, "peer1", *content, challenge, proof)
    assert not holder_proves(SECRET, "peer3", *content, challenge, proof)
    assert not holder_proves(SECRET, "peer1", "archivo2.txt", *content[1:], challenge, proof)
    assert not holder_proves(SECRET, "peer1", "archivo1.txt", 4, "c" * 64, "b" * 64, challenge, proof)
    assert not holder_proves(SECRET, "peer1", "archivo1.txt", 4, "a" * 64, "c" * 64, challenge, proof)
    assert not holder_proves(SECRET, "peer1", *content, new_challenge(), proof)
    assert not holder_proves(OTHER, "peer1", *content, challenge, proof)
    assert not holder_proves(SECRET, "peer1", *content, challenge, None)
    assert Guard(None).holder_proof("peer1", *content, challenge) == ""
    assert guard.holder_proof("peer1", *content, "") == ""


def test_without_a_secret_only_trusted_addresses_may_change_anything():
    guard = Guard(None, operator_uids={1000})
    assert checked(guard, MUTATING, "127.0.0.1", None, OWNER).is_operator
    with pytest.raises(Unauthorized):
        guard.check(MUTATING, "10.0.0.1", "Bearer " + operator_token(SECRET))


def test_membership_proofs_answer_one_challenge_for_one_name():
    guard, challenge, url = Guard(SECRET), new_challenge(), "http://10.0.0.2:9003"
    proof = guard.proof("peer2", url, challenge)
    assert guard.proves("peer2", url, challenge, proof)
    assert not guard.proves("peer3", url, challenge, proof)
    assert not guard.proves("peer2", "http://10.0.0.66:9003", challenge, proof)  # relayed by another address
    assert not guard.proves("peer2", url, new_challenge(), proof)
    assert not Guard(OTHER).proves("peer2", url, challenge, proof)
    assert not guard.proves("peer2", url, challenge, None)
    assert not Guard(None).proves("peer2", url, challenge, proof)


def refused_owner():
    raise AssertionError("the guard asked who made the connection when it did not need to")


def test_on_loopback_only_the_secret_files_owner_is_the_operator_by_default():
    guard = Guard(SECRET, operator_uids={1000, 0})
    assert checked(guard, MUTATING, "127.0.0.1", None, owned_by(1000)).is_operator
    assert checked(guard, MUTATING, "::1", None, owned_by(0)).is_operator  # root reads the secret anyway
    for other in (owned_by(1001), owned_by(None), None):  # another account, an unknown one, no way to ask
        with pytest.raises(Unauthorized, match="needs a credential"):
            guard.check(MUTATING, "127.0.0.1", None, other)
    assert (
        checked(guard, MUTATING, "127.0.0.1", "Bearer " + peer_token(SECRET, "peer2"), owned_by(1001)).name == "peer2"
    )
    assert checked(guard, MUTATING, "127.0.0.1", "Bearer " + operator_token(SECRET), refused_owner).is_operator


def test_local_operator_any_trusts_every_local_account_and_none_trusts_none():
    anyone = Guard(SECRET, local_operator="any", operator_uids={1000})
    assert checked(anyone, MUTATING, "127.0.0.1", None, refused_owner).is_operator
    nobody = Guard(SECRET, local_operator="none", operator_uids={1000})
    with pytest.raises(Unauthorized):
        nobody.check(MUTATING, "127.0.0.1", None, owned_by(1000))
    assert checked(nobody, MUTATING, "127.0.0.1", "Bearer " + operator_token(SECRET)).is_operator
    with pytest.raises(ValueError, match="local_operator"):
        Guard(SECRET, local_operator="root")


def test_a_trusted_network_is_the_operator_from_other_machines_and_by_account_from_this_one():
    mine = {"10.208.0.1"}
    guard = Guard(SECRET, trusted_networks=["10.208.0.0/16"], operator_uids={1000}, own_address=mine.__contains__)
    assert checked(guard, MUTATING, "10.208.0.2", None, refused_owner).is_operator  # another machine: by address
    assert checked(guard, MUTATING, "10.208.0.1", None, owned_by(1000)).is_operator  # this machine: by account
    with pytest.raises(Unauthorized):
        guard.check(MUTATING, "10.208.0.1", None, owned_by(1001))
    with pytest.raises(Unauthorized):
        guard.check(MUTATING, "127.0.0.1", None, owned_by(1000))  # loopback is not in this trusted_networks


def test_operator_accounts_are_the_secret_files_owner_and_root(tmp_path):
    from common.security import operator_accounts

    path = tmp_path / ".p2p-secret"
    ensure_secret(path)
    if os.geteuid() == 0:
        os.chown(path, 4242, -1)
    assert operator_accounts(path) == {os.stat(path).st_uid, 0}
    assert operator_accounts(None) == {os.geteuid(), 0}
